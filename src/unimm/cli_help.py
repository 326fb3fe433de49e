"""A ``typer.Typer`` whose help reads as users expect: ``-h`` beside ``--help``, no ``<bool>`` beside a flag,
``<str>...`` rather than ``<list[str]>`` for a list, and a stray ``key=value`` pointed at ``--set``."""

from __future__ import annotations

import re
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

HELP_NAMES = ["-h", "--help"]
KEY_VALUE = re.compile(r"[A-Za-z_][\w.]*=")
LIST_TYPE = re.compile(r"<list\[(.+)\]>")


def _plain_help_option(option: Any) -> Any:
    if option is not None:
        option.metavar = ""  # `--help`, not `--help <bool>`
    return option


def _plain_type(display: Any) -> Any:
    """Wrap a parameter's type display: ``<list[str]>`` -> ``<str>...``, ``<int range>`` -> ``<int>`` (the range
    is shown beside it anyway)."""

    def shown(ctx: Any) -> Any:
        text = display(ctx)
        if not isinstance(text, str):
            return text
        match = LIST_TYPE.fullmatch(text)
        return f"<{match[1].lower()}>..." if match else text.replace(" range>", ">")

    return shown


def _plain_params(params: list[Any]) -> None:
    """No type beside a flag; plain types beside the rest (unless a metavar names them)."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
        elif param.metavar is None and hasattr(param, "display_type_rich"):
            param.display_type_rich = _plain_type(param.display_type_rich)


class PlainCommand(TyperCommand):
    """A command with plain metavars that names ``--set`` when extra arguments look like ``key=value``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _plain_params(self.params)

    def get_help_option(self, ctx: Any) -> Any:
        return _plain_help_option(super().get_help_option(ctx))

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        strict = not ctx.allow_extra_args
        ctx.allow_extra_args = True  # to see the extra arguments, then refuse them below
        try:
            rest = super().parse_args(ctx, args)
        finally:
            ctx.allow_extra_args = not strict
        if strict and rest and not ctx.resilient_parsing:
            message = f"got unexpected extra argument(s): {' '.join(rest)}"
            pairs = [a for a in rest if KEY_VALUE.match(a)]
            if pairs and any("--set" in p.opts for p in self.params):
                message += f"; use --set once per KEY=VALUE: {' '.join(f'--set {a}' for a in pairs)}"
            ctx.fail(message)
        return rest


class PlainGroup(TyperGroup):
    """A command group with plain metavars (its own options, such as ``--version``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _plain_params(self.params)

    def get_help_option(self, ctx: Any) -> Any:
        return _plain_help_option(super().get_help_option(ctx))


class App(typer.Typer):
    """``typer.Typer`` with ``PlainGroup`` / ``PlainCommand``, ``-h`` for help and no shell-completion options."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("cls", PlainGroup)
        kwargs.setdefault("context_settings", {"help_option_names": HELP_NAMES})
        kwargs.setdefault("add_completion", False)
        kwargs.setdefault("no_args_is_help", True)
        super().__init__(**kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("cls", PlainCommand)
        return super().command(*args, **kwargs)
