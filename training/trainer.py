"""k-fold cross-validation training of ensemble members, resumable after interruption.

Work folder layout (everything needed to resume)::

    workdir/config.yaml                 the training config used (a resume must use the same)
    workdir/split.json                  case ids per outer fold and each fold's inner validation cases
    workdir/members/<m>/fold<k>.state.pt   last completed epoch: model, optimiser, best so far, history
    workdir/members/<m>/fold<k>.best.pt    state_dict of the best-inner-validation-AUC epoch (fold finished)
    workdir/members/<m>/fold<k>.oof.json   that model's predictions on the outer fold's cases

Scheme (nested, no selection on the predictions that are reported): the cases are
split into ``folds`` outer folds by ``StratifiedGroupKFold`` (stratified by label,
grouped by the pseudonymous patient key so that repeat studies of one child stay
in one fold). For outer fold k, the remaining cases are split once more in the
same way into an inner training part and an inner validation part (1/``folds``
of them). The network is trained on the inner training part; the epoch is
chosen by AUC on the inner validation part; only the chosen model then predicts
the outer fold, once. Those predictions are the out-of-fold predictions that
calibration, fusion, threshold and metrics use (``training.evaluation``).

Repeated (``repeats: R`` in the config, default 1): the whole nested split is made
R times with different seeds, and every case gets R out-of-fold predictions, one
from each repetition's model that did not see it. Their average is the case's
out-of-fold prediction. At inference the app averages the ``folds`` models of
repetition 0, so with ``repeats`` equal to ``folds`` the out-of-fold prediction
is, like the deployed one, an average of as many models, each trained on as many
cases. A single fold model predicts worse than an average of several, so with
``repeats: 1`` the out-of-fold numbers understate the deployed set. Repetitions
r > 0 are written ``repeat<r>.fold<k>.*``; only repetition 0's weights are exported.

Each epoch seeds torch and numpy from (seed, member, [repetition,] fold, epoch), so a run
resumed from a state file continues exactly as an uninterrupted run would.
The state file is replaced atomically after every epoch; a fold whose
``best.pt`` and ``oof.json`` exist is skipped.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from tqdm import tqdm

from operators.inference import cpu_quota
from operators.networks import build_network
from training.cases import check_grids, list_cases, load_case
from training.config import MemberConfig, TrainingConfig
from training.losses import make_loss
from training.metrics import auc, log_loss
from training.provenance import provenance

logger = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """Training cannot proceed (inconsistent work folder, too few cases...)."""


def _seed(*parts: Any) -> int:
    return zlib.crc32(":".join(str(p) for p in parts).encode()) & 0x7FFFFFFF


def stratified_folds(labels: Sequence[int], k: int, seed: int) -> list[list[int]]:
    """Previous split (label-stratified, not grouped); kept for comparison and old work folders."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    folds: list[list[int]] = [[] for _ in range(k)]
    offset = 0
    for cls in (0, 1):
        idx = np.flatnonzero(labels == cls)
        rng.shuffle(idx)
        for j, i in enumerate(idx):
            folds[(j + offset) % k].append(int(i))
        offset += len(idx)
    return [sorted(f) for f in folds]


def grouped_folds(labels: Sequence[int], groups: Sequence[str], k: int, seed: int) -> list[list[int]]:
    """Indices per fold from ``StratifiedGroupKFold`` (label-stratified, one group never split).

    Raises:
        TrainingError: Too few groups of a class for ``k`` folds, or a fold without both classes
            (its counts are named).
    """
    from sklearn.model_selection import StratifiedGroupKFold

    y = np.asarray(labels)
    for cls in (0, 1):
        n_groups = len({g for g, lab in zip(groups, y) if lab == cls})
        if n_groups < k:
            raise TrainingError(f"class {cls}: {n_groups} patient(s), need at least {k} for {k} folds "
                                "(use fewer --folds or more cases)")
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    folds = [sorted(int(i) for i in test) for _, test in splitter.split(np.zeros(len(y)), y, groups)]
    for j, f in enumerate(folds):
        n_pos = int(y[f].sum())
        if n_pos == 0 or n_pos == len(f):
            raise TrainingError(f"fold {j}: {n_pos} uncontrolled and {len(f) - n_pos} controlled cases; "
                                "each fold needs both classes (use fewer --folds or more cases)")
    return folds


@dataclass
class MemberData:
    """All cases' inputs for one member, in memory (float16 images)."""

    case_ids: list[str]
    labels: np.ndarray
    x: torch.Tensor  # (N, 1, *grid) float16 for images, (N, 4) float32 for clinical
    clinical: bool

    @classmethod
    def load(cls, member: MemberConfig, case_files: Sequence[Path]) -> "MemberData":
        ids, labels, xs = [], [], []
        for path in case_files:
            key = member.input_key
            case = load_case(path, keys=[] if key == "clinical" else [key])
            if key == "clinical":
                vec = case.clinical_vector()
                if vec is None:
                    continue  # clinical record missing: the clinical member cannot learn from this case
                xs.append(torch.tensor(vec, dtype=torch.float32))
            else:
                if key not in case.images:
                    raise TrainingError(f"{path.name}: no input {key}")
                xs.append(torch.from_numpy(case.images[key].astype(np.float16))[None])
            ids.append(case.case_id)
            labels.append(case.label)
        if not xs:
            raise TrainingError(f"member {member.name}: no usable cases")
        return cls(ids, np.asarray(labels, dtype=np.int64), torch.stack(xs), member.input_key == "clinical")


def augment(x: torch.Tensor, rng: np.random.Generator, max_rotation_deg: float = 10.0) -> torch.Tensor:
    """eTSC-Net augmentation: random flips along each axis and a random rotation about the z axis."""
    out = []
    for sample in x:
        for axis in (1, 2, 3):
            if rng.random() < 0.5:
                sample = torch.flip(sample, dims=(axis,))
        angle = math.radians(rng.uniform(-max_rotation_deg, max_rotation_deg))
        c, s = math.cos(angle), math.sin(angle)
        # affine_grid works in (x=last axis, y, z=first spatial axis) order; rotate in the (i, j) plane
        theta = torch.tensor([[[1.0, 0.0, 0.0, 0.0], [0.0, c, -s, 0.0], [0.0, s, c, 0.0]]], dtype=sample.dtype)
        grid = F.affine_grid(theta, [1, *sample.shape], align_corners=False)
        out.append(F.grid_sample(sample[None], grid, mode="bilinear", padding_mode="zeros",
                                 align_corners=False)[0])
    return torch.stack(out)


def _predict(net: torch.nn.Module, x: torch.Tensor, device: torch.device, batch: int = 8) -> np.ndarray:
    net.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            out.append(torch.sigmoid(net(x[i:i + batch].to(device, torch.float32)).float()).reshape(-1).cpu())
    return torch.cat(out).numpy().astype(np.float64)


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:  # an interruption (Ctrl-C) inside torch.save leaves no partial file behind
        tmp.unlink(missing_ok=True)


def _atomic_write_text(text: str, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # processes training other folds share the folder
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def fold_stem(fold: int, repeat: int = 0) -> str:
    """File-name stem of one fold model: ``fold<k>`` (repetition 0) or ``repeat<r>.fold<k>``."""
    return f"fold{fold}" if repeat == 0 else f"repeat{repeat}.fold{fold}"


def train_fold(member: MemberConfig, data: MemberData, train_idx: np.ndarray, val_idx: np.ndarray,
               fold: int, folder: Path, seed: int, device: torch.device, progress: bool = True,
               stop_after_epochs: int | None = None, outer_idx: np.ndarray | None = None,
               repeat: int = 0) -> dict[str, Any]:
    """Train one fold (resuming from its state file) and write its best weights and OOF predictions.

    Args:
        train_idx: Cases the network is trained on (the inner training part).
        val_idx: Cases the epoch is chosen on (the inner validation part).
        outer_idx: The outer fold's cases, predicted once by the chosen model (the out-of-fold
            predictions). None: the validation cases (the previous, optimistic scheme; tests only).
        stop_after_epochs: Stop (as if interrupted) after this many epochs in this
            call; the state file allows resuming. For tests and time-boxed runs.
        repeat: The repetition of the nested split (0 is the one exported).

    Returns:
        Summary: best epoch, best validation AUC, epochs run, seconds.
    """
    folder.mkdir(parents=True, exist_ok=True)
    stem = fold_stem(fold, repeat)
    state_path, best_path, oof_path = (folder / f"{stem}.state.pt", folder / f"{stem}.best.pt",
                                       folder / f"{stem}.oof.json")
    # repetition 0 keeps the seeds of unrepeated runs, so adding repetitions never changes it
    seed_parts: tuple[Any, ...] = (member.name,) if repeat == 0 else (member.name, f"repeat{repeat}")
    if best_path.is_file() and oof_path.is_file():
        return json.loads(oof_path.read_text())["summary"]
    recipe = member.recipe
    torch.manual_seed(_seed(seed, *seed_parts, fold, "init"))
    net = build_network(member.architecture, member.hyperparameters).to(device)
    if data.clinical:
        xs = net.transform_inputs(data.x[train_idx])
        std = xs.std(dim=0)
        net.input_mean.copy_(xs.mean(dim=0))
        net.input_std.copy_(torch.where(std > 1e-3, std, torch.ones_like(std)))
    opt = torch.optim.Adam(net.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    loss_fn = make_loss(recipe.loss, **({"gamma": recipe.focal_gamma} if recipe.loss == "focal" else {}))
    state: dict[str, Any] = {"epoch": 0, "best_auc": -1.0, "best_loss": math.inf, "best_epoch": 0,
                             "best_model": None, "history": [], "seconds": 0.0}
    if state_path.is_file():
        saved = torch.load(state_path, map_location=device, weights_only=False)
        net.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        state = saved["progress"]
        logger.info("%s %s: resuming after epoch %d", member.name, stem, state["epoch"])
    y_train = torch.tensor(data.labels[train_idx], dtype=torch.float32)
    x_val, y_val = data.x[val_idx], data.labels[val_idx]
    epochs_this_call = 0
    bar = tqdm(range(state["epoch"], recipe.epochs), desc=f"{member.name} {stem}", unit="epoch",
               initial=state["epoch"], total=recipe.epochs, disable=not progress, leave=False, position=1)
    for epoch in bar:
        if stop_after_epochs is not None and epochs_this_call >= stop_after_epochs:
            bar.close()
            return {"interrupted_after_epoch": state["epoch"]}
        t0 = time.perf_counter()
        torch.manual_seed(_seed(seed, *seed_parts, fold, epoch))
        rng = np.random.default_rng(_seed(seed, *seed_parts, fold, epoch, "data"))
        order = rng.permutation(len(train_idx))
        net.train()
        losses = []
        bs = recipe.batch_size
        for i in range(0, len(order), bs):
            sel = order[i:i + bs]
            if len(sel) < 2:
                continue  # batch norm needs more than one sample
            xb = data.x[train_idx[sel]].to(torch.float32)
            if recipe.augment and not data.clinical:
                xb = augment(xb, rng)
            xb, yb = xb.to(device), y_train[sel].to(device)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(xb).reshape(-1, 1), yb.reshape(-1, 1))
            loss.backward()
            opt.step()
            losses.append(float(loss.item()))
        p_val = _predict(net, x_val, device)
        val_auc = auc(y_val, p_val) if len(set(y_val.tolist())) == 2 else float("nan")
        val_loss = log_loss(y_val, p_val)
        score = -1.0 if math.isnan(val_auc) else val_auc
        if score > state["best_auc"] or (score == state["best_auc"] and val_loss < state["best_loss"]):
            state.update(best_auc=score, best_loss=val_loss, best_epoch=epoch + 1,
                         best_model={k: v.detach().cpu().clone() for k, v in net.state_dict().items()})
        state["epoch"] = epoch + 1
        state["seconds"] += time.perf_counter() - t0
        state["history"].append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)) if losses else None,
                                 "val_auc": val_auc, "val_loss": val_loss})
        _atomic_save({"model": net.state_dict(), "optimizer": opt.state_dict(), "progress": state}, state_path)
        epochs_this_call += 1
        bar.set_postfix(loss=f"{state['history'][-1]['train_loss'] or 0:.3f}", val_auc=f"{val_auc:.3f}",
                        best=f"{state['best_auc']:.3f}")
    bar.close()
    best = state["best_model"] or {k: v.cpu() for k, v in net.state_dict().items()}
    net.load_state_dict(best)
    _atomic_save(best, best_path)
    outer = val_idx if outer_idx is None else outer_idx
    y_out = data.labels[outer]
    p_out = _predict(net, data.x[outer], device)
    summary = {"fold": fold, "repeat": repeat, "best_epoch": state["best_epoch"], "best_val_auc": state["best_auc"],
               "epochs": state["epoch"], "seconds": round(state["seconds"], 1), "n_train": int(len(train_idx)),
               "n_val": int(len(val_idx)), "n_outer": int(len(outer)),
               "n_outer_positive": int(y_out.sum()),
               "outer_auc": auc(y_out, p_out) if len(set(y_out.tolist())) == 2 else None,
               "selection": "inner validation" if outer_idx is not None else "outer fold (optimistic)"}
    oof = {"summary": summary, "case_ids": [data.case_ids[i] for i in outer], "labels": y_out.tolist(),
           "scores": p_out.tolist(), "history": state["history"]}
    _atomic_write_text(json.dumps(oof, indent=1), oof_path)
    logger.debug("%s %s: best epoch %d, inner validation AUC %.3f", member.name, stem, state["best_epoch"],
                 state["best_auc"])
    return summary


# Config keys that do not change the trained networks (fusion, threshold and wording are re-done by fuse/export;
# more repetitions add networks and leave the existing ones as they are).
_NOT_TRAINING_KEYS = ("name", "version", "notes", "intended_use", "intended_population", "ensembles", "primary",
                      "calibration", "repeats")


def _training_keys(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in raw.items() if k not in _NOT_TRAINING_KEYS}


def prepare_workdir(config: TrainingConfig, cases_dir: Path, workdir: Path) -> dict[str, Any]:
    """Create or check the work folder (config copy and nested fold split); return the split.

    The split holds, per outer fold, its case ids (``folds``) and the inner validation case ids
    chosen from the other folds (``inner_validation``), plus class counts per fold.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    cfg_path = workdir / "config.yaml"
    if cfg_path.is_file():
        saved = yaml.safe_load(cfg_path.read_text())
        if _training_keys(saved) != _training_keys(config.raw):
            raise TrainingError(f"{workdir}: was started with a different config (or other --folds/--epochs); "
                                "use a new work folder")
        had = int(saved.get("repeats", 1))
        if config.repeats < had:
            raise TrainingError(f"{workdir}: has {had} repetitions, the config asks for {config.repeats}; "
                                "use a new work folder for fewer")
        if config.repeats > had:  # repetitions are added; the trained ones stay as they are
            cfg_path.write_text(yaml.safe_dump({**saved, "repeats": config.repeats}, sort_keys=False))
    else:
        cfg_path.write_text(yaml.safe_dump(config.raw, sort_keys=False))
    files = list_cases(cases_dir)
    if len(files) < 2 * config.folds:
        raise TrainingError(f"{cases_dir}: {len(files)} cases, need at least {2 * config.folds} for "
                            f"{config.folds} folds")
    split_path = workdir / "split.json"
    ids, labels, groups, known = [], [], [], {}
    for f in files:
        try:
            case = load_case(f, keys=[])
            check_grids(case.meta, config.grids, f.name)
        except ValueError as exc:
            raise TrainingError(f"{exc} (prepare the cases again with this config)") from exc
        ids.append(case.case_id)
        labels.append(case.label)
        groups.append(case.meta.get("patient_key") or case.case_id)
        known[case.case_id] = {"label": case.label, "study_uid": case.meta.get("study_uid"),
                               "patient_key": case.meta.get("patient_key")}
    if split_path.is_file():
        split = json.loads(split_path.read_text())
        if "inner_validation" not in split:
            raise TrainingError(f"{split_path}: made by an older version without inner validation; "
                                "use a new work folder")
        if sorted(c for f in split["folds"] for c in f) != sorted(ids):
            raise TrainingError(f"{workdir}: the case set changed since the split was made")
    else:
        split = {"seed": config.seed, "scheme": "nested StratifiedGroupKFold (group = patient key)",
                 "n_patients": len(set(groups)), **_nested_split(labels, groups, ids, config, 0),
                 "cases": known}
    repeats = split.setdefault("repeats", [])
    for r in range(len(repeats) + 1, config.repeats):
        repeats.append(_nested_split(labels, groups, ids, config, r))
    _atomic_write_text(json.dumps(split, indent=1), split_path)
    return split


def _nested_split(labels: Sequence[int], groups: Sequence[str], ids: Sequence[str], config: TrainingConfig,
                  repeat: int) -> dict[str, Any]:
    """Outer folds, each fold's inner validation cases and class counts, for one repetition."""
    y = np.asarray(labels)
    seed = config.seed if repeat == 0 else _seed(config.seed, "repeat", repeat)
    outer = grouped_folds(y, groups, config.folds, seed)
    folds, inner, counts = [], [], []
    for k, test in enumerate(outer):
        rest = np.setdiff1d(np.arange(len(ids)), test)
        inner_seed = _seed(config.seed, "inner", k) if repeat == 0 else _seed(seed, "inner", k)
        inner_folds = grouped_folds(y[rest], [groups[i] for i in rest], config.folds, inner_seed)
        inner_val = rest[inner_folds[0]]
        folds.append([ids[i] for i in test])
        inner.append([ids[i] for i in sorted(inner_val)])
        counts.append({"outer": {"n": len(test), "uncontrolled": int(y[test].sum())},
                       "inner_validation": {"n": len(inner_val), "uncontrolled": int(y[inner_val].sum())},
                       "inner_training": {"n": len(rest) - len(inner_val),
                                          "uncontrolled": int(y[rest].sum() - y[inner_val].sum())}})
    return {"folds": folds, "inner_validation": inner, "counts": counts}


def split_repetitions(split: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each repetition's ``folds``/``inner_validation``/``counts`` (repetition 0 first)."""
    first = {k: split[k] for k in ("folds", "inner_validation", "counts")}
    return [first, *split.get("repeats", [])]


def train(config: TrainingConfig, cases_dir: str | Path, workdir: str | Path, members: Sequence[str] | None = None,
          device: str = "auto", progress: bool = True, stop_after_epochs: int | None = None,
          folds: Sequence[int] | None = None) -> dict[str, Any]:
    """Train every (or the named) member with nested k-fold cross-validation (see the module docstring).

    Args:
        folds: Only these outer folds (e.g. one per process or machine, sharing the work folder);
            default all. Folds are independent, so running them apart gives the same result.

    Returns:
        Member -> list of fold summaries (``{"interrupted_after_epoch": n}`` for a fold stopped early).
    """
    cases_dir, workdir = Path(cases_dir), Path(workdir)
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    if dev.type == "cpu":
        torch.set_num_threads(int(os.environ.get("TSC_TRAIN_THREADS", 0)) or cpu_quota())
    workdir.mkdir(parents=True, exist_ok=True)
    runs = workdir / "provenance.json"
    history = json.loads(runs.read_text()) if runs.is_file() else []
    history.append({**provenance(torch.get_num_threads() if dev.type == "cpu" else None, str(dev)),
                    "members": list(members or config.members), "seed": config.seed})
    _atomic_write_text(json.dumps(history, indent=1), runs)
    names = list(members or config.members)
    unknown = [n for n in names if n not in config.members]
    if unknown:
        raise TrainingError(f"unknown member(s) {unknown}; the config has {list(config.members)}")
    split = prepare_workdir(config, cases_dir, workdir)
    files = list_cases(cases_dir)
    repetitions = split_repetitions(split)[:config.repeats]
    wanted = sorted(set(folds)) if folds is not None else list(range(config.folds))
    bad = [k for k in wanted if not 0 <= k < config.folds]
    if bad:
        raise TrainingError(f"--fold {bad}: folds are numbered 0..{config.folds - 1}")
    results: dict[str, Any] = {}
    overall = tqdm(total=len(names) * len(wanted) * len(repetitions), desc="training (member folds)", unit="fold",
                   disable=not progress, position=0)
    for name in names:
        member = config.members[name]
        data = MemberData.load(member, files)
        results[name] = []
        for r, rep in enumerate(repetitions):
            fold_of = {cid: k for k, ids in enumerate(rep["folds"]) for cid in ids}
            folds_of_cases = np.array([fold_of[c] for c in data.case_ids])
            for k in wanted:
                where = f"member {name} fold {k}" + (f" (repetition {r})" if r else "")
                overall.set_postfix_str(where[len("member "):])
                outer_idx = np.flatnonzero(folds_of_cases == k)
                rest = np.flatnonzero(folds_of_cases != k)
                inner_of = set(rep["inner_validation"][k])
                is_inner = np.array([data.case_ids[i] in inner_of for i in rest], dtype=bool)
                train_idx, val_idx = rest[~is_inner], rest[is_inner]
                for part, idx in (("outer fold", outer_idx), ("inner validation", val_idx)):
                    if len(set(data.labels[idx].tolist())) < 2:
                        raise TrainingError(f"{where}: the {part} has {len(idx)} case(s) of one "
                                            "class only (too few usable cases for this member)")
                if len(train_idx) < 2:
                    raise TrainingError(f"{where}: not enough training cases")
                results[name].append(train_fold(member, data, train_idx, val_idx, k, workdir / "members" / name,
                                                config.seed, dev, progress, stop_after_epochs, outer_idx=outer_idx,
                                                repeat=r))
                overall.update(1)
    overall.close()
    return results


def interrupted(results: Mapping[str, Sequence[Mapping[str, Any]]]) -> bool:
    """Whether any fold of a ``train`` result stopped before finishing (``--stop-after-epochs``)."""
    return any("interrupted_after_epoch" in f for folds in results.values() for f in folds)


def fold_weight_files(workdir: str | Path, member: str, folds: int) -> list[Path]:
    """The best-checkpoint files of a finished member."""
    files = [Path(workdir) / "members" / member / f"fold{k}.best.pt" for k in range(folds)]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise TrainingError(f"member {member}: folds not finished ({', '.join(missing)}); run train first")
    return files


def load_oof(workdir: str | Path, member: str, folds: int, repeats: int = 1) -> dict[str, tuple[int, float]]:
    """Out-of-fold predictions of a member: case id -> (label, probability).

    With repetitions, a case's probability is the average of its out-of-fold predictions,
    one per repetition (each from the one model of that repetition that did not see it).
    """
    scores: dict[str, list[float]] = {}
    labels: dict[str, int] = {}
    for r in range(repeats):
        for k in range(folds):
            path = Path(workdir) / "members" / member / f"{fold_stem(k, r)}.oof.json"
            if not path.is_file():
                raise TrainingError(f"member {member}: {path.name} missing; run train first")
            d = json.loads(path.read_text())
            for c, y, s in zip(d["case_ids"], d["labels"], d["scores"]):
                labels[c] = int(y)
                scores.setdefault(c, []).append(float(s))
    return {c: (labels[c], float(np.mean(v))) for c, v in scores.items()}
