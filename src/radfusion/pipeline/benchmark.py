"""``radfusion benchmark``: every stage of the paper on one cohort, cached and resumable.

The benchmark is the list :data:`STAGES`: validate -> preprocess -> ehr -> image -> slicenet
(when ``slicenet.enabled``) -> selection -> joint (when ``fusion.designs`` holds ``joint``) ->
fusion -> evaluate -> report. Each stage declares what it is
computed from (:class:`radfusion.pipeline.stages.Stage`), so a changed parameter reruns that
stage and what depends on it, nothing else. Adding a model or a task is one more entry. The run
folder's layout is :class:`radfusion.rundir.RunDir`'s.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from radfusion.config import Config
from radfusion.data.cohort import Cohort, validate_cohort
from radfusion.devices import is_rank_zero
from radfusion.errors import CohortError, RadfusionError
from radfusion.fusion import OWN_MODELS
from radfusion.io import atomic_path, write_json
from radfusion.locks import exclusive
from radfusion.pipeline import steps
from radfusion.pipeline.runlog import run_log
from radfusion.pipeline.stages import (
    Stage,
    StageBook,
    StageReporter,
    file_signature,
    run_stages,
    tree_signature,
)
from radfusion.rundir import RunDir

__all__ = ["STAGES", "BenchmarkResult", "Reporter", "run_benchmark"]

log = logging.getLogger("radfusion")

Reporter = StageReporter  # what a front end implements to hear about the stages


@dataclass
class BenchmarkResult:
    run_dir: Path
    statuses: dict[str, str]
    summary: pd.DataFrame
    report: Path


@dataclass
class Context:
    """What every stage's run function may read."""

    data: Path
    run: RunDir
    config: Config
    reporter: StageReporter
    trainer_args: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    cohort: Cohort | None = None
    cache: Path | None = None  # the CT cache's root: the run's, or shared between tasks
    top: Path | None = None  # the benchmark's own folder (``run``'s parent for a task)
    # The seed the EHR model trains with: the run's, or under --seeds the first seed's for
    # every seed (the EHR model is trained once and shared).
    ehr_seed: int | None = None

    def __post_init__(self):
        if self.cache is None:
            self.cache = self.run.cache
        if self.top is None:
            self.top = self.run.root
        if self.ehr_seed is None:
            self.ehr_seed = self.config.seed


def _validate(ctx: Context) -> dict:
    for warning in ctx.warnings:
        log.warning("%s", warning)
    return {"studies": len(ctx.cohort.studies), "warnings": len(ctx.warnings)}


def _preprocess(ctx: Context) -> dict:
    summary = steps.preprocess_cohort(
        ctx.cohort,
        ctx.cache,
        ctx.config.preprocess,
        on_total=ctx.reporter.total,
        on_entry=lambda _: ctx.reporter.advance(),
    )
    if summary.failed:
        idx, error = next(iter(summary.failed.items()))
        raise RadfusionError(
            f"{len(summary.failed)} volume(s) could not be preprocessed; first: idx {idx}: {error}"
        )
    return {"built": len(summary.built), "complete": len(summary.complete)}


def _ehr(ctx: Context) -> dict:
    result = steps.train_ehr_model(ctx.cohort, ctx.run, ctx.config.ehr, ctx.ehr_seed)
    return {"val_auroc": result.val_auroc}


def _imaging(name: str):
    def work(ctx: Context) -> dict:
        from radfusion.pipeline.progress import EpochProgress

        extra = dict(ctx.trainer_args)
        callbacks = [EpochProgress(ctx.reporter), *extra.pop("callbacks", [])]
        chosen, _ = steps.train_image_model(
            ctx.cohort,
            ctx.run,
            name,
            getattr(ctx.config, name),
            ctx.config.preprocess,
            ctx.config.seed,
            cache_root=ctx.cache,
            trainer_args={"enable_progress_bar": False, **extra, "callbacks": callbacks},
        )
        return {"checkpoint": str(chosen)}

    return work


def _selection(ctx: Context) -> None:
    from radfusion.imaging.preprocess import cache_folder
    from radfusion.pipeline.selection import selection_table

    folder = cache_folder(ctx.cache, steps.cache_params(ctx.config.preprocess))
    selection_table(ctx.cohort, folder, ctx.run, _trained_images(ctx.config))


def _trained_images(config: Config) -> list[str]:
    return ["image", "slicenet"] if config.slicenet.enabled else ["image"]


def _fusion(ctx: Context) -> dict:
    from radfusion.fusion.designs import fuse_run

    return fuse_run(
        ctx.cohort,
        ctx.run,
        ctx.config,
        _trained_images(ctx.config),
        lambda: steps.ehr_features(ctx.cohort, ctx.config.ehr),
    )


def _joint(ctx: Context) -> dict:
    from radfusion.fusion.joint import score_joint, train_joint
    from radfusion.imaging.preprocess import cache_folder
    from radfusion.io import write_csv
    from radfusion.pipeline.predict import run_checkpoint

    section = ctx.config.fusion
    folder = cache_folder(ctx.cache, steps.cache_params(ctx.config.preprocess))
    ehr, names = steps.dense_ehr(ctx.cohort, ctx.config.ehr)
    args = {**ctx.config.image.trainer_args(), **ctx.trainer_args}
    # A study without a volume or an EHR is the fusion stage's to score (the joint design's
    # fallbacks): trained on and scored are the studies with both.
    both = (ctx.cohort.has_volume & ctx.cohort.has_ehr).to_numpy()
    cohort, ehr = ctx.cohort.subset(both), ehr[both]
    studies = cohort.studies
    for variant in section.joint_variants:
        out = ctx.run.joint / variant
        chosen = train_joint(
            cohort,
            folder,
            out,
            run_checkpoint(ctx.run.root, "image"),
            ehr,
            variant=variant,
            epochs=section.joint_epochs,
            lr=section.joint_lr,
            hidden=section.joint_hidden,
            seed=ctx.config.seed,
            trainer_args=args,
        )
        prob = score_joint(chosen, folder, studies, ehr)
        frame = prob.rename("prob").reset_index().assign(split=studies["split"].to_numpy())
        write_csv(frame, out / "scores.csv", float_format="%.8f")
        # What scores another cohort: the chosen epoch, and the EHR columns in order.
        write_json({"checkpoint": chosen.name, "ehr_columns": names}, out / "features.json")
    return {"variants": list(section.joint_variants)}


def _fusion_signature(ctx: Context) -> list:
    """The embeddings a user dropped in (ours are the image stages' outputs)."""
    own = {ctx.run.embedding(m) for m in _trained_images(ctx.config)}
    files = sorted(p for p in ctx.run.embeddings.glob("*.parquet") if p not in own)
    return [(f.name, file_signature(f)) for f in files]


def _evaluate(ctx: Context) -> None:
    steps.evaluate_predictions(
        ctx.data,
        [ctx.run.predictions],
        ctx.run.eval.root,
        ctx.config.evaluation,
        ctx.config.seed,
        data_section=ctx.config.data,
    )


def _report(ctx: Context) -> None:
    steps.write_run_report(ctx.run, ctx.config.report)


def _predictions_signature(ctx: Context) -> list:
    return [(f.name, file_signature(f)) for f in sorted(ctx.run.predictions.glob("*.csv"))]


def _model_outputs(name: str):
    return lambda run: [run.model(name), run.prediction(name), run.embedding(name)]


STAGES: tuple[Stage, ...] = (
    Stage(
        "validate",
        _validate,
        sections=(),
        signature=lambda ctx: (
            tree_signature(ctx.data, exclude=ctx.top),
            ctx.config.preprocess.hu_intercept,
            ctx.config.data.model_dump(),
        ),
    ),
    Stage("preprocess", _preprocess, after=("validate",), sections=("preprocess",)),
    Stage(
        "ehr",
        _ehr,
        after=("validate",),
        sections=("ehr",),
        signature=lambda ctx: ctx.ehr_seed,
        outputs=_model_outputs("ehr"),
    ),
    Stage(
        "image",
        _imaging("image"),
        after=("preprocess",),
        sections=("image", "seed"),
        outputs=_model_outputs("image"),
        all_ranks=True,
    ),
    Stage(
        "slicenet",
        _imaging("slicenet"),
        after=("preprocess",),
        sections=("slicenet", "seed"),
        outputs=_model_outputs("slicenet"),
        enabled=lambda config: config.slicenet.enabled,
        all_ranks=True,
    ),
    Stage(
        "selection",
        _selection,
        after=("preprocess", "image", "slicenet"),
        outputs=lambda run: [run.selection],
    ),
    Stage(
        "joint",
        _joint,
        after=("preprocess", "ehr", "image"),
        sections=("seed",),
        signature=lambda ctx: (ctx.config.fusion.joint_fingerprint(), ctx.config.ehr.model_dump()),
        outputs=lambda run: [run.joint],
        enabled=lambda config: "joint" in config.fusion.designs,
    ),
    Stage(
        "fusion",
        _fusion,
        after=("ehr", "image", "slicenet", "joint"),
        sections=("fusion", "seed", "evaluation"),
        signature=_fusion_signature,
        outputs=lambda run: [
            *run.predictions.glob("fusion_*.csv"),
            *run.predictions.glob("fusion_*.json"),
            *run.predictions.glob("probe_*.csv"),
            run.fusion,
        ],
    ),
    Stage(
        "evaluate",
        _evaluate,
        after=("validate",),
        sections=("evaluation", "seed"),
        signature=_predictions_signature,
        outputs=lambda run: [run.eval.root],
    ),
    Stage(
        "report", _report, after=("evaluate",), sections=("report",), outputs=lambda r: [r.report]
    ),
)


def _claim(run: RunDir, data: Path) -> None:
    """A run folder belongs to one cohort: another one is refused, never mixed in, once a
    stage has finished there."""
    # A run whose start failed before any stage finished holds nothing of its cohort yet.
    started = any(
        StageBook(run.root).record(p.stem).get("status") == "done"
        for p in run.stages.glob("*.json")
    )
    if run.record.exists() and started:
        theirs = json.loads(run.record.read_text()).get("data")
        if theirs != str(data):
            raise RadfusionError(
                f"{run.root}: holds a benchmark of {theirs}, not {data}; use a new --out folder"
            )
    write_json({"data": str(data)}, run.record)


def _add_extra(run: RunDir, extras: Iterable[str | Path], embeddings=()) -> None:
    for extra in embeddings:
        extra = Path(extra)
        if not extra.is_file() or extra.suffix != ".parquet":
            raise RadfusionError(f"{extra}: no such embeddings file (<name>.parquet)")
        if extra.stem in OWN_MODELS:
            raise RadfusionError(
                f"{extra}: {extra.stem}.parquet is the benchmark's own {extra.stem} embedding; "
                "rename the file"
            )
        target = run.embedding(extra.stem)
        if not (target.exists() and target.read_bytes() == extra.read_bytes()):
            with atomic_path(target) as tmp:
                shutil.copyfile(extra, tmp)
    for extra in extras:
        extra = Path(extra)
        if not extra.is_file():
            raise RadfusionError(f"{extra}: no such predictions file")
        if extra.stem in OWN_MODELS or extra.stem.startswith("fusion_"):
            raise RadfusionError(
                f"{extra}: the name {extra.stem!r} is the benchmark's own model; rename the file"
            )
        target = run.prediction(extra.stem)
        if target.exists() and target.read_bytes() == extra.read_bytes():
            continue
        with atomic_path(target) as tmp:
            shutil.copyfile(extra, tmp)


def _join_trainings(data, run, config, reporter, trainer_args, seeds) -> BenchmarkResult:
    """A rank > 0: the same cohort and stages as rank 0, writing nothing but its share of the
    distributed trainings (rank 0 holds the lock, the log and the books)."""
    report = validate_cohort(data, hu_intercept=config.preprocess.hu_intercept, data=config.data)
    if not report.ok:
        raise CohortError(report.errors)
    statuses: dict[str, str] = {}
    for task, task_run, task_config, ehr_seed in _runs(run, config, report.cohort, seeds):
        ctx = _task_context(
            data,
            run,
            task_run,
            task_config,
            report.cohort.for_task(task),
            reporter,
            trainer_args,
            warn=False,
            ehr_seed=ehr_seed,
        )
        statuses.update(run_stages(STAGES, ctx, task_run, ctx.reporter))
    return BenchmarkResult(run.root, statuses, pd.DataFrame(), run.report_page)


def _task_context(
    data, run, task_run, task_config, cohort, reporter, trainer_args, *, warn, ehr_seed=None
):
    """What one task's (or seed's) stages read; ``warn``: the validate stage logs the cohort's
    warnings (rank 0 only)."""
    return Context(
        data,
        task_run,
        task_config,
        reporter or StageReporter(),
        dict(trainer_args or {}),
        cohort.warnings if warn else [],
        cohort,
        cache=run.cache,
        top=run.root,
        ehr_seed=ehr_seed,
    )


def _runs(run: RunDir, config: Config, cohort: Cohort, seeds: list[int] | None):
    """(task, run folder, config, EHR seed) of every run the benchmark makes: the tasks of
    :func:`_task_runs`, or with ``seeds`` one run of the one task per seed in
    ``run/seeds/<seed>/``, each seeded by its seed but for the EHR model (deterministic given
    its data and solver seed: trained once, with the first seed, and shared)."""
    runs = _task_runs(run, config, cohort)
    if not seeds:
        return [(task, task_run, task_config, None) for task, task_run, task_config in runs]
    if len(runs) != 1 or runs[0][1].root != run.root:
        raise RadfusionError(
            "--seeds runs one task: pass --task with a single task (or run each task's seeds "
            "into its own --out)"
        )
    if len(set(seeds)) != len(seeds):
        raise RadfusionError(f"--seeds {','.join(map(str, seeds))}: a seed appears twice")
    task = runs[0][0]
    out = []
    for seed in seeds:
        seed_config = config.model_copy(deep=True)
        seed_config.seed = seed
        out.append((task, RunDir(run.seeds / str(seed)), seed_config, seeds[0]))
    return out


def _share_ehr(first: RunDir, other: RunDir) -> None:
    """The first seed's finished EHR model, its predictions and its stage record, copied into
    another seed's folder: the same fingerprint there, so its ehr stage is skipped."""
    record = StageBook(first.root).record("ehr")
    if record.get("status") != "done" or StageBook(other.root).record("ehr") == record:
        return
    shutil.copytree(first.model("ehr"), other.model("ehr"), dirs_exist_ok=True)
    other.predictions.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(first.prediction("ehr"), other.prediction("ehr"))
    write_json(record, other.stage("ehr"))


def _task_runs(run: RunDir, config: Config, cohort: Cohort):
    """(task, its run folder, its config) for each task the benchmark runs: the config's one
    task in ``run`` itself, or with ``data.task=all`` (or a comma-separated list) every task
    asked for, each in ``run/tasks/<task>/`` (the CT cache shared). A task with a split
    lacking positives or negatives is skipped, with a warning."""
    from radfusion.data.cohort import requested_tasks

    tasks = requested_tasks(config.data.task, cohort.task_names)
    if len(tasks) == 1 and config.data.task != "all":
        return [(tasks[0], run, config)]
    out = []
    for task in tasks:
        why = _unlearnable(cohort.for_task(task))
        if why:
            log.warning("task %s: skipped, %s", task, why)
            continue
        task_config = config.model_copy(deep=True)
        task_config.data.task = task
        out.append((task, RunDir(run.tasks / task), task_config))
    return out


def run_benchmark(
    data_dir: str | Path,
    run_dir: str | Path,
    config: Config,
    *,
    extra_predictions: Iterable[str | Path] = (),
    extra_embeddings: Iterable[str | Path] = (),
    reporter: StageReporter | None = None,
    trainer_args: dict | None = None,
    seeds: list[int] | None = None,
) -> BenchmarkResult:
    """Run (or complete) the benchmark of ``data_dir`` into ``run_dir``; another benchmark
    running in ``run_dir`` at the same time is refused. ``extra_embeddings``: embeddings
    files (``<name>.parquet``) probed and fused like the image models' own. ``seeds``: one run
    per seed under ``run_dir/seeds/<seed>/`` and a summary across them. On a rank other than
    0 of a DDP launch it only joins the trainings rank 0 runs, and returns an empty summary."""
    run = RunDir(Path(run_dir))
    if not is_rank_zero():
        data = Path(data_dir).resolve()
        return _join_trainings(data, run, config, reporter, trainer_args, seeds)
    busy = (
        f"{run.root}: another radfusion benchmark is running here; wait for it, or use another "
        "--out"
    )
    with exclusive(run.lock, busy):
        run.root.mkdir(parents=True, exist_ok=True)  # the lock made it, except on ranks > 0
        data = Path(data_dir).resolve()
        _claim(run, data)
        steps.record_config(run, config)
        with run_log(run.log):
            log.info("benchmark of %s into %s", data, run.root)
            report = validate_cohort(
                data, hu_intercept=config.preprocess.hu_intercept, data=config.data
            )
            if not report.ok:
                raise CohortError(report.errors)
            statuses: dict[str, str] = {}
            runs = _runs(run, config, report.cohort, seeds)
            several = any(task_run.root != run.root for _, task_run, _, _ in runs)
            for task, task_run, task_config, ehr_seed in runs:
                label = f"seed {task_config.seed}" if seeds else task
                if several:
                    log.info("%s into %s", label if seeds else f"task {task}", task_run.root)
                    task_run.root.mkdir(parents=True, exist_ok=True)
                    steps.record_config(task_run, task_config)
                if seeds and task_run.root != runs[0][1].root:
                    _share_ehr(runs[0][1], task_run)
                _add_extra(task_run, extra_predictions, extra_embeddings)
                cohort = report.cohort.for_task(task)
                ctx = _task_context(
                    data,
                    run,
                    task_run,
                    task_config,
                    cohort,
                    reporter,
                    trainer_args,
                    warn=True,
                    ehr_seed=ehr_seed,
                )
                done = run_stages(STAGES, ctx, task_run, ctx.reporter)
                statuses.update({f"{label}/{k}": v for k, v in done.items()} if several else done)
            if seeds:
                from radfusion.report.seeds import write_seed_summary

                pairs = [(c.seed, r) for _, r, c, _ in runs]
                write_seed_summary(run, pairs, config.report)
            elif several:
                from radfusion.report.tasks import write_task_summary

                write_task_summary(run, [(task, r) for task, r, _, _ in runs], config.report)
    from radfusion.evaluation.evaluate import auroc_summary

    if several:
        return BenchmarkResult(
            run.root, statuses, _task_summary(runs, bool(seeds)), run.report_page
        )
    summary = auroc_summary(pd.read_csv(run.eval.metrics))
    return BenchmarkResult(run.root, statuses, summary, run.report_page)


def _unlearnable(cohort: Cohort) -> str | None:
    """Why a task cannot be trained and evaluated (a split without both classes), or None."""
    for split in ("train", "val", "test"):
        labels = cohort.split(split)["label"]
        if labels.nunique() < 2:
            return f"its {split} split has {int(labels.sum())} positive of {len(labels)} studies"
    return None


def _task_summary(runs, seeds: bool = False) -> pd.DataFrame:
    """Every run's test AUROCs, one row per run and model: the first column names the run
    (``task``, or ``seed`` under --seeds)."""
    from radfusion.evaluation.evaluate import auroc_summary

    key = "seed" if seeds else "task"
    frames = []
    for task, task_run, task_config, _ in runs:
        part = auroc_summary(pd.read_csv(task_run.eval.metrics))
        frames.append(part.assign(**{key: task_config.seed if seeds else task}))
    frame = pd.concat(frames, ignore_index=True)
    return frame[[key, *[c for c in frame.columns if c != key]]]
