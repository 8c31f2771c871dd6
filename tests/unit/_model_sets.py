"""Tiny model sets for tests: real networks (reduced width) with known, constant outputs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import torch

from operators.networks import build_network
from training.export import MemberExport, ModelSetExport, ensembles_mapping, write_model_set

TINY_HP = {
    "resnet3d-34": {"width_factor": 0.0625},
    "efficientnet3d-b0": {"width_coefficient": 0.25, "depth_coefficient": 0.25},
    "clinical-fcnn": {"hidden": [8, 4]},
}
TINY_GRIDS = {"wae": {"shape": [16, 16, 16], "spacing_mm": [12.0, 12.0, 12.0]},
              "etsc": {"shape": [32, 32, 32], "spacing_mm": [6.0, 6.0, 6.0]}}
# member -> (architecture, input key)
WAE_MEMBERS = {"t2_wae": ("resnet3d-34", "t2@wae"), "flair_wae": ("resnet3d-34", "flair@wae"),
               "flair3_wae": ("resnet3d-34", "flair3@wae"), "clinical": ("clinical-fcnn", "clinical")}
ETSC_MEMBERS = {"t2_etsc": ("efficientnet3d-b0", "t2@etsc"), "flair_etsc": ("efficientnet3d-b0", "flair@etsc")}


def logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def constant_output_net(architecture: str, probability: float | None, seed: int = 0) -> torch.nn.Module:
    """A tiny network whose output is ``probability`` for any input (last layer: zero weights, bias = logit)."""
    torch.manual_seed(seed)
    net = build_network(architecture, TINY_HP[architecture])
    if probability is not None:
        last = {"resnet3d-34": lambda n: n.fc, "efficientnet3d-b0": lambda n: n._fc,
                "clinical-fcnn": lambda n: n.layers[-1]}[architecture](net)
        with torch.no_grad():
            last.weight.zero_()
            last.bias.fill_(logit(probability))
    return net


def make_model_set(folder: Path, fold_probabilities: Mapping[str, Sequence[float | None]],
                   ensembles: Mapping[str, Mapping[str, float]] | None = None, primary: str = "WAE-Net",
                   synthetic: bool = True, calibrations: Mapping[str, Mapping[str, object]] | None = None,
                   withheld: Mapping[str, str] | None = None):
    """Write a model set whose member ``m`` fold ``k`` always outputs ``fold_probabilities[m][k]``.

    ``None`` as a probability keeps the network's random last layer. ``calibrations`` gives members a
    manifest ``calibration`` entry; ``withheld`` marks ensembles the set withholds, with the reason.
    """
    specs = {**WAE_MEMBERS, **ETSC_MEMBERS}
    folder.mkdir(parents=True, exist_ok=True)
    members = []
    for name, probs in fold_probabilities.items():
        arch, key = specs[name]
        files = []
        for k, p in enumerate(probs):
            path = folder / f"src_{name}_{k}.pt"
            torch.save(constant_output_net(arch, p, seed=k).state_dict(), path)
            files.append(path)
        members.append(MemberExport(name, arch, TINY_HP[arch], key, files,
                                    dict(calibrations[name]) if calibrations and name in calibrations else None))
    if ensembles is None:
        wae = [m for m in WAE_MEMBERS if m in fold_probabilities]
        etsc = [m for m in ETSC_MEMBERS if m in fold_probabilities]
        ensembles = {}
        if wae:
            ensembles["WAE-Net"] = {m: 1.0 / len(wae) for m in wae}
        if etsc == ["t2_etsc", "flair_etsc"]:
            ensembles["eTSC-Net"] = {"t2_etsc": 0.6, "flair_etsc": 0.4}
    meta = ModelSetExport(name="tiny-test-set", version="0.0.1", synthetic=synthetic,
                          intended_use="Unit tests only.", grids=TINY_GRIDS,
                          ensembles=ensembles_mapping(ensembles, withheld=withheld), primary=primary)
    model_set = write_model_set(folder / "set", meta, members, model_card_text="# Test model card\n")
    for f in folder.glob("src_*.pt"):
        f.unlink()
    return model_set
