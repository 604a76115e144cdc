"""How would a run's models score on studies it never met? A fresh synthetic cohort.

Usage: python benchmarks/fresh_cohort.py RUN_DIR [--studies 2000] [--seed 2000] [--boot 2000]
       [--save SCORES.csv] [--against OTHER.csv]

RUN_DIR is a finished benchmark or demo run on a synthetic cohort. This draws a new cohort from
the same generator settings (``synthetic.json`` of the run's data) with another seed, puts it
through the run's own preprocessing, PENet checkpoint (and SliceNet's, when the run trained it)
and EHR model, fuses each imaging model with the EHR by the run's fusion strategies
(``weighted`` and ``stacked`` keep the parameters they learned on the run's validation split),
and prints every model's AUROC with a stratified bootstrap 95% CI, next to the same model's
AUROC on the run's own test split.

A demo's test split holds 74 studies: its AUROCs carry CIs 0.15-0.25 wide, wider than the
gap between the fusion and the EHR model, so which is higher there varies with the training
seed. Two thousand fresh studies from the same distribution tell the models apart (CIs about
0.05 wide for the image model). The oracle line is the EHR's ceiling: the generator's own
P(PE | latent EHR risk).

``--against OTHER.csv`` compares this run with another one on the same fresh studies: OTHER.csv
is what ``--save`` wrote for the other run, with the same ``--studies`` and ``--seed``. Every
model both hold gets a paired DeLong test. Its p covers the sampling of the fresh studies only,
not the spread between training runs: two training seeds of one recipe can differ by more than
a small p suggests (docs/experiments/penet-on-the-phantom.md, item 9).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from radfusion.config import load_config
from radfusion.data.cohort import Cohort
from radfusion.data.layout import PE_TYPES
from radfusion.ehr.model import check_features
from radfusion.ehr.persistence import load_model
from radfusion.errors import RadfusionError
from radfusion.evaluation.bootstrap import Resamples, stratified_counts
from radfusion.evaluation.delong import delong_test
from radfusion.evaluation.evaluate import auroc_summary
from radfusion.evaluation.metrics import auroc
from radfusion.fusion import STRATEGIES, fuse, fusion_name
from radfusion.io import write_csv
from radfusion.pipeline.predict import image_models, score_volumes
from radfusion.rundir import RunDir
from radfusion.synthetic.design import MIN_STUDIES
from radfusion.synthetic.folder import SYNTH_MARKER
from radfusion.synthetic.writer import write_synthetic_cohort

OFFSET = 10_000_000  # fresh idx are shifted clear of the run's own


def _generator_settings(run: Path) -> tuple[Path, dict]:
    # A seed's run (OUT/seeds/<seed>/) keeps its cohort's record two folders up.
    record = next((p / "run.json" for p in (run, *run.parents) if (p / "run.json").exists()), None)
    if record is None:
        raise RadfusionError(f"{run}: no run.json here or above; give a benchmark's run folder")
    data = Path(json.loads(record.read_text())["data"])
    marker = data / SYNTH_MARKER
    if not marker.exists():
        raise RadfusionError(
            f"{data}: no {SYNTH_MARKER}; a fresh cohort needs the generator settings of a "
            "synthetic run (radfusion demo, or radfusion synth then benchmark)"
        )
    settings = json.loads(marker.read_text())
    slices = settings["slices"]
    if isinstance(slices, str):  # "LO:HI", as radfusion synth wrote it before this version
        slices = [int(v) for v in slices.split(":")]
    settings["slices"] = tuple(slices) if slices else None
    return data, settings


def _images(run: Path, cohort: Cohort, models: tuple[str, ...]) -> dict[str, pd.Series]:
    if not models:
        return {}
    volumes = dict(cohort.studies["volume_path"].items())
    scores = score_volumes(run, volumes, workers=2, batch_size=16, models=models)
    return {m: frame.set_index("idx")["prob"] for m, frame in scores.items()}


def _ehr(run: Path, cohort: Cohort) -> pd.Series:
    names = json.loads((run / "ehr" / "model.json").read_text())["features"]["names"]
    x = check_features(cohort.features()[names], what="the fresh cohort's EHR tables")
    model = load_model(run / "ehr" / "model.skops")
    return pd.Series(model.predict_proba(x)[:, 1], index=cohort.studies.index)


def _fused(run: Path, data: Path, fresh: pd.DataFrame, labels: pd.Series, strategies: list[str]):
    """Each strategy fitted on the run's validation predictions, applied to the fresh studies:
    ``fresh`` holds one imaging model's and the EHR's scores, named as the benchmark names them."""
    own = pd.DataFrame(
        {m: pd.read_csv(RunDir(run).prediction(m), index_col="idx")["prob"] for m in fresh}
    )
    run_studies = Cohort.load(data).studies
    val = own.index.intersection(run_studies.index[run_studies["split"] == "val"])
    probs = pd.concat([own.loc[val], fresh.set_axis(fresh.index + OFFSET)])
    studies = pd.DataFrame(
        {
            "label": np.r_[run_studies.loc[val, "label"], labels],
            "split": ["val"] * len(val) + ["fresh"] * len(fresh),
        },
        index=probs.index,
    )
    late = [s for s in strategies if s in STRATEGIES]  # early and joint: _learned_designs
    fused = {s: fuse(probs, s, studies).iloc[len(val) :] for s in late}
    return {fusion_name(fresh.columns[0], s): f.set_axis(fresh.index) for s, f in fused.items()}


def _learned_designs(run: Path, cohort: Cohort, tmp: Path) -> dict[str, pd.Series]:
    """PENet's fresh scores and embeddings (one pass), and through them the run's probe,
    early fusion and joint fusions, each with the model it saved: nothing refitted."""
    from radfusion.fusion.designs import joint_name
    from radfusion.fusion.joint import score_joint
    from radfusion.imaging.inference import open_checkpoint, predict_and_embed
    from radfusion.imaging.preprocess import build_cache, cache_folder
    from radfusion.pipeline.predict import run_checkpoint

    layout, studies = RunDir(run), cohort.studies
    path = run_checkpoint(run, "image")
    ckpt = open_checkpoint(path)
    volumes = dict(studies["volume_path"].items())
    summary = build_cache(volumes, tmp, ckpt.preprocessing, workers=2)
    if summary.failed:
        raise RadfusionError(str(next(iter(summary.failed.values()))))
    folder = cache_folder(tmp, ckpt.preprocessing)
    scores, embedded = predict_and_embed(ckpt.model, folder, studies, ckpt.config, 16, source=path)
    out = {"image": scores.set_index("idx")["prob"].loc[studies.index]}
    embedding = pd.DataFrame(embedded.values, index=embedded.idx, columns=embedded.columns)
    ehr_names = json.loads(layout.ehr_meta.read_text())["features"]["names"]
    for name in ("probe_image", fusion_name("image", "early")):
        if not (layout.fusion / f"{name}.skops").exists():
            continue
        columns = json.loads((layout.fusion / f"{name}.json").read_text())["columns"]
        parts = [
            embedding.loc[studies.index, [c[10:] for c in columns if c.startswith("embedding:")]]
        ]
        ehr = [c[4:] for c in columns if c.startswith("ehr:")]
        if ehr:
            parts.append(check_features(cohort.features(), ehr, what="the fresh EHR tables"))
        x = np.hstack([p.to_numpy(np.float64) for p in parts])
        out[name] = pd.Series(
            load_model(layout.fusion / f"{name}.skops").predict_proba(x)[:, 1], index=studies.index
        )
    for variant in sorted(p.name for p in layout.joint.glob("*") if (p / "last.ckpt").exists()):
        path = layout.joint / variant / "features.json"
        record = json.loads(path.read_text()) if path.exists() else {}
        names = record.get("ehr_columns", ehr_names)  # the EHR model's: the same tables
        ckpt = layout.joint / variant / record.get("checkpoint", "last.ckpt")
        x = check_features(cohort.features(), names, what="the fresh EHR tables").to_numpy()
        out[joint_name(variant)] = score_joint(ckpt, folder, studies, x)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished benchmark or demo run folder")
    parser.add_argument("--studies", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=2000, help="the fresh cohort's seed")
    parser.add_argument("--boot", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--save", type=Path, help="write every study's label and scores here")
    parser.add_argument(
        "--against",
        type=Path,
        help="another run's --save file (same --studies and --seed): paired DeLong tests",
    )
    args = parser.parse_args()
    run = args.run
    if args.studies < MIN_STUDIES:
        parser.error(f"--studies {args.studies}: a synthetic cohort needs at least {MIN_STUDIES}")
    other = _saved_scores(args.against) if args.against else None
    if other is not None and len(other) != args.studies:  # the cheap check, before the work
        parser.error(f"{args.against} holds {len(other)} studies, not --studies {args.studies}")
    data, settings = _generator_settings(run)
    if settings["seed"] == args.seed:
        parser.error(f"--seed {args.seed} is the run's own cohort seed: pick another")
    strategies = load_config(run / "config.yaml").fusion.designs
    with tempfile.TemporaryDirectory(prefix="radfusion-fresh-") as tmp:
        folder = Path(tmp) / "data"
        write_synthetic_cohort(
            folder,
            args.studies,
            args.seed,
            size=settings["size"],
            slice_range=settings["slices"],
            calibre=settings["calibre"],
            workers=2,
        )
        cohort = Cohort.load(folder)
        learned = _learned_designs(run, cohort, Path(tmp) / "cache")
        images = _images(run, cohort, tuple(m for m in image_models(run) if m != "image"))
        probs = pd.DataFrame({"image": learned.pop("image"), "ehr": _ehr(run, cohort)})
        slicenet = images.get("slicenet")
        oracle = pd.read_csv(folder / "oracle.csv", index_col="idx")["p_ehr"]
    studies = cohort.studies
    y = studies["label"].to_numpy().astype(bool)
    models = {
        **probs.to_dict("series"),
        **_fused(run, data, probs, studies["label"], strategies),
        **learned,
    }
    if slicenet is not None:
        pair = pd.DataFrame({"slicenet": slicenet, "ehr": probs["ehr"]})
        models["slicenet"] = slicenet
        models.update(_fused(run, data, pair, studies["label"], strategies))
    models["oracle EHR"] = oracle.loc[studies.index]
    if args.save:
        scores = pd.DataFrame({k: v.loc[studies.index] for k, v in models.items()})
        write_csv(studies[["label", "pe_type"]].join(scores), args.save, index=True)
    test = auroc_summary(pd.read_csv(RunDir(run).eval.metrics))
    own = dict(zip(test["model"], test["all_value"], strict=True))
    counts = stratified_counts(y, args.boot, np.random.default_rng(0))
    everyone = np.arange(len(y))
    print(
        f"{run}: {args.studies} fresh studies ({y.sum()} with PE), seed {args.seed}, "
        f"generated like {data} ({settings['size']} px, calibre {settings['calibre']:g})"
    )
    width = max(len(name) for name in models)
    header = f"{'model':{width}s} {'fresh AUROC (95% CI)':>24s}"
    header += "".join(f" {t[:5]:>6s}" for t in PE_TYPES) + f" {'own test':>9s}"
    print(header)
    for name, score in models.items():
        score = score.loc[studies.index].to_numpy()
        lo, hi = np.nanpercentile(
            Resamples(counts, y, score, 0.5).metrics(everyone)["auroc"], [2.5, 97.5]
        )
        line = f"{name:{width}s} {auroc(y, score):8.3f} ({lo:.3f}-{hi:.3f})"
        for pe_type in PE_TYPES:
            keep = ~y | (studies["pe_type"] == pe_type).to_numpy()
            line += f" {auroc(y[keep], score[keep]):6.3f}"
        line += f" {own[name]:9.3f}" if name in own else f" {'':>9s}"
        print(line)
    pairs = [("fusion_mean", "ehr"), ("fusion_mean", "image"), ("slicenet", "image")]
    pairs += [(m, "fusion_mean") for m in models if m.startswith("fusion_") and m != "fusion_mean"]
    pairs += [("fusion_slicenet_mean", "ehr"), ("fusion_slicenet_mean", "slicenet")]
    for a, b in pairs:
        if a in models and b in models:
            auc_a, auc_b, p = delong_test(y, models[a].to_numpy(), models[b].to_numpy())
            print(f"DeLong {a} vs {b}: {auc_a:.3f} vs {auc_b:.3f}, p = {p:.2g}")
    if other is not None:
        _compare(models, studies, other, args.against)


def _saved_scores(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise RadfusionError(f"{path}: not found; write it with --save on the other run")
    return pd.read_csv(path, index_col="idx")


def _compare(models: dict, studies: pd.DataFrame, other: pd.DataFrame, path: Path) -> None:
    """Paired DeLong tests of this run's models against another run's, on the same studies."""
    if not (other.index.equals(studies.index) and other["label"].eq(studies["label"]).all()):
        raise RadfusionError(
            f"{path}: holds another fresh cohort; save both runs with the same --studies and --seed"
        )
    y = studies["label"].to_numpy().astype(bool)
    shared = [m for m in models if m in other.columns and m != "oracle EHR"]  # oracle: the data's
    for name in shared:
        ours, theirs = models[name].loc[studies.index].to_numpy(), other[name].to_numpy()
        auc_a, auc_b, p = delong_test(y, ours, theirs)
        print(f"against {path.name}: {name} {auc_a:.3f} vs {auc_b:.3f}, paired DeLong p = {p:.2g}")


if __name__ == "__main__":
    try:
        main()
    except RadfusionError as exc:  # one line, no traceback: the message names the fix
        raise SystemExit(f"fresh_cohort.py: {exc}") from None
