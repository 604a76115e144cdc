"""The ``radfusion`` command line: each command parses, calls one library function, prints.

``app`` holds every command; ``main`` is the console entry point.
"""

from __future__ import annotations

from radfusion.cli import cohorts, run, score  # noqa: F401  (each registers its commands)
from radfusion.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    """Entry point: each command turns user errors into one line and exit status 2."""
    app()
