"""Window datasets against a direct NumPy computation of the paper's recipe."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch.utils.data import DataLoader

from radfusion.imaging.windows import (
    EvalWindows,
    TrainWindows,
    normalize,
    normalize_tensor,
    window_starts,
)


def paper_window(hu):
    """The paper's recipe, written out: clip to [400 - 500, 400 + 500], scale, centre."""
    return (np.clip(hu.astype(np.float64), -100, 900) + 100) / 1000 - 0.15897


def test_normalize_is_the_papers_window():
    hu = np.array([-2000, -1000, -100, 0, 400, 900, 3000], dtype=np.int16)
    np.testing.assert_allclose(normalize(hu), paper_window(hu), atol=1e-6)
    # The on-device version (for int16 windows) computes the same thing.
    np.testing.assert_allclose(
        normalize_tensor(torch.from_numpy(hu)).numpy(), paper_window(hu), atol=1e-6
    )


def test_window_starts_cover_the_study():
    assert window_starts(10) == [0]
    assert window_starts(48) == [0, 24]
    assert window_starts(50) == [0, 24, 26]
    assert window_starts(50, stride=12) == [0, 12, 24, 26]


def test_eval_windows_match_numpy(cached):
    cohort, folder = cached
    studies = cohort.split("test")
    data = EvalWindows(folder, studies, crop=12)
    expected = sum(len(window_starts(int(n))) for n in studies["slices"])
    assert len(data) == expected
    x, idx, start = data[1]
    vol = np.load(folder / f"{idx}.npy")
    direct = paper_window(vol[start : start + 24, 2:14, 2:14])
    assert x.shape == (1, 24, 12, 12) and x.dtype == torch.float32
    np.testing.assert_allclose(x[0].numpy(), direct, atol=1e-6)


def test_short_studies_are_padded_with_air(cached, tmp_path):
    cohort, folder = cached
    idx = int(cohort.studies.index[0])
    short = np.load(folder / f"{idx}.npy")[:10]
    np.save(tmp_path / f"{idx}.npy", short)
    (tmp_path / f"{idx}.json").write_text("{}")
    x, _, _ = EvalWindows(tmp_path, cohort.studies.loc[[idx]], crop=16)[0]
    np.testing.assert_allclose(x[0, :10].numpy(), paper_window(short), atol=1e-6)
    np.testing.assert_allclose(x[0, 10:].numpy(), paper_window(np.array(-1000)), atol=1e-6)


def test_train_window_labels_follow_the_annotations(cached):
    cohort, folder = cached
    train = cohort.split("train")
    data = TrainWindows(folder, train, cohort.annotations, length=400, crop=12, seed=3)
    ann = cohort.annotations
    abnormal_draws = 0
    for k in range(400):
        rng = np.random.default_rng([3, 0, k])
        idx, start = data.sample(k, rng)
        slices = ann.loc[ann["idx"] == idx, "slice"].to_numpy()
        if len(slices):
            expected = float(((slices >= start) & (slices < start + 24)).sum() >= 4)
        else:
            expected = float(train.loc[idx, "label"])
        assert data.label(idx, start) == expected
        abnormal_draws += idx in data.annotated
    # 30% of draws go to an annotated positive, plus the uniform draws that hit one.
    share = len(data.abnormal) / len(train)
    assert abs(abnormal_draws / 400 - (0.3 + 0.7 * share)) < 0.08


def test_train_windows_are_reproducible_and_worker_independent(cached):
    cohort, folder = cached
    data = TrainWindows(
        folder, cohort.split("train"), cohort.annotations, length=8, crop=12, seed=1
    )
    a = [data[k][0] for k in range(8)]
    loader = DataLoader(data, batch_size=4, num_workers=2)
    b = torch.cat([x for x, _ in loader])
    for k in range(8):
        torch.testing.assert_close(a[k], b[k])
    data.set_epoch(1)
    assert not torch.equal(data[0][0], a[0])


def test_augmentation_rotates_with_air_and_keeps_the_range(cached):
    cohort, folder = cached
    data = TrainWindows(
        folder,
        cohort.split("train"),
        cohort.annotations,
        length=50,
        crop=16,
        max_rotation=15.0,
        seed=0,
    )
    air = paper_window(np.array(-1000))
    lo, hi = paper_window(np.array(-100)), paper_window(np.array(900))
    for k in range(50):
        x, y = data[k]
        assert x.shape == (1, 24, 16, 16) and y.item() in (0.0, 1.0)
        assert lo - 1e-6 <= x.min().item() and x.max().item() <= hi + 1e-6
    x, _ = data[0]
    assert x[0, :, 0, 0].numpy() == pytest.approx(np.full(24, air), abs=0.05)  # corner: air


def test_missing_cache_entries_are_a_clear_error(cached, tmp_path):
    cohort, _ = cached
    from radfusion.errors import RadfusionError

    with pytest.raises(RadfusionError, match="run radfusion preprocess first"):
        EvalWindows(tmp_path, cohort.studies)


def _position_auroc(data, n=1500):
    """How well a window's height in the scan alone predicts its label (0.5: not at all)."""
    heights, labels = [], []
    for k in range(n):
        idx, start = data.sample(k, np.random.default_rng([0, 0, k]))
        heights.append((start + 12) / data.shapes[idx][0])
        labels.append(data.label(idx, start))
    heights, labels = np.array(heights), np.array(labels)
    typical = np.median(heights[labels == 1])
    return roc_auc_score(labels, -np.abs(heights - typical))


def test_random_windows_are_placed_like_abnormal_ones(tmp_path):
    # 40 long scans, emboli in half of them at 40-55% of the scan's height.
    rng = np.random.default_rng(0)
    rows, ann = [], []
    for idx in range(40):
        n = int(rng.integers(100, 140))
        np.save(tmp_path / f"{idx}.npy", np.zeros((n, 12, 12), dtype=np.int16))
        (tmp_path / f"{idx}.json").write_text("{}")
        rows.append({"idx": idx, "label": idx % 2})
        if idx % 2:
            first = int(rng.uniform(0.4, 0.45) * n)
            ann += [{"idx": idx, "slice": s} for s in range(first, first + int(0.1 * n))]
    studies = pd.DataFrame(rows).set_index("idx")
    annotations = pd.DataFrame(ann)
    args = dict(length=1500, crop=12, augment=False)
    plain = TrainWindows(tmp_path, studies, annotations, matched_positions=False, **args)
    matched = TrainWindows(tmp_path, studies, annotations, **args)
    assert matched.matched == pytest.approx(0.3 / 0.7)
    before, after = _position_auroc(plain), _position_auroc(matched)
    assert before > 0.75  # sampling centred on emboli alone makes height a strong cue
    assert after < before - 0.1
