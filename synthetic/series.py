"""Turning rendered labels into the series to write: intensities, quantisation, identity.

:class:`SeriesRenderer` maps slab labels to intensities with bias field and
Rician noise, each series from its own random stream. :func:`to_stored`
quantises to uint16 under a rescale and returns the exact values a reader
recovers. :class:`SeriesFactory` gives each series its UID, number,
description and time.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .dicom_writer import Frame, SeriesData, make_uid
from .phantom import HeadPhantom
from .protocols import PROTOCOLS
from .render import CONTRASTS, SeriesGrid, add_rician_noise, bias_field, contrast_lut, render_contrast


class SeriesRenderer:
    """Intensities of one study's series.

    Args:
        phantom: The subject's anatomy.
        stream: ``name -> numpy Generator``, an independent random stream per name.
        noise_scale / bias_strength: Multipliers of the default noise SD and bias-field strength.
    """

    def __init__(self, phantom: HeadPhantom, stream: Callable[[str], np.random.Generator],
                 noise_scale: float = 1.0, bias_strength: float = 1.0) -> None:
        self.phantom = phantom
        self.stream = stream
        self.noise_scale = noise_scale
        self.bias_strength = bias_strength

    def image(self, labels: np.ndarray, grid: SeriesGrid, contrast: str, stream: str,
              lut: np.ndarray | None = None) -> np.ndarray:
        """(slices, rows, columns) float32 intensities from (slices, n_sub, rows, columns) labels."""
        rng = self.stream(stream)
        img = render_contrast(labels, contrast_lut(contrast, self.phantom) if lut is None else lut)
        if self.bias_strength > 0:
            img *= bias_field(grid, rng.normal(0.0, 0.12 * self.bias_strength, size=9))
        if self.noise_scale > 0:
            img = add_rician_noise(img, CONTRASTS[contrast]["noise"] * self.noise_scale, rng)
        return img


def to_stored(image: np.ndarray, rescale: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Quantise output values to uint16 stored values; return (stored, exact output values)."""
    slope, intercept = rescale
    stored = np.clip(np.rint((image - intercept) / slope), 0, 65535).astype(np.uint16)
    return stored, (stored.astype(np.float32) * np.float32(slope) + np.float32(intercept))


def window(values: np.ndarray) -> tuple[float, float]:
    """Window centre/width from the brighter part of the image (a strided subsample is enough)."""
    values = values.ravel()[::7]
    fg = values[values > np.percentile(values, 60)]
    if fg.size == 0:
        return 500.0, 1000.0
    lo, hi = np.percentile(fg, [1, 99.5])
    return round(float(lo + hi) / 2.0, 1), round(float(max(hi - lo, 1.0)), 1)


def frames_of(grid: SeriesGrid, stored: np.ndarray, extra: dict[str, Any] | None = None) -> list[Frame]:
    """One :class:`Frame` per slice of ``stored`` (slices, rows, columns) with the grid's geometry."""
    orientation = grid.image_orientation()
    return [Frame(stored[k], grid.slice_position(k), orientation, dict(extra or {})) for k in range(grid.slices)]


@dataclass
class SeriesFactory:
    """Identity of the series of one study.

    Attributes:
        uid_entropy: Seed-derived entropy for deterministic UIDs.
        numbers: Kind -> SeriesNumber.
        descriptions: Kind -> SeriesDescription.
        start: Study start; a series' time is 3 minutes per series number later.
    """

    uid_entropy: str
    numbers: dict[str, int]
    descriptions: dict[str, str]
    start: dt.datetime

    def series_uid(self, kind: str) -> str:
        return make_uid(self.uid_entropy, "series", kind)

    def make(self, kind: str, protocol_key: str, frames: list[Frame], pixel_mm: tuple[float, float],
             thickness_mm: float, spacing_between_slices_mm: float | None, rescale: tuple[float, float],
             window_cw: tuple[float, float], contrast: str) -> SeriesData:
        """A :class:`SeriesData` with the protocol's physics and this study's identity.

        Args:
            pixel_mm: (column spacing, row spacing), i.e. grid order; written as PixelSpacing (row, column).
        """
        p = PROTOCOLS[protocol_key]
        time = (self.start + dt.timedelta(minutes=3 * self.numbers.get(kind, 1))).strftime("%H%M%S")
        return SeriesData(
            kind=kind, series_uid=self.series_uid(kind), series_number=self.numbers[kind],
            description=self.descriptions[kind], image_type=p.image_type, attributes=dict(p.attributes),
            frames=frames, pixel_spacing=(pixel_mm[1], pixel_mm[0]), thickness_mm=thickness_mm,
            spacing_between_slices_mm=spacing_between_slices_mm, rescale=rescale, window=window_cw,
            series_time=time, contrast=contrast)
