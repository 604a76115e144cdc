"""The ``radfusion`` command line: parses, calls the library, prints. No logic of its own."""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from radfusion.errors import RadfusionError, environment_message
from radfusion.pipeline.demo import claim_synth_folder, finish_synth_folder

app = typer.Typer(
    name="radfusion",
    help="Multimodal pulmonary-embolism detection from CT and EHR: the RadFusion benchmark.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)


def _progress():
    """One progress bar style for every long command (hidden once done)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


def _fail(message: str, code: int = 2) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def command(*args, resumable: bool = False, **kwargs):
    """``app.command`` that turns a user error into one message and exit status 2; a
    ``resumable`` command interrupted with Ctrl-C says how to resume (exit status 130)."""

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
                _fail("interrupted; finished work is kept: rerun the same command to resume", 130)

        return app.command(*args, **kwargs)(run)

    return register


def _parse_range(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        lo, hi = (int(part) for part in text.split(":"))
    except ValueError:
        _fail(f"--slices {text!r}: expected LO:HI, e.g. 32:64")
    if not 1 <= lo <= hi:
        _fail(f"--slices {text!r}: need 1 <= LO <= HI")
    return lo, hi


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
    from radfusion.synthetic.design import MIN_STUDIES, split_sizes
    from radfusion.synthetic.writer import write_synthetic_cohort

    slice_range = _parse_range(slices)
    if studies < MIN_STUDIES:
        _fail(f"--studies {studies}: need at least {MIN_STUDIES} to fill train, val and test")
    if size < 8:
        _fail(f"--size {size}: need at least 8 pixels")
    if not 0 < calibre <= 5:
        _fail(f"--calibre {calibre}: use a factor in (0, 5]; 1 is true to size")
    try:
        split_sizes(studies, test_studies)
    except ValueError as err:
        _fail(f"--studies {studies} --test-studies {test_studies}: {err}")
    claim_synth_folder(out_dir, overwrite)
    median = 386 if slice_range is None else sum(slice_range) / 2
    gib = studies * median * size * size * 2 / 2**30
    console.print(f"Writing {studies} studies ({size}x{size}, ~{gib:.1f} GiB) to {out_dir}")
    with _progress() as progress:
        task = progress.add_task("volumes", total=studies)
        cohort = write_synthetic_cohort(
            out_dir,
            studies,
            seed,
            size=size,
            slice_range=slice_range,
            quirks=quirks,
            calibre=calibre,
            test_studies=test_studies,
            workers=workers,
            on_volume=lambda _: progress.advance(task),
        )
    finish_synth_folder(
        out_dir,
        {
            "studies": studies,
            "seed": seed,
            "size": size,
            "slices": list(slice_range) if slice_range else None,  # as the demo's marker
            "quirks": quirks,
            "calibre": calibre,
            "test_studies": test_studies,
        },
    )
    positives = int(cohort.studies["label"].sum())
    console.print(
        f"Done: {studies} studies, {positives} positive. Check it: radfusion validate {out_dir}"
    )


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return f"{value['mean']:.2f} : {value['std']:.2f}"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _print_summary(summary: dict) -> None:
    splits = summary["splits"]
    order = ["overall", "train", "val", "test"]
    table = Table(title="Table 1: data characteristics")
    table.add_column("")
    for name in order:
        table.add_column(name.capitalize(), justify="right")

    def pct(key, of):
        return [
            f"{splits[s][key]} ({100 * splits[s][key] / max(splits[s][of], 1):.1f}%)" for s in order
        ]

    table.add_row("# of studies", *[_fmt(splits[s]["studies"]) for s in order])
    table.add_row("# of patients", *[_fmt(splits[s]["patients"]) for s in order])
    table.add_row(
        "Median # of slices (IQR)",
        *[f"{_fmt(splits[s]['median_slices'])} ({_fmt(splits[s]['iqr_slices'])})" for s in order],
    )
    table.add_row("# of negative PE", *pct("negatives", "studies"))
    table.add_row("# of positive PE", *pct("positives", "studies"))
    for subtype in ("central", "segmental", "subsegmental"):
        table.add_row(f"  {subtype.capitalize()}", *pct(subtype, "positives"))
    for key, title in (("bmi", "BMI (mean : std)"), ("pulse", "Pulse (mean : std)")):
        if key in splits["overall"]:
            table.add_row(title, *[_fmt(splits[s][key]) for s in order])
    if "ddimer_taken" in splits["overall"]:
        table.add_row("D-dimer test taken", *pct("ddimer_taken", "studies"))
        table.add_row("D-dimer positive", *pct("ddimer_positive", "studies"))
    console.print(table)

    groups = Table(title="Table 2: test-set groups")
    groups.add_column("Attribute")
    groups.add_column("Group")
    groups.add_column("Including subsegmental-only PE", justify="right")
    groups.add_column("Excluding subsegmental-only PE", justify="right")
    for attr, names in (
        ("Gender", ("Female", "Male")),
        ("Race", ("White", "Others")),
        ("Age", (">80", "<=80")),
    ):
        for g in names:
            groups.add_row(
                attr,
                g,
                str(summary["test_groups"][g]),
                str(summary["test_groups_non_subsegmental"][g]),
            )
    console.print(groups)


@command()
def validate(
    data_dir: Annotated[Path, typer.Argument(help="A RadFusion release (or synthetic) folder.")],
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
    from radfusion.data.summary import summarize

    report = validate_cohort(data_dir, hu_intercept=hu_intercept, deep=deep)
    summary = summarize(report.cohort) if report.cohort is not None else {}
    if as_json:
        payload = {
            "splits": summary.get("splits", {}),
            "test_groups": summary.get("test_groups", {}),
            **{k: v for k, v in summary.items() if k not in ("splits", "test_groups")},
            "warnings": report.warnings,
            "errors": report.errors,
        }
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
    else:
        if summary:
            _print_summary(summary)
        for message in report.warnings:
            console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)
        for message in report.errors:
            err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
        if report.ok:
            console.print(f"[green]OK[/]: {data_dir} is usable ({len(report.warnings)} warning(s))")
    if not report.ok:
        raise typer.Exit(2)


@command("train-ehr")
def train_ehr_command(
    data_dir: Annotated[Path, typer.Argument(help="A RadFusion release (or synthetic) folder.")],
    out: Annotated[Path, typer.Option(help="Run directory to write into.")],
    model: Annotated[str, typer.Option(help="elasticnet (the paper's) or hgb.")] = "elasticnet",
    features: Annotated[
        str, typer.Option(help="release: the six tables; meds: rebuild them from raw/ events.")
    ] = "release",
    meds: Annotated[
        Path | None, typer.Option(help="MEDS folder for --features meds (default DATA_DIR/raw).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed; same seed and data, same predictions.")] = 0,
    cv: Annotated[
        int | None, typer.Option(help="Choose hyper-parameters by k-fold CV on train.")
    ] = None,
) -> None:
    """Train the EHR-only model; write predictions/ehr.csv and the model's files."""
    from radfusion.data.cohort import Cohort
    from radfusion.ehr.train import train_ehr

    cohort = Cohort.load(data_dir)
    with console.status(f"tuning {model} on {features} features"):
        run = train_ehr(
            cohort, out, model=model, features=features, meds_dir=meds, seed=seed, cv=cv
        )
    for note in run.notes:
        console.print(f"[yellow]warning:[/] {note}", highlight=False)
    console.print(f"{model}: chose {run.params}; validation AUROC {run.val_auroc:.3f}")
    console.print(f"wrote {out / 'predictions' / 'ehr.csv'} and {out / 'ehr'}/")


def _split_list(values: list[str]) -> list[str]:
    return [part for value in values for part in value.split(",") if part]


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
    out: Annotated[
        Path,
        typer.Option(
            help="Folder for metrics.csv, thresholds.csv, fairness.csv, comparisons.csv, "
            "subtypes.csv."
        ),
    ],
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the CIs.")] = 2000,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.")] = 0,
    allow_missing: Annotated[
        bool, typer.Option(help="Evaluate even when some test studies have no prediction.")
    ] = False,
) -> None:
    """Evaluate models as the paper does: Youden threshold on val, six metrics on test and
    the non-subsegmental subset, per subgroup, EOD; with bootstrap CIs and DeLong tests."""
    from radfusion.evaluation.evaluate import evaluate_files

    if bootstrap < 100:
        _fail(f"--bootstrap {bootstrap}: use at least 100 resamples for a 95% interval")
    result = evaluate_files(
        data,
        _split_list(predictions),
        out,
        n_boot=bootstrap,
        seed=seed,
        allow_missing=allow_missing,
    )
    for note in result.notes:
        console.print(f"[yellow]warning:[/] {note}", highlight=False, soft_wrap=True)
    from radfusion.evaluation.evaluate import auroc_summary

    _print_aurocs(auroc_summary(result.metrics))
    console.print(
        f"wrote {out}/metrics.csv, thresholds.csv, fairness.csv, comparisons.csv, subtypes.csv"
    )


@command()
def fuse(
    pred_dir: Annotated[Path, typer.Argument(help="Folder holding <model>.csv predictions.")],
    models: Annotated[str, typer.Option(help="Comma-separated model names, e.g. image,ehr.")],
    strategy: Annotated[
        str, typer.Option(help="mean (the paper's), weighted, stacked, max.")
    ] = "mean",
    data: Annotated[
        Path | None,
        typer.Option(help="The cohort; needed by weighted and stacked (they learn on val)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed (stacked's cross-fitting folds).")] = 0,
    name: Annotated[
        str | None,
        typer.Option(
            help="The fused model's name (default fusion_<strategy>), e.g. fusion_slicenet_mean."
        ),
    ] = None,
) -> None:
    """Late fusion of models' predictions into PRED_DIR/<name>.csv (fusion_<strategy>.csv)."""
    from radfusion.data.cohort import load_outcomes
    from radfusion.fusion import NEEDS_LABELS, fuse_files, study_frame

    names = _split_list([models])
    if data is not None:
        studies = load_outcomes(data)
    elif strategy in NEEDS_LABELS:
        _fail(f"--strategy {strategy} learns on validation labels: pass --data DATA_DIR")
    else:  # mean and max need no labels; the split comes from the first model's file
        studies = study_frame(pred_dir, names[0])
    out = fuse_files(pred_dir, names, strategy, studies, seed=seed, name=name)
    console.print(f"wrote {out}")


@command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run folder with eval/ and predictions/.")],
    title: Annotated[str | None, typer.Option(help="Title of the page.")] = None,
) -> None:
    """Write RUN_DIR/report/: the paper's Tables 3-12 (md, csv, tex), figures, report.html."""
    from radfusion.report.html import write_report

    path = write_report(run_dir, title=title)
    console.print(f"wrote {path}")


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
    from radfusion.imaging.dicom import import_dicom

    if not dicom_root.is_dir():
        _fail(f"{dicom_root}: not a folder")
    if keep_paths:
        console.print(
            "[yellow]warning:[/] --keep-paths: series.csv and import_report.csv name the "
            "source files as they are; folder names often carry a patient's name, id or "
            "birth date: keep these outputs private",
            highlight=False,
        )
    with _progress() as progress:
        task = progress.add_task("series", total=None)
        result = import_dicom(
            dicom_root,
            out_dir,
            workers=workers,
            first_idx=first_idx,
            keep_paths=keep_paths,
            on_total=lambda n: progress.update(task, total=n),
            on_series=lambda _: progress.advance(task),
        )
    skipped = [s for s in result.series if s.status != "imported"]
    warned = [s for s in result.imported if s.reasons]
    console.print(
        f"imported {len(result.imported)} series ({len(warned)} with warnings), "
        f"skipped {len(skipped)}, ignored {len(result.unreadable)} non-DICOM or "
        f"unreadable file(s); see {out_dir / 'import_report.csv'}"
    )


@command()
def preprocess(
    data_dir: Annotated[Path, typer.Argument(help="A RadFusion release (or synthetic) folder.")],
    cache: Annotated[
        Path, typer.Option(help="Cache root; entries go in a sub-folder keyed by the parameters.")
    ],
    size: Annotated[int, typer.Option(help="Rows and columns per cached slice.")] = 224,
    hu_intercept: Annotated[
        int | None,
        typer.Option(help="Force the intercept (0 or -1024) instead of detecting it per volume."),
    ] = None,
    workers: Annotated[int, typer.Option(help="Processes.")] = os.cpu_count() or 1,
    verify: Annotated[bool, typer.Option(help="Also check every entry's checksum.")] = False,
) -> None:
    """Build the volume cache: HU, slices resized, int16. Reruns resume and skip what is done."""
    from radfusion.data.cohort import Cohort
    from radfusion.imaging.preprocess import PreprocessParams, build_cache, cohort_volumes

    if size < 8:
        _fail(f"--size {size}: need at least 8 pixels")
    if hu_intercept not in (None, 0, -1024):
        _fail(f"--hu-intercept {hu_intercept}: use 0 (values are HU) or -1024 (raw values)")
    cohort = Cohort.load(data_dir, hu_intercept=hu_intercept)
    params = PreprocessParams(size=size, hu_intercept=hu_intercept)
    try:
        with _progress() as progress:
            task = progress.add_task("studies", total=None)
            summary = build_cache(
                cohort_volumes(cohort),
                cache,
                params,
                workers=workers,
                verify=verify,
                on_total=lambda n: progress.update(task, total=n),
                on_entry=lambda _: progress.advance(task),
            )
    except KeyboardInterrupt:
        err_console.print(
            "interrupted: finished entries are kept; rerun the same command to resume"
        )
        raise typer.Exit(130) from None
    for idx, why in summary.rebuilt.items():
        console.print(f"[yellow]warning:[/] entry {idx} was {why}; rebuilt", highlight=False)
    for message in summary.failed.values():
        err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    if summary.nothing_to_do:
        console.print(
            f"cache complete, nothing to do: {len(summary.complete)} entries in {summary.folder}"
        )
    else:
        console.print(
            f"built {len(summary.built)}, rebuilt {len(summary.rebuilt)}, already "
            f"complete {len(summary.complete)}, failed {len(summary.failed)}: "
            f"{summary.folder}"
        )
    if summary.failed:
        raise typer.Exit(2)


@command("train-image", resumable=True)
def train_image_command(
    data_dir: Annotated[Path, typer.Argument(help="A RadFusion release (or synthetic) folder.")],
    cache: Annotated[Path, typer.Option(help="The cache root given to radfusion preprocess.")],
    out: Annotated[Path, typer.Option(help="Run directory (checkpoints, logs, predictions).")],
    model: Annotated[
        str,
        typer.Option(
            help="penet_50 (the paper's), penet_small, penet_tiny, or slicenet (with --window 5 "
            "--eval-stride 1)."
        ),
    ] = "penet_50",
    window: Annotated[int, typer.Option(help="Slices per window (PENet's 24).")] = 24,
    eval_stride: Annotated[
        int | None, typer.Option(help="Slices between test windows (default: --window).")
    ] = None,
    max_rotation: Annotated[
        float, typer.Option(help="Training rotations within +- this many degrees (0: none).")
    ] = 15.0,
    size: Annotated[int, typer.Option(help="The cached slice size to train on.")] = 224,
    crop: Annotated[int, typer.Option(help="Crop of each slice (random in training).")] = 192,
    max_epochs: Annotated[int, typer.Option(help="Epochs.")] = 10,
    windows_per_epoch: Annotated[int, typer.Option(help="Training windows per epoch.")] = 2048,
    batch_size: Annotated[int, typer.Option(help="Windows per batch.")] = 4,
    accumulate: Annotated[int, typer.Option(help="Gradient accumulation steps.")] = 1,
    optimizer: Annotated[str, typer.Option(help="sgd (the paper's) or adamw.")] = "sgd",
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 1e-2,
    loss: Annotated[str, typer.Option(help="focal (the paper's, gamma 2) or bce.")] = "focal",
    norm: Annotated[str, typer.Option(help="group (the paper's GroupNorm) or batch.")] = "group",
    shortcut: Annotated[
        str, typer.Option(help="Downsampling shortcut: conv (the paper's) or maxpool.")
    ] = "conv",
    prior: Annotated[
        float, typer.Option(help="The head's starting probability (the paper's focal prior).")
    ] = 0.01,
    min_abnormal_slices: Annotated[
        int, typer.Option(help="Annotated slices that make a training window positive.")
    ] = 4,
    pretrained: Annotated[
        Path | None,
        typer.Option(help="Local checkpoint to start from (ours or the original PENet format)."),
    ] = None,
    select: Annotated[
        str,
        typer.Option(
            help="The checkpoint that scores the studies: best (validation AUROC, the "
            "paper's) or last (the final epoch)."
        ),
    ] = "best",
    num_workers: Annotated[int, typer.Option(help="DataLoader workers.")] = 0,
    seed: Annotated[int, typer.Option(help="Seed of data order and initialisation.")] = 0,
    accelerator: Annotated[
        str, typer.Option(help="Lightning accelerator: cpu, gpu, auto.")
    ] = "cpu",
    devices: Annotated[str, typer.Option(help="Lightning devices, e.g. 1, 4 or auto.")] = "1",
    strategy: Annotated[str, typer.Option(help="Lightning strategy, e.g. auto or ddp.")] = "auto",
    num_nodes: Annotated[int, typer.Option(help="Machines (multi-node DDP, e.g. SLURM).")] = 1,
    precision: Annotated[
        str, typer.Option(help="Lightning precision, e.g. 32 or 16-mixed.")
    ] = "32-true",
) -> None:
    """Train PENet (or SliceNet) on the cached windows; write checkpoints, logs and
    predictions/image.csv.
    Rerunning the same command resumes from the last epoch's checkpoint."""
    from dataclasses import asdict

    from radfusion.data.cohort import Cohort
    from radfusion.imaging.penet import PENetConfig
    from radfusion.imaging.preprocess import PreprocessParams, cache_folder
    from radfusion.imaging.train import TrainConfig, train_image

    cohort = Cohort.load(data_dir)
    params = PreprocessParams(size=size)
    folder = cache_folder(cache, params)
    if not folder.is_dir():
        _fail(
            f"{folder}: no cache for --size {size}; run radfusion preprocess {data_dir} "
            f"--cache {cache} --size {size} first"
        )
    # Only the arguments that differ from the paper's design (PENetConfig's defaults): a run
    # started without them resumes with the same configuration.
    design = {"norm": norm, "shortcut": shortcut, "prior": prior}
    config = TrainConfig(
        model=model,
        model_args={k: v for k, v in design.items() if v != getattr(PENetConfig, k)},
        max_epochs=max_epochs,
        windows_per_epoch=windows_per_epoch,
        batch_size=batch_size,
        accumulate=accumulate,
        optimizer=optimizer,
        lr=lr,
        loss=loss,
        crop=crop,
        window=window,
        eval_stride=eval_stride,
        max_rotation=max_rotation,
        min_abnormal_slices=min_abnormal_slices,
        select=select,
        num_workers=num_workers,
        seed=seed,
    )
    trainer_args = {
        "accelerator": accelerator,
        "devices": int(devices) if devices.isdigit() else devices,
        "strategy": strategy,
        "num_nodes": num_nodes,
        "precision": precision,
    }
    chosen, predictions = train_image(
        cohort,
        folder,
        out,
        config,
        trainer_args=trainer_args,
        preprocessing=asdict(params),
        pretrained=pretrained,
    )
    console.print(f"{select} checkpoint: {chosen}")
    console.print(f"wrote {out / 'predictions' / 'image.csv'} ({len(predictions)} studies)")


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
    from radfusion.data.cohort import Cohort
    from radfusion.imaging.preprocess import cache_folder
    from radfusion.imaging.train import open_checkpoint, predict_studies
    from radfusion.io import write_csv

    ckpt = open_checkpoint(checkpoint)
    cohort = Cohort.load(data_dir)
    studies = cohort.studies if split is None else cohort.split(split)
    predictions = predict_studies(
        ckpt.model,
        cache_folder(cache, ckpt.preprocessing),
        studies,
        ckpt.config,
        batch_size=batch_size,
        source=checkpoint,
    )
    predictions.insert(2, "split", studies.loc[predictions["idx"], "split"].to_numpy())
    write_csv(predictions, out, float_format="%.8f")
    console.print(f"wrote {out} ({len(predictions)} studies)")


class _RichReporter:
    """Stage lines plus one progress bar for the stage at work."""

    def __init__(self, progress):
        self.progress, self.task = progress, None

    def stage(self, name, status, seconds=0.0):
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None
        if status in ("running", "resumed"):
            label = f"{name} (resumed)" if status == "resumed" else name
            self.task = self.progress.add_task(label, total=None)
        elif status == "skipped":
            self.progress.console.print(f"  [dim]-[/] {name:<11} unchanged, skipped")
        else:
            self.progress.console.print(f"  [green]✓[/] {name:<11} {seconds:6.1f} s")

    def total(self, n):
        if self.task is not None:
            self.progress.update(self.task, total=n, completed=0)

    def advance(self, n=1):
        if self.task is not None:
            self.progress.advance(self.task, n)


def _print_aurocs(summary) -> None:
    """The test AUROC table (``auroc_summary``): every model, all studies and non-subsegmental."""
    table = Table(title="Test AUROC (95% CI)")
    table.add_column("model")
    table.add_column("all test studies", justify="right")
    table.add_column("non-subsegmental", justify="right")
    for row in summary.itertuples():
        cells = [
            f"{getattr(row, f'{s}_value'):.3f} "
            f"({getattr(row, f'{s}_ci_low'):.3f}-{getattr(row, f'{s}_ci_high'):.3f})"
            for s in ("all", "non_subsegmental")
        ]
        table.add_row(row.model, *cells)
    console.print(table)


@command(resumable=True)
def benchmark(
    data: Annotated[Path, typer.Option(help="The cohort folder (the release, or synth output).")],
    out: Annotated[Path, typer.Option(help="The run folder (created; rerun to resume).")],
    config: Annotated[
        str | None,
        typer.Option(help="A YAML config, or a shipped one: paper (the default), cpu-demo."),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override one key, e.g. --set image.max_epochs=5 (repeat)."),
    ] = None,
    extra_predictions: Annotated[
        list[Path] | None,
        typer.Option(help="Your own model's predictions CSV (idx, prob): evaluated too."),
    ] = None,
) -> None:
    """Every stage of the paper: validate, preprocess, EHR model, PENet, fusion, evaluation,
    report. Unchanged stages are skipped; an interrupted run resumes where it stopped."""
    from radfusion.pipeline.benchmark import run_benchmark
    from radfusion.pipeline.config import load_config

    cfg = load_config(config, set_)
    console.print(f"benchmark of {data} -> {out}")
    with _stage_progress() as progress:
        result = run_benchmark(
            data,
            out,
            cfg,
            extra_predictions=extra_predictions or (),
            reporter=_RichReporter(progress),
        )
    _print_aurocs(result.summary)
    console.print(f"report: {result.report}")


def _stage_progress():
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TimeElapsedColumn,
    )

    return Progress(
        SpinnerColumn(),
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


@command(resumable=True)
def demo(
    out: Annotated[Path, typer.Option(help="Where the demo cohort and run go.")] = Path(
        "radfusion-demo"
    ),
) -> None:
    """Generate a small synthetic cohort and run the whole benchmark on it with the CPU
    config (about 8 minutes on 2 cores); prints where the report is."""
    import time

    from radfusion.pipeline.benchmark import run_benchmark
    from radfusion.pipeline.config import load_config
    from radfusion.pipeline.demo import DEMO_COHORT, prepare_demo_data

    t0 = time.perf_counter()
    c = DEMO_COHORT
    console.print(
        f"radfusion demo: {c.studies} synthetic studies ({c.size}x{c.size}, "
        f"{c.slices[0]}-{c.slices[1]} slices) -> {out}"
    )
    with _stage_progress() as progress:
        reporter = _RichReporter(progress)
        reporter.stage("synth", "running")
        made = prepare_demo_data(
            out / "data", on_total=reporter.total, on_volume=lambda _: reporter.advance()
        )
        reporter.stage("synth", "done" if made else "skipped", time.perf_counter() - t0)
        result = run_benchmark(
            out / "data", out / "run", load_config("cpu-demo"), reporter=reporter
        )
    _print_aurocs(result.summary)
    console.print(f"report: {result.report}")
    console.print(f"demo finished in {time.perf_counter() - t0:.0f} s")


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
    from radfusion.pipeline.predict import predict_study

    score = predict_study(run, volume=volume, dicom=dicom, ehr_row=ehr, hu_intercept=hu_intercept)
    table = Table(show_header=False)
    table.add_row("image (PENet)", f"{score.image_prob:.4f}")
    table.add_row("EHR", "-" if score.ehr_prob is None else f"{score.ehr_prob:.4f}")
    table.add_row("fused (mean)", "-" if score.fused_prob is None else f"{score.fused_prob:.4f}")
    start, end = score.best_window
    table.add_row("most suspicious window", f"slices {start}-{end}")
    verdict = "PE" if score.decision else "no PE"
    table.add_row("decision", f"{verdict} ({score.model} >= {score.threshold:.4f} is PE)")
    if score.slicenet is not None:
        s = score.slicenet
        table.add_row("image (SliceNet)", f"{s['prob']:.4f}")
        fused = "-" if s["fused_prob"] is None else f"{s['fused_prob']:.4f}"
        table.add_row("SliceNet fused (mean)", fused)
        start, end = s["best_window"]
        table.add_row("SliceNet's most suspicious slices", f"{start}-{end}")
        verdict = "PE" if s["decision"] else "no PE"
        table.add_row(
            "SliceNet decision", f"{verdict} ({s['model']} >= {s['threshold']:.4f} is PE)"
        )
    console.print(table)
    for note in score.notes:
        console.print(f"note: {note}")
    if json_out is not None:
        write_json(score.to_dict(), json_out)
        console.print(f"wrote {json_out}")


def main() -> None:
    """Entry point: user errors print one or two lines and exit 2; bugs keep tracebacks."""
    try:
        app()
    except RadfusionError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except OSError as exc:
        message = environment_message(exc)
        if message is None:
            raise
        err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
