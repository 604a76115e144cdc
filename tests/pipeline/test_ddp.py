"""Distributed training for real: ``radfusion benchmark`` with PENet under Lightning's DDP on
two CPU processes (gloo), started the way a user starts it, from the command line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import torch

from radfusion.rundir import RunDir
from tests.conftest import tiny_cli


def test_a_two_process_ddp_benchmark_trains_on_both_ranks_and_rank_0_alone_writes(
    small_cohort, tmp_path
):
    run = tmp_path / "run"
    command = tiny_cli(
        small_cohort,
        run,
        "image.strategy=ddp",
        "image.devices=2",
        # SliceNet stays on one process: rank 1 must sit that training out, not start its own.
        "slicenet.max_epochs=1",
    )
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    for key in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_PORT"):
        env.pop(key, None)
    radfusion = Path(sys.executable).with_name("radfusion")  # the console script, as users run it
    done = subprocess.run(
        [str(radfusion), *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # Rank 1 went through rank 0's lock: it never said the folder was busy.
    assert "another radfusion benchmark is running" not in done.stderr + done.stdout

    # Both ranks trained: each epoch's 16 windows were shared out, 8 per rank, so an epoch took
    # 2 steps of batch 4 where one process takes 4 (tests/imaging/test_train.py counts those).
    model = RunDir(run).model("image")
    last = torch.load(model / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert last["global_step"] == 3 * 2
    assert last["epoch"] == 2

    # Rank 0 alone wrote: one file per checkpoint name (a second writer leaves "-v1" copies),
    # one record, and each study scored once.
    names = sorted(p.name for p in (model / "checkpoints").iterdir())
    assert len(names) == 3 and "last.ckpt" in names, names
    assert not any(re.search(r"-v\d+\.ckpt$", n) for n in names), names
    assert sum(1 for p in model.iterdir() if p.name.endswith(".json")) >= 1
    predictions = pd.read_csv(RunDir(run).prediction("image"))
    cohort_ids = pd.read_csv(small_cohort / "Labels.csv")["idx"]
    assert predictions["idx"].is_unique and set(predictions["idx"]) == set(cohort_ids)

    # SliceNet (one process) trained once, by rank 0: 16 windows of batch 8, 2 steps.
    slicenet = RunDir(run).model("slicenet") / "checkpoints" / "last.ckpt"
    assert torch.load(slicenet, weights_only=True, map_location="cpu")["global_step"] == 2

    # The result is scored: the DDP-trained model is in the evaluation.
    metrics = pd.read_csv(RunDir(run).eval.metrics)
    assert "image" in set(metrics["model"])
