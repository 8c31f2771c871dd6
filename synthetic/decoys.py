"""The other series a real study holds: localizer, T1, a derived FLAIR copy, DWI.

Each is rendered from the same anatomy (FLAIR head pose) with its own
physics, so that a series selector has to tell them apart by acquisition
attributes rather than by name. Decoy matrices are scaled with ``scale`` at a
constant field of view (small test studies get small decoys).
"""

from __future__ import annotations

import numpy as np

from .acquisition import AXIAL, CORONAL, SAGITTAL, AcquisitionPlan
from .dicom_writer import SeriesData
from .phantom import MAX_NODULES, MAX_TUBERS, NODULE_BASE, TUBER_BASE, HeadPhantom, Tissue
from .protocols import PROTOCOLS
from .render import SeriesGrid, contrast_lut, myelination, sample_labels
from .series import SeriesFactory, SeriesRenderer, frames_of, to_stored, window

DERIVED_RESCALE = (0.5, 0.0)
DWI_B_VALUES = (0.0, 500.0, 1000.0)
MIN_DECOY_MATRIX = 32  # OpenJPEG needs at least 32 pixels per side

# Apparent diffusion coefficient per tissue (1e-3 mm^2/s) for the DWI decoy.
_ADC = {"scalp": 0.3, "skull": 0.5, "csf": 3.0, "gm": 0.85, "wm": 0.72, "wm_unmyelinated": 1.25,
        "deep_gm": 0.75, "soft": 1.2, "tuber": 1.05, "nodule": 0.8}


def dwi_lut(phantom: HeadPhantom, b: float) -> np.ndarray:
    """Diffusion-weighted intensity per label: ``S0 * exp(-b * ADC)``."""
    b0 = contrast_lut("DWI_B0", phantom)
    m = myelination(phantom.subject.age_at_imaging_months)
    adc = np.zeros(256, dtype=np.float32)
    adc[Tissue.SCALP], adc[Tissue.SKULL] = _ADC["scalp"], _ADC["skull"]
    adc[Tissue.CSF] = adc[Tissue.VENTRICLE] = _ADC["csf"]
    adc[Tissue.GM], adc[Tissue.DEEP_GM], adc[Tissue.SOFT_TISSUE] = _ADC["gm"], _ADC["deep_gm"], _ADC["soft"]
    adc[Tissue.WM] = m * _ADC["wm"] + (1 - m) * _ADC["wm_unmyelinated"]
    adc[TUBER_BASE:TUBER_BASE + MAX_TUBERS] = _ADC["tuber"]
    adc[NODULE_BASE:NODULE_BASE + MAX_NODULES] = _ADC["nodule"]
    return (b0 * np.exp(-b * 1e-3 * adc)).astype(np.float32)


def derived_flair_copy(factory: SeriesFactory, flair_grid: SeriesGrid, flair_values: np.ndarray,
                       window_cw: tuple[float, float]) -> SeriesData:
    """An ROI/key-image export of the FLAIR: same pixels and geometry, DERIVED, stored with slope 0.5."""
    stored, _ = to_stored(flair_values, DERIVED_RESCALE)
    sd = factory.make("flair_derived", "flair", frames_of(flair_grid, stored), flair_grid.pixel_mm,
                      flair_grid.thickness_mm, flair_grid.slice_spacing_mm, DERIVED_RESCALE, window_cw, "FLAIR")
    sd.image_type = PROTOCOLS["flair_derived"].image_type
    return sd


def render_decoys(kinds: list[str], plan: AcquisitionPlan, renderer: SeriesRenderer, factory: SeriesFactory,
                  rng: np.random.Generator, slices: int, t1_variant: str, scale: float) -> dict[str, SeriesData]:
    """Render the localizer, T1 and DWI decoys among ``kinds`` (the derived copy is made from the FLAIR).

    Args:
        kinds: Decoy kinds requested.
        plan: Poses and grids (decoys use the FLAIR head pose).
        renderer / factory: Intensities and series identity of the study.
        rng: Geometry jitter stream.
        slices: Slice count of the 2D decoys (as T2/FLAIR).
        t1_variant: ``"3d"`` (sagittal MPRAGE-like) or ``"2d"`` (axial SE).
        scale: Matrix factor at constant field of view.
    """
    phantom, pose, centre = renderer.phantom, plan.flair_pose, plan.head_centre
    spacing, thick = plan.flair_grid.slice_spacing_mm, plan.flair_grid.thickness_mm

    def scaled(n: int) -> int:
        return max(MIN_DECOY_MATRIX, int(round(n * scale)))

    out: dict[str, SeriesData] = {}
    if "localizer" in kinds:
        frames = []
        for plane in (SAGITTAL, CORONAL, AXIAL):
            n = scaled(256)
            g = SeriesGrid.centred(centre + rng.uniform(-5, 5, size=3), plane, n, n, 1, 256.0 / n, 7.0, 7.0)
            labels, _ = sample_labels(phantom, g, pose, 1)
            stored, _ = to_stored(renderer.image(labels, g, "LOCALIZER", f"noise-loc-{len(frames)}"), (1.0, 0.0))
            frames += frames_of(g, stored)
        pixel = 256.0 / scaled(256)
        out["localizer"] = factory.make("localizer", "localizer", frames, (pixel, pixel), 7.0, None, (1.0, 0.0),
                                        (600.0, 1200.0), "LOCALIZER")
    if "t1" in kinds:
        if t1_variant == "3d":
            n, nz = scaled(144), scaled(96)
            g = SeriesGrid.centred(centre + rng.uniform(-3, 3, size=3), SAGITTAL, n, n, nz, 230.4 / n,
                                   153.6 / nz, 153.6 / nz)
        else:
            n = scaled(256)
            g = SeriesGrid.centred(plan.flair_grid.centre(), AXIAL, n, n, slices, 230.4 / n, spacing, thick)
        labels, _ = sample_labels(phantom, g, pose, 1)
        stored, values = to_stored(renderer.image(labels, g, "T1", "noise-t1"), (1.0, 0.0))
        out["t1"] = factory.make("t1", f"t1_{t1_variant}", frames_of(g, stored), g.pixel_mm, g.thickness_mm,
                                 g.slice_spacing_mm, (1.0, 0.0), window(values), "T1")
    if "dwi" in kinds:
        n = scaled(128)
        g = SeriesGrid.centred(centre + rng.uniform(-3, 3, size=3), AXIAL, n, n, slices, 230.4 / n, spacing, thick)
        labels, _ = sample_labels(phantom, g, pose, 1)
        frames = []
        for b in DWI_B_VALUES:
            values = renderer.image(labels, g, "DWI_B0" if b == 0 else "DWI_B1000", f"noise-dwi-{int(b)}",
                                    dwi_lut(phantom, b))
            stored, _ = to_stored(values, (1.0, 0.0))
            extra = {"DiffusionBValue": b, "SequenceName": "*ep_b0" if b == 0 else f"*ep_b{int(b)}t"}
            frames += frames_of(g, stored, extra)
        out["dwi"] = factory.make("dwi", "dwi", frames, g.pixel_mm, thick, spacing, (1.0, 0.0), (400.0, 800.0),
                                  "DIFFUSION")
    return out
