"""Ensemble member architectures, built on MONAI networks.

Three architectures, named in the model manifest by ``architecture``:

* ``"resnet3d-34"``: WAE-Net image member. ``monai.networks.nets.ResNet`` with
  basic blocks, layers ``[3, 4, 6, 3]``, 3D, one input channel, global average
  pooling + one fully connected output (a logit).
* ``"efficientnet3d-b0"``: eTSC-Net image member. ``monai.networks.nets.EfficientNetBN
  ("efficientnet-b0", spatial_dims=3, in_channels=1, num_classes=1, pretrained=False)``
  (4.69 M parameters), or the same block definitions through
  ``monai.networks.nets.EfficientNet`` when a reduced width/depth is asked for.
* ``"clinical-fcnn"``: WAE-Net clinical member, fully connected
  4 -> 1024 -> 512 -> 128 -> 64 -> 32 -> 16 -> 1 with batch normalisation and
  ReLU between layers.

Every network outputs one logit per sample, shape ``(batch, 1)``; the
probability of "uncontrolled at one year" is its sigmoid. Image networks take
``(batch, 1, nx, ny, nz)`` tensors (the model grid's array order, see
``operators.model_grid``).

Hyperparameters (all optional; the defaults are the published full-size members):

* resnet3d-34: ``width_factor`` (scales ``block_inplanes`` 64/128/256/512; the
  demo model set uses a reduced width), ``conv1_t_size`` (7), ``conv1_t_stride``
  (2: MONAI applies the stem kernel and stride to all three axes; stride 2 keeps
  the 128^3 stem affordable, as in MONAI's MedicalNet-style ResNets),
  ``no_max_pool`` (False), ``shortcut_type`` ("B").
* efficientnet3d-b0: ``width_coefficient`` (1.0), ``depth_coefficient`` (1.0),
  ``dropout_rate`` (0.2), ``drop_connect_rate`` (0.2).
* clinical-fcnn: ``in_features`` (4), ``hidden`` ([1024, 512, 128, 64, 32, 16]),
  ``log_ages`` (False: the published network takes the ages in months as they are;
  True: log(1 + months) of both ages before standardisation, for right-skewed ages).

torch and MONAI are imported when a network is built, so importing this module
is cheap.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

RESNET3D_34 = "resnet3d-34"
EFFICIENTNET3D_B0 = "efficientnet3d-b0"
CLINICAL_FCNN = "clinical-fcnn"
ARCHITECTURES = (RESNET3D_34, EFFICIENTNET3D_B0, CLINICAL_FCNN)
IMAGE_ARCHITECTURES = (RESNET3D_34, EFFICIENTNET3D_B0)

_RESNET_KEYS = {"width_factor", "conv1_t_size", "conv1_t_stride", "no_max_pool", "shortcut_type"}
_EFFNET_KEYS = {"width_coefficient", "depth_coefficient", "dropout_rate", "drop_connect_rate"}
_FCNN_KEYS = {"in_features", "hidden", "log_ages"}
ALLOWED_HYPERPARAMETERS: dict[str, set[str]] = {
    RESNET3D_34: _RESNET_KEYS, EFFICIENTNET3D_B0: _EFFNET_KEYS, CLINICAL_FCNN: _FCNN_KEYS,
}

FCNN_HIDDEN = (1024, 512, 128, 64, 32, 16)
CLINICAL_FEATURES = 4
# MONAI's EfficientNetBN("efficientnet-b0") block definitions (MBConv, 7 stages).
_EFFICIENTNET_B0_BLOCKS = [
    "r1_k3_s11_e1_i32_o16_se0.25",
    "r2_k3_s22_e6_i16_o24_se0.25",
    "r2_k5_s22_e6_i24_o40_se0.25",
    "r3_k3_s22_e6_i40_o80_se0.25",
    "r3_k5_s11_e6_i80_o112_se0.25",
    "r4_k5_s22_e6_i112_o192_se0.25",
    "r1_k3_s11_e6_i192_o320_se0.25",
]


def check_hyperparameters(architecture: str, hyperparameters: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming the first unknown architecture or hyperparameter."""
    if architecture not in ALLOWED_HYPERPARAMETERS:
        raise ValueError(f"unknown architecture {architecture!r}; expected one of {', '.join(ARCHITECTURES)}")
    unknown = sorted(set(hyperparameters) - ALLOWED_HYPERPARAMETERS[architecture])
    if unknown:
        allowed = ", ".join(sorted(ALLOWED_HYPERPARAMETERS[architecture]))
        raise ValueError(f"unknown hyperparameter(s) {unknown} for {architecture}; allowed: {allowed}")


def build_network(architecture: str, hyperparameters: Mapping[str, Any] | None = None) -> "torch.nn.Module":
    """Build an (untrained) member network.

    Args:
        architecture: One of ``ARCHITECTURES``.
        hyperparameters: Optional overrides, see the module docstring.

    Returns:
        A ``torch.nn.Module`` mapping its input to one logit per sample.

    Raises:
        ValueError: Unknown architecture or hyperparameter, or an invalid value.
    """
    hp = dict(hyperparameters or {})
    check_hyperparameters(architecture, hp)
    if architecture == RESNET3D_34:
        return _resnet3d_34(**hp)
    if architecture == EFFICIENTNET3D_B0:
        return _efficientnet3d_b0(**hp)
    return ClinicalFCNN(**hp)


def _resnet3d_34(width_factor: float = 1.0, conv1_t_size: int = 7, conv1_t_stride: int = 2,
                 no_max_pool: bool = False, shortcut_type: str = "B") -> "torch.nn.Module":
    from monai.networks.nets import ResNet

    if not 0 < float(width_factor) <= 4:
        raise ValueError(f"width_factor must be in (0, 4], got {width_factor}")
    inplanes = [max(1, int(round(c * float(width_factor)))) for c in (64, 128, 256, 512)]
    return ResNet(block="basic", layers=[3, 4, 6, 3], block_inplanes=inplanes, spatial_dims=3,
                  n_input_channels=1, conv1_t_size=int(conv1_t_size), conv1_t_stride=int(conv1_t_stride),
                  no_max_pool=bool(no_max_pool), shortcut_type=str(shortcut_type), num_classes=1)


def _efficientnet3d_b0(width_coefficient: float = 1.0, depth_coefficient: float = 1.0,
                       dropout_rate: float = 0.2, drop_connect_rate: float = 0.2) -> "torch.nn.Module":
    from monai.networks.nets import EfficientNet, EfficientNetBN

    if (width_coefficient, depth_coefficient, dropout_rate, drop_connect_rate) == (1.0, 1.0, 0.2, 0.2):
        return EfficientNetBN("efficientnet-b0", pretrained=False, progress=False, spatial_dims=3,
                              in_channels=1, num_classes=1)
    if width_coefficient <= 0 or depth_coefficient <= 0:
        raise ValueError("width_coefficient and depth_coefficient must be positive")
    return EfficientNet(_EFFICIENTNET_B0_BLOCKS, spatial_dims=3, in_channels=1, num_classes=1,
                        width_coefficient=float(width_coefficient), depth_coefficient=float(depth_coefficient),
                        dropout_rate=float(dropout_rate), drop_connect_rate=float(drop_connect_rate),
                        norm=("batch", {"eps": 1e-3, "momentum": 0.01}))


def _fcnn_class() -> type:
    import torch
    from torch import nn

    class _ClinicalFCNN(nn.Module):
        """Fully connected clinical member (WAE-Net): Linear + BatchNorm + ReLU per hidden layer.

        The input is standardised with ``input_mean`` / ``input_std`` buffers
        (set by training from the training folds, saved with the weights), so
        months and yes/no flags enter on comparable scales. With ``log_ages`` the
        two ages are taken as log(1 + months) first (``transform_inputs``; the
        buffers then hold the statistics of the transformed values).

        Input: ``(batch, in_features)`` float tensor, in the order of
        ``ClinicalData.as_vector()`` (onset months, imaging age months, infantile
        spasms, ASMs >= 3). Output: ``(batch, 1)`` logits.
        """

        def __init__(self, in_features: int = CLINICAL_FEATURES, hidden: Sequence[int] = FCNN_HIDDEN,
                     log_ages: bool = False) -> None:
            super().__init__()
            if not isinstance(log_ages, bool):
                raise ValueError(f"log_ages must be true or false, got {log_ages!r}")
            if log_ages and int(in_features) < 2:
                raise ValueError("log_ages needs the two age inputs")
            self.log_ages = log_ages
            widths = [int(in_features), *[int(h) for h in hidden]]
            if any(w < 1 for w in widths):
                raise ValueError(f"layer widths must be positive, got {widths}")
            layers: list[nn.Module] = []
            for a, b in zip(widths[:-1], widths[1:]):
                layers += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU(inplace=True)]
            layers.append(nn.Linear(widths[-1], 1))
            self.layers = nn.Sequential(*layers)
            self.register_buffer("input_mean", torch.zeros(int(in_features)))
            self.register_buffer("input_std", torch.ones(int(in_features)))

        def transform_inputs(self, x: "torch.Tensor") -> "torch.Tensor":
            """The inputs as the standardisation sees them (ages on a log scale with ``log_ages``)."""
            if not self.log_ages:
                return x
            return torch.cat([torch.log1p(x[:, :2].clamp_min(0.0)), x[:, 2:]], dim=1)

        def forward(self, x: "torch.Tensor") -> "torch.Tensor":
            return self.layers((self.transform_inputs(x) - self.input_mean) / self.input_std)

    return _ClinicalFCNN


_FCNN_CLS: type | None = None


def ClinicalFCNN(in_features: int = CLINICAL_FEATURES, hidden: Sequence[int] = FCNN_HIDDEN,
                 log_ages: bool = False) -> "torch.nn.Module":
    """Build the clinical FCNN (4 -> 1024 -> 512 -> 128 -> 64 -> 32 -> 16 -> 1).

    A factory rather than a class at module level so that importing this module
    does not import torch.
    """
    global _FCNN_CLS
    if _FCNN_CLS is None:
        _FCNN_CLS = _fcnn_class()
    return _FCNN_CLS(in_features=in_features, hidden=hidden, log_ages=log_ages)


def count_parameters(model: "torch.nn.Module", trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
