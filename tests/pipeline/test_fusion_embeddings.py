"""The embeddings contract: our image models' files, and a user's file validated like a
predictions file."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from radfusion.data.cohort import Cohort
from radfusion.errors import RadfusionError
from radfusion.imaging.inference import open_checkpoint
from radfusion.imaging.preprocess import cache_folder
from radfusion.imaging.windows import EvalWindows
from radfusion.pipeline.predict import run_checkpoint
from radfusion.pipeline.steps import cache_params
from radfusion.predictions import read_embeddings, write_embeddings


def _studies(n=12):
    split = ["train"] * 6 + ["val"] * 3 + ["test"] * 3
    return pd.DataFrame(
        {"split": split[:n], "label": [0, 1] * (n // 2)}, index=pd.Index(range(n), name="idx")
    )


def _write(path, frame):
    frame.to_parquet(path, index=False)
    return path


def test_a_written_file_reads_back_as_float32(tmp_path):
    studies = _studies()
    values = np.random.default_rng(0).normal(size=(12, 5))
    path = write_embeddings(studies.index[::-1], values[::-1], tmp_path / "enc.parquet")
    back, notes = read_embeddings(path, studies)
    assert back.dtypes.unique().tolist() == [np.float32] and not notes
    np.testing.assert_allclose(back.to_numpy(), values.astype(np.float32))
    assert list(back.index) == list(range(12))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda f: f.assign(idx=f["idx"].where(f.index != 0, 99)), "idx 99 are not in the cohort"),
        (lambda f: f.drop(index=11), "1 of 3 test studies have no embedding"),
        (lambda f: f.assign(f1=f["f1"].where(f.index != 4, np.nan)), "NaN or infinity"),
        (lambda f: f.assign(idx=f["idx"].where(f.index != 1, 0)), "appear more than once"),
        (lambda f: f.assign(f2=f["f2"].where(f["idx"] < 9, np.nan)), "width differs"),
        (lambda f: f.assign(f0="x"), "not numbers"),
        (lambda f: f.drop(columns="idx"), "no idx column"),
        (lambda f: f[["idx"]], "no embedding columns"),
        (lambda f: f[f["idx"] >= 6], "no train study has an embedding"),
    ],
)
def test_a_bad_file_is_one_line_naming_it(tmp_path, change, message):
    studies = _studies()
    frame = pd.DataFrame(np.ones((12, 3)), columns=["f0", "f1", "f2"])
    frame.insert(0, "idx", range(12))
    path = _write(tmp_path / "enc.parquet", change(frame))
    with pytest.raises(RadfusionError, match=message) as err:
        read_embeddings(path, studies)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_missing_validation_study_is_a_warning_and_not_parquet_an_error(tmp_path):
    studies = _studies()
    frame = pd.DataFrame(np.ones((11, 2)), columns=["a", "b"])
    frame.insert(0, "idx", [i for i in range(12) if i != 7])
    back, notes = read_embeddings(_write(tmp_path / "e.parquet", frame), studies)
    assert len(back) == 11 and "1 of 3 val studies have no embedding" in notes[0]
    (tmp_path / "bad.parquet").write_text("idx,a\n1,2\n")
    with pytest.raises(RadfusionError, match="not a readable parquet file"):
        read_embeddings(tmp_path / "bad.parquet", studies)


def test_penet_writes_each_studys_windows_max_and_mean_pooled(benchmark_run, tiny_config):
    """The image stage's embeddings/image.parquet against the features recomputed here from
    the checkpoint's own layers, window by window."""
    data, run, _ = benchmark_run
    cohort = Cohort.load(data)
    frame = pd.read_parquet(run / "embeddings" / "image.parquet").set_index("idx")
    assert sorted(frame.index) == sorted(cohort.studies.index)
    ckpt = open_checkpoint(run_checkpoint(run, "image"))
    model, config = ckpt.model.eval(), ckpt.config
    width = model.num_features
    assert frame.shape[1] == 2 * width and frame.dtypes.unique().tolist() == [np.float32]
    folder = cache_folder(run / "cache", cache_params(tiny_config.preprocess))
    some = cohort.studies.iloc[[0, 7, 31]]
    windows = EvalWindows(folder, some, window=config.window, crop=config.crop)
    features = {}
    with torch.no_grad():
        for x, idx, _ in windows:
            x = x[None].to(memory_format=torch.channels_last_3d)
            f = model.stages(model.stem(x)).mean(dim=(2, 3, 4))[0].numpy()
            features.setdefault(int(idx), []).append(f)
    for idx, rows in features.items():
        rows = np.stack(rows)
        got = frame.loc[idx].to_numpy()
        np.testing.assert_allclose(got[:width], rows.max(axis=0), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got[width:], rows.mean(axis=0), rtol=1e-4, atol=1e-5)
    slices = pd.read_parquet(run / "embeddings" / "slicenet.parquet")
    assert len(slices) == len(cohort.studies) and not slices.isna().any().any()
