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

from radfusion.synthetic.phantom import (
    Embolus,
    _Grid,
    _unopacified_beyond,
    render_phantom,
    render_with_and_without_emboli,
    sample_phantom,
)

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


def _children(tube, tubes):
    """Branches that start where ``tube`` ends (by coordinates, not by object identity)."""
    return [t for t in tubes if t is not tube and np.allclose(t.start, tube.end)]


def test_arteries_beyond_an_occluding_clot_are_unopacified():
    seen = 0
    for seed in range(12):
        params = sample_phantom("segmental", np.random.default_rng(seed))
        clots = {id(e.tube): e for e in params.emboli}
        for clot in params.emboli:
            if clot.tube.level != "segmental" or clot.radius < 0.6 * clot.tube.radius:
                continue  # a subtle clot (under 0.6 of the lumen) lets contrast pass
            for child in _children(clot.tube, params.tubes):
                filled = clots[id(child)]  # every subsegmental branch beyond it
                assert filled.radius == child.radius and filled.hu == clot.hu
                seen += 1
    assert seen >= 10


def test_a_main_artery_occlusion_empties_its_lung_and_a_trunk_clot_none():
    params = sample_phantom("", np.random.default_rng(3))
    trunk = next(t for t in params.tubes if t.level == "trunk")
    main = next(t for t in params.tubes if t.level == "main")
    clot = lambda t: Embolus(t, t.start, t.end, t.radius, 40.0)  # noqa: E731
    assert _unopacified_beyond(clot(trunk), params.tubes) == []
    below, frontier = [], [main]  # the main artery's subtree, walked by coordinates
    while frontier:
        kids = _children(frontier.pop(), params.tubes)
        below += kids
        frontier += kids
    filled = _unopacified_beyond(clot(main), params.tubes)
    assert {id(e.tube) for e in filled} == {id(t) for t in below}
    assert {t.level for t in below} == {"lobar", "segmental", "subsegmental", "peripheral"}


def test_unopacified_branches_render_at_the_clots_density():
    for seed in range(12):
        params = sample_phantom("segmental", np.random.default_rng(seed))
        full = [
            e for e in params.emboli if e.tube.level == "subsegmental" and e.radius == e.tube.radius
        ]
        if not full:
            continue
        rng = np.random.default_rng(seed)
        sample_phantom("segmental", rng)  # the same draws, then the renderer's
        state = rng.bit_generator.state
        vol, _ = render_phantom(SHAPE, params, rng)
        rng.bit_generator.state = state
        open_, _ = render_phantom(SHAPE, dataclasses.replace(params, emboli=[]), rng)
        changed = vol != open_
        assert np.median(open_[changed]) > 150  # contrast before
        assert np.median(vol[changed]) < 140  # unopacified blood after
        return
    pytest.fail("no occluded segmental artery in 12 studies")


def test_calibre_widens_the_smaller_arteries_up_to_a_main_artery():
    one = sample_phantom("", np.random.default_rng(5))
    two = sample_phantom("", np.random.default_rng(5), calibre=2.0)
    assert len(one.tubes) == len(two.tubes)
    main = max(t.radius for t in one.tubes if t.level == "main")
    for a, b in zip(one.tubes, two.tubes, strict=True):
        np.testing.assert_allclose(a.start, b.start)  # same tree, same course
        if a.level in ("trunk", "main"):
            assert b.radius == a.radius
        else:
            assert b.radius == min(2 * a.radius, main)


def test_segmental_and_smaller_arteries_run_inside_the_lungs():
    # Checked on the drawn image, not on the geometry the tree was built from: a branch's end
    # and midpoint must fall on a voxel the background drew as lung.
    shape = (100, 128, 128)
    inside, total = 0, 0
    for seed in range(6):
        params = sample_phantom("", np.random.default_rng(seed))
        empty = dataclasses.replace(params, tubes=[], emboli=[], mixing=[], noise_sd=0.0)
        background, _ = render_phantom(shape, empty, np.random.default_rng(seed))
        grid = _Grid(shape)
        for tube in params.tubes:
            if tube.level not in ("segmental", "subsegmental", "peripheral"):
                continue
            for point in (tube.end, (tube.start + tube.end) / 2):
                k, i, j = (
                    int(np.clip(np.searchsorted(c, v), 0, len(c) - 1))
                    for c, v in ((grid.z, point[2]), (grid.y, point[1]), (grid.x, point[0]))
                )
                inside += background[k, i, j] < -600
                total += 1
    assert total > 500
    assert inside / total > 0.97


def test_with_and_without_emboli_differ_by_the_clots_alone():
    params = sample_phantom("central", np.random.default_rng(2))
    with_emboli, without = render_with_and_without_emboli(SHAPE, params, np.random.default_rng(9))
    alone, slices = render_phantom(SHAPE, params, np.random.default_rng(9))
    np.testing.assert_array_equal(with_emboli, alone)
    assert len(slices) and set(np.flatnonzero((with_emboli != without).any(axis=(1, 2)))) == set(
        slices
    )
