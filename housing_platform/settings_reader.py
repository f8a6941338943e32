"""Typed settings from environment variables and, where a part has one, a TOML file.

Every part declares its settings as a msgspec Struct (each field with a default and a docstring,
ranges in the type: ``Annotated[int, Meta(ge=1)]``) and the variables that set its fields; its
entry point reads them once and hands the object down::

    settings = read_settings(ServiceSettings, os.environ, {"PORT": "port", "HOST": "host"})

Precedence: the Struct's defaults < ``file`` < the environment < ``overrides`` (command-line
flags). An empty variable counts as unset; a variable whose field is a list is comma-separated.
Whatever is wrong — a value of the wrong type or out of range, an unknown or missing key, or a
``Problem`` the part's own ``check`` finds — is one ``SettingsError`` that names the key as the
user wrote it (the variable, the file and its key, or the flag), what it must be, and the fix::

    PORT: expected an integer, got 'eighty'. Fix PORT in the environment, or unset it for the
    default (8080).
    c.toml: `tune.ntrials` is not a setting; did you mean `n_trials`? Fix it in c.toml: [tune]
    takes n_trials, timeout_s, storage, study_name, workers, cv_folds, seed.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import msgspec
from msgspec import inspect as mi

S = TypeVar("S", bound=msgspec.Struct)

#: Values of keys named like this are never repeated in a message.
_SECRET = re.compile(r"password|secret|token|api_key", re.IGNORECASE)
_SEQUENCES = (mi.ListType, mi.VarTupleType, mi.SetType, mi.FrozenSetType)
_SEGMENT = re.compile(r"\.([^.\[`]+)|\[\d+\]")


class SettingsError(ValueError):
    """A setting is wrong; the message names it as the user wrote it, and how to fix it."""


@dataclass(frozen=True)
class Problem:
    """What a part's own check found: the setting's dotted key and what it must be, as a phrase
    that follows "expected" (``"an index below CLOUD_RUN_TASK_COUNT (3)"``)."""

    key: str
    expected: str


@dataclass(frozen=True)
class _Origin:
    kind: str  # "env", "file" or "override"
    name: str  # the variable, the file's path or the flag
    raw: Any  # the value as the user wrote it


def read_settings(
    kind: type[S],
    env: Mapping[str, str],
    variables: Mapping[str, str],
    *,
    file: str | Path | None = None,
    overrides: Mapping[str, tuple[str, Any]] | None = None,
    check: Callable[[S], Iterable[Problem]] | None = None,
) -> S:
    """``kind`` from its defaults, ``file`` (TOML), the ``variables`` of ``env`` (variable →
    dotted key) and ``overrides`` (the name the user wrote, such as ``--workers`` → (dotted key,
    value); None means not given), then checked by ``check``; raises ``SettingsError``."""
    reader = _Reader(kind, variables)
    if file is not None:
        reader.read_file(Path(file))
    for var, key in variables.items():
        if env.get(var):
            reader.set(key, reader.from_text(key, env[var]), _Origin("env", var, env[var]))
    for name, (key, value) in (overrides or {}).items():
        if value is not None:
            reader.set(key, value, _Origin("override", name, value))
    try:
        settings = msgspec.convert(reader.tree, kind, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(reader.explain(exc)) from None
    problems = list(check(settings)) if check is not None else []
    if problems:
        raise SettingsError(
            " ".join(reader.wrong(p.key, p.expected, _value_at(settings, p.key)) for p in problems)
        )
    return settings


class _Reader:
    """The raw tree msgspec converts, where each of its values came from, and the messages."""

    def __init__(self, kind: type[msgspec.Struct], variables: Mapping[str, str]):
        self.info = mi.type_info(kind)
        self.variable_of = {key: var for var, key in variables.items()}
        self.tree: dict[str, Any] = {}
        self.origins: dict[str, _Origin] = {}

    def read_file(self, path: Path) -> None:
        try:
            tree = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise SettingsError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"config file {path} is not valid TOML: {exc}") from None
        self.tree = tree
        for key, value in _leaves(tree):
            self.origins[key] = _Origin("file", str(path), value)

    def from_text(self, key: str, text: str) -> Any:
        """A variable's text: comma-separated when its field is a list."""
        field = self.field(key)
        if field is not None and isinstance(_unwrap(field.type), _SEQUENCES):
            return [part.strip() for part in text.split(",") if part.strip()]
        return text

    def set(self, key: str, value: Any, origin: _Origin) -> None:
        *parents, leaf = key.split(".")
        node = self.tree
        for name in parents:
            node = node.setdefault(name, {})
            if not isinstance(node, dict):
                return  # the file gave a value where a table belongs: its error is reported
        node[leaf] = value
        self.origins = {k: o for k, o in self.origins.items() if not k.startswith(key + ".")}
        self.origins[key] = origin

    def field(self, key: str) -> mi.Field | None:
        """The Struct field at a dotted key, or None when there is no such setting."""
        node: mi.Type = self.info
        found = None
        for name in key.split("."):
            node = _unwrap(node)
            if not isinstance(node, mi.StructType):
                return None
            found = next((f for f in node.fields if f.encode_name == name), None)
            if found is None:
                return None
            node = found.type
        return found

    def origin(self, key: str) -> _Origin | None:
        """Where the value at ``key`` came from: itself, the table holding it, or a key in it."""
        parts = key.split(".")
        for end in range(len(parts), 0, -1):
            found = self.origins.get(".".join(parts[:end]))
            if found is not None:
                return found
        return next((o for k, o in self.origins.items() if k.startswith(key + ".")), None)

    # Messages -------------------------------------------------------------------------------

    def explain(self, exc: msgspec.ValidationError) -> str:
        problem, _, at = str(exc).rpartition(" - at `")
        if not problem:
            problem, at = str(exc), "$`"
        key = ".".join(m.group(1) for m in _SEGMENT.finditer(at.rstrip("`")) if m.group(1))
        named = re.fullmatch(r"Object (contains unknown|missing required) field `(.+)`", problem)
        if named is not None:
            key = f"{key}.{named.group(2)}" if key else named.group(2)
            return self.unknown(key) if named.group(1).startswith("contains") else self.missing(key)
        field = self.field(key)
        if field is None:  # pragma: no cover - msgspec names only paths of the Struct
            return f"`{key}`: {problem}"
        origin = self.origin(key)
        text = origin is not None and origin.kind == "env"
        return self.wrong(key, _expected(field.type, text), _tree_value(self.tree, key))

    def wrong(self, key: str, expected: str, value: Any) -> str:
        origin = self.origin(key)
        if origin is not None and origin.kind != "file":
            value = origin.raw  # as written: the variable's text, the flag's value
        shown = "***" if _SECRET.search(key) else _shown(value)
        fix = self.fix(key, origin)
        return f"{self.name(key, origin)}: expected {expected}, got {shown}. {fix}"

    def unknown(self, key: str) -> str:
        section, _, leaf = key.rpartition(".")
        table = self.field(section) if section else None
        holder = _unwrap(table.type) if table is not None else self.info
        fields = holder.fields if isinstance(holder, mi.StructType) else ()
        known = [f.encode_name for f in fields]
        close = difflib.get_close_matches(leaf, known, n=1)
        hint = f"; did you mean `{close[0]}`?" if close else "."
        origin = self.origin(key)
        where = f" in {origin.name}" if origin is not None else ""
        takes = f"[{section}] takes" if section else "the settings are"
        prefix = f"{origin.name}: " if origin is not None and origin.kind == "file" else ""
        return f"{prefix}`{key}` is not a setting{hint} Fix it{where}: {takes} {', '.join(known)}."

    def missing(self, key: str) -> str:
        var = self.variable_of.get(key)
        if var is not None:
            return f"{var} is not set and has no default: export {var}=…"
        section, _, leaf = key.rpartition(".")
        under = f" under [{section}]" if section else ""
        return f"`{key}` is not set and has no default: add `{leaf}`{under} to the config file."

    def name(self, key: str, origin: _Origin | None) -> str:
        if origin is None:
            return self.variable_of.get(key, f"`{key}`")
        if origin.kind == "file":
            return f"{origin.name}: `{key}`"
        return origin.name

    def fix(self, key: str, origin: _Origin | None) -> str:
        field = self.field(key)
        default = _default(field) if field is not None else None
        otherwise = f" for the default ({default})" if default is not None else ""
        if origin is None:
            return f"Set {self.variable_of.get(key, f'`{key}`')}: its default does not fit."
        if origin.kind == "env":
            return f"Fix {origin.name} in the environment, or unset it{otherwise}."
        if origin.kind == "file":
            section, _, leaf = key.rpartition(".")
            under = f" under [{section}]" if section else ""
            return f"Fix `{leaf}`{under} in {origin.name}, or remove it{otherwise}."
        return f"Fix {origin.name}, or leave it out{otherwise}."


def _unwrap(t: mi.Type) -> mi.Type:
    while isinstance(t, mi.Metadata):
        t = t.type
    return t


def _leaves(tree: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    for name, value in tree.items():
        key = f"{prefix}{name}"
        if isinstance(value, Mapping) and value:
            yield from _leaves(value, key + ".")
        else:
            yield key, value


def _tree_value(tree: Mapping[str, Any], key: str) -> Any:
    node: Any = tree
    for name in key.split("."):
        node = node.get(name) if isinstance(node, Mapping) else None
    return node


def _value_at(settings: msgspec.Struct, key: str) -> Any:
    node: Any = settings
    for name in key.split("."):
        node = getattr(node, name, None)
    return node


def _bounds(t: mi.IntType | mi.FloatType) -> str:
    limits = [
        f"{op} {bound:g}" if isinstance(bound, float) else f"{op} {bound}"
        for op, bound in ((">=", t.ge), (">", t.gt), ("<=", t.le), ("<", t.lt))
        if bound is not None
    ]
    return f" {' and '.join(limits)}" if limits else ""


def _expected(t: mi.Type, text: bool = False) -> str:
    """What a value of type ``t`` must be, in words; ``text``: as a variable writes it."""
    t = _unwrap(t)
    if isinstance(t, mi.IntType):
        return f"an integer{_bounds(t)}"
    if isinstance(t, mi.FloatType):
        return f"a number{_bounds(t)}"
    if isinstance(t, mi.BoolType):
        return "true or false"
    if isinstance(t, mi.StrType):
        return "a string"
    if isinstance(t, mi.LiteralType):
        *most, last = (repr(v) for v in t.values)
        return f"one of {', '.join(most)} or {last}" if most else last
    if isinstance(t, _SEQUENCES):
        listed = "a comma-separated list" if text else "a list"
        return f"{listed}, each {_expected(t.item_type)}"
    if isinstance(t, mi.StructType):
        return "a table of settings"
    if isinstance(t, mi.UnionType):
        return " or ".join(_expected(u, text) for u in t.types)
    if isinstance(t, mi.NoneType):
        return "nothing"
    return type(t).__name__  # pragma: no cover - no setting has another type


def _shown(value: Any, limit: int = 60) -> str:
    if isinstance(value, list | tuple):
        text = f"[{', '.join(_shown(v) for v in value)}]"
    else:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _default(field: mi.Field) -> str | None:
    """The field's default as a message shows it, or None when it has none or it is long."""
    if field.default is not msgspec.NODEFAULT:
        value = field.default
    elif field.default_factory is not msgspec.NODEFAULT:
        value = field.default_factory()
    else:
        return None
    if value == "":
        return "empty"
    if isinstance(value, list | tuple) and not value:
        return "none"
    if isinstance(value, msgspec.Struct):
        return None
    text = _shown(value)
    return text if len(text) <= 40 else None
