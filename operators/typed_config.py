"""The one configuration system of the app, the node and training.

Each component describes its settings as dataclasses with type hints; this
module builds them from YAML mappings and environment variables the same way
for all three:

- unknown keys are rejected, naming the key, where it is and the known keys;
- values are coerced to the declared type (``bool``, ``int``, ``float``, ``str``,
  ``Path``, ``Literal[...]`` choices, ``X | None``, ``list[X]``, ``dict``, nested
  dataclasses, and classes that parse themselves with a ``from_dict`` classmethod);
- environment overrides are written ``<PREFIX><SECTION>__<KEY>`` (the node's
  ``TSC_NODE_SCP__PORT=11112``);
- every failure is a :class:`~operators.errors.ConfigurationError` (exit status 1)
  whose message names the setting.

One settings file can serve all three components: a YAML file whose top-level
keys are sections among ``app``, ``node`` and ``training`` (see
docs/configuration.md). Each component reads its own section; a file without
sections is the component's own file, as before.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, TypeVar

import yaml

from operators.errors import ConfigurationError

SECTIONS = ("app", "node", "training")
T = TypeVar("T")


def _where(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def check_keys(data: Mapping[str, Any], known: typing.Iterable[str], where: str,
               error: Callable[[str], Exception] = ConfigurationError) -> None:
    """Raise ``error`` naming the first unknown key(s) of ``data``.

    Args:
        data: The mapping read from the file.
        known: The keys allowed at this place.
        where: Dotted path of the mapping (empty at the top level).
        error: Exception class to raise (a :class:`ConfigurationError` subclass).
    """
    known = sorted(known)
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        place = f" in {where}" if where else ""
        raise error(f"unknown setting(s){place}: {', '.join(_where(where, k) for k in unknown)} "
                    f"(known: {', '.join(known)})")


def coerce(value: Any, typ: Any, where: str, error: Callable[[str], Exception] = ConfigurationError, *,
           text: bool = False) -> Any:
    """Convert one value to the declared type.

    Args:
        value: The value read from YAML, or the text of an environment variable.
        typ: The declared type.
        where: Dotted name of the setting, for messages.
        error: Exception class to raise.
        text: The value is environment text: "yes"/"0" are booleans and "a,b" is a list.
            In a YAML file a boolean or a list must be written as one.

    Raises:
        ConfigurationError (or ``error``): The value does not fit the type; names ``where``.
    """
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and (value is None or (isinstance(value, str)
                                                     and value.strip().lower() in ("", "null", "none"))):
            return None
        options = [a for a in args if a is not type(None)]
        last: Exception | None = None
        for option in options:
            try:
                return coerce(value, option, where, error, text=text)
            except ConfigurationError as exc:
                last = exc
        raise last if last else error(f"{where}: {value!r} is not allowed")
    if origin is Literal:
        for choice in args:
            if value == choice or (isinstance(value, str) and not isinstance(choice, str)
                                   and value.strip().lower() == str(choice).lower()):
                return choice
        raise error(f"{where} must be one of {', '.join(str(a) for a in args)}, got {value!r}")
    if typ is bool:
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower() if text else None
        if word in ("1", "true", "yes", "on"):
            return True
        if word in ("0", "false", "no", "off"):
            return False
        raise error(f"{where} must be true or false, got {value!r}")
    if typ in (int, float):
        if isinstance(value, bool):
            raise error(f"{where}: {value!r} is not a number")
        try:
            number = typ(value)
        except (TypeError, ValueError):
            raise error(f"{where}: {value!r} is not {'an integer' if typ is int else 'a number'}") from None
        if typ is int and isinstance(value, float) and value != number:
            raise error(f"{where}: {value!r} is not an integer")
        return number
    if typ is str:
        if isinstance(value, (Mapping, list)):
            raise error(f"{where}: expected text, got a {'mapping' if isinstance(value, Mapping) else 'list'}")
        return str(value)
    if typ is Path:
        if not isinstance(value, (str, Path)) or not str(value).strip():
            raise error(f"{where}: {value!r} is not a path")
        return Path(str(value)).expanduser()
    if origin in (list, tuple):
        item_type = args[0] if args else Any
        if isinstance(value, str) and text:
            value = [v for v in (p.strip() for p in value.split(",")) if v]
        if not isinstance(value, (list, tuple)):
            raise error(f"{where}: expected a list, got {value!r}")
        items = [coerce(v, item_type, f"{where}[{i}]", error, text=text) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or typ is dict:
        if not isinstance(value, Mapping):
            raise error(f"{where}: expected a mapping")
        if len(args) == 2:
            return {str(k): coerce(v, args[1], _where(where, str(k)), error, text=text) for k, v in value.items()}
        return dict(value)
    from_dict = getattr(typ, "from_dict", None)
    if callable(from_dict):  # a class with its own parser (and cross-field checks)
        try:
            return from_dict(value)
        except ConfigurationError:
            raise
        except (TypeError, ValueError) as exc:
            raise error(f"{where}: {exc}") from None
    if dataclasses.is_dataclass(typ):
        return build(typ, value, where, error)
    return value


def build(cls: type[T], data: Any, where: str = "", error: Callable[[str], Exception] = ConfigurationError) -> T:
    """Build the dataclass ``cls`` from a mapping, rejecting unknown keys.

    Args:
        cls: A dataclass whose fields have type hints and defaults (or are given); a field
            with ``metadata={"internal": True}`` is not a setting.
        data: The mapping (None means all defaults).
        where: Dotted path of this mapping in the file, for messages.
        error: Exception class to raise.

    Returns:
        The instance. Its ``__post_init__`` may validate further.

    Raises:
        ConfigurationError (or ``error``): Unknown key, wrong type, or a missing required key.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise error(f"{where or 'configuration'}: expected a mapping of settings, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.init and not f.metadata.get("internal")]
    check_keys(data, (f.name for f in fields), where, error)
    kwargs = {k: coerce(v, hints[k], _where(where, k), error) for k, v in data.items()}
    missing = [f.name for f in fields if f.name not in kwargs and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise error(f"{where or 'configuration'}: missing setting(s) {', '.join(_where(where, m) for m in missing)}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigurationError):
            raise
        raise error(f"{where or 'configuration'}: {exc}") from None


def apply_env(obj: Any, prefix: str, environ: Mapping[str, str], *, ignore: typing.Iterable[str] = (),
              error: Callable[[str], Exception] = ConfigurationError) -> list[str]:
    """Apply ``<prefix><SECTION>__<KEY>`` environment overrides to a built configuration.

    Args:
        obj: The configuration (a dataclass, changed in place).
        prefix: Variable name prefix, e.g. ``TSC_NODE_``.
        environ: The environment.
        ignore: Variables with the prefix that are not settings.
        error: Exception class to raise.

    Returns:
        The dotted names of the settings overridden.

    Raises:
        ConfigurationError (or ``error``): A variable names no setting, or a mapping.
    """
    applied = []
    ignored = set(ignore)
    for key, raw in sorted(environ.items()):
        if not key.startswith(prefix) or key in ignored:
            continue
        path = key[len(prefix):].lower().split("__")
        target: Any = obj
        for part in path[:-1]:
            if not dataclasses.is_dataclass(target) or not dataclasses.is_dataclass(getattr(target, part, None)):
                raise error(f"{key}: no section {part!r}")
            target = getattr(target, part)
        leaf = path[-1]
        if not dataclasses.is_dataclass(target) or leaf not in {f.name for f in dataclasses.fields(target)}:
            raise error(f"{key}: no setting {'.'.join(path)!r}")
        hint = typing.get_type_hints(type(target))[leaf]
        if typing.get_origin(hint) is dict or dataclasses.is_dataclass(hint):
            raise error(f"{key}: {'.'.join(path)} is a mapping and cannot be set from the environment")
        setattr(target, leaf, coerce(raw, hint, ".".join(path), error, text=True))
        applied.append(".".join(path))
    return applied


def read_mapping(path: Path | str, error: Callable[[str], Exception] = ConfigurationError) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping (an empty file is an empty mapping).

    Raises:
        ConfigurationError (or ``error``): Unreadable, not YAML, or not a mapping; names the file.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise error(f"cannot read configuration {path}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error(f"configuration {path} must be a mapping of settings, got {type(data).__name__}")
    return data


def is_settings_file(data: Mapping[str, Any]) -> bool:
    """True for a shared settings file: every top-level key is a section (app, node, training)."""
    return bool(data) and all(k in SECTIONS for k in data)


def section(data: Mapping[str, Any], name: str) -> Any:
    """The part of ``data`` that belongs to component ``name``.

    A shared settings file gives its ``name`` section (None when it has none); any
    other mapping is the component's own file and is returned whole.
    """
    if name not in SECTIONS:
        raise ValueError(f"unknown section {name!r}")
    return data.get(name) if is_settings_file(data) else data


def resolve_path(path: Path | None, base_dir: Path | None) -> Path | None:
    """A relative path resolved against the configuration file's folder (if known)."""
    if path is None or path.is_absolute() or base_dir is None:
        return path
    return base_dir / path
