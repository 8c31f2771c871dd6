"""Model card (Markdown) for a trained model set."""

from __future__ import annotations

import datetime as dt
from typing import Any, Mapping

from training.config import TrainingConfig

_REFERENCES = """\
- WAE-Net: Wang et al., AJNR 2023;44:1373-1383, doi 10.3174/ajnr.A8053 (ResNet3D-34 per contrast + clinical
  FCNN, equal-weight late fusion; test AUC 0.908 on 60 children, single centre).
- eTSC-Net: Zhao et al., Sci Rep 2026;16:8410, doi 10.1038/s41598-026-39728-5 (EfficientNet3D-B0 on T2W and
  FLAIR, fused 0.6 T2W + 0.4 FLAIR; test AUC 0.833 on 19 children, single centre).
"""


def _fmt(x: Any, digits: int = 3) -> str:
    try:
        return f"{float(x):.{digits}f}"
    except (TypeError, ValueError):
        return str(x)


def _metrics_table(rows: Mapping[str, Mapping[str, Any]]) -> str:
    lines = ["| scorer | n | AUC (95% CI) | accuracy | sensitivity | specificity | Brier |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, m in rows.items():
        lines.append(f"| {name} | {m['n']} | {_fmt(m['auc'])} ({_fmt(m['auc_ci_low'])}-{_fmt(m['auc_ci_high'])}) "
                     f"| {_fmt(m['accuracy'])} | {_fmt(m['sensitivity'])} | {_fmt(m['specificity'])} "
                     f"| {_fmt(m['brier'])} |")
    return "\n".join(lines)


def render_model_card(config: TrainingConfig, training: Mapping[str, Any], fusion: Mapping[str, Any],
                      evaluation: Mapping[str, Any] | None = None, size_mb: float | None = None,
                      data_description: str = "") -> str:
    """Render the model card.

    Args:
        config: The training config (members, recipes, grids, ensembles, intended use).
        training: Member -> fold summaries (from ``trainer.train``).
        fusion: ``fusion.json`` content (weights and out-of-fold metrics).
        evaluation: ``evaluation.json`` on held-out cases, if available.
        size_mb: Total size of the weight files.
        data_description: Where the training cases came from.
    """
    out = [f"# Model card: {config.name} {config.version}", ""]
    if config.synthetic:
        out += ["> **Trained on SYNTHETIC data. This is not a clinical model.** It was trained on studies produced by",
                "> this project's synthetic generator, not on patients. Its outputs carry no information about a real",
                "> child. Every report made with it says so.", ""]
    out += ["## Intended use", "", config.intended_use or "(not stated)", ""]
    out += ["## Data", "", data_description or "(not stated)", "",
            f"Cross-validation: {config.folds} folds, stratified by label, seed {config.seed}.", ""]
    if config.notes:
        out += ["## Differences from the published models", "", config.notes, ""]
    out += ["## Members", "", "| member | architecture | hyperparameters | input | recipe | grid |",
            "| --- | --- | --- | --- | --- | --- |"]
    for m in config.members.values():
        grid = config.grids.get(m.input_key.partition("@")[2])
        g = f"{list(grid.shape)} at {list(grid.spacing_mm)} mm" if grid else "4 clinical variables"
        r = m.recipe
        out.append(f"| {m.name} | {m.architecture} | {m.hyperparameters or 'published size'} | {m.input_key} | "
                   f"{r.loss} loss, Adam lr {r.lr:g}, batch {r.batch_size}, {r.epochs} epochs"
                   f"{', rotation/flip augmentation' if r.augment else ''} | {g} |")
    out += ["", "Per fold, the checkpoint with the best validation AUC is kept; at inference the fold models'",
            "probabilities are averaged per member and members are fused by the ensemble weights below.", ""]
    out += ["## Training (cross-validation)", "", "| member | fold | best epoch | validation AUC | train/val cases |",
            "| --- | --- | --- | --- | --- |"]
    for m, folds in training.items():
        for f in folds:
            out.append(f"| {m} | {f.get('fold')} | {f.get('best_epoch')} | {_fmt(f.get('best_val_auc'))} | "
                       f"{f.get('n_train')}/{f.get('n_val')} |")
    out += ["", "## Ensembles", ""]
    for name, e in fusion.get("ensembles", {}).items():
        primary = " (primary)" if name == config.primary else ""
        out.append(f"- **{name}**{primary}: weights {e['weights']} ({e['weight_rule']}); weights searched on "
                   f"out-of-fold predictions (0.1 steps): {e['searched_weights']} (OOF AUC "
                   f"{_fmt(e['searched_oof_auc'])}); threshold {e['threshold']}.")
    calibrated = {m: e["calibration"] for m, e in fusion.get("members", {}).items() if e.get("calibration")}
    if calibrated:
        out += ["", "Member probabilities are calibrated before fusion (Platt scaling, sigmoid(slope x logit(p) +",
                "intercept), fitted on the out-of-fold predictions; the ranking, and so each member's AUC, is",
                "unchanged): " + "; ".join(f"{m} slope {_fmt(c['slope'])}, intercept {_fmt(c['intercept'])}"
                                            for m, c in calibrated.items()) + "."]
    out += ["", "## Out-of-fold metrics (training cases)", "",
            _metrics_table({**fusion.get("members", {}),
                            **{n: e["oof_metrics"] for n, e in fusion.get("ensembles", {}).items()}}), ""]
    if evaluation:
        out += [f"## Held-out evaluation ({evaluation['n_cases']} cases not used in training)", "",
                _metrics_table({**evaluation.get("members", {}), **evaluation.get("ensembles", {})}), "",
                "Calibration: see `calibration.png` beside the evaluation report.", ""]
    out += ["AUC 95% CIs: stratified percentile bootstrap (2000 resamples). Accuracy, sensitivity and specificity",
            "at the ensemble threshold (0.5 for members).", ""]
    out += ["## Preprocessing", "",
            "Identical in training and deployment: the app's own stages (series selection, T2-to-FLAIR rigid",
            "registration, brain extraction, brain min-max normalisation, FLAIR3 = FLAIR^1.55 x T2^1.45, resampling",
            "to each model grid with `operators.model_grid.to_model_grid`). Cases are prepared by",
            "`python -m training prepare` from study folders.", ""]
    out += ["## Limitations", "",
            "- Small single-centre published cohorts; no external validation of the published methods.",
            "- Scores are not calibrated to any population the model was not trained on.",
            "- A member whose input is missing is left out and the remaining weights renormalised; such results",
            "  are flagged in the report and are less reliable.", ""]
    if size_mb is not None:
        out += [f"Model set size: {size_mb:.1f} MB.", ""]
    out += ["## References", "", _REFERENCES,
            f"Generated by `python -m training card` on {dt.date.today().isoformat()}.", ""]
    return "\n".join(out)
