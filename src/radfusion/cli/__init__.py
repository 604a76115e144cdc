"""The ``radfusion`` command line: each command parses, calls one library function, prints.

``app`` holds every command; ``main`` is the console entry point.
"""

from __future__ import annotations

# Each module registers its commands, listed by --help in import order: the stages first.
# isort: off
from radfusion.cli import cohorts, run  # noqa: F401
from radfusion.cli import evaluation, score  # noqa: F401

# isort: on
from radfusion.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    """Entry point: each command turns user errors into one line and exit status 2."""
    app()
