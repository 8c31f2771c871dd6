"""Writing a model set folder in the format the app loads (``operators.model_manifest``)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from operators.model_manifest import MANIFEST_FORMAT, ModelSet, load_model_set, sha256_file, write_manifest

logger = logging.getLogger(__name__)


@dataclass
class MemberExport:
    """A trained member to export.

    Attributes:
        name: Member name.
        architecture: Network architecture (``operators.networks``).
        hyperparameters: Its hyperparameters.
        input_key: ``"<contrast>@<grid>"`` or ``"clinical"``.
        fold_files: Weight files (state dicts), one per fold; copied into the set.
        calibration: The manifest's ``calibration`` entry (``PlattCalibration.as_dict()``), or None.
    """

    name: str
    architecture: str
    hyperparameters: dict[str, Any]
    input_key: str
    fold_files: Sequence[Path]
    calibration: dict[str, Any] | None = None


@dataclass
class ModelSetExport:
    """Everything ``write_model_set`` needs besides the members."""

    name: str
    version: str
    synthetic: bool
    intended_use: str
    grids: dict[str, dict[str, Any]]
    ensembles: dict[str, dict[str, Any]]
    primary: str
    preprocessing: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    intended_population: dict[str, Any] | None = None


def write_model_set(folder: str | Path, meta: ModelSetExport, members: Sequence[MemberExport],
                    model_card_text: str | None = None) -> ModelSet:
    """Copy fold weights into ``folder/weights/``, write ``manifest.yaml`` (+ card) and load it back.

    Returns:
        The model set as the app loads it (validated and checksummed).
    """
    folder = Path(folder)
    (folder / "weights").mkdir(parents=True, exist_ok=True)
    members_out: dict[str, Any] = {}
    for m in members:
        folds = []
        for k, src in enumerate(m.fold_files):
            rel = f"weights/{m.name}.fold{k}.pt"
            dst = folder / rel
            if Path(src).resolve() != dst.resolve():
                tmp = dst.with_suffix(".tmp")
                tmp.write_bytes(Path(src).read_bytes())
                os.replace(tmp, dst)
            folds.append({"file": rel, "sha256": sha256_file(dst)})
        members_out[m.name] = {"architecture": m.architecture, "hyperparameters": dict(m.hyperparameters),
                               "input": m.input_key, "folds": folds}
        if m.calibration:
            members_out[m.name]["calibration"] = dict(m.calibration)
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT, "name": meta.name, "version": meta.version, "synthetic": meta.synthetic,
        "intended_use": meta.intended_use,
    }
    if meta.intended_population is not None:
        manifest["intended_population"] = dict(meta.intended_population)
    if model_card_text is not None:
        (folder / "MODEL_CARD.md").write_text(model_card_text, encoding="utf-8")
        manifest["model_card"] = "MODEL_CARD.md"
    manifest.update({"preprocessing": meta.preprocessing, "grids": meta.grids, "members": members_out,
                     "ensembles": meta.ensembles, "primary": meta.primary})
    manifest.update(meta.extra)
    write_manifest(manifest, folder)
    model_set = load_model_set(folder)
    logger.info("model set written to %s (identity %s)", folder, model_set.identity[:12])
    return model_set


def threshold_block(fused: Mapping[str, Any], n_cases: int) -> dict[str, Any] | float:
    """The manifest's ``threshold:`` block for one ensemble of ``fusion.json`` (a plain number when fixed)."""
    rule = fused.get("threshold_rule") or {"rule": "fixed"}
    value = round(float(fused["threshold"]), 6)
    if rule.get("rule") == "fixed":
        return value
    m = fused["oof_metrics"]
    return {"value": value, "rule": rule["rule"], **({"target": rule["target"]} if "target" in rule else {}),
            "description": fused.get("threshold_rule_text", ""),
            "fitted_on": f"out-of-fold predictions of {n_cases} training cases",
            "metrics": {"estimated_by": "cross-fitted out-of-fold (threshold chosen on the other folds)",
                        "sensitivity": round(m["sensitivity"], 4),
                        "sensitivity_ci": [round(m["sensitivity_ci_low"], 4), round(m["sensitivity_ci_high"], 4)],
                        "specificity": round(m["specificity"], 4),
                        "specificity_ci": [round(m["specificity_ci_low"], 4), round(m["specificity_ci_high"], 4)],
                        "n_positive": m["n_positive"], "n_negative": m["n_negative"]}}


def ensembles_mapping(ensembles: Mapping[str, Mapping[str, float]], thresholds: Mapping[str, Any] | None = None,
                      descriptions: Mapping[str, str] | None = None,
                      withheld: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """Build the manifest's ``ensembles`` mapping from weights per ensemble.

    Args:
        ensembles: Member weights per ensemble.
        thresholds: Threshold (number or block) per ensemble.
        descriptions: Free text per ensemble.
        withheld: Why an ensemble's score must not be reported (it has not learned); the app
            then reports "no prediction" with this reason instead of a probability.
    """
    out: dict[str, dict[str, Any]] = {}
    for name, weights in ensembles.items():
        t = (thresholds or {}).get(name, 0.5)
        rounded = {m: round(float(w), 6) for m, w in weights.items()}
        largest = max(rounded, key=lambda m: rounded[m])  # rounding must keep the sum exactly 1
        rounded[largest] = round(1.0 - sum(w for m, w in rounded.items() if m != largest), 6)
        entry: dict[str, Any] = {"weights": rounded,
                                 "threshold": dict(t) if isinstance(t, Mapping) else float(t)}
        if descriptions and name in descriptions:
            entry["description"] = descriptions[name]
        if withheld and withheld.get(name):
            entry["withheld"] = withheld[name]
        out[name] = entry
    return out
