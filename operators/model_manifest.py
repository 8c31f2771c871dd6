"""The model manifest: which networks the app runs, on what inputs, with which weights.

A model set is a folder holding ``manifest.yaml``, the fold weight files it
names and a model card. ``load_model_set`` parses and validates the manifest
into typed dataclasses and verifies every weight file's SHA-256 at start-up,
so a broken model set fails before the first study arrives, with a
``ModelConfigurationError`` that names the manifest and the offending field.

Manifest format ``tsc-model-set/1`` (YAML)::

    format: tsc-model-set/1
    name: tsc-demo-synthetic          # free text identifier
    version: 0.1.0
    synthetic: true                   # trained on synthetic data (demo only)
    intended_use: >-
      Demonstration only ...
    model_card: MODEL_CARD.md         # optional, relative to the folder
    intended_population:              # optional; the intended-use gate (operators.intended_use)
      age_years: {min: 0, max: 18}    # inclusive age at imaging; app default when absent
      required_series: [T2, FLAIR]
    preprocessing: {...}              # optional, free-form description (shown in the card)
    grids:                            # model input grids (operators.model_grid.GridSpec)
      wae:  {shape: [128, 128, 128], spacing_mm: [1.5, 1.5, 1.5]}
      etsc: {shape: [256, 256, 128], spacing_mm: [0.75, 0.75, 1.5]}
    members:
      flair_wae:
        architecture: resnet3d-34     # operators.networks.ARCHITECTURES
        hyperparameters: {}           # operators.networks hyperparameters
        input: flair@wae              # <contrast>@<grid>, contrast in t2 | flair | flair3; or "clinical"
        folds:                        # one state_dict (torch.save) per cross-validation fold
          - {file: weights/flair_wae.fold0.pt, sha256: <64 hex>}
        calibration: {method: platt, slope: 1.04, intercept: 0.38}   # optional
      clinical:
        architecture: clinical-fcnn
        input: clinical
        folds: [...]
    ensembles:
      WAE-Net:  {weights: {t2_wae: 0.25, flair_wae: 0.25, flair3_wae: 0.25, clinical: 0.25}, threshold: 0.5}
      eTSC-Net: {weights: {t2_etsc: 0.6, flair_etsc: 0.4}, threshold: 0.5}
    primary: WAE-Net

A member's optional ``calibration`` maps each fold model's probability p to
sigmoid(slope * logit(p) + intercept) before fold averaging and fusion (Platt
scaling, fitted by ``python -m training fuse`` on out-of-fold predictions); the
slope must be positive, so the member's ranking, and its AUC, are unchanged.

An ensemble's ``threshold`` is either a plain number or a block written by
``python -m training fuse`` that records how it was chosen::

    threshold:
      value: 0.62
      rule: youden                  # youden | sensitivity | specificity | fixed
      description: Youden's J (maximum sensitivity + specificity - 1)
      fitted_on: out-of-fold predictions of 200 training cases
      metrics: {sensitivity: 0.81, sensitivity_ci: [0.74, 0.87], specificity: 0.70, ...}

Optional block ``openvino_reduced_precision`` (written by ``python -m training
quantize``; absent = the set runs only in f32): reduced-precision OpenVINO modes
validated on this set's validation cases. A mode is accepted only when its
recorded ``max_abs_probability_diff`` against eager PyTorch f32 is within its
``tolerance`` (at most 1e-3)::

    openvino_reduced_precision:
      int8:                           # an INT8 IR per fold of the listed members (others run f32)
        tolerance: 0.001
        validation: {cases: 12, max_abs_probability_diff: 0.0002, openvino: 2026.4.1, nncf: 3.4.0}
        members:
          t2_wae:
            - {xml: openvino/t2_wae.fold0.int8.xml, xml_sha256: <64 hex>,
               bin: openvino/t2_wae.fold0.int8.bin, bin_sha256: <64 hex>}
      bf16:                           # a bf16 inference hint (CPUs with native bf16); no files
        tolerance: 0.001
        validation: {...}

The IR files listed there are checksummed at start-up like the weight files.

Ensemble weights must be non-negative and sum to 1 (within 1e-6). The model
set's identity (``ModelSet.identity``) is the SHA-256 of the canonical JSON
form of the manifest (which includes every weight file's hash); it changes
whenever anything that affects a score changes, so the SR writer can derive a
new device UID from it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from operators.errors import ModelConfigurationError
from operators.intended_use import IntendedPopulation
from operators.model_grid import GridSpec
from operators.networks import ARCHITECTURES, CLINICAL_FCNN, IMAGE_ARCHITECTURES, check_hyperparameters

logger = logging.getLogger(__name__)

MANIFEST_FORMAT = "tsc-model-set/1"
MANIFEST_NAME = "manifest.yaml"
CLINICAL_INPUT = "clinical"
CONTRASTS = ("t2", "flair", "flair3")
# Five stride-2 stages: smaller grids collapse below the kernels' size.
MIN_GRID_SIZE = {"resnet3d-34": 16, "efficientnet3d-b0": 32}
REDUCED_PRECISION_KEY = "openvino_reduced_precision"
REDUCED_PRECISION_MODES = ("int8", "bf16")
MAX_REDUCED_TOLERANCE = 1e-3
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


@dataclass(frozen=True)
class FoldWeights:
    """One fold model's weight file.

    Attributes:
        path: Absolute path of the ``torch.save``d state dict.
        sha256: Expected SHA-256 (lower-case hex) of the file.
        relpath: The path as written in the manifest (relative to the model set folder).
    """

    path: Path
    sha256: str
    relpath: str


@dataclass(frozen=True)
class IrFiles:
    """An OpenVINO IR and the SHA-256 of its files.

    Attributes:
        xml: The topology file.
        bin: The weights file.
        xml_sha256 / bin_sha256: Expected SHA-256 (lower-case hex).
        origin: Where the expectation comes from (manifest field or cache entry), for errors.
    """

    xml: Path
    bin: Path
    xml_sha256: str
    bin_sha256: str
    origin: str = ""


@dataclass(frozen=True)
class ReducedPrecisionMode:
    """A reduced-precision OpenVINO mode validated on a model set.

    Attributes:
        mode: ``"int8"`` or ``"bf16"``.
        tolerance: Largest probability difference allowed against eager f32 (<= 1e-3).
        validation: What was measured (cases, ``max_abs_probability_diff``, versions).
        members: For ``int8``: member name -> one INT8 IR per fold (empty for ``bf16``); members
            not listed (e.g. the clinical FCNN, whose INT8 form did not validate) run f32.
    """

    mode: str
    tolerance: float
    validation: dict[str, Any]
    members: dict[str, tuple[IrFiles, ...]] = field(default_factory=dict)

    def describe(self) -> str:
        """One line for reports and logs."""
        v = self.validation
        return (f"{self.mode} (validated on {v.get('cases', '?')} cases: max |probability diff| "
                f"{float(v.get('max_abs_probability_diff', float('nan'))):.1e} <= {self.tolerance:g})")


@dataclass(frozen=True)
class PlattCalibration:
    """Platt scaling of a member's probabilities: ``sigmoid(slope * logit(p) + intercept)``.

    Attributes:
        slope: Multiplies the logit; positive, so the order of scores is kept.
        intercept: Added to the scaled logit.
    """

    slope: float
    intercept: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.slope) and self.slope > 0 and math.isfinite(self.intercept)):
            raise ValueError(f"slope must be positive and finite and intercept finite, got slope {self.slope}, "
                             f"intercept {self.intercept}")

    def apply(self, p: float) -> float:
        """Calibrated probability of a raw probability ``p`` (clipped to [1e-7, 1 - 1e-7] first)."""
        p = min(max(float(p), 1e-7), 1.0 - 1e-7)
        z = self.slope * math.log(p / (1.0 - p)) + self.intercept
        return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))

    def describe(self) -> str:
        """One line for reports."""
        return f"platt slope {self.slope:.4g} intercept {self.intercept:.4g}"

    def as_dict(self) -> dict[str, Any]:
        """The manifest form."""
        return {"method": "platt", "slope": self.slope, "intercept": self.intercept}


@dataclass(frozen=True)
class MemberSpec:
    """One ensemble member: a network trained per fold on one input.

    Attributes:
        name: Member name (key in ``members``).
        architecture: One of ``operators.networks.ARCHITECTURES``.
        hyperparameters: Architecture hyperparameters.
        input_key: ``"<contrast>@<grid>"`` or ``"clinical"``.
        contrast: ``"t2"``, ``"flair"``, ``"flair3"`` or None for the clinical member.
        grid: The input grid (None for the clinical member).
        folds: Fold weight files (their predictions are averaged).
        calibration: Applied to each fold model's probability, or None.
    """

    name: str
    architecture: str
    hyperparameters: dict[str, Any]
    input_key: str
    contrast: str | None
    grid: GridSpec | None
    folds: tuple[FoldWeights, ...]
    calibration: PlattCalibration | None = None

    @property
    def is_clinical(self) -> bool:
        return self.input_key == CLINICAL_INPUT


@dataclass(frozen=True)
class ThresholdInfo:
    """How an ensemble's threshold was chosen (the manifest's ``threshold:`` block).

    Attributes:
        rule: The rule's name (``youden``, ``sensitivity``, ``specificity``, ``fixed``).
        description: The rule in words (e.g. "Youden's J (maximum sensitivity + specificity - 1)").
        fitted_on: What the rule was applied to (e.g. "out-of-fold predictions of 200 training cases").
        metrics: Sensitivity/specificity (with CIs) at the threshold, as estimated when it was chosen.
    """

    rule: str
    description: str = ""
    fitted_on: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EnsembleSpec:
    """A weighted-average late fusion of members.

    Attributes:
        name: Ensemble name (e.g. ``"WAE-Net"``).
        weights: Member name -> weight (non-negative, sum 1).
        threshold: Decision threshold on the fused probability.
        description: Optional free text.
        threshold_info: How the threshold was chosen, when the manifest says (None: a plain number).
        withheld: Why this ensemble's score is never reported (e.g. it did not pass the has-learned
            test in training); empty for a reported ensemble. Reports then say "no prediction".
    """

    name: str
    weights: dict[str, float]
    threshold: float = 0.5
    description: str = ""
    threshold_info: ThresholdInfo | None = None
    withheld: str = ""


@dataclass(frozen=True)
class ModelSet:
    """A validated model set.

    Attributes:
        root: Folder holding the manifest.
        manifest_path: The manifest file.
        name / version: Identification of the model set.
        synthetic: True when trained on synthetic data (every report must say so).
        intended_use: Intended-use statement from the manifest.
        grids: Input grids by name.
        members: Members by name.
        ensembles: Ensembles by name.
        primary: Name of the primary ensemble.
        identity: SHA-256 over the canonical manifest (includes weight hashes).
        model_card: Path of the model card, if any.
        preprocessing: Preprocessing description; free-form except ``brain_extraction``
            (``hd-bet`` or ``fallback``: how the training cases were prepared).
        intended_population: Who the model set is for (the intended-use gate);
            the app's default (``declared=False``) when the manifest has none.
        reduced_precision: Validated reduced-precision OpenVINO modes by name (may be empty).
    """

    root: Path
    manifest_path: Path
    name: str
    version: str
    synthetic: bool
    intended_use: str
    grids: dict[str, GridSpec]
    members: dict[str, MemberSpec]
    ensembles: dict[str, EnsembleSpec]
    primary: str
    identity: str
    model_card: Path | None = None
    preprocessing: dict[str, Any] = field(default_factory=dict)
    intended_population: IntendedPopulation = field(
        default_factory=lambda: IntendedPopulation(declared=False))
    reduced_precision: dict[str, ReducedPrecisionMode] = field(default_factory=dict)

    @property
    def trained_brain_extraction(self) -> str | None:
        """The brain extraction its training cases were prepared with (``hd-bet``/``fallback``), if declared."""
        return self.preprocessing.get("brain_extraction")

    @property
    def primary_ensemble(self) -> EnsembleSpec:
        return self.ensembles[self.primary]

    def input_keys(self) -> dict[str, tuple[str, GridSpec]]:
        """Image input keys the members need: key -> (contrast, grid)."""
        return {m.input_key: (m.contrast, m.grid) for m in self.members.values()  # type: ignore[misc]
                if not m.is_clinical}

    def needs_clinical(self) -> bool:
        return any(m.is_clinical for m in self.members.values())


TRAINED_BRAIN_EXTRACTION = ("hd-bet", "fallback")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def canonical_identity(manifest: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON form of a parsed manifest."""
    blob = json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return hashlib.sha256(blob.encode("ascii")).hexdigest()


def parse_input_key(key: str) -> tuple[str | None, str | None]:
    """Split ``"flair@wae"`` into ``("flair", "wae")``; ``"clinical"`` -> ``(None, None)``.

    Raises:
        ValueError: Not of the form ``<contrast>@<grid>`` with a known contrast.
    """
    if key == CLINICAL_INPUT:
        return None, None
    contrast, sep, grid = key.partition("@")
    if not sep or contrast not in CONTRASTS or not grid:
        raise ValueError(f"input must be 'clinical' or '<contrast>@<grid>' with contrast in {CONTRASTS}, "
                         f"got {key!r}")
    return contrast, grid


def load_model_set(path: str | Path, *, verify_checksums: bool = True) -> ModelSet:
    """Load, validate and (by default) checksum a model set.

    Args:
        path: The model set folder (holding ``manifest.yaml``) or the manifest file.
        verify_checksums: Hash every weight file and compare with the manifest.

    Returns:
        The validated ``ModelSet``.

    Raises:
        ModelConfigurationError: Missing/unreadable manifest, a missing or invalid
            field (the message names the field path), a missing weight file or a
            checksum mismatch.
    """
    path = Path(path)
    manifest_path = path / MANIFEST_NAME if path.is_dir() else path
    if not manifest_path.is_file():
        raise ModelConfigurationError(f"model manifest not found: {manifest_path}")
    try:
        data = yaml.safe_load(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ModelConfigurationError(f"{manifest_path}: cannot be read as YAML ({exc})") from exc
    model_set = _parse(data, manifest_path)
    if verify_checksums:
        verify_weight_files(model_set)
        for mode in model_set.reduced_precision.values():
            for irs in mode.members.values():
                for ir in irs:
                    verify_ir(ir)
    logger.info("model set %s %s loaded (identity %s, %d members, primary %s, synthetic=%s)",
                model_set.name, model_set.version, model_set.identity[:12], len(model_set.members),
                model_set.primary, model_set.synthetic)
    return model_set


def verify_weight_files(model_set: ModelSet) -> None:
    """Check that every fold weight file exists and matches its SHA-256.

    Raises:
        ModelConfigurationError: Naming the manifest, member, fold and file.
    """
    for member in model_set.members.values():
        for k, fold in enumerate(member.folds):
            where = f"{model_set.manifest_path}: members.{member.name}.folds[{k}]"
            if not fold.path.is_file():
                raise ModelConfigurationError(f"{where}: weight file not found: {fold.path}")
            actual = sha256_file(fold.path)
            if actual != fold.sha256:
                raise ModelConfigurationError(
                    f"{where}: checksum mismatch for {fold.path.name}: manifest says {fold.sha256}, "
                    f"file has {actual}")


def verify_ir(ir: IrFiles) -> None:
    """Check that both files of an OpenVINO IR exist and match their SHA-256.

    Raises:
        ModelConfigurationError: Naming the file, what was expected and found, and where
            the expectation comes from.
    """
    for path, expected in ((ir.xml, ir.xml_sha256), (ir.bin, ir.bin_sha256)):
        if not path.is_file():
            raise ModelConfigurationError(f"{ir.origin}: OpenVINO IR file not found: {path}")
        actual = sha256_file(path)
        if actual != expected:
            raise ModelConfigurationError(
                f"{ir.origin}: checksum mismatch for OpenVINO IR file {path}: expected {expected}, file has "
                f"{actual} (a corrupted or altered file; restore it, or for a cache entry delete the folder "
                f"{path.parent} so that it is converted again)")


class _Fields:
    """Typed field access that names the field path in every error."""

    def __init__(self, manifest_path: Path) -> None:
        self.manifest_path = manifest_path

    def error(self, where: str, what: str) -> ModelConfigurationError:
        return ModelConfigurationError(f"{self.manifest_path}: {where}: {what}")

    def mapping(self, data: Any, where: str) -> Mapping[str, Any]:
        if not isinstance(data, Mapping):
            raise self.error(where, f"must be a mapping, got {type(data).__name__}")
        return data

    def get(self, data: Mapping[str, Any], key: str, where: str, typ: type | tuple[type, ...],
            default: Any = ...) -> Any:
        path = f"{where}.{key}" if where else key
        if key not in data or data[key] is None:
            if default is ...:
                raise self.error(path, "missing")
            return default
        value = data[key]
        if typ is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, typ) or (typ is not bool and isinstance(value, bool)):
            names = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
            raise self.error(path, f"must be {names}, got {type(value).__name__} {value!r}")
        return value

    def name(self, value: str, where: str) -> str:
        if not _NAME.match(value):
            raise self.error(where, f"invalid name {value!r} (letters, digits, '_', '.', '+', '-')")
        return value


def _parse(data: Any, manifest_path: Path) -> ModelSet:
    f = _Fields(manifest_path)
    root = manifest_path.parent.resolve()
    data = f.mapping(data, "(top level)")
    fmt = f.get(data, "format", "", str)
    if fmt != MANIFEST_FORMAT:
        raise f.error("format", f"unsupported format {fmt!r}, expected {MANIFEST_FORMAT!r}")
    name = f.get(data, "name", "", str)
    version = str(f.get(data, "version", "", (str, int, float)))
    synthetic = f.get(data, "synthetic", "", bool)
    intended_use = f.get(data, "intended_use", "", str).strip()
    if not intended_use:
        raise f.error("intended_use", "must not be empty")
    preprocessing = dict(f.mapping(data.get("preprocessing") or {}, "preprocessing"))
    trained_with = preprocessing.get("brain_extraction")
    if trained_with is not None and trained_with not in TRAINED_BRAIN_EXTRACTION:
        raise f.error("preprocessing.brain_extraction",
                      f"must be one of {', '.join(TRAINED_BRAIN_EXTRACTION)}, got {trained_with!r}")
    population = IntendedPopulation(declared=False)
    if data.get("intended_population") is not None:
        try:
            population = IntendedPopulation.from_dict(data["intended_population"])
        except ValueError as exc:
            raise f.error("intended_population", str(exc)) from exc

    grids: dict[str, GridSpec] = {}
    for gname, gdata in f.mapping(data.get("grids") or {}, "grids").items():
        where = f"grids.{gname}"
        f.name(str(gname), where)
        try:
            grids[gname] = GridSpec.from_dict(gname, f.mapping(gdata, where))
        except ValueError as exc:
            raise f.error(where, str(exc)) from exc

    members: dict[str, MemberSpec] = {}
    members_data = f.mapping(f.get(data, "members", "", Mapping), "members")
    if not members_data:
        raise f.error("members", "no members")
    for mname, mdata in members_data.items():
        members[mname] = _parse_member(f, root, f.name(str(mname), f"members.{mname}"), mdata, grids)

    ensembles: dict[str, EnsembleSpec] = {}
    ens_data = f.mapping(f.get(data, "ensembles", "", Mapping), "ensembles")
    if not ens_data:
        raise f.error("ensembles", "no ensembles")
    for ename, edata in ens_data.items():
        ensembles[ename] = _parse_ensemble(f, f.name(str(ename), f"ensembles.{ename}"), edata, members)

    primary = f.get(data, "primary", "", str)
    if primary not in ensembles:
        raise f.error("primary", f"{primary!r} is not an ensemble (have {sorted(ensembles)})")
    if ensembles[primary].withheld:
        raise f.error("primary", f"the primary ensemble {primary} is withheld ({ensembles[primary].withheld}): "
                                 "a model set must be able to report its primary result")

    card = data.get("model_card")
    card_path = None
    if card is not None:
        card_path = (root / f.get(data, "model_card", "", str)).resolve()
        if not card_path.is_file():
            raise f.error("model_card", f"file not found: {card_path}")

    reduced = _parse_reduced_precision(f, root, data.get(REDUCED_PRECISION_KEY), members)

    return ModelSet(root=root, manifest_path=manifest_path, name=name, version=version, synthetic=synthetic,
                    intended_use=intended_use, grids=grids, members=members, ensembles=ensembles,
                    primary=primary, identity=canonical_identity(data), model_card=card_path,
                    preprocessing=preprocessing, intended_population=population,
                    reduced_precision=reduced)


def _parse_reduced_precision(f: _Fields, root: Path, data: Any, members: Mapping[str, MemberSpec]
                             ) -> dict[str, ReducedPrecisionMode]:
    if data is None:
        return {}
    modes: dict[str, ReducedPrecisionMode] = {}
    for mode, mdata in f.mapping(data, REDUCED_PRECISION_KEY).items():
        where = f"{REDUCED_PRECISION_KEY}.{mode}"
        if mode not in REDUCED_PRECISION_MODES:
            raise f.error(where, f"unknown mode; expected one of {', '.join(REDUCED_PRECISION_MODES)}")
        mdata = f.mapping(mdata, where)
        tolerance = f.get(mdata, "tolerance", where, float)
        if not 0 < tolerance <= MAX_REDUCED_TOLERANCE:
            raise f.error(f"{where}.tolerance", f"must be in (0, {MAX_REDUCED_TOLERANCE:g}], got {tolerance}")
        validation = dict(f.mapping(f.get(mdata, "validation", where, Mapping), f"{where}.validation"))
        diff = f.get(validation, "max_abs_probability_diff", f"{where}.validation", float)
        cases = f.get(validation, "cases", f"{where}.validation", int)
        if cases < 1 or not math.isfinite(diff) or diff > tolerance:
            raise f.error(f"{where}.validation", f"not validated: max_abs_probability_diff {diff} on {cases} "
                                                 f"cases, tolerance {tolerance}")
        irs: dict[str, tuple[IrFiles, ...]] = {}
        if mode == "int8":
            mems = f.mapping(f.get(mdata, "members", where, Mapping), f"{where}.members")
            for mname in mems:
                mw = f"{where}.members.{mname}"
                if mname not in members:
                    raise f.error(mw, f"unknown member (have {sorted(members)})")
                member = members[mname]
                folds = f.get(mems, mname, f"{where}.members", list)
                if len(folds) != len(member.folds):
                    raise f.error(mw, f"{len(folds)} IR entries for {len(member.folds)} folds")
                entries = []
                for k, fd in enumerate(folds):
                    fw = f"{mw}[{k}]"
                    fd = f.mapping(fd, fw)
                    paths, sums = [], []
                    for part in ("xml", "bin"):
                        rel = f.get(fd, part, fw, str)
                        p = (root / rel).resolve()
                        if root not in p.parents:
                            raise f.error(f"{fw}.{part}", f"{rel!r} points outside the model set folder")
                        digest = f.get(fd, f"{part}_sha256", fw, str).lower()
                        if not _SHA256.match(digest):
                            raise f.error(f"{fw}.{part}_sha256", f"must be 64 hex digits, got {digest!r}")
                        paths.append(p)
                        sums.append(digest)
                    entries.append(IrFiles(paths[0], paths[1], sums[0], sums[1],
                                           origin=f"{f.manifest_path}: {fw}"))
                irs[mname] = tuple(entries)
        modes[mode] = ReducedPrecisionMode(mode=mode, tolerance=tolerance, validation=validation, members=irs)
    return modes


def _parse_member(f: _Fields, root: Path, name: str, mdata: Any, grids: Mapping[str, GridSpec]) -> MemberSpec:
    where = f"members.{name}"
    mdata = f.mapping(mdata, where)
    arch = f.get(mdata, "architecture", where, str)
    if arch not in ARCHITECTURES:
        raise f.error(f"{where}.architecture", f"unknown {arch!r}; expected one of {', '.join(ARCHITECTURES)}")
    hp = dict(f.mapping(mdata.get("hyperparameters") or {}, f"{where}.hyperparameters"))
    try:
        check_hyperparameters(arch, hp)
    except ValueError as exc:
        raise f.error(f"{where}.hyperparameters", str(exc)) from exc
    key = f.get(mdata, "input", where, str)
    try:
        contrast, grid_name = parse_input_key(key)
    except ValueError as exc:
        raise f.error(f"{where}.input", str(exc)) from exc
    grid = None
    if contrast is None:
        if arch != CLINICAL_FCNN:
            raise f.error(f"{where}.input", f"'clinical' input needs architecture {CLINICAL_FCNN}, not {arch}")
    else:
        if arch not in IMAGE_ARCHITECTURES:
            raise f.error(f"{where}.input", f"image input {key!r} needs an image architecture, not {arch}")
        if grid_name not in grids:
            raise f.error(f"{where}.input", f"grid {grid_name!r} is not declared under 'grids' "
                                            f"(have {sorted(grids)})")
        grid = grids[grid_name]
        smallest = MIN_GRID_SIZE[arch]
        if min(grid.shape) < smallest:
            raise f.error(f"{where}.input", f"{arch} needs at least {smallest} voxels per axis, grid "
                                            f"{grid_name!r} is {list(grid.shape)}")
    folds_data = f.get(mdata, "folds", where, list)
    if not folds_data:
        raise f.error(f"{where}.folds", "at least one fold weight file is needed")
    folds = []
    for k, fd in enumerate(folds_data):
        fw = f"{where}.folds[{k}]"
        fd = f.mapping(fd, fw)
        rel = f.get(fd, "file", fw, str)
        digest = f.get(fd, "sha256", fw, str).lower()
        if not _SHA256.match(digest):
            raise f.error(f"{fw}.sha256", f"must be 64 hex digits, got {digest!r}")
        p = (root / rel).resolve()
        if root not in p.parents:
            raise f.error(f"{fw}.file", f"{rel!r} points outside the model set folder")
        folds.append(FoldWeights(path=p, sha256=digest, relpath=rel))
    return MemberSpec(name=name, architecture=arch, hyperparameters=hp, input_key=key, contrast=contrast,
                      grid=grid, folds=tuple(folds), calibration=_parse_calibration(f, mdata, where))


def _parse_calibration(f: _Fields, mdata: Mapping[str, Any], where: str) -> PlattCalibration | None:
    if mdata.get("calibration") is None:
        return None
    where = f"{where}.calibration"
    cdata = f.mapping(mdata["calibration"], where)
    method = f.get(cdata, "method", where, str)
    if method != "platt":
        raise f.error(f"{where}.method", f"unknown {method!r}; expected 'platt'")
    try:
        return PlattCalibration(slope=f.get(cdata, "slope", where, float),
                                intercept=f.get(cdata, "intercept", where, float))
    except ValueError as exc:
        raise f.error(where, str(exc)) from exc


def _parse_ensemble(f: _Fields, name: str, edata: Any, members: Mapping[str, MemberSpec]) -> EnsembleSpec:
    where = f"ensembles.{name}"
    edata = f.mapping(edata, where)
    wdata = f.mapping(f.get(edata, "weights", where, Mapping), f"{where}.weights")
    if not wdata:
        raise f.error(f"{where}.weights", "no members")
    weights: dict[str, float] = {}
    for mname, w in wdata.items():
        ww = f"{where}.weights.{mname}"
        if mname not in members:
            raise f.error(ww, f"unknown member (have {sorted(members)})")
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise f.error(ww, f"must be a non-negative number, got {w!r}")
        weights[mname] = float(w)
    total = sum(weights.values())
    if abs(total - 1.0) > 1e-6:
        raise f.error(f"{where}.weights", f"must sum to 1, sum is {total:.6g}")
    threshold, threshold_info = _parse_threshold(f, edata, where)
    withheld = edata.get("withheld") or ""
    if not isinstance(withheld, str):
        raise f.error(f"{where}.withheld", f"must be the reason as text, got {withheld!r}")
    return EnsembleSpec(name=name, weights=weights, threshold=threshold,
                        description=str(edata.get("description") or ""), threshold_info=threshold_info,
                        withheld=withheld.strip())


def _parse_threshold(f: _Fields, edata: Mapping[str, Any], where: str) -> tuple[float, ThresholdInfo | None]:
    """``threshold:`` as a plain number, or a block ``{value, rule, ...}`` written by ``training fuse``."""
    raw = edata.get("threshold", 0.5)
    info = None
    if isinstance(raw, Mapping):
        block = f"{where}.threshold"
        value = f.get(raw, "value", block, float)
        rule = raw.get("rule")
        if not isinstance(rule, str) or not rule.strip():
            raise f.error(f"{block}.rule", "must say how the threshold was chosen (e.g. youden)")
        metrics = raw.get("metrics") or {}
        if not isinstance(metrics, Mapping):
            raise f.error(f"{block}.metrics", "must be a mapping")
        info = ThresholdInfo(rule=rule.strip(), description=str(raw.get("description") or ""),
                             fitted_on=str(raw.get("fitted_on") or ""),
                             metrics={str(k): v for k, v in metrics.items()})
        where = block
    else:
        value = f.get(edata, "threshold", where, float, 0.5)
        where = f"{where}.threshold"
    if not 0.0 < value < 1.0:
        raise f.error(where if where.endswith("threshold") else f"{where}.value", f"must be in (0, 1), got {value}")
    return value, info


def write_manifest(manifest: Mapping[str, Any], folder: str | Path) -> Path:
    """Write a manifest mapping as ``folder/manifest.yaml`` (atomically) and return its path.

    The caller builds the mapping in the format above; ``load_model_set`` should
    be used afterwards to validate it.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / MANIFEST_NAME
    tmp = out.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump(_plain(manifest), sort_keys=False, allow_unicode=True), encoding="utf-8")
    os.replace(tmp, out)
    return out


def _plain(obj: Any) -> Any:
    """Convert tuples and numpy scalars to plain YAML-safe types."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):
        return obj.item()
    return obj
