"""The CTPA phantom: anatomy where it should be, emboli as filling defects inside arteries,
and no shortcut: global intensity statistics must not reveal the label."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from radfusion.data.synthetic.phantom import render_phantom, sample_phantom

SHAPE = (64, 96, 96)


def _render(pe_type, seed, shape=SHAPE, without_emboli=False):
    rng = np.random.default_rng(seed)
    params = sample_phantom(pe_type, rng)
    if without_emboli:
        params = dataclasses.replace(params, emboli=[])
    return params, *render_phantom(shape, params, rng)


def test_same_seed_same_volume():
    _, a, _ = _render("segmental", 3)
    _, b, _ = _render("segmental", 3)
    np.testing.assert_array_equal(a, b)


def test_anatomy_has_air_lungs_soft_tissue_and_bone():
    params, vol, _ = _render("", 11)
    mid = vol[SHAPE[0] // 2].astype(float)
    assert abs(np.median(mid[:5, :5]) + 1000) < 3 * params.noise_sd  # air in the corner
    lung = mid[40:56, 20:30]  # right lung (image left), mid chest
    assert -950 < np.median(lung) < -700
    assert (vol > 500).mean() > 0.002  # bone: spine and ribs
    assert ((vol > -150) & (vol < 100)).mean() > 0.2  # fat, muscle, mediastinum


@pytest.mark.parametrize("pe_type", ["central", "segmental"])
def test_emboli_are_filling_defects_in_contrast_filled_arteries(pe_type):
    for seed in range(5):
        _, with_clot, slices = _render(pe_type, seed)
        _, without, _ = _render(pe_type, seed, without_emboli=True)
        changed = with_clot != without
        if not changed.any():
            continue  # a small clot can fall between voxel centres at this resolution
        assert set(np.flatnonzero(changed.any(axis=(1, 2)))) == set(slices)
        before, after = without[changed].astype(float), with_clot[changed].astype(float)
        assert np.median(before) > 150  # it was contrast-filled lumen
        assert np.median(before - after) > 60  # and the clot is darker
        assert changed.sum() < 0.01 * changed.size  # small, local
        return
    pytest.fail(f"no visible {pe_type} embolus in 5 studies")


def test_global_intensity_statistics_do_not_reveal_pe():
    rng = np.random.default_rng(0)
    features, labels = [], []
    for i in range(240):
        label = i % 2
        pe_type = rng.choice(["central", "segmental", "subsegmental"]) if label else ""
        _, vol, _ = _render(pe_type, 1000 + i, shape=(48, 64, 64))
        v = vol.astype(np.float32).ravel()
        features.append([v.mean(), v.std(), *np.percentile(v, [1, 5, 25, 50, 75, 95, 99])])
        labels.append(label)
    x, y = np.array(features), np.array(labels)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    scores = cross_val_predict(model, x, y, cv=5, method="predict_proba")[:, 1]
    assert roc_auc_score(y, scores) < 0.6
