"""Where the out-of-fold vs held-out gap comes from: one fold model against the average of all folds.

The out-of-fold prediction of a case comes from the one fold model that did not see it. At
inference the app averages all fold models, so the deployed predictor is an ensemble of the
models whose single members the out-of-fold numbers describe. This benchmark scores, per
member, on held-out prepared cases:

* each fold model alone (what the out-of-fold AUC estimates),
* the average of the fold models (what the app runs),

beside the member's pooled out-of-fold AUC from the training work folder (first repetition, and
averaged over the repetitions when the config has ``repeats``). Usage::

    python benchmarks/bench_fold_averaging.py --workdir WORK --cases HELDOUT_CASES [--boot 2000]

``WORK`` is a finished ``python -m training train`` work folder; ``HELDOUT_CASES`` are
case files prepared with the same config (``python -m training prepare``) from studies that
were not used in training. Prints one JSON object. Scores are raw (before Platt
calibration, which is monotone per member and does not change a member's AUC).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True, type=Path)
    p.add_argument("--cases", required=True, type=Path)
    p.add_argument("--boot", type=int, default=2000, help="bootstrap resamples for the 95%% CIs")
    a = p.parse_args()
    sys.path.insert(0, str(REPO))
    from operators.networks import build_network
    from training.cases import list_cases
    from training.config import parse_config
    from training.metrics import auc, auc_bootstrap_ci
    from training.trainer import MemberData, _predict, fold_weight_files, load_oof

    import yaml

    config = parse_config(yaml.safe_load((a.workdir / "config.yaml").read_text()), source="config.yaml")
    files = list_cases(a.cases)
    train_ids = set(json.loads((a.workdir / "split.json").read_text())["cases"])
    torch.set_num_threads(1)
    result: dict[str, object] = {"held_out_cases": len(files), "folds": config.folds}
    for name, member in config.members.items():
        data = MemberData.load(member, files)
        overlap = sorted(set(data.case_ids) & train_ids)
        if overlap:
            raise SystemExit(f"held-out cases used in training: {overlap[:5]}")
        per_fold = []
        for path in fold_weight_files(a.workdir, name, config.folds):
            net = build_network(member.architecture, member.hyperparameters)
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            per_fold.append(_predict(net, data.x, torch.device("cpu")))
        first = load_oof(a.workdir, name, config.folds)
        averaged = load_oof(a.workdir, name, config.folds, config.repeats)

        def scored(y: np.ndarray, s: np.ndarray) -> dict[str, object]:
            lo, hi = auc_bootstrap_ci(y, s, n_boot=a.boot)
            return {"auc": round(auc(y, s), 3), "ci": [round(lo, 3), round(hi, 3)]}

        def pooled(oof: dict) -> dict[str, object]:
            return scored(np.array([v[0] for v in oof.values()]), np.array([v[1] for v in oof.values()]))

        result[name] = {
            "out_of_fold_pooled": pooled(first),
            f"out_of_fold_pooled_{config.repeats}_repetitions_averaged": pooled(averaged),
            "held_out_each_fold": [scored(data.labels, s)["auc"] for s in per_fold],
            "held_out_fold_average": scored(data.labels, np.mean(per_fold, axis=0)),
        }
        fold_aucs = result[name]["held_out_each_fold"]  # type: ignore[index]
        result[name]["held_out_mean_of_single_folds"] = round(float(np.mean(fold_aucs)), 3)  # type: ignore[index]
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
