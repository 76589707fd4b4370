"""Command-line options derived from config dataclasses, so a new setting is one edit: its field.

As transformers' ``HfArgumentParser`` (and TRL's ``TrlParser`` on top of it) do, each field becomes
an option ``--field-name`` with the field's type and default and the help of its ``metadata``;
unlike them this module imports nothing heavy (``--help`` stays instant) and it handles what the
workbench's configs need:

* ``metadata["option"]`` names the option where the field's own name is not it (``n_buckets`` is
  ``--buckets``);
* a field that is itself a config (a :class:`~workbench.models.SamplingConfig`) contributes its
  fields, and ``metadata["options"]`` renames some of them for this parent
  (``{"n": ("rollouts", "student rollouts per problem")}``);
* fields of several configs with one option name share one option, whose value each of them takes
  (one ``--seed`` seeds every stage); their defaults must agree unless the command sets it.

Values are checked where the configs check them (their ``__post_init__``): :func:`build` reports a
:class:`~workbench.errors.FieldError` as ``argument --option: <problem>``, one line, exit 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Collection, Iterator, Mapping
from functools import reduce
from typing import Any

from workbench.errors import FieldError, UserError

MISSING: Any = dataclasses.MISSING


@dataclasses.dataclass(frozen=True)
class Option:
    """One option: ``dest`` (argparse's name, underscores), the field ``path`` inside its config, the
    value type, whether it takes several values (a tuple field), its default and help."""

    dest: str
    path: tuple[str, ...]
    kind: Any
    many: bool
    default: Any
    help: str

    @property
    def flag(self) -> str:
        return "--" + self.dest.replace("_", "-")


def _kind(hint: Any) -> tuple[Any, bool]:
    """The value type of a field's annotation (``X | None`` is X; ``tuple[X, ...]`` is X, several)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if type(None) in typing.get_args(hint) and len(args) == 1:
        hint = args[0]
    if typing.get_origin(hint) is tuple:
        return typing.get_args(hint)[0], True
    return hint, False


def _default(f: dataclasses.Field) -> Any:
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else MISSING


def _fields(cls: type) -> Iterator[tuple[dataclasses.Field, Any]]:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.init:
            yield f, hints[f.name]


def options(cls: type, renames: Mapping[str, tuple[str, str]] | None = None) -> list[Option]:
    """The options of a config class, nested configs' fields included."""
    found = []
    for f, hint in _fields(cls):
        if dataclasses.is_dataclass(hint):
            parent = _default(f)
            for inner in options(hint, f.metadata.get("options", {})):
                default = inner.default if parent is MISSING else reduce(getattr, inner.path, parent)
                found.append(dataclasses.replace(inner, path=(f.name, *inner.path), default=default))
            continue
        dest, text = (renames or {}).get(f.name, (f.metadata.get("option", f.name), f.metadata.get("help", "")))
        kind, many = _kind(hint)
        found.append(Option(dest, (f.name,), kind, many, _default(f), text))
    return found


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return " ".join(map(str, value))
    return repr(value) if isinstance(value, str) else str(value)


def add_options(parser: argparse.ArgumentParser, configs: Collection[type], *,
                defaults: Mapping[str, Any] | None = None, exclude: Collection[str] = ()) -> None:
    """One option per distinct option name over ``configs``' fields, except ``exclude``; ``defaults``
    (by option name) replace the fields' defaults for this command."""
    defaults = defaults or {}
    merged: dict[str, Option] = {}
    for cls in configs:
        for option in options(cls):
            if option.dest in exclude:
                continue
            if option.dest in defaults:
                option = dataclasses.replace(option, default=defaults[option.dest])
            seen = merged.setdefault(option.dest, option)
            if (seen.default, seen.kind, seen.many) != (option.default, option.kind, option.many):
                raise TypeError(f"{option.flag}: {cls.__name__}.{'.'.join(option.path)} disagrees with another "
                                f"config's field of that option ({option.default!r} vs {seen.default!r}); "
                                "give the command's default")
    for option in merged.values():
        required = option.default is MISSING
        text = option.help + ("" if required or option.default is None else f" (default: {_shown(option.default)})")
        kwargs: dict[str, Any] = {"dest": option.dest, "help": text.replace("%", "%%"), "required": required}
        if option.kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs.update(type=option.kind, nargs="+" if option.many else None)
        if not required:
            kwargs["default"] = option.default
        parser.add_argument(option.flag, **kwargs)


def build(cls: type, args: argparse.Namespace, *, base: Any = None,
          renames: Mapping[str, tuple[str, str]] | None = None, **given: Any) -> Any:
    """An instance of ``cls`` from parsed options (fields without an option keep their default, or
    ``base``'s value; ``given`` sets fields directly). A value its config refuses is a UserError
    naming the option."""
    values: dict[str, Any] = dict(given)
    dests: dict[str, str] = {}
    for f, hint in _fields(cls):
        if f.name in given:
            continue
        if dataclasses.is_dataclass(hint):
            inner = getattr(base, f.name) if base is not None else _default(f)
            values[f.name] = build(hint, args, base=None if inner is MISSING else inner,
                                   renames=f.metadata.get("options", {}))
            continue
        dests[f.name] = (renames or {}).get(f.name, (f.metadata.get("option", f.name), ""))[0]
        if hasattr(args, dests[f.name]):
            value = getattr(args, dests[f.name])
            values[f.name] = tuple(value) if _kind(hint)[1] and value is not None else value
    try:
        return dataclasses.replace(base, **values) if base is not None else cls(**values)
    except FieldError as exc:
        if exc.field not in dests or not hasattr(args, dests[exc.field]):
            raise
        flag = "--" + dests[exc.field].replace("_", "-")
        raise UserError(f"argument {flag}: {exc.problem}") from None


def replace_checked(config: Any, **values: Any) -> Any:
    """``config`` with the options given (None: not given) replacing its fields, for a command whose
    options are named after the fields but default to None (the registered value); a value the config
    refuses is a UserError naming the option."""
    try:
        return dataclasses.replace(config, **{k: v for k, v in values.items() if v is not None})
    except FieldError as exc:
        raise UserError(f"argument --{exc.field.replace('_', '-')}: {exc.problem}") from None
