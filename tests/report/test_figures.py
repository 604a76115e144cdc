"""The report's figures with as many models as the demo has (eleven): every model keeps its
own colour, in every figure, and the legend stays off the data."""

from __future__ import annotations

import matplotlib.colors as mcolors
import numpy as np
import pandas as pd
import pytest

from radfusion.evaluation.evaluate import ATTRIBUTES
from radfusion.report import figures

MODELS = ["image", "ehr", "slicenet"] + [
    f"fusion_{image}{strategy}"
    for image in ("", "slicenet_")
    for strategy in ("mean", "weighted", "stacked", "max")
]


@pytest.fixture()
def drawn(monkeypatch):
    """The figures' matplotlib objects, caught before they become PNG bytes."""
    caught = []
    monkeypatch.setattr(figures, "_png", lambda fig: caught.append(fig) or b"")
    return caught


def _metrics(rng):
    rows = [
        (m, "all", attribute, group, "auroc", v, v - 0.1, min(v + 0.1, 1.0))
        for m in MODELS
        for attribute, (_, groups) in ATTRIBUTES.items()
        for group in groups
        for v in [rng.uniform(0.6, 0.9)]
    ]
    columns = ["model", "subset", "attribute", "group", "metric", "value", "ci_low", "ci_high"]
    return pd.DataFrame(rows, columns=columns)


def _fairness(rng):
    rows = [
        (m, subset, attribute, "tpr_diff_signed", v, v - 0.2, v + 0.2)
        for m in MODELS
        for subset in ("all", "non_subsegmental")
        for attribute in ("gender", "race", "age")
        for v in [rng.uniform(-0.2, 0.2)]
    ]
    columns = ["model", "subset", "attribute", "metric", "value", "ci_low", "ci_high"]
    return pd.DataFrame(rows, columns=columns)


def _legend_outside(ax, legend):
    fig = ax.figure
    fig.canvas.draw()
    box = legend.get_window_extent().transformed(ax.transAxes.inverted())
    return box.x0 >= 1.0


def test_the_forest_gives_each_of_eleven_models_its_own_colour(drawn):
    figures.auroc_forest(_metrics(np.random.default_rng(0)), MODELS)
    (fig,) = drawn
    ax = fig.axes[0]
    colours = {
        label: mcolors.to_hex(container.lines[0].get_color())
        for container, label in zip(ax.containers, MODELS, strict=True)
    }
    assert len(set(colours.values())) == len(MODELS), colours
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == MODELS
    assert _legend_outside(ax, legend)


def test_the_tpr_gaps_give_each_model_the_colour_it_has_in_the_forest(drawn):
    rng = np.random.default_rng(1)
    figures.auroc_forest(_metrics(rng), MODELS)
    figures.tpr_gaps(_fairness(rng), MODELS)
    forest, gaps = drawn
    in_forest = [mcolors.to_hex(c.lines[0].get_color()) for c in forest.axes[0].containers]
    for ax in gaps.axes:
        bars = [c for c in ax.containers if hasattr(c, "patches")]
        in_gaps = [mcolors.to_hex(c.patches[0].get_facecolor()) for c in bars]
        assert in_gaps == in_forest
    assert _legend_outside(gaps.axes[1], gaps.axes[1].get_legend())
