"""The stage commands, each reading its config sections, and the benchmark and demo that run
them all."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from radfusion.cli.app import (
    ConfigOpt,
    DataDir,
    PrintOpt,
    SetOpt,
    command,
    resolve,
    split_list,
)
from radfusion.errors import RadfusionError
from radfusion.pipeline.console import console, error, warn

PANEL = "Stages and runs"  # where --help lists these commands


@command(resumable=True, rich_help_panel=PANEL)
def preprocess(
    data_dir: DataDir,
    cache: Annotated[
        Path, typer.Option(help="Cache root; entries go in a sub-folder keyed by the parameters.")
    ],
    verify: Annotated[bool, typer.Option(help="Also check every entry's checksum.")] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    show: PrintOpt = False,
) -> None:
    """Build the CT cache (section preprocess): HU, slices resized, int16.

    Reruns skip complete entries, rebuild stale or corrupt ones, and resume a killed run."""
    from radfusion.data.cohort import Cohort
    from radfusion.pipeline.console import progress
    from radfusion.pipeline.steps import preprocess_cohort

    resolved = resolve(config, set_, show, ["data", "preprocess"])
    section = resolved.preprocess
    cohort = Cohort.load(data_dir, hu_intercept=section.hu_intercept, data=resolved.data)
    with progress() as bars:
        task = bars.add_task("studies", total=None)
        summary = preprocess_cohort(
            cohort,
            cache,
            section,
            verify=verify,
            on_total=lambda n: bars.update(task, total=n),
            on_entry=lambda _: bars.advance(task),
        )
    for idx, why in summary.rebuilt.items():
        warn(f"entry {idx} was {why}; rebuilt")
    for message in summary.failed.values():
        error(message)
    console.print(f"{summary.describe()}: {summary.folder}")
    if summary.failed:
        raise typer.Exit(2)


@command("train-ehr", resumable=True, rich_help_panel=PANEL)
def train_ehr_command(
    data_dir: DataDir,
    out: Annotated[Path, typer.Option(help="Run directory to write into.")],
    meds: Annotated[
        Path | None, typer.Option(help="MEDS folder for ehr.features=meds (default DATA_DIR/raw).")
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    show: PrintOpt = False,
) -> None:
    """Train the EHR-only model (section ehr): OUT/ehr/, OUT/predictions/ehr.csv."""
    from radfusion.data.cohort import Cohort
    from radfusion.pipeline.steps import record_config, train_ehr_model
    from radfusion.rundir import RunDir

    resolved = resolve(config, set_, show, ["data", "ehr"])
    run, section = RunDir(out), resolved.ehr
    cohort = Cohort.load(data_dir, data=resolved.data)
    with console.status(f"tuning {section.model} on {section.features} features"):
        result = train_ehr_model(cohort, run, section, resolved.seed, meds_dir=meds)
    record_config(run, resolved, ["ehr"])
    for note in result.notes:
        warn(note)
    console.print(f"{section.model}: chose {result.params}; val AUROC {result.val_auroc:.3f}")
    console.print(f"wrote {run.prediction('ehr')} and {run.model('ehr')}/")


@command("train-image", resumable=True, rich_help_panel=PANEL)
def train_image_command(
    data_dir: DataDir,
    out: Annotated[Path, typer.Option(help="Run directory (the model's folder, predictions/).")],
    section: Annotated[
        str, typer.Option(help="image (PENet) or slicenet: what to train.")
    ] = "image",
    cache: Annotated[
        Path | None,
        typer.Option(help="The preprocess cache root (default OUT/cache)."),
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    show: PrintOpt = False,
) -> None:
    """Train PENet (section image) or SliceNet (section slicenet) as the benchmark does.

    Writes OUT/<section>/ (checkpoints, logs) and OUT/predictions/<section>.csv; rerun, it
    resumes from the last epoch's checkpoint."""
    from radfusion.data.cohort import Cohort
    from radfusion.pipeline.runlog import run_log
    from radfusion.pipeline.steps import image_section, record_config, train_image_model
    from radfusion.rundir import RunDir

    resolved = resolve(config, set_, show, ["data", "preprocess", image_section(section)])
    run = RunDir(out)
    cohort = Cohort.load(data_dir, data=resolved.data)
    run.root.mkdir(parents=True, exist_ok=True)
    with run_log(run.log):
        chosen, predictions = train_image_model(
            cohort,
            run,
            section,
            getattr(resolved, section),
            resolved.preprocess,
            resolved.seed,
            cache_root=cache,
        )
    record_config(run, resolved, ["preprocess", section])
    console.print(f"chosen checkpoint: {chosen}")
    console.print(f"wrote {run.prediction(section)} ({len(predictions)} studies)")


@command(rich_help_panel=PANEL)
def fuse(
    pred_dir: Annotated[Path, typer.Argument(help="Folder holding <model>.csv predictions.")],
    models: Annotated[str, typer.Option(help="Comma-separated model names, e.g. image,ehr.")],
    data: Annotated[
        Path | None,
        typer.Option(help="The cohort; needed by weighted and stacked (they learn on val)."),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(help="The fused model's name, with one strategy (default fusion_<strategy>)."),
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    show: PrintOpt = False,
) -> None:
    """Late fusion of models' predictions (section fusion), one file per strategy.

    PRED_DIR/fusion_<strategy>.csv (fusion_<model>_<strategy>.csv for a model other than
    image fused with ehr)."""
    from radfusion.pipeline.steps import fuse_predictions

    resolved = resolve(config, set_, show, ["fusion"])
    written = fuse_predictions(
        pred_dir, split_list([models]), resolved.fusion, resolved.seed, data=data, name=name
    )
    for path in written:
        console.print(f"wrote {path}")


@command(resumable=True, rich_help_panel=PANEL)
def benchmark(
    data: Annotated[Path, typer.Option(help="The cohort folder (the release, or synth output).")],
    out: Annotated[Path, typer.Option(help="The run folder (created; rerun to resume).")],
    extra_predictions: Annotated[
        list[Path] | None,
        typer.Option(help="Your own model's predictions CSV (idx, prob): evaluated too."),
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    show: PrintOpt = False,
    task: Annotated[
        str | None,
        typer.Option(help="The label: PE, an INSPECT task, a comma list, or all (data.task)."),
    ] = None,
    layout: Annotated[
        str | None, typer.Option(help="radfusion or inspect; default: told by the files.")
    ] = None,
    embeddings: Annotated[
        list[Path] | None,
        typer.Option(help="Your encoder's study embeddings (<name>.parquet): probed and fused."),
    ] = None,
    seeds: Annotated[
        str | None,
        typer.Option(help="Comma-separated training seeds, e.g. 0,1,2,3,4: a run per seed."),
    ] = None,
) -> None:
    """Every stage of the paper on one cohort, cached and resumable.

    validate, preprocess, ehr, image, slicenet (when enabled), joint (when a fusion design),
    fusion, evaluate, report. Unchanged stages are skipped; an interrupted run resumes where
    it stopped. With --task all, every task of the cohort in its own folder under OUT/tasks/;
    with --seeds, every seed in its own folder under OUT/seeds/ and a summary across them."""
    from radfusion.devices import is_rank_zero
    from radfusion.pipeline.benchmark import run_benchmark
    from radfusion.pipeline.console import RichReporter, print_aurocs, stage_progress

    options = [f"data.task={task}"] * (task is not None) + [f"data.layout={layout}"] * (
        layout is not None
    )
    resolved = resolve(config, [*(set_ or []), *options], show, None)
    seed_list = parse_seeds(seeds)
    if not is_rank_zero():  # a DDP rank Lightning started: it trains its share, silently
        run_benchmark(data, out, resolved, seeds=seed_list)
        return
    console.print(f"benchmark of {data} -> {out}")
    with stage_progress() as bars:
        result = run_benchmark(
            data,
            out,
            resolved,
            extra_predictions=extra_predictions or (),
            extra_embeddings=embeddings or (),
            reporter=RichReporter(bars),
            seeds=seed_list,
        )
    print_aurocs(result.summary)
    console.print(f"report: {result.report}")


def parse_seeds(text: str | None) -> list[int] | None:
    """``"0,1,2"`` -> ``[0, 1, 2]``; None -> None; anything else a one-line error."""
    if text is None:
        return None
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or any(v < 0 for v in values):
        raise RadfusionError(
            f"--seeds {text!r}: expected comma-separated whole numbers, e.g. 0,1,2"
        )
    return values


@command(resumable=True, rich_help_panel=PANEL)
def demo(
    out: Annotated[Path, typer.Option(help="Where the demo cohort and run go.")] = Path(
        "radfusion-demo"
    ),
    layout: Annotated[
        str, typer.Option(help="radfusion, or inspect: the cohort in INSPECT's layout, task PE.")
    ] = "radfusion",
) -> None:
    """A small synthetic cohort, then the whole benchmark on it (config cpu-demo)."""
    from radfusion.pipeline.console import (
        RichReporter,
        print_aurocs,
        print_stage_times,
        stage_progress,
    )
    from radfusion.pipeline.demo import DEMO_COHORT, run_demo

    c = DEMO_COHORT
    console.print(
        f"radfusion demo: {c.studies} synthetic studies ({c.size}x{c.size}, "
        f"{c.slices[0]}-{c.slices[1]} slices) -> {out}"
    )
    with stage_progress() as bars:
        reporter = RichReporter(bars)
        result, seconds = run_demo(out, reporter, layout=layout)
    print_aurocs(result.summary)
    console.print(f"report: {result.report}")
    print_stage_times(reporter.seconds, seconds)
