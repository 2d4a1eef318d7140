"""One declaration of what a file may hold: frozen dataclasses whose fields carry their type, their default and
their meaning (``setting``), and one parser that validates a TOML table against such a class and builds it.

Every mistake is a ``ConfigError`` of one sentence that names the key, says what is wrong and how to fix it.
Fields declared without ``setting`` are not read from the file: the loader of the class fills them itself.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
METADATA_KEY = "deploycheck"


class ConfigError(Exception):
    """A user error in the environment file or the options: one sentence, no traceback."""


@dataclass(frozen=True)
class Setting:
    """What a field of a file means, and an optional check of a value of the right type (a problem, or None)."""

    doc: str
    check: Callable[[Any], str | None] | None = None


def setting(doc: str, *, check: Callable[[Any], str | None] | None = None, default: Any = dataclasses.MISSING) -> Any:
    """A field read from the file (use as the field's value in the dataclass)."""
    metadata = {METADATA_KEY: Setting(doc, check)}
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=metadata)
    if isinstance(default, (list, dict, set)):
        raise TypeError("a mutable default: use a tuple, a MappingProxyType or a frozen dataclass")
    if default.__class__.__hash__ is None:  # read-only but unhashable (MappingProxyType): dataclasses want a factory
        return dataclasses.field(default_factory=lambda: default, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def settings_of(cls: type) -> dict[str, tuple[dataclasses.Field[Any], Setting, Any]]:
    """The fields of ``cls`` read from a file: name -> (field, setting, resolved type)."""
    hints = typing.get_type_hints(cls)
    return {
        f.name: (f, f.metadata[METADATA_KEY], hints[f.name])
        for f in dataclasses.fields(cls)
        if METADATA_KEY in f.metadata
    }


def type_name(kind: Any) -> str:
    """How a type is said in a message: 'an integer', 'a list of strings', 'a table'."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in args if a is not type(None))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if kind is object:
        return "a value"
    if origin is tuple:
        return f"a list of {type_name(args[0]).split(' ', 1)[1]}s"
    if origin in (dict, Mapping):
        return f"a table of {type_name(args[1]).split(' ', 1)[1]}s"
    if dataclasses.is_dataclass(kind):
        return "a table"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false", Path: "a path"}.get(
        kind, f"a {getattr(kind, '__name__', kind)}"
    )


class _Invalid(Exception):
    """A value does not have the declared type (reported at the key that holds it)."""


def _convert(kind: Any, value: Any, base: Path, key: str, context: str) -> Any:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        # TOML has no null: an optional table is turned off with false (``proxy = false``: no proxy)
        if value is False and type(None) in args and any(dataclasses.is_dataclass(a) for a in args):
            return None
        options = [a for a in args if a is not type(None)]
        for option in options:
            try:
                return _convert(option, value, base, key, context)
            except _Invalid:
                continue
        raise _Invalid
    if origin is typing.Literal:
        if value not in args or isinstance(value, bool) != any(isinstance(a, bool) for a in args):
            raise _Invalid
        return value
    if kind is object:  # any TOML value, kept as it is (a JSON subset to compare, a request body)
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise _Invalid
        return tuple(_convert(args[0], item, base, key, context) for item in value)
    if origin in (dict, Mapping):
        if not isinstance(value, dict):
            raise _Invalid
        converted = {str(k): _convert(args[1], v, base, f"{key}.{k}", context) for k, v in value.items()}
        return types.MappingProxyType(converted)
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise _Invalid
        return parse(typing.cast(type, kind), value, base, f"{key}.", context)
    if kind is bool:
        if not isinstance(value, bool):
            raise _Invalid
        return value
    if kind is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _Invalid
        return value
    if kind is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise _Invalid
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise _Invalid
        return value
    if kind is Path:
        if not isinstance(value, str) or not value.strip():
            raise _Invalid
        return (base / value).resolve()
    raise TypeError(f"the schema uses a type the parser does not know: {kind!r}")


def parse(cls: type[T], raw: Mapping[str, Any], base: Path, prefix: str = "", context: str = "", **resolved: Any) -> T:
    """Build ``cls`` from the table ``raw``; relative paths resolve against ``base``.

    ``prefix`` is the dotted name of this table inside the file (for messages), ``context`` the file and table
    that every message starts with, ``resolved`` the values of the fields the file does not hold.
    """
    where = context or "the file"
    fields = settings_of(cls)
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key '{prefix}{unknown[0]}'; valid keys are {', '.join(sorted(fields)) or 'none'}."
        )
    values: dict[str, Any] = {}
    for name, (field, meaning, kind) in fields.items():
        key = f"{prefix}{name}"
        if name not in raw:
            if field.default is not dataclasses.MISSING:
                values[name] = field.default
            elif field.default_factory is not dataclasses.MISSING:
                values[name] = field.default_factory()
            else:
                raise ConfigError(f"{where}: '{key}' is not set; set it there or in [defaults].")
            continue
        try:
            value = _convert(kind, raw[name], base, key, context)
        except _Invalid:
            raise ConfigError(
                f"{where}: '{key}' must be {type_name(kind)}, not {raw[name]!r}; correct it in the file."
            ) from None
        if meaning.check is not None and (problem := meaning.check(value)) is not None:
            raise ConfigError(f"{where}: {key} {problem}.")
        values[name] = value
    return cls(**values, **resolved)
