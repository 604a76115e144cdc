"""``radfusion demo``: a synthetic cohort generated on the spot, then the whole benchmark.

The sizes are chosen for a 2-core laptop and a budget of about 20 minutes end to end: see
``DEMO_COHORT`` and ``configs/cpu-demo.yaml`` (docs/experiments/demo.md).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from radfusion.errors import RadfusionError
from radfusion.io import write_json
from radfusion.locks import exclusive
from radfusion.synthetic.folder import SYNTH_MARKER

__all__ = ["DEMO_COHORT", "DemoCohort", "prepare_demo_data", "run_demo"]


@dataclass(frozen=True)
class DemoCohort:
    # 570 train, 76 val, 74 test studies: a validation and test split twice the size of a
    # 360-study cohort's, and an EHR model trained on twice the rows
    # (docs/experiments/penet-on-the-phantom.md, item 11).
    studies: int = 720
    size: int = 64  # rows and columns per slice
    slices: tuple[int, int] = (48, 64)
    # Lobar and smaller arteries drawn three times as wide (up to a main artery's width): at
    # 64 px they are then as many pixels wide as true-size ones in PENet's 192-px input.
    calibre: float = 3.0
    test_studies: int | None = None  # None: Table 1's share
    seed: int = 0
    workers: int = 2
    layout: str = "radfusion"  # or "inspect": the same studies in INSPECT's layout


DEMO_COHORT = DemoCohort()


def prepare_demo_data(
    folder: Path,
    cohort: DemoCohort = DEMO_COHORT,
    *,
    on_total: Callable[[int], None] | None = None,
    on_volume: Callable[[int], None] | None = None,
) -> bool:
    """Generate the demo cohort into ``folder`` unless it already holds exactly that cohort;
    return whether it was generated.

    The cohort is written into a hidden sibling folder and renamed into place when complete,
    so ``folder`` holds a whole cohort or none: a generation killed half-way leaves only the
    sibling, which the next call discards and writes again. A second call while one is
    generating is refused (it would discard the first one's sibling under it)."""
    busy = f"{folder}: another radfusion demo is writing it; wait for it, or use another --out"
    with exclusive(folder.with_name(f".{folder.name}.lock"), busy):
        return _prepare(folder, cohort, on_total, on_volume)


def _prepare(folder, cohort, on_total, on_volume) -> bool:
    from radfusion.synthetic.inspect_writer import write_inspect_cohort
    from radfusion.synthetic.writer import write_synthetic_cohort

    marker = folder / SYNTH_MARKER
    wanted = {**asdict(cohort), "slices": list(cohort.slices), "quirks": False}
    wanted.pop("workers")
    if cohort.layout == "radfusion":
        wanted.pop("layout")  # as the markers of demos before the INSPECT layout
    if marker.exists():
        theirs = json.loads(marker.read_text())
        same = {k: v for k, v in theirs.items() if k in wanted} == wanted
        if same and theirs.get("layout", "radfusion") == cohort.layout:
            return False
        raise RadfusionError(
            f"{folder}: holds another synthetic cohort; use a new --out folder for the demo"
        )
    if folder.exists() and any(folder.iterdir()):
        raise RadfusionError(f"{folder}: not empty and not a demo cohort; use a new --out folder")
    partial = folder.with_name(f".{folder.name}.partial")
    if partial.exists():  # an earlier generation was killed
        shutil.rmtree(partial)
    if on_total:
        on_total(cohort.studies)
    writer = write_inspect_cohort if cohort.layout == "inspect" else write_synthetic_cohort
    writer(
        partial,
        cohort.studies,
        cohort.seed,
        size=cohort.size,
        slice_range=cohort.slices,
        calibre=cohort.calibre,
        test_studies=cohort.test_studies,
        workers=cohort.workers,
        on_volume=on_volume,
    )
    write_json(wanted, partial / SYNTH_MARKER)
    partial.replace(folder)  # an empty folder of that name is replaced too
    return True


def run_demo(out: Path, reporter=None, *, layout: str = "radfusion"):
    """``radfusion demo``: the demo cohort into ``out/data`` (unless it is there), then the
    benchmark with the ``cpu-demo`` config into ``out/run``. Returns the benchmark's result
    and the seconds it all took. ``layout="inspect"`` writes the cohort in INSPECT's layout
    and runs its PE task (SliceNet off: INSPECT has no annotated slices)."""
    import time

    from radfusion.config import load_config
    from radfusion.pipeline.benchmark import run_benchmark
    from radfusion.pipeline.stages import StageReporter

    reporter = reporter or StageReporter()
    t0 = time.perf_counter()
    reporter.stage("synth", "running")
    if layout not in ("radfusion", "inspect"):
        raise RadfusionError(f"--layout {layout!r}: use radfusion or inspect")
    made = prepare_demo_data(
        Path(out) / "data",
        replace(DEMO_COHORT, layout=layout),
        on_total=reporter.total,
        on_volume=lambda _: reporter.advance(),
    )
    reporter.stage("synth", "done" if made else "skipped", time.perf_counter() - t0)
    sets = ["slicenet.enabled=false", "data.layout=inspect"] if layout == "inspect" else []
    result = run_benchmark(
        Path(out) / "data", Path(out) / "run", load_config("cpu-demo", sets), reporter=reporter
    )
    return result, time.perf_counter() - t0
