"""Training losses for one-logit binary classifiers.

* ``"focal"`` (WAE-Net recipe): binary focal loss on the logit,
  ``FL = -alpha_t * (1 - p_t)^gamma * log(p_t)`` (Lin et al. 2017), gamma 2.
  ``alpha`` (weight of the positive class) is None by default: WAE-Net does not
  state one, and the minority class here is the negative one. Written out here
  rather than via ``monai.losses.FocalLoss`` so the binary one-logit form and its
  defaults are explicit.
* ``"bce"`` (eTSC-Net recipe): ``torch.nn.BCEWithLogitsLoss``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BinaryFocalLoss(nn.Module):
    """Binary focal loss on logits of shape ``(batch, 1)`` with 0/1 float targets."""

    def __init__(self, gamma: float = 2.0, alpha: float | None = None) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError("gamma must be >= 0")
        if alpha is not None and not 0 < alpha < 1:
            raise ValueError("alpha must be in (0, 1)")
        self.gamma = float(gamma)
        self.alpha = alpha

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.to(logits.dtype).reshape(logits.shape)
        ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        p_t = torch.exp(-ce)
        loss = (1.0 - p_t) ** self.gamma * ce
        if self.alpha is not None:
            loss = loss * (self.alpha * target + (1.0 - self.alpha) * (1.0 - target))
        return loss.mean()


def make_loss(name: str, **kwargs: float) -> nn.Module:
    """``"focal"`` or ``"bce"``."""
    if name == "focal":
        return BinaryFocalLoss(**kwargs)
    if name == "bce":
        return nn.BCEWithLogitsLoss()
    raise ValueError(f"unknown loss {name!r}; expected 'focal' or 'bce'")
