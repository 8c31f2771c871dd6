"""Training case files: what the app's preprocessing produces for the models, plus the label.

One ``.npz`` file per study (``<case_id>.npz``), written by ``training prepare``
from the app's own pipeline stages (so training and deployment preprocess
identically):

* ``img:<input key>`` (e.g. ``img:flair@wae``): float16 array of the grid's
  shape, exactly ``operators.model_grid.to_model_grid`` output (stored as
  float16: values are in [0, 1], float16 keeps ~3 decimal digits; the loader
  returns float32);
* ``clinical``: float32[4] in ``ClinicalData.as_vector()`` order, NaN when the
  record is missing or invalid;
* ``label``: int8, 1 = uncontrolled at one year, 0 = controlled;
* ``meta``: JSON text: case id, grids (shape and spacing per grid), the
  clinical ``missing_reason``, preprocessing method and timings, source.

Labels come from the generator's ``truth/truth.json`` (``"label"``) or from a
labels CSV with columns ``case_id,label`` (``case_id`` = the study folder's name).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

logger = logging.getLogger(__name__)

_IMG = "img:"


@dataclass
class Case:
    """One training case."""

    case_id: str
    label: int
    images: dict[str, np.ndarray]
    clinical: np.ndarray  # float32[4], NaN where missing
    meta: dict[str, Any] = field(default_factory=dict)

    def clinical_vector(self) -> list[float] | None:
        return None if np.isnan(self.clinical).any() else [float(v) for v in self.clinical]


def save_case(folder: str | Path, case: Case) -> Path:
    """Write ``folder/<case_id>.npz`` atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {f"{_IMG}{k}": np.asarray(v, dtype=np.float16) for k, v in case.images.items()}
    arrays["clinical"] = np.asarray(case.clinical, dtype=np.float32).reshape(4)
    arrays["label"] = np.asarray(case.label, dtype=np.int8)
    arrays["meta"] = np.asarray(json.dumps({"case_id": case.case_id, **case.meta}, default=str))
    out = folder / f"{case.case_id}.npz"
    tmp = folder / f".{case.case_id}.tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, out)
    return out


def load_case(path: str | Path, keys: Iterable[str] | None = None) -> Case:
    """Read a case file; ``keys`` limits which image inputs are loaded."""
    with np.load(Path(path), allow_pickle=False) as z:
        wanted = set(keys) if keys is not None else None
        images = {n[len(_IMG):]: z[n].astype(np.float32) for n in z.files
                  if n.startswith(_IMG) and (wanted is None or n[len(_IMG):] in wanted)}
        meta = json.loads(str(z["meta"]))
        return Case(case_id=meta.get("case_id", Path(path).stem), label=int(z["label"]), images=images,
                    clinical=z["clinical"].astype(np.float32), meta=meta)


def list_cases(folder: str | Path) -> list[Path]:
    """Case files in a folder, sorted by name."""
    return sorted(p for p in Path(folder).glob("*.npz") if not p.name.startswith("."))


class LabelsError(ValueError):
    """A labels CSV that cannot be used (names the file, row and field)."""


def read_labels_csv(path: str | Path) -> dict[str, int]:
    """``case_id,label`` CSV -> mapping (labels 0/1).

    Raises:
        LabelsError: Unreadable file, missing column, or a bad row (file, row number and field named).
    """
    import csv

    path = Path(path)
    out: dict[str, int] = {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = {"case_id", "label"} - set(reader.fieldnames or ())
            if missing:
                raise LabelsError(f"{path.name}: missing column(s) {', '.join(sorted(missing))} "
                                  f"(header must have case_id,label)")
            for row in reader:
                where = f"{path.name} row {reader.line_num}"
                case_id = (row.get("case_id") or "").strip()
                if not case_id:
                    raise LabelsError(f"{where}: case_id is empty")
                value = (row.get("label") or "").strip()
                if value not in ("0", "1"):
                    raise LabelsError(f"{where} (case {case_id}): label must be 0 or 1, got {value!r}")
                if case_id in out:
                    raise LabelsError(f"{where}: case {case_id} is listed twice")
                out[case_id] = int(value)
    except OSError as exc:
        raise LabelsError(f"{path}: cannot be read ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise LabelsError(f"{path.name}: not UTF-8 text") from exc
    return out


def check_grids(meta: Mapping[str, Any], grids: Mapping[str, Any], where: str) -> None:
    """Raise ``ValueError`` when a case was prepared on other grids than a config/model set expects."""
    have = meta.get("grids", {})
    for name, g in grids.items():
        shape = list(g.shape) if hasattr(g, "shape") else list(g["shape"])
        spacing = list(g.spacing_mm) if hasattr(g, "spacing_mm") else list(g["spacing_mm"])
        got = have.get(name)
        if not got or list(got["shape"]) != shape or \
                not np.allclose(got["spacing_mm"], spacing):
            raise ValueError(f"{where}: prepared for grid {name} {got}, expected shape {shape} spacing {spacing}")


def cases_brain_extraction(folder: str | Path) -> str | None:
    """How a folder's cases were skull-stripped: ``hd-bet``, ``fallback``, or None when mixed or unknown."""
    kinds = set()
    for path in list_cases(folder):
        with np.load(path, allow_pickle=False) as z:
            method = str(json.loads(str(z["meta"])).get("brain_extraction_method", ""))
        kinds.add("hd-bet" if method.startswith("HD-BET") else "fallback" if method.startswith("fallback")
                  else None)
    if len(kinds) != 1 or None in kinds:
        logger.warning("cases in %s do not share one known brain extraction (%s): none declared",
                       folder, ", ".join(sorted(str(k) for k in kinds)) or "no cases")
        return None
    return kinds.pop()
