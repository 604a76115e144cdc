from __future__ import annotations

from dataclasses import asdict, replace

import pytest
import yaml

from radfusion.config import Config, load_config, shipped_config_path
from radfusion.errors import RadfusionError


def test_the_shipped_paper_config_spells_out_the_defaults():
    text = shipped_config_path("paper").read_text()
    assert load_config("paper") == Config()
    # Every key of the config appears in the file: nothing is left to a hidden default.
    written = yaml.safe_load(text)
    for section, values in asdict(Config()).items():
        if isinstance(values, dict):
            missing = (
                set(values)
                - set(written[section])
                - {"model_args", "eval_batch_size", "eval_stride", "num_workers", "seed"}
            )
            assert not missing, (section, missing)


def test_paper_settings():
    c = load_config("paper")
    assert (c.image.model, c.image.crop, c.preprocess.size, c.image.window) == (
        "penet_50",
        192,
        208,
        24,
    )
    assert (c.image.optimizer, c.image.lr, c.image.momentum, c.image.weight_decay) == (
        "sgd",
        0.01,
        0.9,
        0.001,
    )
    assert (c.image.loss, c.image.focal_gamma, c.image.aggregate) == ("focal", 2.0, "max")
    assert c.ehr.model == "elasticnet" and "mean" in c.fusion.strategies


def test_cpu_demo_changes_sizes_and_the_optimiser_not_the_method():
    demo, paper = load_config("cpu-demo"), load_config("paper")
    assert demo.image.model == "penet_tiny" and demo.preprocess.size == 64
    assert replace(demo.ehr, n_jobs=None) == paper.ehr and demo.fusion == paper.fusion


def test_the_demo_windows_fit_the_demo_cohort():
    # The demo's windows are cut from its own cohort: each model's window must fit the shortest
    # study, a positive window must be possible, and crops must fit the cached slice.
    from radfusion.pipeline.demo import DEMO_COHORT

    demo = load_config("cpu-demo")
    for section in (demo.image, demo.slicenet):
        assert section.min_abnormal_slices <= section.window <= DEMO_COHORT.slices[0]
        assert section.crop <= demo.preprocess.size == DEMO_COHORT.size


def test_set_parses_yaml_values_and_nested_keys(tmp_path):
    c = load_config(
        None,
        [
            "image.lr=1e-3",
            "fusion.strategies=[mean, max]",
            "seed=3",
            "image.pretrained=/w/penet.pth",
            "ehr.cv=5",
        ],
    )
    assert c.image.lr == 0.001 and c.fusion.strategies == ["mean", "max"] and c.seed == 3
    assert c.image.pretrained == "/w/penet.pth" and c.ehr.cv == 5
    path = tmp_path / "mine.yaml"
    path.write_text("image:\n  max_epochs: 7\n")
    c = load_config(path, ["image.max_epochs=9"])  # the command line wins over the file
    assert c.image.max_epochs == 9 and c.image.model == "penet_50"
    assert load_config(None, []).to_yaml() == Config().to_yaml()


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["image.lrr=1"], "unknown config key image.lrr .did you mean image.lr"),
        (["image.max_epochs=many"], "image.max_epochs: expected int"),
        (["image.lr"], "expected section.key=value"),
        (["image=3"], "config section image: expected a mapping"),
        (["preprocess.hu_intercept=abc"], r"preprocess.hu_intercept: expected int or null"),
        (["ehr.grid=[1]"], r"ehr.grid: expected dict or null"),
    ],
)
def test_bad_keys_and_values_are_named(sets, message):
    with pytest.raises(RadfusionError, match=message):
        load_config(None, sets)


def test_missing_or_broken_config_files(tmp_path):
    with pytest.raises(RadfusionError, match="no such config file; shipped configs: paper"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("image: [unclosed\n")
    with pytest.raises(RadfusionError, match="not valid YAML"):
        load_config(bad)


def test_image_seed_follows_the_run_unless_set():
    assert load_config("cpu-demo", ["seed=4"]).image.train_config(4).seed == 4
    c = load_config("cpu-demo", ["seed=4", "image.seed=1"])  # PENet reseeded, the rest kept
    assert c.image.train_config(c.seed).seed == 1 and c.seed == 4
    with pytest.raises(RadfusionError, match=r"image\.seed: expected int or null"):
        load_config(None, ["image.seed=one"]).image.train_config(0)
