"""Fusion on out-of-fold predictions, and evaluation of a model set on held-out cases.

``fuse_oof``: per member, Platt scaling (when the config asks for
``calibration: platt``) and the has-learned test; per ensemble, weights (equal,
explicit, or searched in 0.1 steps; a member that has not learned gets none)
and the decision threshold by the configured rule. All of it is fitted on the
out-of-fold predictions for export and, for the reported out-of-fold metrics,
cross-fitted (see ``SCHEME``); written to ``workdir/fusion.json`` with
calibration and ROC PNGs.

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
from typing import Any, Mapping

import numpy as np
from tqdm import tqdm

from operators.datatypes import Prediction
from operators.errors import InferenceError
from operators.inference import EnsembleRunner, MemberInputs, RunnerOptions, fuse
from operators.model_manifest import load_model_set
from training.cases import check_grids, list_cases, load_case
from training.config import TrainingConfig
from training.fusion import apply_fusion, fit_fusion
from training.metrics import calibration_plot, describe_rule, evaluate_scores, metrics_from_predictions, roc_plot
from training.trainer import load_oof

logger = logging.getLogger(__name__)


SCHEME = ("nested cross-validation: outer folds by StratifiedGroupKFold (stratified by label, grouped by "
          "patient); in each outer fold the epoch is chosen on an inner validation split of the training part, "
          "and the chosen model predicts the outer fold once. Calibration, the has-learned test, fusion weights "
          "and the threshold are cross-fitted for the reported out-of-fold metrics (fitted on the other outer "
          "folds' predictions, applied to the fold's own); the exported values are fitted on all out-of-fold "
          "predictions.")
REPEATED = (" The nested split was made {r} times with different seeds; each case's out-of-fold prediction is "
            "the average of its {r} out-of-fold predictions (one per repetition, each from the model that did not "
            "see it), as the app averages the {k} fold models of the first repetition, the ones exported. "
            "Cross-fitting uses the first repetition's folds.")


def fuse_oof(config: TrainingConfig, workdir: str | Path, n_boot: int = 2000) -> dict[str, Any]:
    """Fit calibration, fusion and thresholds on out-of-fold predictions; cross-fitted out-of-fold metrics.

    Writes ``fusion.json``, ``oof_calibration.png`` and ``oof_roc.png`` in the work folder.
    """
    workdir = Path(workdir)
    split = json.loads((workdir / "split.json").read_text())
    fold_of = {c: k for k, ids in enumerate(split["folds"]) for c in ids}
    oof = {m: load_oof(workdir, m, config.folds, config.repeats) for m in config.members}
    all_cases = sorted(fold_of)
    ens_members = {n: list(e.members) for n, e in config.ensembles.items()}
    final = fit_fusion(config, oof, n_boot=n_boot)
    # Cross-fitting: each fold scored by a fit on the other folds only.
    crossfit: dict[str, dict[str, float]] = {n: {} for n in [*config.members, *config.ensembles]}
    calls: dict[str, dict[str, int]] = {n: {} for n in config.ensembles}
    fold_thresholds: dict[str, list[float]] = {n: [] for n in config.ensembles}
    fold_excluded: dict[str, list[list[str]]] = {n: [] for n in config.ensembles}
    for k in range(config.folds):
        inside = {m: {c: v for c, v in p.items() if fold_of[c] != k} for m, p in oof.items()}
        fit = fit_fusion(config, inside, n_boot=n_boot)
        scored = apply_fusion(fit, oof, ens_members, [c for c in all_cases if fold_of[c] == k])
        for n, values in scored.items():
            crossfit[n].update(values)
        for n in config.ensembles:
            t = fit.ensembles[n].threshold
            fold_thresholds[n].append(t)
            fold_excluded[n].append(sorted(fit.ensembles[n].excluded))
            calls[n].update({c: int(v >= t) for c, v in scored[n].items()})
    scheme = SCHEME if config.repeats == 1 else SCHEME + REPEATED.format(r=config.repeats, k=config.folds)
    result: dict[str, Any] = {"scheme": scheme, "split": {"scheme": split.get("scheme"),
                                                          "n_patients": split.get("n_patients"),
                                                          "counts": split.get("counts")},
                              "members": {}, "ensembles": {}}
    label = {c: y for p in oof.values() for c, (y, _) in p.items()}
    curves: dict[str, tuple[list[int], list[float]]] = {}
    for m in config.members:
        ids = sorted(crossfit[m])
        y, s = [label[c] for c in ids], [crossfit[m][c] for c in ids]
        mf = final.members[m]
        result["members"][m] = {**evaluate_scores(y, s, n_boot=n_boot).as_dict(),
                                "auc_uncalibrated": mf.auc, "auc_uncalibrated_ci": list(mf.auc_ci),
                                "calibration": mf.calibration.as_dict() if mf.calibration else None,
                                "learned": mf.learned, "not_learned_reason": mf.reason}
        curves[m] = (y, s)
    operating = {}
    for name, ens in config.ensembles.items():
        ef = final.ensembles[name]
        ids = sorted(crossfit[name])
        y, s = [label[c] for c in ids], [crossfit[name][c] for c in ids]
        metrics = metrics_from_predictions(y, s, [calls[name][c] for c in ids], ef.threshold, n_boot=n_boot)
        in_sample = apply_fusion(final, oof, ens_members, all_cases)[name]
        ids_in = sorted(in_sample)
        y_in = [label[c] for c in ids_in]
        result["ensembles"][name] = {
            "weights": ef.weights, "weight_rule": ens.weights if isinstance(ens.weights, str) else "explicit",
            "excluded": ef.excluded, "searched_weights": ef.searched_weights, "searched_oof_auc": ef.searched_auc,
            "threshold": ef.threshold, "threshold_rule": ens.threshold_rule or {"rule": "fixed"},
            "threshold_rule_text": describe_rule(ens.threshold_rule), "fold_thresholds": fold_thresholds[name],
            "fold_excluded": fold_excluded[name], "warnings": ef.warnings, "withheld": ef.withheld,
            "n_cases": len(ids),
            "oof_metrics": metrics.as_dict(),
            # the same fit applied to the predictions it was fitted on: optimistic, shown for comparison only
            "in_sample_metrics": evaluate_scores(y_in, [in_sample[c] for c in ids_in], threshold=ef.threshold,
                                                 n_boot=n_boot).as_dict()}
        curves[name] = (y, s)
        operating[name] = ef.threshold
    calibration_plot(curves, workdir / "oof_calibration.png", title="Out-of-fold calibration (cross-fitted)")
    roc_plot({n: curves[n] for n in config.ensembles}, workdir / "oof_roc.png",
             title="Out-of-fold ROC (cross-fitted)", operating_points=operating)
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
    rows, not_analysed = [], {}
    for path in tqdm(files, desc="evaluate", unit="case", disable=not progress):
        case = load_case(path)
        check_grids(case.meta, model_set.grids, path.name)
        inputs = MemberInputs(images=case.images, clinical=case.clinical_vector(),
                              missing={} if case.clinical_vector() is not None else
                              {"clinical": case.meta.get("clinical_missing_reason") or "no clinical data"})
        scores, left_out = runner.member_fold_scores(inputs)
        row: dict[str, Any] = {"case_id": case.case_id, "label": case.label,
                               "study_uid": case.meta.get("study_uid"), "patient_key": case.meta.get("patient_key")}
        for m, s in scores.items():
            row[m] = float(np.mean(s))
        try:
            for name, ens in model_set.ensembles.items():
                if ens.withheld:
                    continue  # as in the app: no score is reported for it
                try:
                    pred: Prediction = fuse(ens, scores, left_out, model_set.members)
                except InferenceError:
                    if name == model_set.primary:
                        raise
                    continue  # as in the app: this ensemble has no result for this case
                row[name] = pred.fused_score
                row[f"{name}:renormalised"] = pred.weights_renormalised
        except InferenceError as exc:  # the app would call the study not analysable
            not_analysed[case.case_id] = exc.reason
            continue
        rows.append(row)
    if not rows:
        raise ValueError(f"{cases_dir}: no case could be scored")
    return write_report(rows, model_set, out_dir, n_boot, extra={"not_analysed": not_analysed})


_PIPELINE: Any = None  # one StudyPipeline per evaluation worker process


def _start_worker(app_config: Any) -> None:
    global _PIPELINE
    import logging as _logging

    from app.pipeline import StudyPipeline

    _logging.getLogger().setLevel(_logging.WARNING)
    _PIPELINE = StudyPipeline(app_config)


def _score_study(folder: Path, out_dir: Path, labels: Mapping[str, int] | None) -> tuple[str, Any]:
    """Run one study through the worker's pipeline: ("row", scores) or ("not_analysed", reason)."""
    from training.prepare import study_label

    input_dir = folder / "input" if (folder / "input").is_dir() else folder
    result = _PIPELINE.run(input_dir, out_dir / "outputs" / folder.name)
    if not result.analysed or result.prediction is None:
        return "not_analysed", str(result.error)
    p = result.prediction
    row: dict[str, Any] = {"case_id": folder.name, "label": study_label(folder, labels),
                           **study_identifiers(input_dir)}
    for ens in (p, *p.other_ensembles.values()):
        row.update({m.name: m.score for m in ens.members if m.used})
        row[ens.ensemble] = ens.fused_score
        row[f"{ens.ensemble}:renormalised"] = ens.weights_renormalised
    return "row", row


def evaluate_studies(model_set_dir: str | Path, studies_dir: str | Path, out_dir: str | Path, *,
                     labels_csv: str | Path | None = None, app_config: Any = None, n_boot: int = 2000,
                     progress: bool = True, jobs: int = 1) -> dict[str, Any]:
    """Score held-out study folders through the deployed pipeline (``app.pipeline.StudyPipeline``).

    Each study goes through DICOM loading, series selection, conversion,
    preprocessing, inference and the SR writer exactly as in deployment, with the
    site's app configuration (series rules, clinical lookup table, brain
    extraction); a study the app cannot analyse is listed with its reason and
    left out of the metrics.

    Args:
        app_config: The app's ``AppConfig`` (its ``models`` is replaced by ``model_set_dir``).
        jobs: Worker processes, each with its own pipeline (results do not depend on it).
    """
    from concurrent.futures import ProcessPoolExecutor
    from dataclasses import replace

    from app.config import AppConfig
    from app.pipeline import find_model_set
    from operators.output_config import OutputConfig
    from training.prepare import read_labels_csv

    labels = read_labels_csv(Path(labels_csv)) if labels_csv else None
    cfg = replace(app_config if app_config is not None else AppConfig(), models=Path(model_set_dir),
                  outputs=OutputConfig(pdf=False, result_page=False))  # the SRs suffice
    model_set = load_model_set(find_model_set(Path(model_set_dir)))
    out_dir = Path(out_dir)
    folders = sorted(p for p in Path(studies_dir).iterdir() if p.is_dir())
    results: dict[str, tuple[str, Any]] = {}
    bar = tqdm(total=len(folders), desc="evaluate", unit="study", disable=not progress)
    if jobs <= 1:
        _start_worker(cfg)
        for folder in folders:
            results[folder.name] = _score_study(folder, out_dir, labels)
            bar.update(1)
    else:
        with ProcessPoolExecutor(max_workers=jobs, initializer=_start_worker, initargs=(cfg,)) as pool:
            futures = {pool.submit(_score_study, folder, out_dir, labels): folder.name for folder in folders}
            from concurrent.futures import as_completed

            for fut in as_completed(futures):
                results[futures[fut]] = fut.result()
                bar.update(1)
    bar.close()
    rows = [v for k, (kind, v) in sorted(results.items()) if kind == "row"]
    not_analysed = {k: v for k, (kind, v) in sorted(results.items()) if kind == "not_analysed"}
    if not rows:
        raise ValueError(f"{studies_dir}: no study could be analysed")
    return write_report(rows, model_set, out_dir, n_boot,
                        extra={"through": "app.pipeline.StudyPipeline", "brain_extraction": cfg.brain_extraction,
                               "not_analysed": not_analysed})


def study_identifiers(input_dir: Path) -> dict[str, str | None]:
    """StudyInstanceUID and pseudonymous patient key of a study folder (from its first readable DICOM file)."""
    import pydicom

    from training.prepare import pseudonym

    for path in sorted(p for p in input_dir.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID", "PatientID"])
        except Exception:  # noqa: BLE001 - not DICOM (clinical.json, ...): try the next file
            continue
        uid = str(getattr(ds, "StudyInstanceUID", "") or "")
        if uid:
            pid = str(getattr(ds, "PatientID", "") or "")
            return {"study_uid": uid, "patient_key": pseudonym(pid) if pid else None}
    return {"study_uid": None, "patient_key": None}


def write_report(rows: list[dict[str, Any]], model_set: Any, out_dir: Path, n_boot: int,
                 extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Metrics per member and ensemble, calibration plot and per-case CSV from scored rows.

    ``extra`` (how the cases were run, which were not analysed) is added to ``evaluation.json``.
    """
    y = [r["label"] for r in rows]
    report: dict[str, Any] = {"model_set": model_set.name, "version": model_set.version,
                              "identity": model_set.identity, "synthetic": model_set.synthetic,
                              "n_cases": len(rows), "n_positive": int(sum(y)), "members": {}, "ensembles": {},
                              "cases": [{k: r.get(k) for k in ("case_id", "study_uid", "patient_key")}
                                        for r in rows]}
    curves = {}
    for m in model_set.members:
        have = [r for r in rows if m in r]
        if have:
            report["members"][m] = evaluate_scores([r["label"] for r in have], [r[m] for r in have],
                                                   n_boot=n_boot).as_dict()
    for name, ens in model_set.ensembles.items():
        if ens.withheld:
            report["ensembles"][name] = {"withheld": ens.withheld}
            continue
        have = [r for r in rows if name in r]
        y_e, s = [r["label"] for r in have], [r[name] for r in have]
        report["ensembles"][name] = evaluate_scores(y_e, s, threshold=ens.threshold, n_boot=n_boot).as_dict()
        report["ensembles"][name]["renormalised_cases"] = sum(bool(r[f"{name}:renormalised"]) for r in have)
        rule = ens.threshold_info.rule if ens.threshold_info else "fixed"
        report["ensembles"][name]["threshold_rule"] = rule
        curves[name] = (y_e, s)
    report["primary"] = model_set.primary
    roc_plot(curves, out_dir / "roc.png", title=f"ROC on {len(rows)} evaluated cases",
             operating_points={n: e.threshold for n, e in model_set.ensembles.items()})
    calibration_plot(curves, out_dir / "calibration.png",
                     title=f"Calibration on {len(rows)} evaluated cases" + (" (synthetic)" if model_set.synthetic
                                                                            else ""))
    report.update(extra or {})
    (out_dir / "evaluation.json").write_text(json.dumps(report, indent=1))
    keys = sorted({k for r in rows for k in r} - {"patient_key"}, key=lambda k: (k not in ("case_id", "label"), k))
    with open(out_dir / "predictions.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return report
