"""Settings declared once: a dataclass field made with `setting(...)` is at the same time a
click option (`--max-tasks`), a keyword argument of the Python API (`max_tasks=`) and a
`COOP_*` variable (`COOP_MAX_TASKS`), converted and checked by the same click type in every
case, so that a wrong value reads the same one line from the CLI and from Python.

Adding a setting is one field: `planner_model: str = setting("", help="...")`.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, TypeVar

import click

from coop.errors import CoopError

F = TypeVar("F", bound=Callable[..., Any])
_SPEC = "coop.setting"
ENV = object()
"""`envvar=ENV` (the default): the variable is `COOP_<NAME>`."""


class SettingError(CoopError):
    """A setting with a wrong name or value: the line the CLI prints for the same mistake."""


@dataclass(frozen=True)
class Spec:
    """How one setting is given: its click type, help and shape."""

    kind: Any = None  # a click ParamType (or a Python type); None: the default's type
    help: str = ""
    flag: bool = False
    multiple: bool = False
    metavar: str | None = None
    envvar: object = ENV  # ENV, a variable's name, or None for none
    show_default: bool = True


def setting(
    default: Any,
    kind: Any = None,
    help: str = "",
    *,
    flag: bool = False,
    multiple: bool = False,
    metavar: str | None = None,
    envvar: object = ENV,
    show_default: bool = True,
) -> Any:
    """A dataclass field that is also an option of the CLI, a keyword of the API and a
    `COOP_*` variable."""
    spec = Spec(kind, help, flag, multiple, metavar, envvar, show_default)
    return field(default=default, metadata={_SPEC: spec})


@dataclass(frozen=True)
class Declared:
    """One declared setting: its keyword, its default and how it is given."""

    name: str
    default: Any
    spec: Spec

    @property
    def flag_name(self) -> str:
        return f"--{self.name.replace('_', '-')}"

    @property
    def envvar(self) -> str | None:
        if self.spec.envvar is ENV:
            return f"COOP_{self.name.upper()}"
        return self.spec.envvar if isinstance(self.spec.envvar, str) else None

    def attrs(self) -> dict[str, Any]:
        """click's keyword arguments for this option."""
        s = self.spec
        attrs: dict[str, Any] = {"help": s.help, "envvar": self.envvar}
        if s.flag:
            attrs.update(is_flag=True, default=self.default)
            return attrs
        attrs.update(default=self.default, multiple=s.multiple, metavar=s.metavar)
        if s.kind is not None:
            attrs["type"] = s.kind
        if s.show_default and self.default not in (None, "", ()):
            attrs["show_default"] = True
        return attrs

    def option(self) -> click.Option:
        return click.Option([self.flag_name, self.name], **self.attrs())


def declared(*classes: type) -> list[Declared]:
    """The settings the dataclasses declare, in field order."""
    out = []
    for cls in classes:
        for f in fields(cls):
            if _SPEC in f.metadata:
                default = f.default if f.default is not MISSING else None
                out.append(Declared(f.name, default, f.metadata[_SPEC]))
    return out


def options(*classes: type) -> Callable[[F], F]:
    """A decorator adding the classes' settings to a click command as options."""

    def apply(fn: F) -> F:
        for d in reversed(declared(*classes)):
            fn = click.option(d.flag_name, d.name, **d.attrs())(fn)
        return fn

    return apply


def option(cls: type, name: str) -> Callable[[F], F]:
    """A decorator adding one of the class's settings to a click command (`--address` to
    every command that reads an objective)."""
    (d,) = [d for d in declared(cls) if d.name == name]
    return click.option(d.flag_name, d.name, **d.attrs())


def resolve(
    given: Mapping[str, Any], *classes: type, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Every setting the classes declare, from `given` (keyword arguments), else its `COOP_*`
    variable, else its default, converted by its click type. A name no class declares, or a
    value its type refuses, is a SettingError with the line the CLI prints."""
    env = os.environ if env is None else env
    known = declared(*classes)
    names = {d.name for d in known}
    for name in given:
        if name not in names:
            flag = f"--{name.replace('_', '-')}"
            close = difflib.get_close_matches(flag, [d.flag_name for d in known])
            raise SettingError(click.NoSuchOption(flag, possibilities=close).format_message())
    ctx = click.Context(click.Command("coop"))
    out: dict[str, Any] = {}
    for d in known:
        opt = d.option()
        if d.name in given:
            value = given[d.name]
            if d.spec.multiple and isinstance(value, str):
                value = (value,)
        elif d.envvar and env.get(d.envvar):
            value = opt.type.split_envvar_value(env[d.envvar]) if d.spec.multiple else env[d.envvar]
        else:
            value = d.default
        try:
            out[d.name] = opt.type_cast_value(ctx, value) if value is not None else None
        except click.BadParameter as exc:
            exc.param = opt
            raise SettingError(exc.format_message()) from None
    return out


class ToolNames(click.ParamType):  # type: ignore[type-arg]
    """`a,b c` (or a list) as the sorted tuple ("a", "b", "c"), each one of `choices`:
    tools given with commas, spaces or both."""

    name = "tools"

    def __init__(self, choices: Iterable[str]) -> None:
        self.choices = tuple(choices)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        text = value if isinstance(value, str) else ",".join(value)
        names = {n.strip().lower() for n in text.replace(" ", ",").split(",") if n.strip()}
        unknown = sorted(names - set(self.choices))
        if unknown:
            self.fail(f"unknown tool {unknown[0]!r}: choose from {', '.join(self.choices)}")
        return tuple(sorted(names))


class FileText(click.ParamType):  # type: ignore[type-arg]
    """A file named on the command line (or a path in Python), taken as its text: what
    travels to other nodes is the text, not a path they may not have."""

    name = "file"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not value:
            return ""
        try:
            with open(os.fspath(value), encoding="utf-8") as file:
                return file.read()
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            self.fail(f"cannot read {os.fspath(value)!r}: {why}", param, ctx)
