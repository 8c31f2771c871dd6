"""Study folders -> training case files, through the app's own stages.

The stages are the ones ``app/pipeline.py`` runs before inference (DICOM
loading, series selection, series -> volume, clinical data, preprocessing,
resampling to each model grid with ``operators.model_grid.to_model_grid``), so a
network sees the same input in training and in deployment.

Input layout: ``studies/<case_id>/input/`` (DICOM files + optional
``clinical.json``) with the label in ``studies/<case_id>/truth/truth.json``
(``"label"``, as the synthetic generator writes) or in a labels CSV
(``case_id,label``). A folder without ``input/`` is taken as the input folder itself.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from tqdm import tqdm

from operators.errors import PipelineError
from operators.model_grid import GridSpec, to_model_grid
from operators.model_manifest import CONTRASTS
from training.cases import Case, read_labels_csv, save_case

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


class CasePreparer:
    """Runs the app's pre-inference stages on study folders (brain extractor loaded once).

    Args:
        grids: Model grids to resample onto (every contrast is written for every grid).
        brain_extraction: ``"auto"``, ``"hd-bet"`` or ``"fallback"`` (as the app's config).
        hdbet_weights: HD-BET weights folder, if not the default.
        device: Device for HD-BET.
    """

    def __init__(self, grids: Mapping[str, GridSpec], brain_extraction: str = "auto",
                 hdbet_weights: Path | None = None, device: str = "auto") -> None:
        from operators.brain_extraction import BrainExtractor
        from operators.series_selection import load_rules

        self.grids = dict(grids)
        self.rules = load_rules(None)
        self.extractor = BrainExtractor(brain_extraction, hdbet_weights=hdbet_weights, device=device)

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
        clinical = clinical_data_for_study(study, None)
        age = clinical.age_at_imaging_months.value if clinical.age_at_imaging_months else None
        pre = preprocess(t2, flair, extractor=self.extractor, patient_age_months=age)
        images = {f"{c}@{g}": to_model_grid(getattr(pre, _FIELDS[c]), pre.brain_mask, spec)
                  for g, spec in self.grids.items() for c in CONTRASTS}
        vec = clinical.as_vector()
        meta: dict[str, Any] = {
            "grids": {g: {"shape": list(s.shape), "spacing_mm": list(s.spacing_mm)} for g, s in self.grids.items()},
            "clinical_missing_reason": clinical.missing_reason,
            "brain_extraction_method": pre.brain_extraction_method,
            "brain_volume_ml": pre.brain_volume_ml,
            "quality_flags": [f.code for f in pre.flags],
            "seconds": round(time.perf_counter() - t0, 2),
        }
        return Case(case_id, label, images, np.array(vec if vec is not None else [np.nan] * 4, np.float32), meta)


def prepare_studies(studies: Path, out: Path, grids: Mapping[str, GridSpec], labels_csv: Path | None = None,
                    progress: bool = True, overwrite: bool = False, brain_extraction: str = "auto",
                    device: str = "auto") -> tuple[int, dict[str, str]]:
    """Prepare every study folder below ``studies`` into ``out``.

    Returns:
        (number of cases written or already present, case id -> reason for each failure).
    """
    labels = read_labels_csv(labels_csv) if labels_csv else None
    folders = sorted(p for p in studies.iterdir() if p.is_dir())
    preparer = CasePreparer(grids, brain_extraction=brain_extraction, device=device)
    done, failed = 0, {}
    for folder in tqdm(folders, desc="prepare", unit="study", disable=not progress):
        case_id = folder.name
        if (out / f"{case_id}.npz").is_file() and not overwrite:
            done += 1
            continue
        input_dir = folder / "input" if (folder / "input").is_dir() else folder
        try:
            label = study_label(folder, labels)
            save_case(out, preparer.case(input_dir, case_id, label))
            done += 1
        except (PipelineError, KeyError, ValueError) as exc:
            failed[case_id] = str(exc)
            logger.warning("%s not prepared: %s", case_id, exc)
    return done, failed
