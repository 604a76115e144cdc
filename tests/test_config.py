from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from radfusion.config import Config, load_config, shipped_config_path
from radfusion.errors import RadfusionError


def test_the_shipped_paper_config_spells_out_the_defaults():
    text = shipped_config_path("paper").read_text()
    assert load_config("paper") == Config()
    # Every key of the config appears in the file: nothing is left to a hidden default.
    written = yaml.safe_load(text)
    for section, values in Config().to_dict().items():
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
    assert c.ehr.model == "elasticnet" and "mean" in c.fusion.designs


def test_cpu_demo_changes_sizes_and_the_optimiser_not_the_method():
    demo, paper = load_config("cpu-demo"), load_config("paper")
    assert demo.image.model == "penet_tiny" and demo.preprocess.size == 64
    assert demo.ehr.model_copy(update={"n_jobs": None}) == paper.ehr
    # The demo leaves out the paper config's early design (time), nothing else.
    assert demo.fusion.model_copy(update={"designs": paper.fusion.designs}) == paper.fusion
    assert set(demo.fusion.designs) == set(paper.fusion.designs) - {"early"}


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
            "fusion.designs=[mean, max]",
            "seed=3",
            "image.pretrained=/w/penet.pth",
            "ehr.cv=5",
        ],
    )
    assert c.image.lr == 0.001 and c.fusion.designs == ["mean", "max"] and c.seed == 3
    assert c.image.pretrained == "/w/penet.pth" and c.ehr.cv == 5
    path = tmp_path / "mine.yaml"
    path.write_text("image:\n  max_epochs: 7\n")
    c = load_config(path, ["image.max_epochs=9"])  # the command line wins over the file
    assert c.image.max_epochs == 9 and c.image.model == "penet_50"
    assert load_config(None, []).to_yaml() == Config().to_yaml()


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["image.lrr=1"], r"unknown config key image\.lrr; did you mean image\.lr\?"),
        (["imagee.lr=1"], r"unknown config key imagee; did you mean image\?"),
        (["image.max_epochs=many"], r"image\.max_epochs: got 'many', expected a valid integer"),
        (["image.lr"], "expected section.key=value"),
        (["image=3"], r"config key image: got 3, expected a valid dictionary"),
        (
            ["preprocess.hu_intercept=abc"],
            r"preprocess\.hu_intercept: got 'abc', expected 0 or -1024",
        ),
        (["ehr.grid=[1]"], r"ehr\.grid: got \[1\], expected a valid dictionary"),
        (
            ["image.optimizer=adamm"],
            r"got 'adamm', expected 'sgd' or 'adamw'; did you mean adamw\?",
        ),
        (["evaluation.n_boot=10"], r"n_boot: got 10, expected greater than or equal to 100"),
        (["image.logger=wandb"], r"'csv', 'tensorboard' or 'mlflow'"),
        (
            ["fusion.designs=[mean, maxx]"],
            r"fusion\.designs\.1: got 'maxx'.*did you mean max\?",
        ),
        (["preprocess.size=4"], r"preprocess\.size: got 4, expected greater than or equal to 8"),
    ],
)
def test_bad_keys_and_values_are_named(sets, message):
    with pytest.raises(RadfusionError, match=message) as caught:
        load_config(None, sets)
    assert "\n" not in str(caught.value)  # one line


def test_a_bad_key_in_a_file_names_the_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("image:\n  windows_per_epoc: 7\n")
    with pytest.raises(
        RadfusionError, match=r"mine\.yaml: unknown config key image\.windows_per_epoc"
    ):
        load_config(path)


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
    with pytest.raises(RadfusionError, match=r"image\.seed: got 'one'"):
        load_config(None, ["image.seed=one"])


def test_importing_the_configuration_loads_no_torch():
    code = (
        "import sys, radfusion.config as c; c.load_config('cpu-demo', ['image.lr=1e-3']); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'lightning')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_key_of_the_recipe_has_one_default():
    """The image section is PENet's recipe plus where it runs: the recipe's defaults are the
    config's, not a second copy (a checkpoint stores exactly the recipe's fields)."""
    from radfusion.config import ImageSection, TrainConfig

    recipe = TrainConfig()
    image = ImageSection()
    for name in TrainConfig.model_fields:
        if name != "seed":  # the image section's seed defaults to the run's
            assert getattr(image, name) == getattr(recipe, name), name
    assert set(image.train_config(3).model_dump()) == set(TrainConfig.model_fields)
