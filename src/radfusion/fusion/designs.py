"""The fusion designs, one registry, each a named model whose predictions enter the same
evaluation, and each with its stated fallback for a study missing a modality.

:func:`fuse_run` is the benchmark's fusion stage: every design of ``fusion.designs`` for each
imaging model with the EHR model, written as ``predictions/<name>.csv``, then the studies
scored without a modality counted (``fusion/missing.csv``) and each design's AUROC with each
input removed, with each modality's Shapley share (``fusion/ablation.csv``,
``fusion/shapley.csv``). Learned fusions learn on train or validation, never on test.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from radfusion.errors import RadfusionError
from radfusion.fusion.ablation import ablation_tables
from radfusion.fusion.early import fit_early, fit_probe
from radfusion.fusion.inputs import hidden_studies, missing_counts, probability_column
from radfusion.fusion.late import fuse, fusion_name
from radfusion.io import write_csv, write_json
from radfusion.predictions import read_embeddings
from radfusion.rundir import RunDir

__all__ = ["DESIGNS", "LATE", "Design", "fuse_run", "joint_name"]

log = logging.getLogger("radfusion")


@dataclass(frozen=True)
class Design:
    name: str
    kind: str  # late, early or joint
    learns_on: str
    fallback: str  # how a study missing a modality is scored


_AVAILABLE = "the available model's probability"
DESIGNS: dict[str, Design] = {
    "mean": Design("mean", "late", "nothing (the paper's average)", _AVAILABLE),
    "weighted": Design("weighted", "late", "validation (the weight)", _AVAILABLE),
    "stacked": Design(
        "stacked",
        "late",
        "validation (logistic regression on logits, out-of-fold)",
        "a logistic recalibration of the available model, fitted on validation",
    ),
    "stacked_logit": Design(
        "stacked_logit",
        "late",
        "validation (INSPECT's logistic regression on logits)",
        "a logistic recalibration of the available model, fitted on validation",
    ),
    "max": Design("max", "late", "nothing", _AVAILABLE),
    "fair": Design("fair", "late", "validation (weight, TPR gap)", _AVAILABLE),
    "early": Design(
        "early",
        "early",
        "train (fit), validation (regularisation)",
        "no embedding: the EHR model's probability; no EHR: the embedding's probe",
    ),
    "joint": Design(
        "joint",
        "joint",
        "train (end to end, from the PENet checkpoint); validation (the epoch)",
        "no volume: the EHR model's probability; no EHR: the image model's",
    ),
}
LATE = tuple(name for name, d in DESIGNS.items() if d.kind == "late")


def joint_name(variant: str) -> str:
    return f"fusion_joint_{variant}"


#: The score of a study left with no input at all (in the ablation, with a modality removed
#: from a study whose other one is missing): chance, no information.
NO_INPUT = 0.5


def _without(probs, column, design, studies, seed, opts) -> pd.Series:
    """A late design's scores with ``column`` removed from every study (the strategy's own
    fallback on what is left; a study left with nothing scores :data:`NO_INPUT`)."""
    rest = probs.assign(**{column: np.nan})
    scored = rest.notna().any(axis=1)
    out = pd.Series(NO_INPUT, index=probs.index)
    out.loc[scored] = fuse(rest.loc[scored], design, studies, seed, **opts)
    return out


def _fill(primary: pd.Series, *fallbacks: pd.Series) -> pd.Series:
    out = primary.copy()
    for other in fallbacks:
        out = out.fillna(other)
    return out


class _Outputs:
    """What the stage writes: each model's probabilities, and each design's scores given
    each set of modalities (for the ablation)."""

    def __init__(self, studies):
        self.studies, self.prob, self.by_set, self.rows = studies, {}, {}, []

    def add(self, name, design, inputs, full, only_image, only_ehr):
        self.prob[name] = full
        both, image, ehr = frozenset(("ehr", "image")), frozenset(("image",)), frozenset(("ehr",))
        self.by_set[name] = {both: full, image: only_image, ehr: only_ehr}
        d = DESIGNS[design]
        self.rows.append(
            {
                "model": name,
                "design": design,
                "kind": d.kind,
                "inputs": inputs,
                "learns_on": d.learns_on,
                "fallback": d.fallback,
            }
        )


def fuse_run(cohort, run: RunDir, config, image_models: list[str], ehr_features) -> dict:
    """The fusion stage. ``ehr_features``: a callable giving the cohort's
    :class:`radfusion.ehr.train.EHRFeatures` (built only when a design needs them)."""
    studies, section, seed = cohort.studies, config.fusion, config.seed
    hidden = hidden_studies(studies, section.drop_modality, seed)
    hidden_image, hidden_ehr = hidden.get("image"), hidden.get("ehr")
    absent, inputs = {}, {}

    def column(model, hide):
        full = probability_column(run.prediction(model), studies)  # read once
        absent[model] = full.index[full.isna()]
        inputs[model] = full.copy()
        if hide is not None and len(hide):
            inputs[model].loc[hide] = np.nan
        return inputs[model]

    ehr = column("ehr", hidden_ehr)
    out = _Outputs(studies)
    late = [d for d in section.designs if d in LATE]
    options = {"fair": {"attribute": section.fair_attribute, "delta": section.fair_delta}}
    images = {m: column(m, hidden_image) for m in image_models}
    for model, image in images.items():
        probs = pd.DataFrame({model: image, "ehr": ehr})
        for design in late:
            opts = {**options.get(design, {}), "partial": True}
            full = fuse(probs, design, studies, seed, **opts)
            if "sweep" in full.attrs:
                write_json(
                    full.attrs["sweep"],
                    run.prediction(fusion_name(model, design)).with_suffix(".sweep.json"),
                )
            no_image = _without(probs, model, design, studies, seed, opts)
            no_ehr = _without(probs, "ehr", design, studies, seed, opts)
            out.add(fusion_name(model, design), design, f"{model}+ehr", full, no_ehr, no_image)
    if "early" in section.designs:
        unimaged = studies.index[~cohort.has_volume.to_numpy()]
        _early(run, studies, config, ehr, hidden, ehr_features, out, inputs, absent, unimaged)
    if "joint" in section.designs:
        image = images.get("image")
        if image is None:
            raise RadfusionError("the joint fusion starts from PENet: the image stage must run")
        for variant in section.joint_variants:
            path = run.joint / variant / "scores.csv"
            if not path.exists():
                raise RadfusionError(f"{path}: no joint scores; the joint stage writes them")
            frame = pd.read_csv(path).set_index("idx")["prob"].reindex(studies.index)
            joint = frame.copy()
            if hidden_image is not None:
                joint.loc[hidden_image] = np.nan
            no_ehr = ehr.index[ehr.isna()]  # absent or hidden: the image model's probability
            joint.loc[no_ehr] = image.loc[no_ehr]
            full = _fill(joint, ehr)
            out.add(
                joint_name(variant),
                "joint",
                "image+ehr",
                full,
                image.fillna(NO_INPUT),
                ehr.fillna(NO_INPUT),
            )
    for name, prob in out.prob.items():
        if prob.isna().any():
            raise RadfusionError(f"{name}: {int(prob.isna().sum())} studies left unscored")
        frame = pd.DataFrame(
            {
                "idx": studies.index,
                "prob": prob.clip(0, 1).to_numpy(),
                "split": studies["split"].to_numpy(),
            }
        )
        write_csv(frame, run.prediction(name), float_format="%.8f")
    run.fusion.mkdir(parents=True, exist_ok=True)
    write_csv(pd.DataFrame(out.rows), run.fusion / "designs.csv")
    write_csv(missing_counts(inputs, absent, hidden, studies), run.fusion / "missing.csv")
    ablation, shapley = ablation_tables(
        out.by_set, studies, n_boot=config.evaluation.n_boot, seed=seed
    )
    write_csv(ablation, run.fusion / "ablation.csv", float_format="%.6g")
    write_csv(shapley, run.fusion / "shapley.csv", float_format="%.6g")
    return {"models": len(out.prob)}


def _early(run, studies, config, ehr, hidden, ehr_features, out, inputs, absent, unimaged):
    """The probe and the early fusion of every embeddings file. Their grids are the EHR
    model's (``ehr.grid``) where it is the same estimator, else the estimator's full grid.
    ``unimaged``: the studies without a volume, which no CT encoder could embed."""
    from radfusion.ehr.persistence import save_model

    section, seed, allow_missing = config.fusion, config.seed, config.evaluation.allow_missing
    hidden_image = hidden.get("image")
    # Studies the EHR model wrote nothing for have no EHR: the early fusion neither learns
    # from their (empty) feature rows nor scores them (the probe does).
    with_ehr = ~studies.index.isin(absent["ehr"])

    def grid(model: str):
        return config.ehr.grid if config.ehr.model == model else None

    jobs = config.ehr.n_jobs

    files = sorted(run.embeddings.glob("*.parquet"))
    if not files:
        raise RadfusionError(
            f"{run.embeddings}: no embeddings; the image stage writes image.parquet (rerun it "
            "after deleting stages/image.json), or drop one in as <name>.parquet"
        )
    features = ehr_features()
    for path in files:
        encoder = path.stem
        embedding, notes = read_embeddings(
            path, studies, allow_missing=allow_missing, may_lack=unimaged
        )
        for note in notes:
            log.warning("%s", note)
        absent[f"embedding:{encoder}"] = studies.index.difference(embedding.index)
        if hidden_image is not None:
            embedding = embedding.drop(index=hidden_image, errors="ignore")
        have = pd.Series(studies.index.isin(embedding.index), index=studies.index)
        inputs[f"embedding:{encoder}"] = pd.Series(np.where(have, 1.0, np.nan), index=studies.index)
        probe_name, early_name = f"probe_{encoder}", fusion_name(encoder, "early")
        probe = fit_probe(
            embedding, studies, seed=seed, grid=grid("elasticnet"), n_jobs=jobs, name=probe_name
        )
        early = fit_early(
            embedding,
            features.matrix,
            features.names,
            studies,
            model=section.early_model,
            seed=seed,
            grid=grid(section.early_model),
            n_jobs=jobs,
            name=early_name,
            rows=with_ehr,
        )
        probe_prob = probe.prob
        full = early.prob.copy()
        full.loc[ehr.index[ehr.isna()]] = np.nan  # no EHR (absent or hidden): the probe
        full = _fill(full, probe_prob, ehr)
        out.add(
            early_name,
            "early",
            f"embedding:{encoder}+ehr",
            full,
            probe_prob.fillna(NO_INPUT),
            ehr.fillna(NO_INPUT),
        )
        probe_full = _fill(probe_prob, ehr)
        out.prob[probe_name] = probe_full
        out.rows.append(
            {
                "model": probe_name,
                "design": "probe",
                "kind": "probe",
                "inputs": f"embedding:{encoder}",
                "learns_on": "train (fit), validation (regularisation)",
                "fallback": "no embedding: the EHR model's probability",
            }
        )
        for name, fit in ((probe_name, probe), (early_name, early)):
            save_model(fit.model, run.fusion / f"{name}.skops")
            write_json(
                {
                    "params": fit.params,
                    "val_auroc": fit.val_auroc,
                    "columns": fit.columns,
                    "encoder": encoder,
                },
                run.fusion / f"{name}.json",
            )
