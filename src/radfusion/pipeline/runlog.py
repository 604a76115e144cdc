"""A run's log: every stage's messages, and Lightning's, in ``RUN_DIR/benchmark.log``.

While a run holds its log, Lightning's own console lines (accelerators found, tips) and the
warnings raised inside Lightning (a checkpoint folder that is not empty on a resume, a
DataLoader with few workers) go to the file only: the console keeps radfusion's messages.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

__all__ = ["run_log"]

log = logging.getLogger("radfusion")
LIBRARIES = ("lightning", "lightning_fabric", "pytorch_lightning", "torchmetrics")


class _Silence(logging.Filter):
    def filter(self, record):
        return False


def _from_library(filename: str) -> bool:
    parts = Path(filename).parts
    return any(name in parts for name in LIBRARIES)


@contextlib.contextmanager
def run_log(path: Path) -> Iterator[None]:
    """Append radfusion's and Lightning's messages to ``path`` while the block runs."""
    # Lightning adds its console handlers when first imported: import it now, so that the
    # handlers to quiet exist before the run starts.
    import lightning.pytorch

    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    lightning = logging.getLogger("lightning.pytorch")
    loggers = [log, lightning, logging.getLogger("lightning.fabric")]
    for logger in loggers:
        logger.addHandler(handler)
    previous_level = log.level
    log.setLevel(logging.INFO)
    silence = _Silence()
    consoles = [
        h
        for logger in loggers[1:]
        for h in logger.handlers
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
    ]
    for h in consoles:
        h.addFilter(silence)
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if _from_library(filename):
            lightning.info("%s: %s (%s:%d)", category.__name__, message, filename, lineno)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    except Exception as exc:
        log.error("stopped: %s", exc)
        raise
    finally:
        warnings.showwarning = shown
        for logger in loggers:
            logger.removeHandler(handler)
        for h in consoles:
            h.removeFilter(silence)
        log.setLevel(previous_level)
        handler.close()
