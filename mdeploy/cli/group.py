"""The click group class of mdeploy's commands that have subcommands (the root, `report`)."""

from __future__ import annotations

from typing import Any

from typer.core import TyperGroup


class Group(TyperGroup):
    """typer's group, with its --help flag defaulting to False. typer's default is None, which is not a bool, so
    typer checks it through pydantic (60 ms to import) whenever the group's own --help is not given: on every
    `mdeploy VERB ...`, `mdeploy VERB --help` included."""

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        if option is not None and option.default is None:
            option.default = False
        return option
