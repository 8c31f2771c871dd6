"""The words every report uses: one place, so the SR, the result page and the PDF agree.

* Precision: probabilities and thresholds with :data:`PROBABILITY_DECIMALS`
  decimals everywhere (two decimals printed 0.496 as "0.50" beside a 0.50
  threshold), spreads likewise; numeric SR values are rounded the same way.
* Confidence category (:func:`confidence`), the rule written in docs/outputs.md:

  - **borderline**: the threshold lies within the range of the used members'
    probabilities (the members disagree about the side), or the fused
    probability is within :data:`BORDERLINE_MARGIN` of the threshold;
  - **leaning**: the members agree, but the threshold lies within the range of
    the individual fold models' probabilities (some fold models disagree);
  - **consistent**: every fold model of every used member is on the same side.

* Dates for readers: ``24 Sep 2019`` (no ``20190924``, no locale-dependent order).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from operators.datatypes import ClinicalData, Prediction, Preprocessed, QualityFlag, Role, SelectedSeries

PROBABILITY_DECIMALS = 3
BORDERLINE_MARGIN = 0.05
OUTCOME_UNCONTROLLED = "uncontrolled epilepsy at one year"
OUTCOME_CONTROLLED = "controlled epilepsy at one year"
FALLBACK_METHOD_PREFIX = "fallback"
FALLBACK_FLAG = "BRAIN_EXTRACTION_FALLBACK"  # the quality check's flag for the same fact


def prob(value: float | None) -> str:
    """A probability (or threshold, or spread) as reports print it."""
    return "-" if value is None else f"{float(value):.{PROBABILITY_DECIMALS}f}"


def rounded(value: float) -> float:
    """A probability rounded to the printed precision (for numeric SR values)."""
    return round(float(value), PROBABILITY_DECIMALS)


def reader_date(value: object) -> str:
    """``"20190924"`` -> ``"24 Sep 2019"``; anything unreadable -> ``"-"`` or the text unchanged."""
    text = str(value or "").strip()
    if not text:
        return "-"
    try:
        return dt.datetime.strptime(text[:8], "%Y%m%d").strftime("%d %b %Y").lstrip("0")
    except ValueError:
        return text


def outcome(prediction: Prediction) -> str:
    """The predicted class in words."""
    return OUTCOME_UNCONTROLLED if prediction.predicted_uncontrolled else OUTCOME_CONTROLLED


@dataclass(frozen=True)
class Confidence:
    """A verbal confidence category and the sentence that justifies it."""

    category: str
    explanation: str


def _used(prediction: Prediction):
    return [m for m in prediction.members if m.used and m.score is not None]


def confidence(prediction: Prediction) -> Confidence:
    """The verbal confidence category of a prediction (rule in the module docstring)."""
    used = _used(prediction)
    t = prediction.threshold
    scores = [float(m.score) for m in used]
    folds = [float(s) for m in used for s in m.fold_scores] or scores
    low, high = min(scores), max(scores)
    if low <= t <= high and len(scores) > 1:
        return Confidence("borderline", f"the threshold {prob(t)} lies within the members' range "
                                        f"{prob(low)}-{prob(high)}: the members disagree")
    if abs(prediction.fused_score - t) < BORDERLINE_MARGIN:
        return Confidence("borderline", f"the fused probability is within {BORDERLINE_MARGIN:.2f} of "
                                        f"the threshold {prob(t)}")
    if min(folds) <= t <= max(folds):
        return Confidence("leaning", f"the members agree, but the threshold {prob(t)} lies within the "
                                     f"fold models' range {prob(min(folds))}-{prob(max(folds))}")
    return Confidence("consistent", f"all {len(folds)} fold models of the {len(used)} members used are on "
                                    f"the same side of the threshold {prob(t)} "
                                    f"(range {prob(min(folds))}-{prob(max(folds))})")


def headline(prediction: Prediction) -> str:
    """E.g. ``"WAE-Net (primary ensemble): uncontrolled epilepsy at one year, borderline"``."""
    return f"{prediction.ensemble} (primary ensemble): {outcome(prediction)}, {confidence(prediction).category}"


def spread(prediction: Prediction) -> str:
    """The spread of the scores behind the fused probability, in words."""
    used = _used(prediction)
    scores = [float(m.score) for m in used]
    folds = [float(s) for m in used for s in m.fold_scores]
    parts = [f"members {prob(min(scores))}-{prob(max(scores))}"]
    if folds and len(folds) > len(scores):
        parts.append(f"fold models {prob(min(folds))}-{prob(max(folds))}")
    return ", ".join(parts)


def threshold_statement(prediction: Prediction) -> str:
    """What the threshold is, how it was chosen (when the manifest says), what it means."""
    rule = prediction.threshold_rule or {}
    text = (f"Decision threshold {prob(prediction.threshold)} on the fused probability: at or above it "
            f"the result reads '{OUTCOME_UNCONTROLLED}'.")
    if rule.get("rule"):
        text += f" Chosen by the rule: {rule.get('description') or rule['rule']}"
        where = rule.get("fitted_on")
        text += f", on {where}." if where else "."
        metrics = []
        for key, label in (("sensitivity", "sensitivity"), ("specificity", "specificity")):
            value = rule.get(key)
            if isinstance(value, (int, float)):
                ci = rule.get(f"{key}_ci")
                ci_text = (f" (95% CI {float(ci[0]):.2f}-{float(ci[1]):.2f})"
                           if isinstance(ci, (list, tuple)) and len(ci) == 2 else "")
                metrics.append(f"{label} {float(value):.2f}{ci_text}")
        if metrics:
            how = f", {rule['estimated_by']}" if rule.get("estimated_by") else ""
            text += f" At it{how}: " + ", ".join(metrics) + "."
    else:
        text += (" The model set records no rule for choosing it (the published methods used 0.5); "
                 "its sensitivity and specificity are in the model card.")
    return text


def calibration_statement(prediction: Prediction) -> str:
    """Whether the probabilities are calibrated, and what that means."""
    used = _used(prediction)
    calibrated = [m.name for m in used if m.calibration]
    if calibrated and len(calibrated) == len(used):
        return ("Member probabilities are Platt-calibrated on the training cohort's out-of-fold "
                "predictions: a probability of 0.70 means about 7 in 10 training cases with such "
                "scores were uncontrolled. They are not calibrated to this site's population.")
    if calibrated:
        return (f"Only some members are calibrated ({', '.join(calibrated)}); the other probabilities "
                "are raw network outputs, not frequencies.")
    return "Probabilities are raw network outputs, not calibrated: read them as scores, not frequencies."


def degraded_modes(prediction: Prediction, preprocessed: Preprocessed | None) -> list[str]:
    """Everything that makes this result less reliable than a full run, for a prominent notice."""
    notes = []
    method = (preprocessed.brain_extraction_method or "") if preprocessed is not None else ""
    flagged = preprocessed is not None and any(f.code == FALLBACK_FLAG for f in preprocessed.flags)
    if method.startswith(FALLBACK_METHOD_PREFIX) and not flagged:  # the quality flag says it otherwise
        notes.append(f"Brain extraction used the weight-free fallback ({method}), not HD-BET: "
                     "brain masks, and so the scores, are less reliable.")
    if prediction.weights_renormalised:
        left = [f"{m.name} ({m.reason_left_out or 'not given'})" for m in prediction.members if not m.used]
        notes.append("Members left out, weights renormalised over the rest: " + "; ".join(left) + ".")
    if preprocessed is not None:
        notes += [f"{flag.severity.upper()}: {flag.message}" for flag in preprocessed.flags
                  if flag.severity in ("warning", "fail")]
    return notes


def quality_lines(flags: Iterable[QualityFlag]) -> list[str]:
    """Every quality flag, most severe first."""
    order = {"fail": 0, "warning": 1, "info": 2}
    return [f"[{f.severity}] {f.code}: {f.message}"
            for f in sorted(flags, key=lambda f: order.get(f.severity, 3))]


_CLINICAL_LABELS = (
    ("age_at_onset_months", "Age at seizure onset", "months"),
    ("age_at_imaging_months", "Age at imaging", "months"),
    ("infantile_spasms", "Infantile spasms", "yes/no"),
    ("asm_count_ge_3", "Three or more antiseizure medications", "yes/no"),
)


def clinical_lines(clinical: ClinicalData | None) -> list[str]:
    """The clinical inputs with their sources (no patient identifiers)."""
    if clinical is None:
        return ["Clinical inputs: not available to the report."]
    lines = []
    for attribute, label, kind in _CLINICAL_LABELS:
        value = getattr(clinical, attribute)
        if value is None or value.value is None:
            lines.append(f"{label}: not available")
            continue
        shown = ("yes" if value.value else "no") if kind == "yes/no" else f"{value.value:.1f} months"
        lines.append(f"{label}: {shown} (source: {value.source})")
    if clinical.missing_reason:
        lines.append(f"Clinical member not run: {clinical.missing_reason}")
    return lines


def series_lines(selected_series: Sequence[SelectedSeries]) -> list[str]:
    """Each analysed series by number and description, with its UID."""
    lines = []
    for role in (Role.T2, Role.FLAIR):
        for series in selected_series:
            if series.role is not role:
                continue
            first = series.datasets[0] if series.datasets else None
            number = first.get("SeriesNumber", "?") if first is not None else "?"
            description = str(first.get("SeriesDescription", "") or "") if first is not None else ""
            lines.append(f"{role.value}: series {number} \"{description}\" ({len(series.datasets)} images), "
                         f"UID {series.series_instance_uid}")
    return lines


def other_ensemble_lines(prediction: Prediction) -> list[str]:
    """The non-primary ensembles, one line each; a withheld one says "no prediction" and why."""
    return [f"{name}: fused probability {prob(other.fused_score)} -> {outcome(other)}, "
            f"{confidence(other).category} (threshold {prob(other.threshold)})"
            for name, other in (prediction.other_ensembles or {}).items()] + \
        [f"{name}: no prediction ({reason})" for name, reason in (prediction.withheld_ensembles or {}).items()]


def model_card_summary(card_text: str, limit: int = 900) -> str:
    """A short summary of a model card (Markdown): its lead notice, data and limitations.

    Takes the leading blockquote, the first sentence of "## Data", the held-out
    table rows of the ensembles and the "## Limitations" bullets, in that order,
    cut to ``limit`` characters at a sentence end.
    """
    text = card_text.strip()
    if not text:
        return ""
    parts = []
    quote = re.search(r"^((?:>.*\n?)+)", "\n".join(text.splitlines()[1:]).lstrip(), re.MULTILINE)
    if quote:
        parts.append(" ".join(line.lstrip("> ").strip() for line in quote.group(1).splitlines()).strip())
    sections = dict(re.findall(r"^## (.+?)\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL))
    data = sections.get("Data", "").strip()
    if data:
        parts.append(data.split(". ")[0].rstrip(".") + ".")
    held_out = next((body for title, body in sections.items() if title.lower().startswith("held-out")), "")
    rows = [line.strip("| ").split(" | ") for line in held_out.splitlines() if line.startswith("| ")]
    if rows:
        header = rows[0]
        for row in rows[2:]:
            if "Net" in row[0] and len(row) == len(header):
                cells = dict(zip(header, row))
                parts.append(f"Held-out {row[0]}: AUC {cells.get('AUC (95% CI)', '?')}, sensitivity "
                             f"{cells.get('sensitivity', '?')}, specificity {cells.get('specificity', '?')} "
                             f"(n={cells.get('n', '?')}).")
    bullets = ("\n" + sections.get("Limitations", "").strip()).split("\n- ")[1:]
    limits = [" ".join(bullet.split()) for bullet in bullets]
    if limits:
        parts.append("Limitations: " + " ".join(limits))
    summary = re.sub(r"[*`_]{1,2}", "", " ".join(parts)).strip()
    if len(summary) > limit:
        cut = summary[:limit].rfind(". ")
        summary = summary[:cut + 1] if cut > 0 else summary[:limit] + "..."
    return summary


def model_card_summary_from(path: Path | None) -> str:
    """:func:`model_card_summary` of a card file ("" when there is none)."""
    if path is None or not Path(path).is_file():
        return ""
    return model_card_summary(Path(path).read_text(encoding="utf-8"))
