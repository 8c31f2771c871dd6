"""Files written beside the DICOM: clinical.json (input) and the ground truth (truth/)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from . import __version__
from .acquisition import AcquisitionPlan
from .dicom_writer import SeriesData, StudyContext
from .options import StudyOptions
from .phantom import HeadPhantom

CLINICAL_FORMAT = "tsc-clinical/1"
BRAIN_MASK_DEFINITION = (
    "inside the brain hull (cerebrum, cerebellum, brainstem): grey and white matter, deep grey "
    "nuclei, tubers, nodules, ventricles and sulcal CSF; excludes extra-axial CSF, skull, scalp; "
    "a FLAIR voxel is in the mask when at least half of its slab sub-samples are"
)
TRANSFORM_CONVENTION = (
    "ITK fixed=FLAIR, moving=T2: maps a physical point (LPS mm) of the FLAIR acquisition to the "
    "physical point of the same anatomy in the T2 acquisition"
)


def clinical_record(phantom: HeadPhantom, accession_number: str) -> dict[str, Any]:
    """The app's clinical-data record (format ``tsc-clinical/1``); age at imaging comes from DICOM."""
    s = phantom.subject
    return {
        "format": CLINICAL_FORMAT,
        "accession_number": accession_number,
        "age_at_seizure_onset_months": s.age_at_onset_months,
        "infantile_spasms": s.infantile_spasms,
        "asm_count_ge_3": s.asm_count_ge_3,
    }


def write_json(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data, indent=2, default=_json_default) + "\n", encoding="utf-8")
    return path


def write_truth(truth_dir: Path, *, seed: int, sid: str, phantom: HeadPhantom, plan: AcquisitionPlan,
                brain_mask: sitk.Image, tuber_mask: sitk.Image, posterior: dict[str, float],
                clinical: dict[str, Any], ctx: StudyContext, written: dict[str, SeriesData],
                files: dict[str, list[Path]], options: StudyOptions) -> Path:
    """Write masks, transform and ``truth.json``; return the path of ``truth.json``."""
    sitk.WriteImage(brain_mask, str(truth_dir / "brain_mask.nii.gz"), useCompression=True)
    sitk.WriteImage(tuber_mask, str(truth_dir / "tuber_mask.nii.gz"), useCompression=True)
    tfm = plan.t2_to_flair
    sitk.WriteTransform(tfm, str(truth_dir / "t2_to_flair.tfm"))
    subject = phantom.subject
    voxel_ml = float(np.prod(plan.flair_grid.spacing())) / 1000.0
    truth = {
        "generator": "tsc-synth", "generator_version": __version__, "seed": seed, "sid": sid,
        "label": subject.label, "label_meaning": "1 = uncontrolled at one year (positive class), 0 = controlled",
        "posterior_uncontrolled": posterior,
        "clinical": {**clinical, "age_at_imaging_months": round(subject.age_at_imaging_months, 4),
                     "age_at_imaging_days": subject.age_at_imaging_days, "sex": ctx.sex},
        "burden": subject.burden(),
        "subject": subject.to_dict(),
        "tubers": [
            {"index": i, "lobe": t.lobe, "hemisphere": t.hemisphere,
             "radius_mm": round(float(r), 3), "elongation": t.elongation,
             "centre_head_mm": [round(float(v), 4) for v in c],
             "centre_flair_mm": [round(float(v), 4) for v in plan.flair_pose.to_scanner(c)],
             "centre_t2_mm": [round(float(v), 4) for v in plan.t2_pose.to_scanner(c)]}
            for i, (t, c, r) in enumerate(zip(subject.tubers, phantom.tuber_centres(), phantom.tuber_radii()))
        ],
        "transform": {
            "file": "t2_to_flair.tfm", "type": "Euler3DTransform", "convention": TRANSFORM_CONVENTION,
            "center_mm": list(tfm.GetCenter()), "angles_rad": [tfm.GetAngleX(), tfm.GetAngleY(), tfm.GetAngleZ()],
            "translation_mm": list(tfm.GetTranslation()), "matrix": list(tfm.GetMatrix()),
            "rotation_deg": round(plan.rotation_deg(), 4),
            "translation_norm_mm": round(float(np.linalg.norm(plan.motion_translation)), 4),
        },
        "brain_mask": {"file": "brain_mask.nii.gz", "grid": "FLAIR", "definition": BRAIN_MASK_DEFINITION,
                       "volume_ml": round(np.count_nonzero(sitk.GetArrayViewFromImage(brain_mask)) * voxel_ml, 2)},
        "tuber_mask": {"file": "tuber_mask.nii.gz", "grid": "FLAIR",
                       "volume_ml": round(np.count_nonzero(sitk.GetArrayViewFromImage(tuber_mask)) * voxel_ml, 3)},
        "study_instance_uid": ctx.study_uid,
        "frame_of_reference_uid": ctx.frame_of_reference_uid,
        "series": {kind: {"uid": sd.series_uid, "number": sd.series_number, "description": sd.description,
                          "files": len(files[sd.series_uid])} for kind, sd in written.items()},
        "encoding": options.encoding,
        "options": {k: v for k, v in asdict(options).items() if k not in ("subject", "patient_name")},
    }
    return write_json(truth_dir / "truth.json", truth)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, (tuple, set)):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
