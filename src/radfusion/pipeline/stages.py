"""Stage bookkeeping: what a stage was computed from, and whether it finished.

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
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from radfusion.io import write_json

__all__ = ["StageBook", "file_signature", "fingerprint", "tree_signature"]


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
        return self.run_dir / "stages" / f"{name}.json"

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
