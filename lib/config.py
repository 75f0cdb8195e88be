"""params.yaml sections -> typed, frozen dataclasses, checked once at load time.

A stage calls ``load_section(params_path, "synth_ssv2", SynthSSv2Config)``; every key is checked
against the dataclass fields, so a typo or a wrong type fails before any work starts, with a
message naming the file, the dotted key and the fix.

Choices are ``Literal[...]`` and bounds are annotated-types markers (``Annotated[int, Ge(1)]``,
``Annotated[float, Interval(ge=0, le=1)]``, ``MinLen(1)``); a float must be finite unless its field is
``Annotated[float, AllowNonFinite]``. :class:`Checked` (or :func:`check_fields`) enforces all three whenever a
dataclass is built, from a params file or in code. A params file's top-level sections must be ones dvc.yaml reads.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import numbers
import re
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import annotated_types as at
import yaml

T = TypeVar("T")

DVC_YAML = Path(__file__).resolve().parent.parent / "dvc.yaml"  # the repository's; absent in an installed copy


class ConfigError(ValueError):
    """A params file that does not match the dataclass it should fill."""


class _AllowNonFinite:
    def __repr__(self) -> str:
        return "AllowNonFinite"


AllowNonFinite = _AllowNonFinite()
"""Marker: ``Annotated[float, AllowNonFinite]`` accepts .inf, -.inf and .nan (every other float must be finite)."""


class Checked:
    """Mixin of config dataclasses: ``__post_init__`` runs :func:`check_fields`. A subclass with cross-field
    checks of its own calls ``super().__post_init__()`` first."""

    def __post_init__(self) -> None:
        check_fields(self)


def check_fields(obj: Any) -> None:
    """Raise ValueError ``<field>: <problem>`` if a field of dataclass ``obj`` is not one of its ``Literal``
    choices, breaks a bound marker, is a non-finite float without :data:`AllowNonFinite`, or has the wrong kind of
    value (ints, floats, bools, containers and nested dataclasses are checked; str and Path are left to
    :func:`from_dict`)."""
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        _check(hints[f.name], getattr(obj, f.name), f.name)


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` through libyaml's C parser when PyYAML has it (the same safe constructors, ~7x faster
    on params.yaml and dvc.yaml, which every stage and shard process reads at start-up)."""
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 (a safe loader)


def read_params(path: str | Path) -> dict[str, Any]:
    """Return the whole params file as a dict (``yaml.safe_load``); ``{}`` for an empty file.

    ConfigError on a top-level section that no stage reads (see :func:`check_sections`)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found (run from the repository root or pass --params)")
    try:
        data = safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(data).__name__}")
    check_sections(data, path)
    return data


def check_sections(params: Mapping[str, Any], path: str | Path) -> None:
    """Raise ConfigError naming the first top-level key of ``params`` (read from ``path``) that is not a section
    some stage of the repository's dvc.yaml reads (see :func:`known_sections`), with the closest known name."""
    known = known_sections()
    if known is None:
        return
    for name in params:
        if name not in known:
            close = difflib.get_close_matches(str(name), sorted(known), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"{path}: {name}: unknown section{hint} (known sections: {', '.join(sorted(known))}); "
                              f"rename or remove it (a new section is declared in a stage's params in dvc.yaml)")


@functools.cache
def known_sections(dvc_yaml: Path = DVC_YAML) -> frozenset[str] | None:
    """The params sections the stages of ``dvc_yaml`` read: each ``params:`` entry (``train_apt.steps`` ->
    ``train_apt``) and each ``${section.key}`` in the stages; None if there is no dvc.yaml (an installed copy)."""
    if not dvc_yaml.is_file():
        return None
    stages = (safe_load(dvc_yaml.read_text()) or {}).get("stages") or {}
    names: set[str] = set()
    for stage in stages.values():
        for entry in stage.get("params") or []:
            # a mapping entry names keys of some file: only params.yaml's are sections here
            keys = [entry] if isinstance(entry, str) else entry.get("params.yaml") or []
            names.update(str(k).split(".")[0] for k in keys)
    names.update(m for text in _strings(stages) for m in _INTERPOLATION.findall(text))
    return frozenset(names - {"item", "key"})  # foreach's own names


_INTERPOLATION = re.compile(r"\$\{\s*([A-Za-z_]\w*)")


def _strings(tree: Any) -> list[str]:
    """Every string of a parsed YAML tree, mapping keys included (dvc.yaml outs are keys)."""
    if isinstance(tree, str):
        return [tree]
    if isinstance(tree, Mapping):
        return [s for k, v in tree.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(tree, list):
        return [s for v in tree for s in _strings(v)]
    return []


def load_section(path: str | Path, name: str, cls: type[T]) -> T:
    """Return section ``name`` of the params file at ``path`` as an instance of dataclass ``cls``.

    A missing section gives the dataclass defaults (an error if some field has none).
    """
    params = read_params(path)
    raw = params.get(name, {})
    if raw is None:
        raw = {}
    return from_dict(cls, raw, where=f"{path}: {name}")


def from_dict(cls: type[T], data: Any, where: str = "config") -> T:
    """Build dataclass ``cls`` from a plain mapping, rejecting unknown keys and ill-typed values."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of keys, got {type(data).__name__} {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), list(fields), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(
            f"{where}.{key}: unknown key{hint} (known keys: {', '.join(sorted(fields))}); "
            f"remove or rename it in the params file"
        )
    hints = get_type_hints(cls)
    marked = _hints(cls)
    kwargs: dict[str, Any] = {}
    for name, field in fields.items():
        if name not in data:
            has_default = field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING
            if not has_default:
                raise ConfigError(f"{where}.{name}: required key is missing; add it to the params file")
            continue
        kwargs[name] = _coerce(hints[name], data[name], f"{where}.{name}")
        try:
            _check(marked[name], kwargs[name], f"{where}.{name}")
        except _FieldError as err:
            raise ConfigError(f"{err}; {err.fix}") from None
    try:
        obj = cls(**kwargs)
    except (ValueError, TypeError) as err:  # __post_init__'s cross-field checks
        key = re.match(r"([A-Za-z_]\w*)[:.\[]", str(err))  # "warmup_steps: ..." -> <where>.warmup_steps: ...
        sep = "." if key and key[1] in fields else ": "
        raise ConfigError(f"{where}{sep}{err}") from err
    return obj


def to_dict(obj: Any) -> Any:
    """Inverse of :func:`from_dict`: a dataclass (tree) as plain dicts/lists, for reports and logs."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


# ----------------------------------------------------------------------------- choices, bounds, finiteness

class _FieldError(ValueError):
    """``<where>: <problem>``; ``fix`` is what a params file should do about it."""

    def __init__(self, where: str, problem: str, fix: str = "change it in the params file") -> None:
        super().__init__(f"{where}: {problem}")
        self.fix = fix


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls, include_extras=True)


def _check(tp: Any, value: Any, where: str, finite: bool = True, nullable: bool = False) -> None:
    """Raise _FieldError if ``value`` breaks ``tp``'s choices, bound markers or finiteness (recursively)."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        _check(args[0], value, where, finite and not any(m is AllowNonFinite for m in args[1:]))
        if value is not None:
            _check_markers(args[1:], value, where, nullable)
    elif origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return
        match = next((a for a in args if a is not type(None) and _is_instance(a, value)), None)
        if match is None:
            raise _FieldError(where, f"expected {_describe(tp)}, got {type(value).__name__} {value!r}")
        _check(match, value, where, finite, nullable=type(None) in args)
    elif origin is Literal:
        if not _is_choice(value, args):
            raise _FieldError(where, f"{value!r} is not one of {', '.join(repr(a) for a in args)}")
    elif origin in (list, tuple) and isinstance(value, (list, tuple)):
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise _FieldError(where, f"expected {len(args)} items, got {len(value)}")
            items = list(zip(args, value, strict=True))
        else:
            items = [(args[0] if args else Any, v) for v in value]
        for i, (a, v) in enumerate(items):
            _check(a, v, f"{where}[{i}]", finite)
    elif origin is dict and isinstance(value, Mapping):
        for k, v in value.items():
            _check(args[1] if args else Any, v, f"{where}.{k}", finite)
    elif not _is_instance(tp, value):
        raise _FieldError(where, f"expected {_describe(tp)}, got {type(value).__name__} {value!r}")
    elif tp is float and finite and not math.isfinite(value):
        raise _FieldError(where, f"must be a finite number, got {value!r}",
                          "use a finite number (.nan/.inf are accepted only where a field allows them)")


def _check_markers(markers: tuple[Any, ...], value: Any, where: str, nullable: bool) -> None:
    """Bounds (Gt, Ge, Lt, Le, Interval), lengths (MinLen, MaxLen); a ``Doc("...")`` marker is shown in the message
    of a broken bound (e.g. ``Doc("0 disables clipping")``)."""
    parts = [p for m in markers for p in (m if isinstance(m, at.GroupedMetadata) else (m,))]
    lower = [p for p in parts if isinstance(p, (at.Gt, at.Ge))]
    upper = [p for p in parts if isinstance(p, (at.Lt, at.Le))]
    note = "".join(f" ({m.documentation})" for m in markers if isinstance(m, at.Doc))
    for p in parts:
        if isinstance(p, at.MinLen) and len(value) < p.min_length:
            raise _FieldError(where, f"must not be empty{note}" if p.min_length == 1 else
                              f"must have at least {p.min_length} items{note}, got {len(value)}")
        if isinstance(p, at.MaxLen) and len(value) > p.max_length:
            raise _FieldError(where, f"must have at most {p.max_length} items{note}, got {len(value)}")
        if isinstance(p, at.BaseMetadata) and not isinstance(p, (at.Gt, at.Ge, at.Lt, at.Le, at.MinLen, at.MaxLen)):
            raise TypeError(f"{where}: lib.config does not enforce {p!r}; use Gt, Ge, Lt, Le, Interval, MinLen, MaxLen")
    ok = (all(value > p.gt if isinstance(p, at.Gt) else value >= p.ge for p in lower)
          and all(value < p.lt if isinstance(p, at.Lt) else value <= p.le for p in upper))
    if not ok:
        null = " or null" if nullable else ""
        raise _FieldError(where, f"must be {_bounds(lower, upper)}{null}{note}, got {value!r}")


def _bounds(lower: list[Any], upper: list[Any]) -> str:
    """``>= 1``, ``> 0``, ``in [0, 1)`` ..."""
    lo = [(">", p.gt) if isinstance(p, at.Gt) else (">=", p.ge) for p in lower]
    hi = [("<", p.lt) if isinstance(p, at.Lt) else ("<=", p.le) for p in upper]
    if len(lo) == 1 and len(hi) == 1:
        return f"in {'(' if lo[0][0] == '>' else '['}{lo[0][1]}, {hi[0][1]}{')' if hi[0][0] == '<' else ']'}"
    return " and ".join(f"{op} {bound}" for op, bound in lo + hi)


def _is_instance(tp: Any, value: Any) -> bool:
    """Whether ``value`` has ``tp``'s shape: numbers, bools, containers, choices and dataclasses are told apart;
    other types (str, Path) are not checked here."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        return _is_instance(args[0], value)
    if origin in (Union, types.UnionType):
        return any(_is_instance(a, value) for a in args)
    if origin is Literal:
        return _is_choice(value, args)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple))
    if origin is dict:
        return isinstance(value, Mapping)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if dataclasses.is_dataclass(tp):
        return isinstance(value, tp)
    return True


def _is_choice(value: Any, choices: tuple[Any, ...]) -> bool:
    """``value in choices``, but true/false is not 1/0 and 2.0 is not 2 (YAML tells them apart; so do we)."""
    return any(value is c if isinstance(c, bool) or isinstance(value, bool)
               else value == c and (not isinstance(c, int) or isinstance(value, numbers.Integral))
               for c in choices)


def _describe(tp: Any) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        return _describe(args[0])
    if origin in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    if origin is Literal:
        return f"one of {', '.join(repr(a) for a in args)}"
    names = {bool: "true/false", int: "an integer", float: "a number", list: "a list", tuple: "a list",
             dict: "a mapping"}
    return names.get(origin or tp, _type_name(tp))


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _mismatch(where: str, problem: str) -> ConfigError:
    return ConfigError(f"{where}: {problem}; change it in the params file")


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = get_origin(tp)
    args = get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except ConfigError as err:
                errors.append(str(err))
        if len(errors) == 1:
            raise ConfigError(errors[0])
        raise _mismatch(where, f"{value!r} matches none of {_describe(tp)}")
    if origin is Literal:
        if not _is_choice(value, args):
            raise _mismatch(where, f"{value!r} is not one of {', '.join(repr(a) for a in args)}")
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value if value is not None else {}, where)
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise _mismatch(where, f"expected a list, got {type(value).__name__} {value!r}")
        if origin is tuple:
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
            if len(args) != len(value):
                raise _mismatch(where, f"expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=False)))
        item = args[0] if args else Any
        return [_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _mismatch(where, f"expected a mapping, got {type(value).__name__} {value!r}")
        kt, vt = args if args else (Any, Any)
        return {_coerce(kt, k, where): _coerce(vt, v, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise _mismatch(where, f"expected true/false, got {type(value).__name__} {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _mismatch(where, f"expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _mismatch(where, f"expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _mismatch(where, f"expected a string, got {type(value).__name__} {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, str):
            raise _mismatch(where, f"expected a path string, got {type(value).__name__} {value!r}")
        return Path(value)
    raise TypeError(f"{where}: unsupported field type {tp!r} in config dataclass")


__all__ = ["AllowNonFinite", "Checked", "ConfigError", "check_fields", "check_sections", "from_dict", "known_sections",
           "load_section", "read_params", "to_dict"]
