"""The report's figures, as PNG bytes (embedded in the HTML page and saved beside it)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import roc_curve

from radfusion.evaluation.evaluate import ATTRIBUTES
from radfusion.evaluation.intersections import GAP_CELL

__all__ = [
    "auroc_forest",
    "calibration",
    "fair_fusion_sweep",
    "intersection_heatmap",
    "mitigation_tradeoff",
    "roc_by_group",
    "roc_overall",
    "tpr_gaps",
]

SUBSET_NAMES = {"all": "whole test set", "non_subsegmental": "non-subsegmental"}


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _styles(models) -> dict[str, dict]:
    """One colour per model (tab10, or tab20 beyond ten models), fusions dashed: a model looks
    the same in every figure."""
    cmap = plt.get_cmap("tab10" if len(models) <= 10 else "tab20")
    return {
        m: {"color": cmap(i % cmap.N), "ls": "--" if m.startswith("fusion") else "-"}
        for i, m in enumerate(models)
    }


def _roc(ax, y, probs, models, auroc_of, title):
    styles = _styles(models)
    for model in models:
        score = probs[model].reindex(y.index)
        keep = score.notna()
        if y[keep].nunique() < 2:
            continue
        fpr, tpr, _ = roc_curve(y[keep], score[keep])
        ax.plot(fpr, tpr, lw=1.6, label=f"{model} ({auroc_of(model):.3f})", **styles[model])
    ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="1 - specificity", ylabel="sensitivity", title=title)
    if ax.get_lines()[:-1]:  # at least one model's curve (the last line is the diagonal)
        ax.legend(loc="lower right", fontsize=8, title="AUROC", title_fontsize=8)


def _auroc_lookup(metrics, subset, attribute, group):
    part = metrics[
        (metrics["subset"] == subset)
        & (metrics["attribute"] == attribute)
        & (metrics["group"] == group)
        & (metrics["metric"] == "auroc")
    ]
    values = part.set_index("model")["value"]
    return lambda model: float(values.get(model, np.nan))


def roc_overall(outcomes, probs, metrics, models) -> bytes:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    test = outcomes[outcomes["split"] == "test"]
    for ax, subset in zip(axes, ("all", "non_subsegmental"), strict=True):
        part = test if subset == "all" else test[test["non_subsegmental"]]
        _roc(
            ax,
            part["label"],
            probs,
            models,
            _auroc_lookup(metrics, subset, "overall", "all"),
            f"ROC, {SUBSET_NAMES[subset]} (n={len(part)})",
        )
    return _png(fig)


def roc_by_group(outcomes, probs, metrics, models) -> bytes:
    fig, axes = plt.subplots(3, 2, figsize=(10, 13))
    test = outcomes[outcomes["split"] == "test"]
    for row, attribute in enumerate(("gender", "race", "age")):
        column, groups = ATTRIBUTES[attribute]
        for col, group in enumerate(groups):
            part = test[test[column] == group]
            _roc(
                axes[row, col],
                part["label"],
                probs,
                models,
                _auroc_lookup(metrics, "all", attribute, group),
                f"{attribute}: {group} (n={len(part)})",
            )
    fig.tight_layout()
    return _png(fig)


def calibration(outcomes, probs, models, n_bins: int = 10) -> bytes:
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(6, 7), height_ratios=(3, 1), sharex=True)
    test = outcomes[outcomes["split"] == "test"]
    edges = np.linspace(0, 1, n_bins + 1)
    styles = _styles(models)
    for model in models:
        score = probs[model].reindex(test.index)
        keep = score.notna()
        s, y = score[keep].to_numpy(), test.loc[keep, "label"].to_numpy()
        bins = np.minimum((s * n_bins).astype(int), n_bins - 1)
        mean_s = [s[bins == b].mean() for b in range(n_bins) if (bins == b).any()]
        rate = [y[bins == b].mean() for b in range(n_bins) if (bins == b).any()]
        ax.plot(mean_s, rate, marker="o", lw=1.4, label=model, **styles[model])
        hist.hist(s, bins=edges, histtype="step", lw=1.4, color=styles[model]["color"])
    ax.plot([0, 1], [0, 1], color="0.7", ls="--", lw=0.8)
    ax.set(ylabel="observed PE rate", title="Calibration on the test set", xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=8)
    hist.set(xlabel="predicted probability", ylabel="studies")
    return _png(fig)


def tpr_gaps(fairness, models) -> bytes:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    attributes = ["gender", "race", "age"]
    labels = {"gender": "Female − Male", "race": "White − Others", "age": ">80 − ≤80"}
    width = 0.8 / max(len(models), 1)
    styles = _styles(models)
    for ax, subset in zip(axes, ("all", "non_subsegmental"), strict=True):
        part = fairness[(fairness["subset"] == subset) & (fairness["metric"] == "tpr_diff_signed")]
        for k, model in enumerate(models):
            rows = part[part["model"] == model].set_index("attribute").reindex(attributes)
            x = np.arange(len(attributes)) + (k - (len(models) - 1) / 2) * width
            v = rows["value"].to_numpy(float)
            err = np.vstack(
                [v - rows["ci_low"].to_numpy(float), rows["ci_high"].to_numpy(float) - v]
            )
            ax.bar(x, v, width, label=model, color=styles[model]["color"])
            yerr = np.maximum(np.nan_to_num(err), 0)  # a small group's CI may exclude v
            ax.errorbar(x, v, yerr=yerr, fmt="none", ecolor="0.2", capsize=3, lw=1)
        ax.axhline(0, color="0.3", lw=0.8)
        ax.set_xticks(np.arange(len(attributes)), [labels[a] for a in attributes])
        ax.set_title(f"TPR difference with 95% CI, {SUBSET_NAMES[subset]}")
    axes[0].set_ylabel("TPR(first group) − TPR(second group)")
    axes[1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _png(fig)


def auroc_forest(metrics, models) -> bytes:
    part = metrics[(metrics["subset"] == "all") & (metrics["metric"] == "auroc")]
    order = [("overall", "all")] + [
        (a, g) for a in ("gender", "race", "age") for g in ATTRIBUTES[a][1]
    ]
    fig, ax = plt.subplots(figsize=(8, 0.55 * len(order) + 1.2))
    offsets = np.linspace(-0.25, 0.25, len(models)) if len(models) > 1 else [0.0]
    styles = _styles(models)
    for off, model in zip(offsets, models, strict=True):
        rows = part[part["model"] == model].set_index(["attribute", "group"]).reindex(order)
        y = np.arange(len(order))[::-1] + off
        v = rows["value"].to_numpy(float)
        lo, hi = rows["ci_low"].to_numpy(float), rows["ci_high"].to_numpy(float)
        ax.errorbar(
            v,
            y,
            xerr=np.maximum(np.nan_to_num(np.vstack([v - lo, hi - v])), 0),
            fmt="o",
            ms=4,
            capsize=2,
            color=styles[model]["color"],
            label=model,
        )
    ax.set_yticks(np.arange(len(order))[::-1], [g if a != "overall" else "all" for a, g in order])
    ax.set(xlabel="AUROC (95% CI)", title="AUROC by group, whole test set")
    ax.axvline(0.5, color="0.8", lw=0.8)
    # Beside the axes: inside, it covered the error bars of the lower groups.
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _png(fig)


def intersection_heatmap(cells, models) -> bytes:
    """TPR and FPR per gender x race x age cell (rows) and model (columns); a cell too small
    to enter the gap is marked with its size in brackets."""
    body = cells[cells["cell"] != GAP_CELL]
    names = list(dict.fromkeys(body["cell"]))
    fig, axes = plt.subplots(
        1, 2, figsize=(3 + 1.1 * len(models) * 2, 0.45 * len(names) + 2), sharey=True
    )
    for ax, metric in zip(axes, ("tpr", "fpr"), strict=True):
        part = body[body["metric"] == metric]
        grid = part.pivot(index="cell", columns="model", values="value").reindex(
            index=names, columns=models
        )
        ax.imshow(grid.to_numpy(float), cmap="viridis", vmin=0, vmax=1, aspect="auto")
        size = "n_positive" if metric == "tpr" else "n_negative"
        for i, name in enumerate(names):
            for j, model in enumerate(models):
                row = part[(part["cell"] == name) & (part["model"] == model)]
                if row.empty:
                    continue
                row = row.iloc[0]
                text = "n/a" if not np.isfinite(row["value"]) else f"{row['value']:.2f}"
                if not row["in_gap"]:
                    text += f"\n({int(row[size])})"
                light = np.isfinite(row["value"]) and row["value"] > 0.6  # viridis turns yellow
                ax.text(
                    j, i, text, ha="center", va="center", fontsize=7, color="k" if light else "w"
                )
        ax.set_xticks(range(len(models)), models, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.set_title(f"{metric.upper()} per cell (in brackets: too few to enter the gap)")
    return _png(fig)


def _bar(row) -> list[list[float]]:
    """Error-bar lengths below and above a value from its CI. A percentile interval of a
    small group may leave out the point estimate itself; the bar then stops at the value."""
    low, high = row["value"] - row["ci_low"], row["ci_high"] - row["value"]
    return [
        [max(float(low), 0.0) if np.isfinite(low) else 0.0],
        [max(float(high), 0.0) if np.isfinite(high) else 0.0],
    ]


def mitigation_tradeoff(mitigation, models) -> bytes:
    """Per attribute: each model's test TPR gap against its accuracy, with the single
    threshold (circle) and each kind of group thresholds (square, triangle), 95% CIs."""
    attributes = list(dict.fromkeys(mitigation["attribute"]))
    methods = list(dict.fromkeys(mitigation["method"]))
    markers = dict(zip(methods, ["o", "s", "^", "D"], strict=False))
    styles = _styles(models)
    fig, axes = plt.subplots(1, len(attributes), figsize=(4.6 * len(attributes), 4), sharey=True)
    for ax, attribute in zip(np.atleast_1d(axes), attributes, strict=True):
        part = mitigation[mitigation["attribute"] == attribute]
        for model in models:
            for method in methods:
                rows = part[(part["model"] == model) & (part["method"] == method)]
                rows = rows.set_index("metric")
                if rows.empty or not np.isfinite(rows.loc["tpr_gap", "value"]):
                    continue
                gap, acc = rows.loc["tpr_gap"], rows.loc["accuracy"]
                ax.errorbar(
                    gap["value"],
                    acc["value"],
                    xerr=_bar(gap),
                    yerr=_bar(acc),
                    fmt=markers[method],
                    color=styles[model]["color"],
                    ecolor="0.75",
                    lw=0.8,
                    label=f"{model}, {method}" if attribute == attributes[0] else None,
                )
        ax.set_title(f"{attribute}: TPR gap against accuracy (test)")
        ax.set_xlabel("|TPR(first group) − TPR(second group)|")
    np.atleast_1d(axes)[0].set_ylabel("accuracy")
    fig.legend(fontsize=7, loc="upper center", ncol=3, bbox_to_anchor=(0.5, 0.0))
    return _png(fig)


def fair_fusion_sweep(sweeps: dict[str, dict]) -> bytes:
    """Each fairness-aware fusion's validation trade-off: AUROC against the TPR gap for every
    weight, the Pareto front drawn, and the weight chosen at each AUROC loss delta marked."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for k, (name, sweep) in enumerate(sweeps.items()):
        colour = plt.get_cmap("tab10")(k % 10)
        gaps = np.array([np.nan if g is None else g for g in sweep["val_tpr_gap"]], float)
        aurocs = np.array(sweep["val_auroc"], float)
        ax.scatter(gaps, aurocs, s=12, color=colour, alpha=0.45)
        order = np.argsort(gaps)
        front = order[aurocs[order] >= np.maximum.accumulate(aurocs[order])]  # no better point
        ax.plot(
            gaps[front], aurocs[front], color=colour, lw=1.2, label=f"{name} ({sweep['attribute']})"
        )
        weights = list(sweep["weights"])
        for delta, weight in sweep["choices"].items():
            i = weights.index(weight)
            ax.annotate(f"δ={float(delta):g}", (gaps[i], aurocs[i]), fontsize=7, color=colour)
    ax.set_xlabel("validation |TPR(first group) − TPR(second group)|")
    ax.set_ylabel("validation AUROC")
    ax.set_title("Fairness-aware fusion weights: the trade-off on validation")
    ax.legend(fontsize=8)
    return _png(fig)
