"""Fusion on out-of-fold predictions, and evaluation of a model set on held-out cases.

``fuse_oof``: per member, Platt scaling fitted on its out-of-fold predictions
(when the config asks for ``calibration: platt``); per ensemble, weights
(equal, explicit, or searched on the (calibrated) out-of-fold predictions in
0.1 steps) and out-of-fold metrics of every member and ensemble; written to
``workdir/fusion.json`` (+ calibration PNG). The out-of-fold metrics use the
calibration fitted on the same predictions (two parameters per member), so
only a held-out evaluation is free of that optimism.

``evaluate_model_set``: runs a model set exactly as the app does
(``EnsembleRunner``) on prepared case files and reports metrics per member and
ensemble (AUC with bootstrap 95% CI, accuracy, sensitivity, specificity at the
ensemble threshold, Brier), a calibration plot and per-case predictions.
``evaluate_studies``: the same report from raw study folders run through the
deployed pipeline itself.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from operators.datatypes import Prediction
from operators.inference import EnsembleRunner, MemberInputs, RunnerOptions, fuse
from operators.model_manifest import load_model_set
from training.calibration import fit_platt
from training.cases import check_grids, list_cases, load_case
from training.config import TrainingConfig
from training.fusion import search_weights
from training.metrics import calibration_plot, evaluate_scores
from training.trainer import load_oof

logger = logging.getLogger(__name__)


def fuse_oof(config: TrainingConfig, workdir: str | Path, n_boot: int = 2000) -> dict[str, Any]:
    """Choose fusion weights and compute out-of-fold metrics; writes ``fusion.json`` and ``oof_calibration.png``."""
    workdir = Path(workdir)
    oof = {m: load_oof(workdir, m, config.folds) for m in config.members}
    result: dict[str, Any] = {"members": {}, "ensembles": {}}
    curves = {}
    for m, preds in oof.items():
        ids = sorted(preds)
        y = [preds[c][0] for c in ids]
        calibration = fit_platt(y, [preds[c][1] for c in ids]) if config.calibration == "platt" else None
        if calibration is not None:
            oof[m] = preds = {c: (lab, calibration.apply(p)) for c, (lab, p) in preds.items()}
        s = [preds[c][1] for c in ids]
        result["members"][m] = {**evaluate_scores(y, s, n_boot=n_boot).as_dict(),
                                "calibration": calibration.as_dict() if calibration else None}
        curves[m] = (y, s)
    for name, ens in config.ensembles.items():
        common = sorted(set.intersection(*(set(oof[m]) for m in ens.members)))
        y = [oof[ens.members[0]][c][0] for c in common]
        scores = {m: [oof[m][c][1] for c in common] for m in ens.members}
        searched, searched_auc = search_weights(y, scores, step=0.1)
        if ens.weights == "search":
            weights = searched
        elif ens.weights == "equal":
            weights = {m: 1.0 / len(ens.members) for m in ens.members}
        else:
            weights = dict(ens.weights)  # type: ignore[arg-type]
        fused = np.sum([weights[m] * np.asarray(scores[m]) for m in ens.members], axis=0)
        metrics = evaluate_scores(y, fused, threshold=ens.threshold, n_boot=n_boot).as_dict()
        result["ensembles"][name] = {"weights": weights, "weight_rule": ens.weights if isinstance(ens.weights, str)
                                     else "explicit", "searched_weights": searched,
                                     "searched_oof_auc": searched_auc, "threshold": ens.threshold,
                                     "n_cases": len(common), "oof_metrics": metrics}
        curves[name] = (y, list(fused))
    calibration_plot(curves, workdir / "oof_calibration.png", title="Out-of-fold calibration")
    (workdir / "fusion.json").write_text(json.dumps(result, indent=1))
    return result


def evaluate_model_set(model_set_dir: str | Path, cases_dir: str | Path, out_dir: str | Path,
                       device: str = "auto", n_boot: int = 2000, progress: bool = True) -> dict[str, Any]:
    """Score prepared cases with a model set as the app does; write metrics, calibration PNG and predictions CSV."""
    model_set = load_model_set(model_set_dir)
    runner = EnsembleRunner(model_set, RunnerOptions(device=device))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = list_cases(cases_dir)
    if not files:
        raise ValueError(f"{cases_dir}: no case files")
    rows = []
    for path in tqdm(files, desc="evaluate", unit="case", disable=not progress):
        case = load_case(path)
        check_grids(case.meta, model_set.grids, path.name)
        inputs = MemberInputs(images=case.images, clinical=case.clinical_vector(),
                              missing={} if case.clinical_vector() is not None else
                              {"clinical": case.meta.get("clinical_missing_reason") or "no clinical data"})
        scores, left_out = runner.member_fold_scores(inputs)
        row: dict[str, Any] = {"case_id": case.case_id, "label": case.label}
        for m, s in scores.items():
            row[m] = float(np.mean(s))
        for name, ens in model_set.ensembles.items():
            pred: Prediction = fuse(ens, scores, left_out, model_set.members)
            row[name] = pred.fused_score
            row[f"{name}:renormalised"] = pred.weights_renormalised
        rows.append(row)
    return write_report(rows, model_set, out_dir, n_boot)


def evaluate_studies(model_set_dir: str | Path, studies_dir: str | Path, out_dir: str | Path, *,
                     labels_csv: str | Path | None = None, brain_extraction: str = "auto", device: str = "auto",
                     n_boot: int = 2000, progress: bool = True) -> dict[str, Any]:
    """Score held-out study folders through the deployed pipeline (``app.pipeline.StudyPipeline``).

    Each study goes through DICOM loading, series selection, conversion,
    preprocessing, inference and the SR writer exactly as in deployment; a study
    the app cannot analyse is listed with its reason and left out of the metrics.
    """
    from app.config import AppConfig
    from app.pipeline import StudyPipeline
    from operators.output_config import OutputConfig
    from training.prepare import read_labels_csv, study_label

    labels = read_labels_csv(Path(labels_csv)) if labels_csv else None
    pipeline = StudyPipeline(AppConfig(models=Path(model_set_dir), brain_extraction=brain_extraction,
                                       device=device, outputs=OutputConfig(pdf=False)))
    model_set = pipeline.runner.model_set
    out_dir = Path(out_dir)
    rows: list[dict[str, Any]] = []
    not_analysed: dict[str, str] = {}
    folders = sorted(p for p in Path(studies_dir).iterdir() if p.is_dir())
    for folder in tqdm(folders, desc="evaluate", unit="study", disable=not progress):
        input_dir = folder / "input" if (folder / "input").is_dir() else folder
        result = pipeline.run(input_dir, out_dir / "outputs" / folder.name)
        if not result.analysed or result.prediction is None:
            not_analysed[folder.name] = str(result.error)
            continue
        p = result.prediction
        row: dict[str, Any] = {"case_id": folder.name, "label": study_label(folder, labels)}
        for ens in (p, *p.other_ensembles.values()):
            row.update({m.name: m.score for m in ens.members if m.used})
            row[ens.ensemble] = ens.fused_score
            row[f"{ens.ensemble}:renormalised"] = ens.weights_renormalised
        rows.append(row)
    if not rows:
        raise ValueError(f"{studies_dir}: no study could be analysed")
    report = write_report(rows, model_set, out_dir, n_boot)
    report["through"] = "app.pipeline.StudyPipeline"
    report["not_analysed"] = not_analysed
    (out_dir / "evaluation.json").write_text(json.dumps(report, indent=1))
    return report


def write_report(rows: list[dict[str, Any]], model_set: Any, out_dir: Path, n_boot: int) -> dict[str, Any]:
    """Metrics per member and ensemble, calibration plot and per-case CSV from scored rows."""
    y = [r["label"] for r in rows]
    report: dict[str, Any] = {"model_set": model_set.name, "version": model_set.version,
                              "identity": model_set.identity, "synthetic": model_set.synthetic,
                              "n_cases": len(rows), "members": {}, "ensembles": {}}
    curves = {}
    for m in model_set.members:
        have = [r for r in rows if m in r]
        if have:
            report["members"][m] = evaluate_scores([r["label"] for r in have], [r[m] for r in have],
                                                   n_boot=n_boot).as_dict()
    for name, ens in model_set.ensembles.items():
        s = [r[name] for r in rows]
        report["ensembles"][name] = evaluate_scores(y, s, threshold=ens.threshold, n_boot=n_boot).as_dict()
        report["ensembles"][name]["renormalised_cases"] = sum(bool(r[f"{name}:renormalised"]) for r in rows)
        curves[name] = (y, s)
    report["primary"] = model_set.primary
    calibration_plot(curves, out_dir / "calibration.png",
                     title=f"Calibration on {len(rows)} held-out cases" + (" (synthetic)" if model_set.synthetic
                                                                            else ""))
    (out_dir / "evaluation.json").write_text(json.dumps(report, indent=1))
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k not in ("case_id", "label"), k))
    with open(out_dir / "predictions.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    return report
