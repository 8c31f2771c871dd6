"""Model card (Markdown) for a trained model set, following the TRIPOD+AI checklist.

Everything in it comes from this run: the training config, the fold summaries,
``fusion.json`` (cross-fitted out-of-fold metrics), an optional ``evaluation.json``
(whose held-out status is checked against the training cases, not assumed), and
``provenance.json`` (versions, commit, seeds, threads). The limitations are
written from these numbers.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any, Mapping, Sequence

from training.config import TrainingConfig
from training.metrics import SMALL_CLASS

_REFERENCES = """\
- WAE-Net: Wang et al., AJNR 2023;44:1373-1383, doi 10.3174/ajnr.A8053 (ResNet3D-34 per contrast + clinical
  FCNN, equal-weight late fusion; test AUC 0.908 on 60 children, single centre).
- eTSC-Net: Zhao et al., Sci Rep 2026;16:8410, doi 10.1038/s41598-026-39728-5 (EfficientNet3D-B0 on T2W and
  FLAIR, fused 0.6 T2W + 0.4 FLAIR; test AUC 0.833 on 19 children, single centre).
- TRIPOD+AI: Collins et al., BMJ 2024;385:e078378, doi 10.1136/bmj-2023-078378.
"""

# Figures copied into the model set next to the card (file name -> caption).
FIGURES = {"figures/oof_roc.png": "out-of-fold ROC (cross-fitted), with each ensemble's operating point",
           "figures/oof_calibration.png": "out-of-fold calibration (cross-fitted): cases per bin, Wilson 95% CIs",
           "figures/heldout_roc.png": "held-out ROC",
           "figures/heldout_calibration.png": "held-out calibration: cases per bin, Wilson 95% CIs"}


def _fmt(x: Any, digits: int = 3) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    return "n/a" if math.isnan(v) else f"{v:.{digits}f}"


def _ci(m: Mapping[str, Any], key: str) -> str:
    return f"{_fmt(m[key])} ({_fmt(m[key + '_ci_low'])}-{_fmt(m[key + '_ci_high'])})"


def _metrics_table(rows: Mapping[str, Mapping[str, Any]], auc_key: str = "auc") -> str:
    lines = ["| scorer | n (uncontrolled/controlled) | AUC (95% CI) | threshold | sensitivity (95% CI) | "
             "specificity (95% CI) | Brier |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, m in rows.items():
        n_pos = m.get("n_positive", 0)
        lines.append(f"| {name} | {m['n']} ({n_pos}/{m['n'] - n_pos}) | {_ci(m, 'auc')} | {_fmt(m['threshold'], 3)} "
                     f"| {_ci(m, 'sensitivity')} | {_ci(m, 'specificity')} | {_fmt(m['brier'])} |")
    return "\n".join(lines)


def _warnings(rows: Mapping[str, Mapping[str, Any]]) -> list[str]:
    return [f"- **Warning ({name})**: {w}." for name, m in rows.items() for w in m.get("warnings", [])]


def _half_width(m: Mapping[str, Any]) -> float:
    return (m["auc_ci_high"] - m["auc_ci_low"]) / 2


def render_model_card(config: TrainingConfig, training: Mapping[str, Sequence[Mapping[str, Any]]],
                      fusion: Mapping[str, Any], evaluation: Mapping[str, Any] | None = None,
                      size_mb: float | None = None, data_description: str = "",
                      provenance: Sequence[Mapping[str, Any]] | None = None,
                      held_out: Mapping[str, Any] | None = None, identity: str | None = None,
                      figures: Sequence[str] = (), same_scoring: tuple[bool, list[str]] | None = None) -> str:
    """Render the model card.

    Args:
        config: The training config (members, recipes, grids, ensembles, intended use, overrides).
        training: Member -> fold summaries (``fold<k>.oof.json`` summaries).
        fusion: ``fusion.json`` content.
        evaluation: ``evaluation.json``, if an evaluation was run.
        size_mb: Total size of the weight files.
        data_description: Where the training cases came from.
        provenance: ``provenance.json`` runs (versions, commit, threads).
        held_out: ``provenance.held_out_check`` of the evaluation against the training cases.
        identity: The identity of the model set the card is written for (compared with the evaluation's).
        figures: Figure paths (relative to the model set) that exist.
        same_scoring: When the identities differ, ``provenance.scoring_differences`` between the
            evaluated set and this one (checked from both manifests).
    """
    split = fusion.get("split") or {}
    counts = split.get("counts") or []
    members_fit = fusion.get("members", {})
    ensembles = fusion.get("ensembles", {})
    out = [f"# Model card: {config.name} {config.version}", ""]
    if config.synthetic:
        out += ["> **Trained on SYNTHETIC data. This is not a clinical model.** It was trained on studies produced by",
                "> this project's synthetic generator, not on patients. Its outputs carry no information about a real",
                "> child. Every report made with it says so.", ""]
    out += ["## Intended use", "", config.intended_use or "(not stated)", ""]

    # --- data -------------------------------------------------------------------------------------------------
    n_cases = sum(c["outer"]["n"] for c in counts) if counts else None
    n_pos = sum(c["outer"]["uncontrolled"] for c in counts) if counts else None
    out += ["## Data", "", data_description or "(not stated)", ""]
    if n_cases is not None:
        out += [f"Training cases: **{n_cases}** ({n_pos} uncontrolled at one year, {n_cases - n_pos} controlled) "
                f"from {split.get('n_patients', '?')} patients."]
        clinical = [m for m in config.members.values() if m.input_key == "clinical"]
        for m in clinical:
            n_m = members_fit.get(m.name, {}).get("n")
            if n_m is not None and n_m < n_cases:
                out += [f"{n_cases - n_m} case(s) had no usable clinical record; the {m.name} member was trained "
                        f"and evaluated on the other {n_m}."]
        out += [""]
    if evaluation:
        ev_n, ev_pos = evaluation["n_cases"], evaluation.get("n_positive")
        out += [f"Evaluation cases: **{ev_n}**" + (f" ({ev_pos} uncontrolled, {ev_n - ev_pos} controlled)"
                                                   if ev_pos is not None else "") +
                (f"; {len(evaluation.get('not_analysed') or {})} more could not be analysed by the app"
                 if evaluation.get("not_analysed") else "") + ".", ""]

    # --- validation scheme ------------------------------------------------------------------------------------
    overrides = (config.raw or {}).get("overrides") or {}
    out += ["## Validation scheme", "", fusion.get("scheme", "(not recorded)"), "",
            f"{config.folds} outer folds"
            + (f", {config.repeats} repetitions of the nested split" if config.repeats > 1 else "")
            + f", seed {config.seed}"
            + (f"; command-line overrides of the config: {overrides}" if overrides else "") + ".", ""]
    if counts:
        out += ["| fold | outer fold (uncontrolled/controlled) | inner validation | inner training |",
                "| --- | --- | --- | --- |"]
        for k, c in enumerate(counts):
            cells = [f"{c[p]['n']} ({c[p]['uncontrolled']}/{c[p]['n'] - c[p]['uncontrolled']})"
                     for p in ("outer", "inner_validation", "inner_training")]
            out.append(f"| {k} | " + " | ".join(cells) + " |")
        out += [""]

    # --- model ------------------------------------------------------------------------------------------------
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
    out += ["", "Per fold, the epoch with the best AUC on the inner validation split is kept; that model then",
            "predicts the outer fold once. At inference the fold models' probabilities are averaged per member",
            "and members are fused by the ensemble weights below.", ""]
    out += ["## Training (nested cross-validation)", "",
            "| member | fold | best epoch | inner validation AUC | outer fold AUC | inner train/inner val/outer |",
            "| --- | --- | --- | --- | --- | --- |"]
    for m, folds in training.items():
        for f in folds:
            fold = f"{f.get('fold')}" + (f" (repetition {f['repeat']})" if f.get("repeat") else "")
            out.append(f"| {m} | {fold} | {f.get('best_epoch')}/{f.get('epochs')} | "
                       f"{_fmt(f.get('best_val_auc'))} | {_fmt(f.get('outer_auc'))} | "
                       f"{f.get('n_train')}/{f.get('n_val')}/{f.get('n_outer', '?')} |")
    out += ["", "## Members: has-learned test and calibration", "",
            "A member gets fusion weight only if the 95% bootstrap CI of its out-of-fold AUC excludes 0.5.", "",
            "| member | out-of-fold AUC (95% CI) | learned | Platt slope, intercept |", "| --- | --- | --- | --- |"]
    for name, mf in members_fit.items():
        ci = mf.get("auc_uncalibrated_ci") or [float("nan")] * 2
        cal = mf.get("calibration")
        out.append(f"| {name} | {_fmt(mf.get('auc_uncalibrated'))} ({_fmt(ci[0])}-{_fmt(ci[1])}) | "
                   f"{'yes' if mf.get('learned') else 'NO: ' + str(mf.get('not_learned_reason'))} | "
                   f"{_fmt(cal['slope']) + ', ' + _fmt(cal['intercept']) if cal else 'none'} |")
    out += ["", "## Ensembles", ""]
    for name, e in ensembles.items():
        primary = " (primary)" if name == config.primary else ""
        weights = ", ".join(f"{m} {w:.2f}" for m, w in e["weights"].items())
        out.append(f"- **{name}**{primary}: weights {weights} ({e['weight_rule']}).")
        for m, reason in (e.get("excluded") or {}).items():
            out.append(f"  - {m} gets **no weight**: {reason}.")
        if e.get("searched_weights"):
            out.append(f"  - For comparison, weights searched on the out-of-fold predictions (0.1 steps): "
                       f"{e['searched_weights']} (AUC {_fmt(e.get('searched_oof_auc'))}, in-sample).")
        ft = ", ".join(_fmt(t) for t in e.get("fold_thresholds", []))
        out.append(f"  - Threshold **{_fmt(e['threshold'])}**, chosen by {e.get('threshold_rule_text', 'fixed')} "
                   f"on the out-of-fold fused probabilities of all training cases (cross-fitted per-fold "
                   f"thresholds: {ft}). A fused probability at or above it is reported as uncontrolled.")
        for w in e.get("warnings", []):
            out.append(f"  - **Warning**: {w}.")
    out += [""]

    # --- performance ------------------------------------------------------------------------------------------
    oof_rows = {**{n: m for n, m in members_fit.items()}, **{n: e["oof_metrics"] for n, e in ensembles.items()}}
    out += ["## Out-of-fold performance (training cases, cross-fitted)", "",
            _metrics_table(oof_rows), "",
            "Members: at 0.5 on their calibrated probabilities; ensembles: at the chosen threshold, each fold "
            "called with the threshold fitted on the other folds.", ""]
    out += _warnings(oof_rows)
    in_sample = {n: e["in_sample_metrics"] for n, e in ensembles.items() if e.get("in_sample_metrics")}
    if in_sample:
        out += ["", "The same ensembles with calibration, weights and threshold fitted on all out-of-fold "
                "predictions and scored on them (in-sample, optimistic): " +
                "; ".join(f"{n} AUC {_fmt(m['auc'])}, sensitivity {_fmt(m['sensitivity'])}, specificity "
                          f"{_fmt(m['specificity'])}" for n, m in in_sample.items()) + ".", ""]
    if evaluation:
        check = held_out or {}
        scoring_only = (identity is not None and evaluation.get("identity") != identity and same_scoring is not None
                        and same_scoring[0])
        same_set = identity is None or evaluation.get("identity") == identity or scoring_only
        if check.get("held_out") and same_set:
            title = f"## Held-out evaluation ({evaluation['n_cases']} cases, checked: none was a training case)"
        else:
            title = f"## Evaluation ({evaluation['n_cases']} cases; NOT shown to be held out)"
        ev_withheld = {n: e["withheld"] for n, e in evaluation.get("ensembles", {}).items() if "withheld" in e}
        ev_rows = {**evaluation.get("members", {}),
                   **{n: e for n, e in evaluation.get("ensembles", {}).items() if n not in ev_withheld}}
        out += [title, "", _metrics_table(ev_rows), ""]
        out += [f"{n}: no held-out score; the model set withholds it ({why}), as the app does." for n, why in
                ev_withheld.items()] + ([""] if ev_withheld else [])
        out += ["How it was checked: the evaluated studies' case ids, StudyInstanceUIDs and pseudonymous patient "
                "keys were compared with the training cases': "
                f"{len(check.get('same_case_id', []))} same case id, {len(check.get('same_study_uid', []))} same "
                f"study, {len(check.get('same_patient', []))} same patient, "
                f"{check.get('without_study_uid', '?')} without a StudyInstanceUID to compare.",
                f"Model set identity of the evaluation: `{str(evaluation.get('identity'))[:16]}`"
                + (f"; this set's is `{str(identity)[:16]}`: the manifests were compared and differ only in "
                   f"{', '.join(same_scoring[1])}, which do not change any score" if scoring_only else
                   "" if same_set else f" **differs from this model set's** (`{str(identity)[:16]}`): the "
                   "numbers are for another model set") + ".", ""]
        if evaluation.get("through"):
            out += [f"Run through the app's own pipeline (`{evaluation['through']}`, brain extraction "
                    f"`{evaluation.get('brain_extraction', 'auto')}`).", ""]
        out += _warnings(ev_rows)
        out += ["", "### Out-of-fold vs held-out", "", "| ensemble | out-of-fold AUC (95% CI) | held-out AUC (95% CI) | "
                "difference | smaller CI half-width |", "| --- | --- | --- | --- | --- |"]
        for n, e in ensembles.items():
            if n in ev_rows:
                a, b = e["oof_metrics"], evaluation["ensembles"][n]
                out.append(f"| {n} | {_ci(a, 'auc')} | {_ci(b, 'auc')} | {_fmt(b['auc'] - a['auc'])} | "
                           f"{_fmt(min(_half_width(a), _half_width(b)))} |")
        out += [""]
    out += ["AUC 95% CIs: stratified percentile bootstrap (2000 resamples). Sensitivity and specificity 95% CIs: "
            "Wilson score intervals.", ""]
    shown = [f for f in figures if f in FIGURES]
    if shown:
        out += ["## Figures", ""] + [f"- `{f}`: {FIGURES[f]}" for f in shown] + [""]

    # --- preprocessing, provenance, limitations -----------------------------------------------------------------
    out += ["## Preprocessing", "",
            "Identical in training and deployment: the app's own stages (series selection, T2-to-FLAIR rigid",
            "registration, brain extraction, brain min-max normalisation, FLAIR3 = FLAIR^1.55 x T2^1.45, resampling",
            "to each model grid with `operators.model_grid.to_model_grid`). Cases are prepared by",
            "`python -m training prepare` from study folders, with the site's app configuration.", ""]
    if provenance:
        last = provenance[-1]
        commits = sorted({str(p.get("git_commit")) for p in provenance})
        threads = sorted({str(p.get("torch_threads")) for p in provenance})
        pk = ", ".join(f"{k} {v}" for k, v in (last.get("packages") or {}).items())
        out += ["## Provenance", "",
                f"- Training runs: {len(provenance)} (resumed runs included), from {provenance[0].get('date')} "
                f"to {last.get('date')}; git commit(s) {', '.join(commits)}.",
                f"- Seed {config.seed} (folds, inner splits, initialisation and data order per member/fold/epoch); "
                f"device {last.get('device')}; torch threads {', '.join(threads)}; "
                f"Python {last.get('python')} on {last.get('platform')}.",
                f"- Packages: {pk}.", ""]
    out += ["## Limitations", ""] + _limitations(config, fusion, evaluation, held_out, n_cases, n_pos) + [""]
    if size_mb is not None:
        out += [f"Model set size: {size_mb:.1f} MB.", ""]
    out += ["## TRIPOD+AI checklist (where each item is answered)", "",
            "| item | where |", "| --- | --- |",
            "| title, intended use, target population | title, Intended use |",
            "| data source, dates, participants, outcome (uncontrolled at one year) | Data |",
            "| sample size, class counts, missing data | Data, Validation scheme |",
            "| predictors and preprocessing | Members, Preprocessing |",
            "| model type, training, hyperparameter and epoch selection | Members, Training |",
            "| internal validation without leakage | Validation scheme |",
            "| performance: discrimination with CI | Out-of-fold, Held-out |",
            "| performance: calibration | Figures, Brier in the tables |",
            "| classification threshold and its rule | Ensembles |",
            "| held-out / external evaluation, checked | Held-out evaluation |",
            "| reproducibility: code, versions, seeds | Provenance |",
            "| limitations, risk of misuse | Limitations, Intended use |",
            "", "## References", "", _REFERENCES,
            f"Generated by `python -m training card` on {dt.date.today().isoformat()}.", ""]
    return "\n".join(out)


def _limitations(config: TrainingConfig, fusion: Mapping[str, Any], evaluation: Mapping[str, Any] | None,
                 held_out: Mapping[str, Any] | None, n_cases: int | None, n_pos: int | None) -> list[str]:
    out = []
    if config.synthetic:
        out.append("- Trained and evaluated on synthetic studies only: nothing here says how it performs on "
                   "children's MRI.")
    if n_cases is not None:
        n_neg = n_cases - (n_pos or 0)
        out.append(f"- {n_cases} training cases ({n_pos} uncontrolled, {n_neg} controlled): the out-of-fold AUC "
                   "CIs below show the resulting uncertainty" + (" and the smaller class has fewer than "
                                                                  f"{SMALL_CLASS * 5} cases" if min(n_pos or 0, n_neg) <
                                                                  SMALL_CLASS * 5 else "") + ".")
    for name, e in fusion.get("ensembles", {}).items():
        m = e["oof_metrics"]
        out.append(f"- {name}: out-of-fold AUC {_fmt(m['auc'])} ({_fmt(m['auc_ci_low'])}-{_fmt(m['auc_ci_high'])}); "
                   f"at threshold {_fmt(e['threshold'])}, {round((1 - m['specificity']) * 100)}% of controlled cases "
                   f"are called uncontrolled and {round((1 - m['sensitivity']) * 100)}% of uncontrolled cases are "
                   "missed (out-of-fold).")
        if e.get("excluded"):
            out.append(f"- {name}: {', '.join(e['excluded'])} did not pass the has-learned test and carry no weight; "
                       "the ensemble rests on the remaining members.")
        if e.get("withheld"):
            out.append(f"- {name} is **withheld**: {e['withheld']}. The app reports \"no prediction\" for it "
                       "instead of a probability.")
    not_learned = [n for n, m in fusion.get("members", {}).items() if not m.get("learned", True)]
    if not_learned:
        out.append(f"- Members not shown to have learned: {', '.join(not_learned)}.")
    if evaluation is None:
        out.append("- No held-out evaluation is recorded in this card: the out-of-fold numbers are the only estimate.")
    elif not (held_out or {}).get("held_out"):
        out.append("- The evaluation could not be shown to be held out (see Evaluation); treat its numbers as "
                   "optimistic.")
    else:
        ev_pos = evaluation.get("n_positive") or 0
        out.append(f"- The held-out evaluation has {evaluation['n_cases']} cases ({ev_pos} uncontrolled, "
                   f"{evaluation['n_cases'] - ev_pos} controlled) from the same source as the training data: it is "
                   "internal, not external, validation.")
        for name, e in fusion.get("ensembles", {}).items():
            held = evaluation.get("ensembles", {}).get(name) or {}
            if "auc" not in held:
                continue
            a, gap = e["oof_metrics"], held["auc"] - e["oof_metrics"]["auc"]
            if abs(gap) >= min(_half_width(a), _half_width(held)):
                out.append(f"- {name}: the held-out AUC ({_fmt(held['auc'])}) is {'above' if gap > 0 else 'below'} "
                           f"the out-of-fold AUC ({_fmt(a['auc'])}) by {_fmt(abs(gap))}, more than the smaller CI "
                           "half-width: the two estimates disagree, and neither should be quoted alone.")
    out.append("- Scores are calibrated to the training population's prevalence; another population needs "
               "recalibration and a threshold chosen on its own data.")
    out.append("- A member whose input is missing is left out and the remaining weights renormalised; such results "
               "are flagged in the report and are less reliable.")
    return out
