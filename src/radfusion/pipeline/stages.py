"""Declared stages and the one runner that skips, reruns and resumes them.

A :class:`Stage` names its upstream stages, the config sections that shape it, any other input
it reads (a signature of the data folder, of the predictions files), its outputs, and a run
function. :func:`run_stages` derives each stage's fingerprint from those declarations alone.


Each stage leaves ``RUN_DIR/stages/<name>.json`` with a fingerprint (a hash of its parameters,
its inputs' signatures and its upstream stages' fingerprints) and a status: ``running`` when it
started, ``done`` when its outputs are complete. A stage is skipped when a ``done`` record has
the same fingerprint; a changed fingerprint clears the stage's outputs before it reruns, so a run
folder never mixes results computed under two configurations. An interrupted stage (``running``,
same fingerprint) is resumed in place: the cache completes what is missing, PENet starts from
its last checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from radfusion.devices import is_rank_zero
from radfusion.io import write_json
from radfusion.rundir import RunDir

__all__ = [
    "Stage",
    "StageBook",
    "StageReporter",
    "file_signature",
    "fingerprint",
    "run_stages",
    "tree_signature",
]
log = logging.getLogger("radfusion")


def fingerprint(*parts) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_signature(path: Path) -> str:
    """A content hash: for small files (CSVs of predictions) whose mtime may lie."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def tree_signature(
    root: Path, suffixes=(".csv", ".npy", ".parquet", ".json"), exclude: Path | None = None
) -> str:
    """Names, sizes and modification times of the data files below ``root`` (not below
    ``exclude``, e.g. a run folder inside it): cheap for thousands of volumes, and changed by
    any rewrite."""
    skip = Path(exclude).resolve() if exclude is not None else None
    entries = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith(".") and (skip is None or (Path(folder) / d).resolve() != skip)
        )
        for name in sorted(files):
            if name.endswith(suffixes):
                st = (Path(folder) / name).stat()
                entries.append(
                    (os.path.relpath(Path(folder) / name, root), st.st_size, st.st_mtime_ns)
                )
    return fingerprint(entries)


@dataclass
class StageBook:
    run_dir: Path

    def _path(self, name: str) -> Path:
        return RunDir(self.run_dir).stage(name)

    def record(self, name: str) -> dict:
        path = self._path(name)
        if not path.exists():
            return {}
        try:  # an unreadable record (a stranger's folder) only makes the stage run again
            rec = json.loads(path.read_text())
        except (ValueError, OSError):
            return {}
        return rec if isinstance(rec, dict) else {}

    def is_done(self, name: str, fp: str) -> bool:
        rec = self.record(name)
        return rec.get("status") == "done" and rec.get("fingerprint") == fp

    def start(self, name: str, fp: str, outputs: list[Path]) -> bool:
        """Mark ``name`` running; return True when it resumes an interrupted run of the same
        fingerprint. Outputs of a different fingerprint are removed first."""
        rec = self.record(name)
        resumed = rec.get("status") == "running" and rec.get("fingerprint") == fp
        if not resumed:  # never build on outputs of another configuration, or of unknown origin
            _remove(outputs)
        write_json(
            {"status": "running", "fingerprint": fp, "started": time.time()}, self._path(name)
        )
        return resumed

    def clear(self, name: str, outputs: list[Path]) -> None:
        """A stage switched off: its outputs go (nothing downstream may read them), and its
        record says so."""
        _remove(outputs)
        write_json({"status": "off"}, self._path(name))

    def finish(self, name: str, fp: str, seconds: float, **info) -> None:
        write_json(
            {"status": "done", "fingerprint": fp, "seconds": round(seconds, 2), **info},
            self._path(name),
        )


def _remove(paths: list[Path]) -> None:
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


class StageReporter:
    """What a front end hears about (the CLI draws progress bars; tests stay silent)."""

    def stage(self, name: str, status: str, seconds: float = 0.0) -> None:
        """``status``: running, resumed, done, skipped or off."""

    def total(self, n: int) -> None:
        """The current stage has ``n`` steps."""

    def advance(self, n: int = 1) -> None: ...


@dataclass(frozen=True)
class Stage:
    """One stage of a run, declared.

    ``after``: upstream stages (their fingerprints enter this one's); ``sections``: the config
    sections (and ``seed``) that shape it; ``signature``: anything else it reads, as a value
    that changes when the input does; ``outputs``: what it writes (removed before a run of
    another fingerprint); ``enabled``: whether the config asks for it; ``run``: the work,
    returning a dict recorded with the stage; ``all_ranks``: the other ranks of a distributed
    launch run it too (a training they take part in), and nothing else.
    """

    name: str
    run: Callable[[Any], dict | None]
    after: tuple[str, ...] = ()
    sections: tuple[str, ...] = ()
    signature: Callable[[Any], Any] | None = None
    outputs: Callable[[RunDir], list[Path]] = field(default=lambda run: [])
    enabled: Callable[[Any], bool] = field(default=lambda config: True)
    all_ranks: bool = False


def _section_values(config, names: Sequence[str]) -> list:
    values = []
    for name in names:
        value = getattr(config, name)
        values.append(value.fingerprint() if hasattr(value, "fingerprint") else value)
    return values


def _fingerprint(stage: Stage, context, fps: dict[str, str]) -> str:
    return fingerprint(
        stage.name,
        [fps[name] for name in stage.after],
        _section_values(context.config, stage.sections),
        stage.signature(context) if stage.signature is not None else None,
    )


def run_stages(
    stages: Sequence[Stage], context, run: RunDir, reporter: StageReporter
) -> dict[str, str]:
    """Run ``stages`` in order for ``context`` (which carries ``config``): a stage whose
    fingerprint has a finished record is skipped, an interrupted one resumed, any other run
    afresh; a disabled one has its outputs removed. Returns each stage's status.

    On a rank other than 0 of a distributed launch, only the ``all_ranks`` stages that rank 0
    runs (enabled, not done) run, and no record is written: rank 0 keeps the books."""
    book, fps, statuses = StageBook(run.root), {}, {}
    leader = is_rank_zero()
    for stage in stages:
        if not leader:
            if stage.all_ranks and stage.enabled(context.config):
                fps[stage.name] = _fingerprint(stage, context, fps)
                # Rank 0 runs what is not done; it is in this stage's training now, or will be.
                if not book.is_done(stage.name, fps[stage.name]):
                    stage.run(context)
                    statuses[stage.name] = "joined"
            elif stage.enabled(context.config):
                fps[stage.name] = _fingerprint(stage, context, fps)
            else:
                fps[stage.name] = "off"
            continue
        if not stage.enabled(context.config):
            book.clear(stage.name, stage.outputs(run))
            fps[stage.name] = statuses[stage.name] = "off"
            log.info("stage %s: off", stage.name)
            reporter.stage(stage.name, "off")
            continue
        fps[stage.name] = fp = _fingerprint(stage, context, fps)
        if book.is_done(stage.name, fp):
            statuses[stage.name] = "skipped"
            log.info("stage %s: unchanged, skipped", stage.name)
            reporter.stage(stage.name, "skipped")
            continue
        resumed = book.start(stage.name, fp, stage.outputs(run))
        statuses[stage.name] = "resumed" if resumed else "ran"
        log.info("stage %s: %s (fingerprint %s)", stage.name, statuses[stage.name], fp)
        reporter.stage(stage.name, "resumed" if resumed else "running")
        t0 = time.perf_counter()
        info = stage.run(context) or {}
        seconds = time.perf_counter() - t0
        book.finish(stage.name, fp, seconds, **info)
        log.info("stage %s: done in %.1f s %s", stage.name, seconds, info or "")
        reporter.stage(stage.name, "done", seconds)
    return statuses
