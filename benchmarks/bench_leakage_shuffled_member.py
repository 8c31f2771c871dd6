"""How optimistic the previous out-of-fold scheme was: one member trained on shuffled labels, old vs new code.

The clinical member's inputs are permuted across the prepared cases (equivalent to shuffling its
labels; the case labels stay true), then the member is trained and scored out of fold by

* the previous code (commit 069bb9b: epoch chosen by AUC on the very fold whose predictions
  become the out-of-fold predictions, label-stratified folds), and
* the current code (nested: epoch chosen on an inner validation split; grouped folds; the
  has-learned test).

A member without signal should show an out-of-fold AUC near 0.5. Usage::

    python benchmarks/bench_leakage_shuffled_member.py --cases CASES --out OUT [--folds 5] [--seed 0]

Prints one JSON object (AUC with 95% CI per scheme, and what each scheme does with the member).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PREVIOUS = "069bb9b"


def shuffled_copy(cases: Path, out: Path, seed: int) -> None:
    sys.path.insert(0, str(REPO))
    from training.cases import list_cases, load_case, save_case

    files = list_cases(cases)
    loaded = [load_case(f) for f in files]
    have = [i for i, c in enumerate(loaded) if c.clinical_vector() is not None]
    perm = np.random.default_rng(seed).permutation(have)
    for i, case in enumerate(loaded):
        if i in have:
            case.clinical = loaded[perm[have.index(i)]].clinical.copy()
        save_case(out, case)


def start(code_root: Path, args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(code_root), "TSC_TRAIN_THREADS": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "training", *args], cwd=code_root, env=env,
                            stdout=subprocess.DEVNULL)


def oof(workdir: Path, folds: int) -> tuple[list[int], list[float]]:
    y, s = [], []
    for k in range(folds):
        d = json.loads((workdir / "members" / "clinical" / f"fold{k}.oof.json").read_text())
        y += d["labels"]
        s += d["scores"]
    return y, s


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    a.cases, a.out = a.cases.resolve(), a.out.resolve()  # the trainers run in other folders
    shuffled = a.out / "cases-shuffled-clinical"
    if not shuffled.is_dir():
        shuffled_copy(a.cases, shuffled, a.seed)
    sys.path.insert(0, str(REPO))
    from training.fusion import member_has_learned

    result: dict[str, object] = {"cases": len(list(shuffled.glob("*.npz"))), "folds": a.folds}
    with tempfile.TemporaryDirectory() as tmp:
        old_root = Path(tmp) / "previous"
        old_root.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", PREVIOUS, "training", "operators"],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old_root)], input=archive, check=True)
        cfg = yaml_config(Path(tmp), a.folds)
        runs = {}
        for name, root in (("previous", old_root), ("current", REPO)):  # both at once, one thread each
            work = a.out / f"work-{name}"
            if work.exists() and not (work / "members" / "clinical" / f"fold{a.folds - 1}.oof.json").is_file():
                shutil.rmtree(work)
            runs[name] = start(root, ["train", "--config", str(cfg), "--cases", str(shuffled), "--workdir",
                                      str(work), "--members", "clinical", "--no-progress"])
        for name, proc in runs.items():
            if proc.wait() != 0:
                raise SystemExit(f"{name} training failed")
        for name in runs:
            work = a.out / f"work-{name}"
            y, s = oof(work, a.folds)
            learned, reason, auc, (lo, hi) = member_has_learned(y, s)
            result[name] = {"oof_auc": round(auc, 3), "ci": [round(lo, 3), round(hi, 3)],
                            "ci_includes_0.5": lo <= 0.5 <= hi,
                            "fusion_weight": ("0 (has-learned test: " + str(reason) + ")" if name == "current"
                                              and not learned else "as configured (no test)" if name == "previous"
                                              else "as configured")}
    print(json.dumps(result, indent=1))
    return 0


def yaml_config(folder: Path, folds: int) -> Path:
    import yaml

    sys.path.insert(0, str(REPO))
    from training.config import PRESETS_DIR

    raw = yaml.safe_load((PRESETS_DIR / "demo.yaml").read_text())
    raw["folds"] = folds
    for e in raw["ensembles"].values():
        e.pop("threshold", None)  # the previous code knew only numeric thresholds
    path = folder / "demo-shuffled.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


if __name__ == "__main__":
    raise SystemExit(main())
