"""``prepare_demo_data``: the demo's cohort is generated once, reused, and never mixed."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from radfusion.data.cohort import Cohort
from radfusion.errors import RadfusionError
from radfusion.pipeline.demo import DEMO_COHORT, prepare_demo_data
from radfusion.synthetic.folder import SYNTH_MARKER

SMALL = replace(DEMO_COHORT, studies=66, test_studies=12, size=16, slices=(24, 28), workers=1)


def test_the_demo_cohort_is_generated_once_then_reused(tmp_path):
    folder = tmp_path / "data"
    seen = []
    assert prepare_demo_data(folder, SMALL, on_total=seen.append) is True
    assert seen == [66]
    cohort = Cohort.load(folder)
    sizes = cohort.studies["split"].value_counts()
    assert (sizes["train"], sizes["val"], sizes["test"]) == (48, 6, 12)  # 54 as 1454 : 193
    first = np.load(cohort.studies["volume_path"].iloc[0])
    assert first.shape[1:] == (16, 16) and 24 <= first.shape[0] <= 28
    marker = json.loads((folder / SYNTH_MARKER).read_text())
    assert (marker["studies"], marker["test_studies"], marker["calibre"]) == (66, 12, 3.0)

    stamp = (folder / SYNTH_MARKER).stat().st_mtime_ns
    assert prepare_demo_data(folder, SMALL, on_total=seen.append) is False
    assert seen == [66]  # nothing generated the second time
    assert (folder / SYNTH_MARKER).stat().st_mtime_ns == stamp


def test_another_cohort_or_a_foreign_folder_is_refused(tmp_path):
    folder = tmp_path / "data"
    prepare_demo_data(folder, SMALL)
    with pytest.raises(RadfusionError, match="another synthetic cohort"):
        prepare_demo_data(folder, replace(SMALL, test_studies=14))

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("my own data")
    with pytest.raises(RadfusionError, match="not empty and not a demo cohort"):
        prepare_demo_data(foreign, SMALL)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]


def test_a_killed_generation_is_redone(tmp_path):
    """A generation killed half-way leaves no cohort in the folder, only its hidden partial
    sibling; the rerun discards that and writes the cohort whole."""
    folder = tmp_path / "data"
    partial = tmp_path / ".data.partial"

    written = []

    def killed(idx: int) -> None:
        written.append(idx)
        if len(written) == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare_demo_data(folder, SMALL, on_volume=killed)
    assert len(written) == 5 and not folder.exists() and partial.exists()

    assert prepare_demo_data(folder, SMALL) is True
    assert not partial.exists()
    assert len(Cohort.load(folder).studies) == 66
    reference = tmp_path / "reference"
    prepare_demo_data(reference, SMALL)
    for name in ("Labels.csv", "LABS.csv", "annotations.csv"):
        assert (folder / name).read_bytes() == (reference / name).read_bytes(), name


def test_an_empty_folder_made_beforehand_takes_the_cohort(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    assert prepare_demo_data(folder, SMALL) is True
    assert (folder / SYNTH_MARKER).exists()


def test_the_stage_seconds_are_kept_and_printed_at_the_end(capsys):
    from radfusion.pipeline.console import RichReporter, print_stage_times, stage_progress

    with stage_progress() as bars:
        reporter = RichReporter(bars)
        reporter.stage("synth", "running")
        reporter.stage("synth", "done", 33.4)
        reporter.stage("ehr", "skipped")
        reporter.stage("image", "running")
        reporter.stage("image", "done", 142.6)
    print_stage_times(reporter.seconds, 180.2)
    assert reporter.seconds == {"synth": 33.4, "image": 142.6}  # a skipped stage took no time
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == "stage seconds: synth 33 · image 143 · total 180"


def test_the_demo_cohort_in_the_inspect_layout(tmp_path):
    folder = tmp_path / "data"
    assert prepare_demo_data(folder, replace(SMALL, layout="inspect")) is True
    cohort = Cohort.load(folder)
    assert cohort.layout == "inspect" and len(cohort.studies) == 66
    assert json.loads((folder / SYNTH_MARKER).read_text())["layout"] == "inspect"
    with pytest.raises(RadfusionError, match="another synthetic cohort"):
        prepare_demo_data(folder, SMALL)  # the RadFusion layout's demo is another cohort
