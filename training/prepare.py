"""Study folders -> training case files, through the app's own stages.

The stages are the ones ``app/pipeline.py`` runs before inference (DICOM
loading, series selection, series -> volume, clinical data, preprocessing,
resampling to each model grid with ``operators.model_grid.to_model_grid``), so a
network sees the same input in training and in deployment.

Input layout: ``studies/<case_id>/input/`` (DICOM files + optional
``clinical.json``) with the label in ``studies/<case_id>/truth/truth.json``
(``"label"``, as the synthetic generator writes) or in a labels CSV
(``case_id,label``). A folder without ``input/`` is taken as the input folder itself.

Site settings come from the app's own configuration file (``AppConfig``): the
clinical lookup table (``clinical_lookup``, used when a study has no
``clinical.json``, exactly as in deployment), the series-selection rules and the
brain-extraction method and HD-BET weights. A case whose clinical record is
missing is still written (the imaging members learn from it) and counted in the
summary, so the researcher sees it before training starts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from tqdm import tqdm

from operators.errors import PipelineError
from operators.model_grid import GridSpec, to_model_grid
from operators.model_manifest import CONTRASTS
from training.cases import Case, load_case, read_labels_csv, save_case

logger = logging.getLogger(__name__)

_FIELDS = {"t2": "t2_norm", "flair": "flair_norm", "flair3": "flair3"}


def study_label(study_dir: Path, labels: Mapping[str, int] | None) -> int:
    """The study's label from the labels mapping, else ``truth/truth.json``."""
    if labels is not None:
        if study_dir.name not in labels:
            raise KeyError(f"{study_dir.name}: not in the labels CSV")
        return labels[study_dir.name]
    truth = study_dir / "truth" / "truth.json"
    if not truth.is_file():
        raise KeyError(f"{study_dir.name}: no truth/truth.json and no labels CSV")
    label = json.loads(truth.read_text())["label"]
    if label not in (0, 1):
        raise ValueError(f"{study_dir.name}: label must be 0 or 1")
    return int(label)


def pseudonym(value: str) -> str:
    """A stable pseudonymous key (SHA-256 prefix) for a patient ID, so case files never hold the ID itself."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:16]


@dataclass
class PrepareSummary:
    """Outcome of ``prepare_studies``: counts a researcher checks before training."""

    done: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    clinical_missing: dict[str, str] = field(default_factory=dict)  # case id -> reason
    labels: dict[int, int] = field(default_factory=lambda: {0: 0, 1: 0})


class CasePreparer:
    """Runs the app's pre-inference stages on study folders (brain extractor loaded once).

    Args:
        grids: Model grids to resample onto (every contrast is written for every grid).
        app_config: The app's configuration (series rules, clinical lookup table, brain
            extraction and HD-BET weights are taken from it, as in deployment).
    """

    def __init__(self, grids: Mapping[str, GridSpec], app_config: Any = None) -> None:
        from app.config import AppConfig
        from operators.brain_extraction import BrainExtractor
        from operators.clinical_data import SiteLookupTable
        from operators.series_selection import load_rules

        cfg = app_config if app_config is not None else AppConfig()
        self.grids = dict(grids)
        self.rules = load_rules(cfg.series_rules)
        self.lookup = SiteLookupTable.from_csv(cfg.clinical_lookup) if cfg.clinical_lookup else None
        self.extractor = BrainExtractor(cfg.brain_extraction, hdbet_weights=cfg.hdbet_weights,
                                        models_dir=cfg.models, device=cfg.device, engine=cfg.inference_engine,
                                        openvino_cache=cfg.openvino_cache)

    def case(self, input_dir: Path, case_id: str, label: int) -> Case:
        """Preprocess one study into a case.

        Raises:
            PipelineError: The study cannot be analysed (the same errors as the app).
        """
        from operators.clinical_data import clinical_data_for_study
        from operators.dicom_loading import load_study
        from operators.preprocessing import preprocess
        from operators.series_selection import select_series
        from operators.volume_conversion import convert_selected

        t0 = time.perf_counter()
        study = load_study(input_dir)
        selection = select_series(study, self.rules)
        t2 = convert_selected(selection.t2)
        flair = convert_selected(selection.flair)
        clinical = clinical_data_for_study(study, self.lookup)
        age = clinical.age_at_imaging_months.value if clinical.age_at_imaging_months else None
        pre = preprocess(t2, flair, extractor=self.extractor, patient_age_months=age)
        images = {f"{c}@{g}": to_model_grid(getattr(pre, _FIELDS[c]), pre.brain_mask, spec)
                  for g, spec in self.grids.items() for c in CONTRASTS}
        vec = clinical.as_vector()
        first = study.first_dataset()
        patient_id = str(getattr(first, "PatientID", "") or "") if first is not None else ""
        meta: dict[str, Any] = {
            # grouping key for the folds (repeat scans of one child stay on one side) and the
            # identifiers a held-out check compares; the patient ID itself is never stored
            "patient_key": pseudonym(patient_id) if patient_id else None,
            "study_uid": study.study_instance_uid,
            "grids": {g: {"shape": list(s.shape), "spacing_mm": list(s.spacing_mm)} for g, s in self.grids.items()},
            "clinical_missing_reason": clinical.missing_reason,
            "clinical_sources": sorted({v.source for v in (clinical.age_at_onset_months, clinical.infantile_spasms,
                                                             clinical.asm_count_ge_3) if v is not None}),
            "brain_extraction_method": pre.brain_extraction_method,
            "brain_volume_ml": pre.brain_volume_ml,
            "quality_flags": [f.code for f in pre.flags],
            "seconds": round(time.perf_counter() - t0, 2),
        }
        return Case(case_id, label, images, np.array(vec if vec is not None else [np.nan] * 4, np.float32), meta)


def prepare_studies(studies: Path, out: Path, grids: Mapping[str, GridSpec], labels_csv: Path | None = None,
                    progress: bool = True, overwrite: bool = False, app_config: Any = None) -> PrepareSummary:
    """Prepare every study folder below ``studies`` into ``out``.

    Args:
        app_config: The app's ``AppConfig`` (site series rules, clinical lookup, brain extraction).

    Returns:
        Counts of cases written (or already present), failures with reasons, and cases without a
        usable clinical record (the clinical member will not learn from those).
    """
    labels = read_labels_csv(labels_csv) if labels_csv else None
    if not studies.is_dir():
        raise FileNotFoundError(f"{studies}: no such folder of studies")
    folders = sorted(p for p in studies.iterdir() if p.is_dir())
    preparer = CasePreparer(grids, app_config)
    summary = PrepareSummary()
    for folder in tqdm(folders, desc="prepare", unit="study", disable=not progress):
        case_id = folder.name
        target = out / f"{case_id}.npz"
        input_dir = folder / "input" if (folder / "input").is_dir() else folder
        try:
            if target.is_file() and not overwrite:
                case = load_case(target, keys=[])
            else:
                case = preparer.case(input_dir, case_id, study_label(folder, labels))
                save_case(out, case)
        except (PipelineError, KeyError, ValueError) as exc:
            summary.failed[case_id] = str(exc).strip("'\"")
            logger.warning("%s not prepared: %s", case_id, summary.failed[case_id])
            continue
        summary.done += 1
        summary.labels[case.label] += 1
        if case.clinical_vector() is None:
            summary.clinical_missing[case_id] = case.meta.get("clinical_missing_reason") or "incomplete record"
    return summary
