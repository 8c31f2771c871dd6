"""k-fold cross-validation training of ensemble members, resumable after interruption.

Work folder layout (everything needed to resume)::

    workdir/config.yaml                 the training config used (a resume must use the same)
    workdir/split.json                  case ids per fold (stratified by label, fixed by the seed)
    workdir/members/<m>/fold<k>.state.pt   last completed epoch: model, optimiser, best so far, history
    workdir/members/<m>/fold<k>.best.pt    state_dict of the best-validation-AUC epoch (fold finished)
    workdir/members/<m>/fold<k>.oof.json   that model's predictions on the fold's validation cases

Each epoch seeds torch and numpy from (seed, member, fold, epoch), so a run
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
from typing import Any, Sequence

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
from training.metrics import auc

logger = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """Training cannot proceed (inconsistent work folder, too few cases...)."""


def _seed(*parts: Any) -> int:
    return zlib.crc32(":".join(str(p) for p in parts).encode()) & 0x7FFFFFFF


def stratified_folds(labels: Sequence[int], k: int, seed: int) -> list[list[int]]:
    """Validation indices per fold, stratified by label, deterministic from ``seed``."""
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
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train_fold(member: MemberConfig, data: MemberData, train_idx: np.ndarray, val_idx: np.ndarray,
               fold: int, folder: Path, seed: int, device: torch.device, progress: bool = True,
               stop_after_epochs: int | None = None) -> dict[str, Any]:
    """Train one fold (resuming from its state file) and write its best weights and OOF predictions.

    Args:
        stop_after_epochs: Stop (as if interrupted) after this many epochs in this
            call; the state file allows resuming. For tests and time-boxed runs.

    Returns:
        Summary: best epoch, best validation AUC, epochs run, seconds.
    """
    folder.mkdir(parents=True, exist_ok=True)
    state_path, best_path, oof_path = (folder / f"fold{fold}.state.pt", folder / f"fold{fold}.best.pt",
                                       folder / f"fold{fold}.oof.json")
    if best_path.is_file() and oof_path.is_file():
        return json.loads(oof_path.read_text())["summary"]
    recipe = member.recipe
    torch.manual_seed(_seed(seed, member.name, fold, "init"))
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
        logger.info("%s fold %d: resuming after epoch %d", member.name, fold, state["epoch"])
    y_train = torch.tensor(data.labels[train_idx], dtype=torch.float32)
    x_val, y_val = data.x[val_idx], data.labels[val_idx]
    epochs_this_call = 0
    bar = tqdm(range(state["epoch"], recipe.epochs), desc=f"{member.name} fold {fold}", unit="epoch",
               initial=state["epoch"], total=recipe.epochs, disable=not progress, leave=False)
    for epoch in bar:
        if stop_after_epochs is not None and epochs_this_call >= stop_after_epochs:
            bar.close()
            return {"interrupted_after_epoch": state["epoch"]}
        t0 = time.perf_counter()
        torch.manual_seed(_seed(seed, member.name, fold, epoch))
        rng = np.random.default_rng(_seed(seed, member.name, fold, epoch, "data"))
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
        val_loss = float(np.mean(-(y_val * np.log(np.clip(p_val, 1e-7, 1)) +
                                   (1 - y_val) * np.log(np.clip(1 - p_val, 1e-7, 1)))))
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
    p_val = _predict(net, x_val, device)
    summary = {"fold": fold, "best_epoch": state["best_epoch"], "best_val_auc": state["best_auc"],
               "epochs": state["epoch"], "seconds": round(state["seconds"], 1), "n_train": int(len(train_idx)),
               "n_val": int(len(val_idx))}
    oof = {"summary": summary, "case_ids": [data.case_ids[i] for i in val_idx], "labels": y_val.tolist(),
           "scores": p_val.tolist(), "history": state["history"]}
    tmp = oof_path.with_name(f".{oof_path.name}.tmp")
    tmp.write_text(json.dumps(oof, indent=1))
    os.replace(tmp, oof_path)
    logger.info("%s fold %d: best epoch %d, validation AUC %.3f", member.name, fold, state["best_epoch"],
                state["best_auc"])
    return summary


def prepare_workdir(config: TrainingConfig, cases_dir: Path, workdir: Path) -> dict[str, list[str]]:
    """Create or check the work folder (config copy and fold split); return the split (fold -> case ids)."""
    workdir.mkdir(parents=True, exist_ok=True)
    cfg_path = workdir / "config.yaml"
    if cfg_path.is_file():
        if yaml.safe_load(cfg_path.read_text()) != config.raw:
            raise TrainingError(f"{workdir}: was started with a different config; use a new work folder")
    else:
        cfg_path.write_text(yaml.safe_dump(config.raw, sort_keys=False))
    files = list_cases(cases_dir)
    if len(files) < 2 * config.folds:
        raise TrainingError(f"{cases_dir}: {len(files)} cases, need at least {2 * config.folds} for "
                            f"{config.folds} folds")
    split_path = workdir / "split.json"
    ids, labels = [], []
    for f in files:
        case = load_case(f, keys=[])
        check_grids(case.meta, config.grids, f.name)
        ids.append(case.case_id)
        labels.append(case.label)
    if split_path.is_file():
        split = json.loads(split_path.read_text())
        if sorted(c for f in split["folds"] for c in f) != sorted(ids):
            raise TrainingError(f"{workdir}: the case set changed since the split was made")
        return split
    folds = stratified_folds(labels, config.folds, config.seed)
    split = {"seed": config.seed, "folds": [[ids[i] for i in f] for f in folds]}
    split_path.write_text(json.dumps(split, indent=1))
    return split


def train(config: TrainingConfig, cases_dir: str | Path, workdir: str | Path, members: Sequence[str] | None = None,
          device: str = "auto", progress: bool = True, stop_after_epochs: int | None = None) -> dict[str, Any]:
    """Train every (or the named) member with k-fold cross-validation.

    Returns:
        Member -> list of fold summaries.
    """
    cases_dir, workdir = Path(cases_dir), Path(workdir)
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    if dev.type == "cpu":
        torch.set_num_threads(cpu_quota())
    split = prepare_workdir(config, cases_dir, workdir)
    files = list_cases(cases_dir)
    fold_of = {cid: k for k, ids in enumerate(split["folds"]) for cid in ids}
    results: dict[str, Any] = {}
    for name in members or list(config.members):
        if name not in config.members:
            raise TrainingError(f"unknown member {name!r}")
        member = config.members[name]
        data = MemberData.load(member, files)
        folds_of_cases = np.array([fold_of[c] for c in data.case_ids])
        results[name] = []
        for k in range(config.folds):
            val_idx = np.flatnonzero(folds_of_cases == k)
            train_idx = np.flatnonzero(folds_of_cases != k)
            if len(val_idx) == 0 or len(train_idx) < 2:
                raise TrainingError(f"member {name} fold {k}: not enough cases")
            results[name].append(train_fold(member, data, train_idx, val_idx, k, workdir / "members" / name,
                                            config.seed, dev, progress, stop_after_epochs))
    return results


def fold_weight_files(workdir: str | Path, member: str, folds: int) -> list[Path]:
    """The best-checkpoint files of a finished member."""
    files = [Path(workdir) / "members" / member / f"fold{k}.best.pt" for k in range(folds)]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise TrainingError(f"member {member}: folds not finished ({', '.join(missing)}); run train first")
    return files


def load_oof(workdir: str | Path, member: str, folds: int) -> dict[str, tuple[int, float]]:
    """Out-of-fold predictions of a member: case id -> (label, probability)."""
    out: dict[str, tuple[int, float]] = {}
    for k in range(folds):
        path = Path(workdir) / "members" / member / f"fold{k}.oof.json"
        if not path.is_file():
            raise TrainingError(f"member {member}: {path.name} missing; run train first")
        d = json.loads(path.read_text())
        out.update({c: (int(y), float(s)) for c, y, s in zip(d["case_ids"], d["labels"], d["scores"])})
    return out
