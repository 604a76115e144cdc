"""The ``radfusion`` command line: parses, calls one library function, prints.

Every stage command reads the one configuration (:mod:`radfusion.config`): ``--config
paper|cpu-demo|FILE.yaml`` and ``--set section.key=value``; ``--print`` shows the resolved
sections it would use and stops.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from radfusion.errors import RadfusionError, environment_message
from radfusion.pipeline.console import console, error, warn

app = typer.Typer(
    name="radfusion",
    help="Multimodal pulmonary-embolism detection from CT and EHR: the RadFusion benchmark.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
config_app = typer.Typer(help="Show a configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")

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
                _fail(str(exc))
            except OSError as exc:
                message = environment_message(exc)
                if message is None:
                    raise
                _fail(message)
            except KeyboardInterrupt:
                if not resumable:
                    raise
                _fail(INTERRUPTED, 130)

        return target.command(*args, **kwargs)(run)

    return register


def _fail(message: str, code: int = 2) -> None:
    error(message)
    raise typer.Exit(code)


def _config(config: str | None, sets: list[str] | None, show: bool, sections: list[str]):
    """The resolved configuration; with ``--print``, its ``sections`` are printed instead."""
    from radfusion.config import load_config

    resolved = load_config(config, sets)
    if show:
        sys.stdout.write(resolved.to_yaml(sections))
        raise typer.Exit(0)
    return resolved


def _split_list(values: list[str]) -> list[str]:
    return [part for value in values for part in value.split(",") if part]


@command()
def synth(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the cohort into.")],
    studies: Annotated[int, typer.Option(help="Number of studies (the release has 1837).")] = 1837,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same files.")] = 0,
    slices: Annotated[
        str | None, typer.Option(help="LO:HI slice counts instead of Table 1's (median 386).")
    ] = None,
    size: Annotated[int, typer.Option(help="Rows and columns per slice (the release: 512).")] = 64,
    quirks: Annotated[bool, typer.Option(help="Reproduce the real release's quirks.")] = False,
    calibre: Annotated[
        float,
        typer.Option(help="Draw lobar and smaller arteries (and emboli) this many times wider."),
    ] = 1.0,
    test_studies: Annotated[
        int | None,
        typer.Option(help="The test split's size; train and val share the rest as in Table 1."),
    ] = None,
    workers: Annotated[int, typer.Option(help="Processes writing volumes.")] = os.cpu_count() or 1,
    overwrite: Annotated[bool, typer.Option(help="Replace an earlier synthetic cohort.")] = False,
) -> None:
    """Generate a synthetic cohort in the release's exact layout (CTPA phantoms + EHR)."""
    from radfusion.pipeline.console import progress
    from radfusion.synthetic.folder import synthesize

    console.print(f"Writing {studies} studies ({size}x{size}) to {out_dir}")
    with progress() as bars:
        task = bars.add_task("volumes", total=studies)
        cohort = synthesize(
            out_dir,
            studies,
            seed,
            slices=slices,
            size=size,
            quirks=quirks,
            calibre=calibre,
            test_studies=test_studies,
            workers=workers,
            overwrite=overwrite,
            on_volume=lambda _: bars.advance(task),
        )
    positives = int(cohort.studies["label"].sum())
    console.print(
        f"Done: {studies} studies, {positives} positive. Check it: radfusion validate {out_dir}"
    )


@command()
def validate(
    data_dir: DataDir,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    hu_intercept: Annotated[
        int | None, typer.Option(help="Force the HU intercept (0 or -1024) instead of detecting.")
    ] = None,
    deep: Annotated[
        bool, typer.Option(help="Also sample every volume's voxels to check its HU intercept.")
    ] = False,
) -> None:
    """Load and check a cohort; print Tables 1 and 2. Exit 0 if usable, 2 on errors."""
    from radfusion.data.cohort import validate_cohort
    from radfusion.data.summary import summarize, summary_payload
    from radfusion.pipeline.console import print_cohort_summary

    report = validate_cohort(data_dir, hu_intercept=hu_intercept, deep=deep)
    summary = summarize(report.cohort) if report.cohort is not None else {}
    if as_json:
        sys.stdout.write(json.dumps(summary_payload(summary, report), indent=2) + "\n")
    else:
        if summary:
            print_cohort_summary(summary)
        for message in report.warnings:
            warn(message)
        for message in report.errors:
            error(message)
        if report.ok:
            console.print(f"[green]OK[/]: {data_dir} is usable ({len(report.warnings)} warning(s))")
    if not report.ok:
        raise typer.Exit(2)


@command(resumable=True)
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
    """Build the volume cache (section preprocess): HU, slices resized, int16. Reruns resume
    and skip what is done."""
    from radfusion.data.cohort import Cohort
    from radfusion.pipeline.console import progress
    from radfusion.pipeline.steps import preprocess_cohort

    section = _config(config, set_, show, ["preprocess"]).preprocess
    cohort = Cohort.load(data_dir, hu_intercept=section.hu_intercept)
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


@command("train-ehr", resumable=True)
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
    """Train the EHR-only model (section ehr); write predictions/ehr.csv and ehr/."""
    from radfusion.data.cohort import Cohort
    from radfusion.pipeline.steps import record_config, train_ehr_model
    from radfusion.rundir import RunDir

    resolved = _config(config, set_, show, ["ehr"])
    run, section = RunDir(out), resolved.ehr
    cohort = Cohort.load(data_dir)
    with console.status(f"tuning {section.model} on {section.features} features"):
        result = train_ehr_model(cohort, run, section, resolved.seed, meds_dir=meds)
    record_config(run, resolved, ["ehr"])
    for note in result.notes:
        warn(note)
    console.print(f"{section.model}: chose {result.params}; val AUROC {result.val_auroc:.3f}")
    console.print(f"wrote {run.prediction('ehr')} and {run.model('ehr')}/")


@command("train-image", resumable=True)
def train_image_command(
    data_dir: DataDir,
    out: Annotated[Path, typer.Option(help="Run directory (the model's folder, predictions/).")],
    model: Annotated[
        str, typer.Option(help="Which section to train: image (PENet) or slicenet.")
    ] = "image",
    cache: Annotated[
        Path | None,
        typer.Option(help="The preprocess cache root (default OUT/cache)."),
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    show: PrintOpt = False,
) -> None:
    """Train PENet (section image) or SliceNet (section slicenet) on the cached windows, as the
    benchmark does; write OUT/<model>/ and OUT/predictions/<model>.csv. Rerunning the same
    command resumes from the last epoch's checkpoint."""
    from radfusion.data.cohort import Cohort
    from radfusion.pipeline.runlog import run_log
    from radfusion.pipeline.steps import record_config, train_image_model
    from radfusion.rundir import RunDir

    resolved = _config(config, set_, show, ["preprocess", model])
    run = RunDir(out)
    cohort = Cohort.load(data_dir)
    section = getattr(resolved, model, None) if model in ("image", "slicenet") else None
    if section is None:
        _fail(f"--model {model}: use image (PENet) or slicenet")
    run.root.mkdir(parents=True, exist_ok=True)
    with run_log(run.log):
        chosen, predictions = train_image_model(
            cohort, run, model, section, resolved.seed, resolved.preprocess, cache_root=cache
        )
    record_config(run, resolved, ["preprocess", model])
    console.print(f"{section.select} checkpoint: {chosen}")
    console.print(f"wrote {run.prediction(model)} ({len(predictions)} studies)")


@command("predict-image")
def predict_image_command(
    checkpoint: Annotated[Path, typer.Argument(help="A train-image checkpoint (.ckpt).")],
    data_dir: Annotated[Path, typer.Argument(help="The cohort whose studies to score.")],
    cache: Annotated[Path, typer.Option(help="The cache root given to radfusion preprocess.")],
    out: Annotated[Path, typer.Option(help="Predictions CSV to write (idx, prob, split, ...).")],
    split: Annotated[str | None, typer.Option(help="Only this split.")] = None,
    batch_size: Annotated[int, typer.Option(help="Windows per batch.")] = 8,
) -> None:
    """Score studies with a checkpoint alone: the model and its preprocessing are rebuilt
    from what the checkpoint records."""
    from radfusion.pipeline.predict import score_cohort

    n = score_cohort(checkpoint, data_dir, cache, out, split=split, batch_size=batch_size)
    console.print(f"wrote {out} ({n} studies)")


@command()
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
    """Late fusion (section fusion) of models' predictions: one PRED_DIR/<name>.csv per
    strategy, fusion_<strategy>.csv (fusion_<model>_<strategy>.csv for a model other than
    image fused with ehr)."""
    from radfusion.pipeline.steps import fuse_predictions

    resolved = _config(config, set_, show, ["fusion"])
    written = fuse_predictions(
        pred_dir, _split_list([models]), resolved.fusion, resolved.seed, data=data, name=name
    )
    for path in written:
        console.print(f"wrote {path}")


@command()
def evaluate(
    data: Annotated[
        Path, typer.Option(help="The cohort (only Labels.csv and Demographics.csv are read).")
    ],
    predictions: Annotated[
        list[str],
        typer.Option(
            help="Prediction CSVs (idx,prob) or folders of them; repeat or comma-separate."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Folder for metrics.csv, thresholds.csv, ...")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    show: PrintOpt = False,
) -> None:
    """Evaluate models as the paper does (section evaluation): Youden threshold on val, six
    metrics on test and the non-subsegmental subset, per subgroup, EOD; with bootstrap CIs and
    DeLong tests."""
    from radfusion.evaluation.evaluate import auroc_summary
    from radfusion.pipeline.console import print_aurocs
    from radfusion.pipeline.steps import evaluate_predictions

    resolved = _config(config, set_, show, ["evaluation"])
    sources = _split_list(predictions)
    result = evaluate_predictions(data, sources, out, resolved.evaluation, resolved.seed)
    for note in result.notes:
        warn(note)
    print_aurocs(auroc_summary(result.metrics))
    console.print(f"wrote {out}/: metrics, thresholds, fairness, comparisons, subtypes")


@command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run folder with eval/ and predictions/.")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    show: PrintOpt = False,
) -> None:
    """Write RUN_DIR/report/ (section report): the paper's Tables 3-12 (md, csv, tex),
    figures, report.html."""
    from radfusion.pipeline.steps import write_run_report
    from radfusion.rundir import RunDir

    resolved = _config(config, set_, show, ["report"])
    console.print(f"wrote {write_run_report(RunDir(run_dir), resolved.report)}")


@command("import-dicom")
def import_dicom_command(
    dicom_root: Annotated[Path, typer.Argument(help="A tree of DICOM files (any layout).")],
    out_dir: Annotated[
        Path, typer.Argument(help="Folder for {idx}.npy, series.csv and import_report.csv.")
    ],
    workers: Annotated[
        int, typer.Option(help="Processes, one series at a time each.")
    ] = os.cpu_count() or 1,
    first_idx: Annotated[int, typer.Option(help="idx of the first series.")] = 1,
    keep_paths: Annotated[
        bool,
        typer.Option(
            help="Write source paths as they are (they may name the patient); by default "
            "every path component is hashed."
        ),
    ] = False,
) -> None:
    """Import every axial CT series as {idx}.npy (int16 HU, head to foot)."""
    from radfusion.imaging.dicom import KEEP_PATHS_WARNING, import_dicom
    from radfusion.pipeline.console import progress

    if keep_paths:
        warn(KEEP_PATHS_WARNING)
    with progress() as bars:
        task = bars.add_task("series", total=None)
        result = import_dicom(
            dicom_root,
            out_dir,
            workers=workers,
            first_idx=first_idx,
            keep_paths=keep_paths,
            on_total=lambda n: bars.update(task, total=n),
            on_series=lambda _: bars.advance(task),
        )
    console.print(f"{result.describe()}; see {out_dir / 'import_report.csv'}")


@command(resumable=True)
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
) -> None:
    """Every stage of the paper: validate, preprocess, EHR model, PENet, fusion, evaluation,
    report. Unchanged stages are skipped; an interrupted run resumes where it stopped."""
    from radfusion.pipeline.benchmark import run_benchmark
    from radfusion.pipeline.console import RichReporter, print_aurocs, stage_progress

    resolved = _config(config, set_, show, None)
    console.print(f"benchmark of {data} -> {out}")
    with stage_progress() as bars:
        result = run_benchmark(
            data,
            out,
            resolved,
            extra_predictions=extra_predictions or (),
            reporter=RichReporter(bars),
        )
    print_aurocs(result.summary)
    console.print(f"report: {result.report}")


@command(resumable=True)
def demo(
    out: Annotated[Path, typer.Option(help="Where the demo cohort and run go.")] = Path(
        "radfusion-demo"
    ),
) -> None:
    """Generate a small synthetic cohort and run the whole benchmark on it with the cpu-demo
    config; prints where the report is."""
    from radfusion.pipeline.console import RichReporter, print_aurocs, stage_progress
    from radfusion.pipeline.demo import DEMO_COHORT, run_demo

    c = DEMO_COHORT
    console.print(
        f"radfusion demo: {c.studies} synthetic studies ({c.size}x{c.size}, "
        f"{c.slices[0]}-{c.slices[1]} slices) -> {out}"
    )
    with stage_progress() as bars:
        result, seconds = run_demo(out, RichReporter(bars))
    print_aurocs(result.summary)
    console.print(f"report: {result.report}")
    console.print(f"demo finished in {seconds:.0f} s")


@command()
def predict(
    run: Annotated[Path, typer.Option(help="A benchmark run folder (radfusion benchmark --out).")],
    volume: Annotated[Path | None, typer.Option(help="The study as a .npy volume.")] = None,
    dicom: Annotated[Path | None, typer.Option(help="The study as a DICOM series folder.")] = None,
    ehr: Annotated[
        Path | None, typer.Option(help="One row of EHR features (the release tables' columns).")
    ] = None,
    hu_intercept: Annotated[
        int | None, typer.Option(help="Stored value + this = HU (default: detected).")
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the scores here.")
    ] = None,
) -> None:
    """Score one new study with a run's models: image, EHR and fused probabilities, the
    decision at the validation threshold, and the most suspicious window."""
    from radfusion.io import write_json
    from radfusion.pipeline.console import print_study_score
    from radfusion.pipeline.predict import predict_study

    score = predict_study(run, volume=volume, dicom=dicom, ehr_row=ehr, hu_intercept=hu_intercept)
    print_study_score(score)
    if json_out is not None:
        write_json(score.to_dict(), json_out)
        console.print(f"wrote {json_out}")


@command("show", target=config_app)
def config_show(
    source: Annotated[
        str,
        typer.Argument(help="A run folder (its config.yaml), a YAML file, or a shipped name."),
    ],
    set_: SetOpt = None,
) -> None:
    """Print a resolved configuration: a run's recipe, a file's, or a shipped one's."""
    from radfusion.config import load_config
    from radfusion.rundir import RunDir

    path = Path(source)
    if path.is_dir():
        if not RunDir(path).config.exists():
            _fail(f"{path}: no config.yaml; not a radfusion run folder")
        path = RunDir(path).config
    sys.stdout.write(load_config(path if path.exists() else source, set_).to_yaml())


def main() -> None:
    """Entry point: user errors print one or two lines and exit 2; bugs keep tracebacks."""
    try:
        app()
    except RadfusionError as exc:
        error(str(exc))
        sys.exit(2)
    except OSError as exc:
        message = environment_message(exc)
        if message is None:
            raise
        error(message)
        sys.exit(2)


if __name__ == "__main__":
    main()
