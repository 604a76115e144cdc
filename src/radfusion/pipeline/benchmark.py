"""``radfusion benchmark``: every stage of the paper on one cohort, cached and resumable.

validate -> preprocess -> ehr -> image -> slicenet -> fusion -> evaluate -> report (slicenet
only when ``slicenet.enabled``; its fusions with the EHR are ``fusion_slicenet_<strategy>``).
Each stage's fingerprint (see :mod:`radfusion.pipeline.stages`) covers its own parameters and
everything upstream, so a changed parameter reruns that stage and what depends on it, nothing else.

Run folder::

    RUN_DIR/config.yaml        the configuration used (written every run)
    RUN_DIR/.benchmark.lock    held while a benchmark runs here: a second one is refused
    RUN_DIR/benchmark.log      every stage's messages, appended
    RUN_DIR/stages/*.json      fingerprints and status
    RUN_DIR/cache/             the CT cache (keyed by its preprocessing parameters)
    RUN_DIR/ehr/, image/       the EHR model, PENet checkpoints and logs
    RUN_DIR/slicenet/          SliceNet's checkpoints and logs (when enabled)
    RUN_DIR/predictions/       ehr.csv, image.csv, [slicenet.csv], fusion_*.csv, any extra model
    RUN_DIR/eval/, report/     metrics, fairness, comparisons; report.html
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning as L
import pandas as pd

from radfusion.data.cohort import validate_cohort
from radfusion.ehr.train import train_ehr
from radfusion.errors import CohortError, RadfusionError
from radfusion.evaluation.evaluate import auroc_summary, evaluate_files
from radfusion.fusion import fuse_files, fusion_name
from radfusion.imaging.preprocess import (
    PreprocessParams,
    build_cache,
    cache_folder,
    cohort_volumes,
)
from radfusion.imaging.train import train_image
from radfusion.io import atomic_path, write_json
from radfusion.locks import exclusive
from radfusion.pipeline.config import BenchmarkConfig
from radfusion.pipeline.stages import StageBook, file_signature, fingerprint, tree_signature
from radfusion.report.html import write_report

__all__ = ["STAGES", "BenchmarkResult", "Reporter", "run_benchmark"]

STAGES = ("validate", "preprocess", "ehr", "image", "slicenet", "fusion", "evaluate", "report")
# Prediction files the benchmark writes itself (plus fusion_*).
PRODUCED = ("ehr", "image", "slicenet")
LOCK = ".benchmark.lock"  # held while a benchmark runs in the folder
log = logging.getLogger("radfusion")


class Reporter:
    """What a front end hears about (the CLI draws progress bars; tests stay silent)."""

    def stage(self, name: str, status: str, seconds: float = 0.0) -> None:
        """``status``: running, resumed, done or skipped."""

    def total(self, n: int) -> None:
        """The current stage has ``n`` steps."""

    def advance(self, n: int = 1) -> None: ...


class _BelowWarning(logging.Filter):
    def filter(self, record):
        return record.levelno >= logging.WARNING


@dataclass
class BenchmarkResult:
    run_dir: Path
    statuses: dict[str, str]
    summary: pd.DataFrame
    report: Path


class _EpochProgress(L.Callback):
    def __init__(self, reporter: Reporter):
        self.reporter = reporter

    def on_fit_start(self, trainer, pl_module):
        self.reporter.total(trainer.max_epochs)
        for _ in range(trainer.current_epoch):
            self.reporter.advance()  # a resumed run starts part-way

    def on_train_epoch_end(self, trainer, pl_module):
        self.reporter.advance()


def _claim(run: Path, data: Path) -> None:
    """A run folder belongs to one cohort: another one is refused, never mixed in, once a
    stage has finished there."""
    record = run / "run.json"
    # A run whose start failed before any stage finished holds nothing of its cohort yet.
    started = any(
        StageBook(run).record(p.stem).get("status") == "done"
        for p in (run / "stages").glob("*.json")
    )
    if record.exists() and started:
        theirs = json.loads(record.read_text()).get("data")
        if theirs != str(data):
            raise RadfusionError(
                f"{run}: holds a benchmark of {theirs}, not {data}; use a new --out folder"
            )
    write_json({"data": str(data)}, record)


def _add_extra(pred_dir: Path, extras: Iterable[str | Path]) -> None:
    for extra in extras:
        extra = Path(extra)
        if not extra.is_file():
            raise RadfusionError(f"{extra}: no such predictions file")
        if extra.stem in PRODUCED or extra.stem.startswith("fusion_"):
            raise RadfusionError(
                f"{extra}: the name {extra.stem!r} is the benchmark's own model; rename the file"
            )
        target = pred_dir / f"{extra.stem}.csv"
        if target.exists() and target.read_bytes() == extra.read_bytes():
            continue
        with atomic_path(target) as tmp:
            shutil.copyfile(extra, tmp)


def _check_annotated(cohort, data: Path) -> None:
    """SliceNet learns from the annotated slices: without them it would learn nothing but the
    study's label, repeated on every window."""
    train = cohort.split("train")
    positives = train.index[train["label"] == 1]
    annotated = positives.isin(cohort.annotations["idx"])
    if len(positives) and not annotated.any():
        raise RadfusionError(
            f"{data}: no annotated slices for the train split's positives (annotations.csv); "
            "SliceNet learns from them: add the file, or --set slicenet.enabled=false"
        )
    if not annotated.all():
        log.warning(
            "slicenet: %d of %d train positives have no annotated slices; their windows take "
            "the study's label",
            int((~annotated).sum()),
            len(positives),
        )


def run_benchmark(
    data_dir: str | Path,
    run_dir: str | Path,
    config: BenchmarkConfig,
    *,
    extra_predictions: Iterable[str | Path] = (),
    reporter: Reporter | None = None,
    trainer_args: dict | None = None,
) -> BenchmarkResult:
    """Run (or complete) the benchmark of ``data_dir`` into ``run_dir``; another benchmark
    running in ``run_dir`` at the same time is refused."""

    run = Path(run_dir)
    busy = f"{run}: another radfusion benchmark is running here; wait for it, or use another --out"
    with exclusive(run / LOCK, busy):
        return _benchmark(
            Path(data_dir).resolve(), run, config, extra_predictions, reporter, trainer_args
        )


def _benchmark(data, run, config, extra_predictions, reporter, trainer_args) -> BenchmarkResult:
    reporter = reporter or Reporter()
    run.mkdir(parents=True, exist_ok=True)  # the lock made it, except on ranks other than 0
    _claim(run, data)
    with atomic_path(run / "config.yaml") as tmp:
        tmp.write_text(config.to_yaml())
    handler = logging.FileHandler(run / "benchmark.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    loggers = [log, logging.getLogger("lightning.pytorch")]
    for logger in loggers:
        logger.addHandler(handler)
    log.setLevel(logging.INFO)
    # Lightning's own console lines (accelerators found, tips) go to the log file only.
    quiet = _BelowWarning()
    consoles = [
        h
        for h in logging.getLogger("lightning.pytorch").handlers
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
    ]
    for h in consoles:
        h.addFilter(quiet)
    book, statuses = StageBook(run), {}
    pred_dir = run / "predictions"

    def stage(name: str, fp: str, outputs: list[Path], work: Callable[[], dict | None]):
        if book.is_done(name, fp):
            statuses[name] = "skipped"
            log.info("stage %s: unchanged, skipped", name)
            reporter.stage(name, "skipped")
            return
        resumed = book.start(name, fp, outputs)
        statuses[name] = "resumed" if resumed else "ran"
        log.info("stage %s: %s (fingerprint %s)", name, statuses[name], fp)
        reporter.stage(name, "resumed" if resumed else "running")
        t0 = time.perf_counter()
        info = work() or {}
        seconds = time.perf_counter() - t0
        book.finish(name, fp, seconds, **info)
        log.info("stage %s: done in %.1f s %s", name, seconds, info or "")
        reporter.stage(name, "done", seconds)

    try:
        log.info("benchmark of %s into %s", data, run)
        data_fp = fingerprint(tree_signature(data, exclude=run), config.preprocess.hu_intercept)
        report = validate_cohort(data, hu_intercept=config.preprocess.hu_intercept)
        if not report.ok:
            raise CohortError(report.errors)
        cohort = report.cohort

        def validate():
            for warning in report.warnings:
                log.warning("%s", warning)
            return {"studies": len(cohort.studies), "warnings": len(report.warnings)}

        stage("validate", data_fp, [], validate)

        params = PreprocessParams(
            size=config.preprocess.size, hu_intercept=config.preprocess.hu_intercept
        )
        prep_fp = fingerprint(data_fp, asdict(params))
        folder = cache_folder(run / "cache", params)

        def preprocess():
            summary = build_cache(
                cohort_volumes(cohort),
                run / "cache",
                params,
                workers=config.preprocess.workers,
                on_total=reporter.total,
                on_entry=lambda _: reporter.advance(),
            )
            if summary.failed:
                idx, error = next(iter(summary.failed.items()))
                raise RadfusionError(
                    f"{len(summary.failed)} volume(s) could not be preprocessed; "
                    f"first: idx {idx}: {error}"
                )
            return {"built": len(summary.built), "complete": len(summary.complete)}

        stage("preprocess", prep_fp, [], preprocess)

        ehr_fp = fingerprint(data_fp, asdict(config.ehr), config.seed)

        def ehr():
            e = config.ehr
            result = train_ehr(
                cohort,
                run,
                model=e.model,
                features=e.features,
                seed=config.seed,
                cv=e.cv,
                grid=e.grid,
                n_jobs=e.n_jobs,
            )
            return {"val_auroc": result.val_auroc}

        stage("ehr", ehr_fp, [run / "ehr", pred_dir / "ehr.csv"], ehr)

        def imaging(name: str, section) -> str:
            """Train one imaging model into RUN_DIR/<name>/, predictions/<name>.csv."""
            fp = fingerprint(prep_fp, asdict(section), config.seed)

            def work():
                extra = dict(trainer_args or {})
                callbacks = [_EpochProgress(reporter), *extra.pop("callbacks", [])]
                args = {
                    **section.trainer_args(),
                    "enable_progress_bar": False,
                    **extra,
                    "callbacks": callbacks,
                }
                chosen, _ = train_image(
                    cohort,
                    folder,
                    run / name,
                    section.train_config(config.seed),
                    trainer_args=args,
                    preprocessing=asdict(params),
                    pretrained=section.pretrained,
                )
                with atomic_path(pred_dir / f"{name}.csv") as tmp:
                    shutil.copyfile(run / name / "predictions" / "image.csv", tmp)
                return {"checkpoint": str(chosen)}

            stage(name, fp, [run / name, pred_dir / f"{name}.csv"], work)
            return fp

        image_fp = imaging("image", config.image)
        image_models = ["image"]
        if config.slicenet.enabled:
            _check_annotated(cohort, data)
            image_fp = fingerprint(image_fp, imaging("slicenet", config.slicenet))
            image_models.append("slicenet")
        else:
            statuses["slicenet"] = "off"
            log.info("stage slicenet: off (slicenet.enabled is false)")
            book.clear("slicenet", [run / "slicenet", pred_dir / "slicenet.csv"])

        fusion_fp = fingerprint(ehr_fp, image_fp, config.fusion.strategies, config.seed)

        def fusion():
            for model in image_models:
                for strategy in config.fusion.strategies:
                    fuse_files(
                        pred_dir,
                        [model, "ehr"],
                        strategy,
                        cohort.studies,
                        seed=config.seed,
                        name=fusion_name(model, strategy),
                    )

        stage("fusion", fusion_fp, list(pred_dir.glob("fusion_*.csv")), fusion)

        _add_extra(pred_dir, extra_predictions)
        files = sorted(pred_dir.glob("*.csv"))
        eval_fp = fingerprint(
            data_fp,
            [(f.name, file_signature(f)) for f in files],
            config.evaluation.n_boot,
            config.seed,
        )

        def evaluate():
            evaluate_files(
                data, [pred_dir], run / "eval", n_boot=config.evaluation.n_boot, seed=config.seed
            )

        stage("evaluate", eval_fp, [run / "eval"], evaluate)

        def write():
            write_report(run)

        stage("report", fingerprint(eval_fp), [run / "report"], write)
        summary = auroc_summary(pd.read_csv(run / "eval" / "metrics.csv"))
        return BenchmarkResult(run, statuses, summary, run / "report" / "report.html")
    except Exception as exc:
        log.error("benchmark stopped: %s", exc)
        raise
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
        for h in consoles:
            h.removeFilter(quiet)
        handler.close()
