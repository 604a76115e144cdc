"""One function per stage, each taking its config section: what ``radfusion benchmark`` runs in
order, and what each single-stage command (``preprocess``, ``train-ehr``, ``train-image``,
``fuse``, ``evaluate``, ``report``) runs alone. The two doors call the same code with the same
sections, so the same config gives the same files."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import yaml

from radfusion.config import (
    Config,
    EHRSection,
    EvaluationSection,
    FusionSection,
    ImageSection,
    PreprocessSection,
    ReportSection,
)
from radfusion.errors import RadfusionError
from radfusion.io import atomic_path
from radfusion.rundir import RunDir

__all__ = [
    "IMAGE_MODELS",
    "cache_params",
    "evaluate_predictions",
    "fuse_predictions",
    "preprocess_cohort",
    "record_config",
    "train_ehr_model",
    "train_image_model",
    "write_run_report",
]

#: The imaging models a run may train, each from its own config section.
IMAGE_MODELS = ("image", "slicenet")


def record_config(run: RunDir, config: Config, sections: list[str] | None = None) -> None:
    """Keep the resolved configuration in the run folder. A single-stage command replaces its
    own sections of a recorded one, so a run built stage by stage keeps each stage's recipe."""
    values = config.to_dict()
    if sections is not None and run.config.exists():
        recorded = yaml.safe_load(run.config.read_text()) or {}
        if isinstance(recorded, dict):
            values = {**recorded, **{k: values[k] for k in ("seed", *sections)}}
    with atomic_path(run.config) as tmp:
        tmp.write_text(yaml.safe_dump(values, sort_keys=False))


def cache_params(section: PreprocessSection):
    """The preprocessing that shapes the cache (the worker count does not)."""
    from radfusion.imaging.preprocess import PreprocessParams

    return PreprocessParams(
        size=section.size,
        hu_intercept=section.hu_intercept,
        slice_thickness=section.slice_thickness,
    )


def preprocess_cohort(
    cohort,
    cache_root: Path,
    section: PreprocessSection,
    *,
    verify: bool = False,
    on_total: Callable[[int], None] | None = None,
    on_entry: Callable[[int], None] | None = None,
):
    """Build (or complete) the cohort's volume cache under ``cache_root``."""
    from radfusion.imaging.preprocess import build_cache, cohort_volumes

    return build_cache(
        cohort_volumes(cohort),
        cache_root,
        cache_params(section),
        workers=section.workers,
        verify=verify,
        on_total=on_total,
        on_entry=on_entry,
    )


def train_ehr_model(cohort, run: RunDir, section: EHRSection, seed: int, *, meds_dir=None):
    """The EHR model into ``run/ehr/``, its predictions into ``run/predictions/ehr.csv``."""
    from radfusion.ehr.train import train_ehr

    return train_ehr(
        cohort,
        run.root,
        model=section.model,
        features=section.features,
        meds_dir=meds_dir,
        seed=seed,
        cv=section.cv,
        grid=section.grid,
        n_jobs=section.n_jobs,
        windows_days=tuple(section.windows_days),
        min_frequency=section.min_frequency,
    )


def ehr_features(cohort, section: EHRSection):
    """The cohort's EHR features as the EHR model sees them (for the early and joint
    fusions)."""
    from radfusion.ehr.train import study_features

    return study_features(
        cohort,
        section.features,
        windows_days=tuple(section.windows_days),
        min_frequency=section.min_frequency,
    )


def dense_ehr(cohort, section: EHRSection):
    """:func:`ehr_features` as a dense float32 array (what the joint fusion's MLP takes), and
    its column names."""
    import numpy as np
    import scipy.sparse

    from radfusion.ehr.model import DENSE_LIMIT

    built = ehr_features(cohort, section)
    x = built.matrix
    if scipy.sparse.issparse(x):
        if x.shape[1] > DENSE_LIMIT:
            raise RadfusionError(
                f"the joint fusion takes at most {DENSE_LIMIT} EHR columns, the code features "
                f"have {x.shape[1]}; raise ehr.min_frequency"
            )
        x = x.toarray()
    return np.asarray(x, dtype=np.float32), built.names


def check_annotated(cohort) -> None:
    """SliceNet learns from the annotated slices: without them it would learn nothing but the
    study's label, repeated on every window."""
    import logging

    train = cohort.split("train")
    positives = train.index[train["label"] == 1]
    annotated = positives.isin(cohort.annotations["idx"])
    if len(positives) and not annotated.any():
        raise RadfusionError(
            f"{cohort.root}: no annotated slices for the train split's positives "
            "(annotations.csv); SliceNet learns from them: add the file, or "
            "--set slicenet.enabled=false"
        )
    if not annotated.all():
        logging.getLogger("radfusion").warning(
            "slicenet: %d of %d train positives have no annotated slices; their windows take "
            "the study's label",
            int((~annotated).sum()),
            len(positives),
        )


def image_section(name: str) -> str:
    """``name`` checked as the config section of an imaging model: ``image`` or ``slicenet``."""
    if name not in IMAGE_MODELS:
        raise RadfusionError(
            f"--section {name}: not an imaging model's section; use {' or '.join(IMAGE_MODELS)}"
        )
    return name


def train_image_model(
    cohort,
    run: RunDir,
    name: str,
    section: ImageSection,
    preprocess: PreprocessSection,
    seed: int,
    *,
    cache_root: Path | None = None,
    trainer_args: dict | None = None,
):
    """Train imaging model ``name`` (``image``: PENet, or ``slicenet``) from its ``section``
    into ``run/<name>/``, scoring every study into ``run/predictions/<name>.csv``; rerun, it
    resumes. It reads the cache the ``preprocess`` section built under ``cache_root``
    (default ``run/cache``), and the run's ``seed`` unless the section sets its own."""
    from radfusion.imaging.preprocess import cache_folder
    from radfusion.imaging.trainer import train_image

    image_section(name)
    params = cache_params(preprocess)
    root = Path(cache_root) if cache_root is not None else run.cache
    folder = cache_folder(root, params)
    if not folder.is_dir():
        raise RadfusionError(
            f"{folder}: no cache for preprocess.size {params.size}; run radfusion preprocess "
            f"{cohort.root} --cache {root} with the same config first"
        )
    if name == "slicenet":
        check_annotated(cohort)
    return train_image(
        cohort,
        folder,
        run.model(name),
        section,
        seed=seed,
        predictions=run.prediction(name),
        embeddings=run.embedding(name),
        preprocessing=asdict(params),
        trainer_args=trainer_args,
    )


def fuse_predictions(
    pred_dir: Path,
    models: list[str],
    section: FusionSection,
    seed: int,
    *,
    studies=None,
    data: Path | None = None,
    name: str | None = None,
) -> list[Path]:
    """One fusion of ``models`` per late design of ``section.designs``, each written as
    ``pred_dir/<name>.csv``: ``fusion_<strategy>`` for PENet with the EHR model,
    ``fusion_<model>_<strategy>`` for another image model with it. The studies and their
    splits come from ``studies``, else the cohort ``data``; strategies that learn on the
    validation labels need one of them, the others read the split from the first model's file.
    """
    from radfusion.data.cohort import load_outcomes
    from radfusion.fusion import NEEDS_LABELS, STRATEGIES, fuse_files, fusion_name, study_frame

    strategies = [d for d in section.designs if d in STRATEGIES]
    if not strategies:
        raise RadfusionError(
            f"fusion.designs {section.designs}: none fuses predictions files alone (early and "
            "joint fusions need a run: radfusion benchmark); add mean, weighted, stacked, "
            "stacked_logit, max or fair"
        )
    if name is not None and len(strategies) > 1:
        raise RadfusionError(
            f"--name {name}: names one fusion, but fusion.designs has "
            f"{len(strategies)} late ones; add --set fusion.designs=[mean] (or another one)"
        )
    if studies is None and data is not None:
        studies = load_outcomes(data)
    learned = [s for s in strategies if s in NEEDS_LABELS]
    if studies is None and learned:
        raise RadfusionError(
            f"fusion.designs {learned} learn on validation labels: pass --data DATA_DIR, "
            "or --set fusion.designs=[mean,max]"
        )
    if studies is None:
        studies = study_frame(pred_dir, models[0])

    def default(strategy: str) -> str:
        if len(models) == 2 and models[1] == "ehr":
            return fusion_name(models[0], strategy)
        return f"fusion_{strategy}"

    options = {"fair": {"attribute": section.fair_attribute, "delta": section.fair_delta}}
    return [
        fuse_files(
            pred_dir,
            models,
            strategy,
            studies,
            seed=seed,
            name=name or default(strategy),
            **options.get(strategy, {}),
        )
        for strategy in strategies
    ]


def evaluate_predictions(
    data,
    sources,
    out: Path,
    section: EvaluationSection,
    seed: int,
    *,
    data_section=None,
):
    """The paper's evaluation of every predictions file in ``sources`` into ``out``;
    ``data_section`` (the config's ``data``) says the cohort's layout and task. Our image
    models are evaluated without the studies that have no volume, the EHR model without
    those that have no EHR."""
    from radfusion.evaluation.evaluate import evaluate_files

    return evaluate_files(
        data,
        sources,
        out,
        n_boot=section.n_boot,
        seed=seed,
        allow_missing=section.allow_missing,
        min_cell_size=section.min_cell_size,
        data_section=data_section,
        image_models=IMAGE_MODELS,
        ehr_models=("ehr",),
    )


def write_run_report(run: RunDir, section: ReportSection) -> Path:
    from radfusion.report.html import write_report

    return write_report(run.root, title=section.title)
