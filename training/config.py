"""Training configuration: members, recipes, grids, ensembles (YAML) and the built-in presets.

Format (``tsc-training/1``)::

    format: tsc-training/1
    name: tsc-demo-synthetic
    version: 0.1.0
    synthetic: true
    intended_use: >- ...
    intended_population: {age_years: {min: 0, max: 18}, required_series: [T2, FLAIR]}
    folds: 5
    repeats: 1                # repetitions of the nested split (out-of-fold predictions averaged over them)
    seed: 0
    calibration: platt        # or none (default): Platt scaling per member on out-of-fold predictions
    grids: {wae: {shape: [...], spacing_mm: [...]}, ...}     # as in the model manifest
    recipes:
      wae:  {loss: focal, lr: 0.001, batch_size: 4, epochs: 100, augment: false}
      etsc: {loss: bce,   lr: 0.001, batch_size: 4, epochs: 100, augment: true}
    members:
      t2_wae: {architecture: resnet3d-34, hyperparameters: {}, input: t2@wae, recipe: wae}
      ...
    ensembles:
      WAE-Net:  {members: [t2_wae, flair_wae, flair3_wae, clinical], weights: equal}
      eTSC-Net: {members: [t2_etsc, flair_etsc], weights: {t2_etsc: 0.6, flair_etsc: 0.4}}  # or search
    primary: WAE-Net

Presets (``training/configs/*.yaml``): ``published`` (full-size members at the
published grids and recipes) and ``demo`` (reduced width and grid, for the
synthetic demo model set; the manifest and model card say so).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

from operators.errors import ConfigurationError
from operators.model_grid import GridSpec
from operators.model_manifest import parse_input_key
from operators.networks import check_hyperparameters
from operators.typed_config import build, check_keys, read_mapping, section

TRAINING_FORMAT = "tsc-training/1"
PRESETS_DIR = Path(__file__).resolve().parent / "configs"


class TrainingConfigError(ConfigurationError, ValueError):
    """An invalid training configuration (names the file and field); exit status 1."""

    stage = "training configuration"

    def __str__(self) -> str:
        return self.reason


@dataclass(frozen=True)
class Recipe:
    """How one member is trained (published recipes: WAE focal loss, eTSC BCE + augmentation)."""

    loss: Literal["focal", "bce"] = "focal"
    lr: float = 1e-3
    batch_size: int = 4
    epochs: int = 100
    augment: bool = False
    focal_gamma: float = 2.0
    weight_decay: float = 0.0


@dataclass(frozen=True)
class _MemberEntry:
    """A member as written in the file (``members.<name>``)."""

    architecture: str
    input: str
    recipe: str
    hyperparameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _EnsembleEntry:
    """An ensemble as written in the file (``ensembles.<name>``)."""

    members: list[str]
    weights: Any = "search"
    threshold: Any = 0.5


#: Top-level keys of a training configuration (``overrides`` is written by the command line).
TOP_LEVEL_KEYS = ("format", "name", "version", "synthetic", "intended_use", "intended_population", "notes",
                  "folds", "repeats", "seed", "calibration", "grids", "recipes", "members", "ensembles", "primary",
                  "overrides")


@dataclass(frozen=True)
class MemberConfig:
    name: str
    architecture: str
    hyperparameters: dict[str, Any]
    input_key: str
    recipe: Recipe


@dataclass(frozen=True)
class EnsembleConfig:
    name: str
    members: tuple[str, ...]
    weights: str | dict[str, float]  # "equal", "search" or explicit
    threshold: float = 0.5  # the fixed threshold, or the fallback when the rule cannot be applied
    threshold_rule: dict[str, Any] | None = None  # {"rule": "youden"} or {"rule": "sensitivity", "target": 0.9}


@dataclass
class TrainingConfig:
    name: str
    version: str
    synthetic: bool
    intended_use: str
    folds: int
    seed: int
    grids: dict[str, GridSpec]
    members: dict[str, MemberConfig]
    ensembles: dict[str, EnsembleConfig]
    primary: str
    calibration: str = "none"  # "platt": Platt scaling per member, fitted on out-of-fold predictions
    notes: str = ""
    intended_population: dict[str, Any] | None = None  # manifest form (operators.intended_use)
    source: str = ""
    raw: dict[str, Any] = field(default_factory=dict)
    repeats: int = 1  # repetitions of the nested split; out-of-fold predictions are averaged over them

    def grids_mapping(self) -> dict[str, dict[str, Any]]:
        return {n: {"shape": list(g.shape), "spacing_mm": list(g.spacing_mm)} for n, g in self.grids.items()}


def load_config(path_or_preset: str | Path) -> TrainingConfig:
    """Load a config file, or a preset by name (``"published"``, ``"demo"``).

    A shared settings file (docs/configuration.md) gives its ``training`` section:
    a mapping in this format, or the name of a preset or file.
    """
    path = Path(path_or_preset)
    if not path.is_file():
        preset = PRESETS_DIR / f"{path_or_preset}.yaml"
        if not preset.is_file():
            raise TrainingConfigError(f"{path_or_preset}: not a file and not a preset "
                                      f"({', '.join(p.stem for p in sorted(PRESETS_DIR.glob('*.yaml')))})")
        path = preset
    data = section(read_mapping(path, error=TrainingConfigError), "training")
    if data is None:
        raise TrainingConfigError(f"{path}: the settings file has no training section")
    if isinstance(data, str):
        inner = Path(data).expanduser()
        return load_config(inner if inner.is_absolute() or not (path.parent / inner).is_file()
                           else path.parent / inner)
    return parse_config(data, source=str(path))


def _threshold(value: Any, err: Any, where: str) -> tuple[float, dict[str, Any] | None]:
    """``threshold:`` as a number (fixed), ``youden`` or ``{rule: sensitivity, target: 0.9}``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not 0.0 < float(value) < 1.0:
            raise err(where, f"must be between 0 and 1, got {value}")
        return float(value), None
    rule = {"rule": value} if isinstance(value, str) else dict(value) if isinstance(value, Mapping) else None
    if rule is None or rule.get("rule") not in ("youden", "sensitivity", "specificity"):
        raise err(where, "must be a number, 'youden' or {rule: sensitivity|specificity, target: 0.9}")
    if rule["rule"] != "youden":
        try:
            rule["target"] = float(rule["target"])
        except (KeyError, TypeError, ValueError) as exc:
            raise err(f"{where}.target", "a number between 0 and 1 is needed for this rule") from exc
        if not 0.0 < rule["target"] < 1.0:
            raise err(f"{where}.target", f"must be between 0 and 1, got {rule['target']}")
    return 0.5, rule


def apply_overrides(config: TrainingConfig, folds: int | None = None, epochs: str | None = None) -> TrainingConfig:
    """Return ``config`` with ``--folds``/``--epochs`` applied (recorded in ``raw["overrides"]`` for the card).

    Args:
        folds: Number of cross-validation folds.
        epochs: ``"N"`` (every recipe) or ``"recipe=N,recipe=N"``.

    Raises:
        TrainingConfigError: A bad value, or an unknown recipe name.
    """
    raw = dict(config.raw)
    overrides: dict[str, Any] = {}
    if folds is not None:
        if folds < 2:
            raise TrainingConfigError(f"--folds: at least 2, got {folds}")
        raw["folds"] = folds
        overrides["folds"] = folds
    if epochs:
        recipes = {k: dict(v) for k, v in (raw.get("recipes") or {}).items()}
        try:
            if "=" in epochs:
                wanted = {k.strip(): int(v) for k, v in (item.split("=", 1) for item in epochs.split(","))}
            else:
                wanted = {k: int(epochs) for k in recipes}
        except ValueError as exc:
            raise TrainingConfigError(f"--epochs {epochs!r}: use N or recipe=N[,recipe=N]") from exc
        unknown = sorted(set(wanted) - set(recipes))
        if unknown or any(v < 1 for v in wanted.values()):
            raise TrainingConfigError(f"--epochs {epochs!r}: unknown recipe(s) {unknown} (have {sorted(recipes)}) "
                                      "or epochs < 1")
        for k, v in wanted.items():
            recipes[k]["epochs"] = v
        raw["recipes"] = recipes
        overrides["epochs"] = wanted
    if not overrides:
        return config
    raw["overrides"] = {**(raw.get("overrides") or {}), **overrides}
    return parse_config(raw, source=config.source)


def parse_config(data: Any, source: str = "config") -> TrainingConfig:
    """Build a :class:`TrainingConfig` from the file's mapping.

    Raises:
        TrainingConfigError: Unknown key, wrong type or inconsistent content, naming
            ``source`` and the field.
    """
    def fail(what: str) -> TrainingConfigError:
        return TrainingConfigError(f"{source}: {what}")

    def err(where: str, what: str) -> TrainingConfigError:
        return fail(f"{where}: {what}")

    if not isinstance(data, Mapping) or data.get("format") != TRAINING_FORMAT:
        raise err("format", f"must be {TRAINING_FORMAT!r}")
    check_keys(data, TOP_LEVEL_KEYS, "", error=fail)

    def typed(cls: type, value: Any, where: str) -> Any:
        return build(cls, value, where, error=fail)

    try:
        grids = {n: GridSpec.from_dict(n, g) for n, g in (data.get("grids") or {}).items()}
    except ValueError as exc:
        raise err("grids", str(exc)) from exc
    recipes = {str(rname): typed(Recipe, r, f"recipes.{rname}") for rname, r in (data.get("recipes") or {}).items()}
    members: dict[str, MemberConfig] = {}
    for mname, m in (data.get("members") or {}).items():
        where = f"members.{mname}"
        entry = typed(_MemberEntry, m, where)
        try:
            check_hyperparameters(entry.architecture, dict(entry.hyperparameters))
            _, grid = parse_input_key(entry.input)
        except (KeyError, TypeError, ValueError) as exc:
            raise err(where, str(exc)) from exc
        if grid is not None and grid not in grids:
            raise err(f"{where}.input", f"grid {grid!r} not declared")
        if entry.recipe not in recipes:
            raise err(f"{where}.recipe", f"unknown recipe {entry.recipe!r}")
        members[mname] = MemberConfig(mname, entry.architecture, dict(entry.hyperparameters), entry.input,
                                      recipes[entry.recipe])
    if not members:
        raise err("members", "no members")
    ensembles: dict[str, EnsembleConfig] = {}
    for ename, e in (data.get("ensembles") or {}).items():
        where = f"ensembles.{ename}"
        entry = typed(_EnsembleEntry, e, where)
        names = tuple(entry.members)
        unknown = [n for n in names if n not in members]
        if not names or unknown:
            raise err(f"{where}.members", f"unknown or empty: {unknown or names}")
        weights = entry.weights
        if isinstance(weights, Mapping):
            weights = {str(k): float(v) for k, v in weights.items()}
            if set(weights) != set(names) or abs(sum(weights.values()) - 1) > 1e-6:
                raise err(f"{where}.weights", "explicit weights must cover the members and sum to 1")
        elif weights not in ("equal", "search"):
            raise err(f"{where}.weights", "must be 'equal', 'search' or a mapping")
        threshold, rule = _threshold(entry.threshold, err, f"{where}.threshold")
        ensembles[ename] = EnsembleConfig(ename, names, weights, threshold, rule)
    if "name" not in data or not str(data["name"]).strip():
        raise err("name", "missing: the model set's name (e.g. name: site-epilepsy-v1)")
    primary = data.get("primary")
    if primary not in ensembles:
        raise err("primary", f"{primary!r} is not an ensemble")
    calibration = str(data.get("calibration", "none"))
    if calibration not in ("none", "platt"):
        raise err("calibration", f"must be 'none' or 'platt', got {calibration!r}")
    population = data.get("intended_population")
    if population is not None:
        from operators.intended_use import IntendedPopulation
        try:
            population = IntendedPopulation.from_dict(population).as_dict()
        except ValueError as exc:
            raise err("intended_population", str(exc)) from exc
    folds = int(data.get("folds", 5))
    if folds < 2:
        raise err("folds", "at least 2")
    repeats = data.get("repeats", 1)
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise err("repeats", f"a whole number of at least 1, got {repeats!r}")
    return TrainingConfig(name=str(data["name"]), version=str(data.get("version", "0.1.0")),
                          synthetic=bool(data.get("synthetic", False)),
                          intended_use=str(data.get("intended_use", "")).strip(), folds=folds,
                          seed=int(data.get("seed", 0)), grids=grids, members=members, ensembles=ensembles,
                          primary=primary, calibration=calibration, notes=str(data.get("notes", "")).strip(),
                          intended_population=population, source=source, raw=dict(data), repeats=repeats)
