"""The Typer app, the one error boundary of every command, and the options they share.

Every stage command reads the one configuration (:mod:`radfusion.config`): ``--config
paper|cpu-demo|FILE.yaml`` and ``--set section.key=value``; ``--print`` shows the resolved
sections it would use and stops.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated

import typer

from radfusion.errors import RadfusionError, environment_message
from radfusion.pipeline.console import error

__all__ = [
    "ConfigOpt",
    "DataDir",
    "PrintOpt",
    "SetOpt",
    "app",
    "command",
    "fail",
    "resolve",
    "split_list",
]

app = typer.Typer(
    name="radfusion",
    help="Multimodal pulmonary-embolism detection from CT and EHR: the RadFusion benchmark.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
config_app = typer.Typer(help="Show a configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config", rich_help_panel="Stages and runs")

INTERRUPTED = "interrupted; finished work is kept: rerun the same command to resume"
DataDir = Annotated[Path, typer.Argument(help="A RadFusion release (or synthetic) folder.")]
ConfigOpt = Annotated[
    str | None,
    typer.Option(
        "--config", help="A YAML file, or a shipped config: paper (the default), cpu-demo."
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override one key, e.g. --set image.max_epochs=5 (repeat)."),
]
PrintOpt = Annotated[
    bool, typer.Option("--print", help="Print the resolved configuration it would use and stop.")
]


def command(*args, resumable: bool = False, **kwargs):
    """``app.command`` that turns a user error into one line and exit status 2; a
    ``resumable`` command interrupted with Ctrl-C says how to resume (exit status 130)."""

    target = kwargs.pop("target", app)

    def register(fn):
        @functools.wraps(fn)
        def run(*a, **k):
            try:
                return fn(*a, **k)
            except RadfusionError as exc:
                fail(str(exc))
            except OSError as exc:
                message = environment_message(exc)
                if message is None:
                    raise
                fail(message)
            except KeyboardInterrupt:
                if not resumable:
                    raise
                fail(INTERRUPTED, 130)

        return target.command(*args, **kwargs)(run)

    return register


def fail(message: str, code: int = 2) -> None:
    error(message)
    raise typer.Exit(code)


def resolve(config: str | None, sets: list[str] | None, show: bool, sections: list[str]):
    """The resolved configuration; with ``--print``, its ``sections`` are printed instead."""
    from radfusion.config import load_config

    resolved = load_config(config, sets)
    if show:
        sys.stdout.write(resolved.to_yaml(sections))
        raise typer.Exit(0)
    return resolved


def split_list(values: list[str]) -> list[str]:
    return [part for value in values for part in value.split(",") if part]
