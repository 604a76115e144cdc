"""One recipe from every door: the stage commands run one by one with a config give the files
and numbers ``radfusion benchmark`` gives with it, and their defaults are the paper's."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml
from typer.main import get_command
from typer.testing import CliRunner

from radfusion.cli import app
from radfusion.config import Config, load_config

runner = CliRunner()
#: Each stage command and the config sections it reads.
STAGE_COMMANDS = {
    "preprocess": ["preprocess"],
    "train-ehr": ["ehr"],
    "train-image": ["preprocess", "image", "slicenet"],
    "fuse": ["fusion"],
    "evaluate": ["evaluation"],
    "report": ["report"],
}


def _ok(args) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def test_stage_commands_one_by_one_give_the_benchmarks_files(benchmark_run, tiny_config, tmp_path):
    data, bench, _ = benchmark_run
    config = tmp_path / "tiny.yaml"
    config.write_text(tiny_config.to_yaml())
    run = tmp_path / "run"
    c = ["--config", config]
    _ok(["preprocess", data, "--cache", run / "cache", *c])
    _ok(["train-ehr", data, "--out", run, *c])
    _ok(["train-image", data, "--out", run, *c])
    _ok(["train-image", data, "--out", run, "--section", "slicenet", *c])
    _ok(["fuse", run / "predictions", "--models", "image,ehr", "--data", data, *c])
    _ok(["fuse", run / "predictions", "--models", "slicenet,ehr", "--data", data, *c])
    _ok(
        [
            "evaluate",
            "--data",
            data,
            "--predictions",
            run / "predictions",
            "--out",
            run / "eval",
            *c,
        ]
    )
    _ok(["report", run, *c])

    ours = sorted(p.name for p in (run / "predictions").glob("*.csv"))
    theirs = sorted(p.name for p in (bench / "predictions").glob("*.csv"))
    assert ours == theirs and "fusion_slicenet_weighted.csv" in ours
    for name in ours:
        assert (run / "predictions" / name).read_bytes() == (
            bench / "predictions" / name
        ).read_bytes(), name
    for table in ("metrics", "thresholds", "fairness", "comparisons", "subtypes"):
        pd.testing.assert_frame_equal(
            pd.read_csv(run / "eval" / f"{table}.csv"), pd.read_csv(bench / "eval" / f"{table}.csv")
        )
    for model in ("image", "slicenet"):  # the same epoch chosen, under the same name
        assert {p.name for p in (run / model / "checkpoints").glob("best-*.ckpt")} == {
            p.name for p in (bench / model / "checkpoints").glob("best-*.ckpt")
        }
    assert (run / "report" / "report.html").exists()
    # The run folder keeps the recipe each stage ran with, and it is the benchmark's.
    recorded = load_config(run / "config.yaml")
    for section in ("preprocess", "ehr", "image", "slicenet"):
        assert getattr(recorded, section) == getattr(tiny_config, section)
    shown = _ok(["config", "show", run])
    assert yaml.safe_load(shown)["image"] == tiny_config.image.model_dump()


@pytest.mark.parametrize("command", sorted(STAGE_COMMANDS))
def test_stage_defaults_are_the_papers(command, tmp_path):
    """With no --config, each stage command resolves its sections to the paper's config."""
    args = {
        "preprocess": ["preprocess", tmp_path, "--cache", tmp_path],
        "train-ehr": ["train-ehr", tmp_path, "--out", tmp_path],
        "train-image": ["train-image", tmp_path, "--out", tmp_path],
        "fuse": ["fuse", tmp_path, "--models", "image,ehr"],
        "evaluate": ["evaluate", "--data", tmp_path, "--predictions", tmp_path, "--out", tmp_path],
        "report": ["report", tmp_path],
    }[command]
    printed = yaml.safe_load(_ok([*args, "--print"]))
    paper = load_config("paper").to_dict()
    for section in STAGE_COMMANDS[command]:
        if section in printed:
            assert printed[section] == paper[section], section
    assert printed["seed"] == paper["seed"]
    assert load_config("paper") == Config()  # the defaults are the paper's file
    assert list(tmp_path.iterdir()) == []  # --print wrote nothing


def test_stage_options_never_retype_a_config_key():
    """A stage command's settings come from its sections alone: none of its options shares a
    name with a key of the sections it reads (paths and switches only)."""
    cli = get_command(app)
    for command, sections in STAGE_COMMANDS.items():
        options = {
            p.name for p in cli.commands[command].params if p.param_type_name == "option"
        } - {
            "config",
            "set_",
            "show",
            "help",
        }
        keys = {k for s in sections for k in getattr(Config(), s).model_dump()}
        assert not options & keys, (command, options & keys)


def test_a_bad_key_on_a_stage_command_is_one_line(tmp_path):
    result = runner.invoke(
        app, ["preprocess", str(tmp_path), "--cache", str(tmp_path), "--set", "preprocess.sise=64"]
    )
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "did you mean preprocess.size?" in lines[0]
