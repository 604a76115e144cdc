"""The issue's benchmark: every fusion design trained and evaluated, a user's embeddings probed
and fused, over two seeds sharing the EHR model, with the seed summary checked against each
seed's own tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from radfusion.config import load_config
from radfusion.pipeline.benchmark import run_benchmark
from radfusion.predictions import write_embeddings

from ..conftest import TINY

DESIGNS = "fusion.designs=[mean, stacked_logit, early, joint]"


@pytest.fixture(scope="module")
def seeds_run(small_cohort, tmp_path_factory):
    root = tmp_path_factory.mktemp("seeds")
    labels = pd.read_csv(small_cohort / "Labels.csv")
    rng = np.random.default_rng(7)
    values = rng.normal(size=(len(labels), 6))
    values[:, 0] += 1.5 * labels["label"].to_numpy()  # an encoder that sees the label a bit
    user = write_embeddings(labels["idx"], values, root / "foundation.parquet")
    config = load_config(
        None,
        [*TINY, DESIGNS, "slicenet.enabled=false", "fusion.joint_epochs=1", "image.max_epochs=2"],
    )
    run = root / "run"
    result = run_benchmark(small_cohort, run, config, extra_embeddings=[user], seeds=[0, 1])
    return small_cohort, run, result


def test_every_design_is_trained_and_evaluated_for_every_seed(seeds_run):
    _, run, result = seeds_run
    assert result.statuses["seed 1/ehr"] == "skipped"  # trained once, shared
    assert result.statuses["seed 1/image"] == "ran" and result.statuses["seed 1/joint"] == "ran"
    expected = {
        "fusion_mean",
        "fusion_stacked_logit",
        "fusion_early",
        "fusion_joint_all",
        "fusion_joint_heads",
        "probe_image",
        "probe_foundation",
        "fusion_foundation_early",
    }
    for seed in (0, 1):
        metrics = pd.read_csv(run / "seeds" / str(seed) / "eval" / "metrics.csv")
        assert expected <= set(metrics["model"])
        page = (run / "seeds" / str(seed) / "report" / "report.html").read_text()
        assert "Modality ablation" in page and "Shapley" in page
        shapley = pd.read_csv(run / "seeds" / str(seed) / "fusion" / "shapley.csv")
        for _, part in shapley.groupby("design"):
            if part["share"].notna().all():  # undefined where the design is at chance
                assert part["share"].sum() == pytest.approx(1.0, abs=1e-4)  # 6 digits
    ehr = [pd.read_csv(run / "seeds" / str(s) / "predictions" / "ehr.csv") for s in (0, 1)]
    pd.testing.assert_frame_equal(*ehr)
    image = [pd.read_csv(run / "seeds" / str(s) / "predictions" / "image.csv") for s in (0, 1)]
    assert not np.allclose(image[0]["prob"], image[1]["prob"])  # a stochastic stage reran


def test_the_seed_summary_matches_each_seeds_tables(seeds_run):
    _, run, _ = seeds_run
    table = pd.read_csv(run / "seeds.csv").set_index(["model", "metric"])
    per = {
        s: pd.read_csv(run / "seeds" / str(s) / "eval" / "metrics.csv")
        .query("attribute == 'overall' and subset == 'all'")
        .set_index(["model", "metric"])["value"]
        for s in (0, 1)
    }
    for key in [("fusion_early", "auroc"), ("fusion_joint_heads", "brier"), ("ehr", "auprc")]:
        values = np.array([per[0][key], per[1][key]])
        assert table.loc[key, "mean"] == pytest.approx(values.mean())
        assert table.loc[key, "sd"] == pytest.approx(values.std(ddof=1))
        assert table.loc[key, "seed1"] == pytest.approx(values[1])
    comparisons = pd.read_csv(run / "seed_comparisons.csv").set_index(["model_a", "model_b"])
    own = [
        pd.read_csv(run / "seeds" / str(s) / "eval" / "comparisons.csv")
        .query("subset == 'all'")
        .set_index(["model_a", "model_b"])
        for s in (0, 1)
    ]
    for key in comparisons.index[:6]:
        p = [o.loc[key, "p_value"] for o in own]
        assert comparisons.loc[key, "significant"] == sum(v < 0.05 for v in p)
        assert comparisons.loc[key, "seed0_p"] == pytest.approx(p[0])
    page = (run / "report" / "report.html").read_text()
    assert "DeLong comparisons per seed" in page and "seeds/1/report/report.html" in page


def test_a_run_of_several_tasks_refuses_seeds(small_cohort, tmp_path):
    from radfusion.errors import RadfusionError

    config = load_config(None, [*TINY, "data.task=all"])
    with pytest.raises(RadfusionError, match="--seeds runs one task"):
        run_benchmark(small_cohort, tmp_path / "run", config, seeds=[0, 1])
