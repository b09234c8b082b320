"""PNG plots of the learning benchmark (matplotlib, Agg backend): bars per method, the learn-vs-forget frontier, the
sequential retention matrices as heatmaps, and the training time split."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

COLORS = {"base": "#888888", "sft": "#d95f02", "sdft": "#1b9e77"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bars(report: dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    keys = ("direct", "indirect", "direct_mc", "indirect_mc", "general")
    methods = list(report["methods"])
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(methods)
    for i, m in enumerate(methods):
        row = report["methods"][m]
        values = [100 * (row[k] or 0) for k in keys]
        errs = [100 * (row.get("std", {}).get(k) or 0) for k in keys]
        xs = [j + (i - (len(methods) - 1) / 2) * width for j in range(len(keys))]
        ax.bar(xs, values, width, yerr=errs, label=m, color=COLORS.get(m))
    ax.set_xticks(range(len(keys)), ["direct (gen)", "indirect (gen)", "direct (MC)", "indirect (MC)", "general"])
    ax.set_ylabel("% correct")
    ax.set_ylim(0, 100)
    ax.set_title(f"{report['model']}: accuracy on report facts and general suite (headline points)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _spread(values: list[float]) -> float:
    return statistics.pstdev(values) if len(values) > 1 else 0.0


def frontier(report: dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    for m, points in report["frontier"].items():
        if not points:
            continue
        xs = [100 * p["general_drop"] for p in points]
        ys = [100 * (p["direct_mc"] + p["indirect_mc"]) / 2 for p in points]
        ax.scatter(xs, ys, color=COLORS.get(m), label=m, s=40)
        xerr = [100 * (p["std"]["general_drop"] or 0) for p in points]
        yerr = [100 * _spread([(d + i) / 2 for d, i in zip(p["per_seed"]["direct_mc"], p["per_seed"]["indirect_mc"],
                                                           strict=True)]) for p in points]  # fmt: skip
        if any(xerr) or any(yerr):  # one std over seeds
            ax.errorbar(xs, ys, xerr=xerr, yerr=yerr, fmt="none", ecolor=COLORS.get(m), elinewidth=0.8, capsize=2)
        for p, x, y in zip(points, xs, ys, strict=True):
            ax.annotate(f"{p['lr']:g}x{p['steps']}", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    base = report["methods"]["base"]
    ax.axhline(100 * (base["direct_mc"] + base["indirect_mc"]) / 2, color=COLORS["base"], ls=":", label="base")
    ax.axvline(100 * report["max_drop"], color="k", ls="--", lw=0.8, label="drop limit")
    ax.set_xlabel("general-suite drop (points; lower is better)")
    ax.set_ylabel("fact accuracy, mean of direct and indirect MC (%)")
    ax.set_title("learn vs forget (label: lr x steps; bars: one std over seeds)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def sequential(report: dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    seq = report["sequential_detail"]
    methods = [m for m in ("sft", "sdft") if m in seq["mc"]]
    fig, axes = plt.subplots(1, max(len(methods), 1), figsize=(4.5 * max(len(methods), 1), 3.8), squeeze=False)
    for ax, m in zip(axes[0], methods, strict=False):
        mat = [[float("nan") if v is None else 100 * v for v in row] for row in seq["mc"][m]]
        ax.imshow(mat, vmin=0, vmax=100, cmap="viridis")
        for k, row in enumerate(mat):
            for j, v in enumerate(row):
                if v == v:
                    ax.text(j, k, f"{v:.0f}", ha="center", va="center", color="w" if v < 60 else "k")
        ax.set_xticks(range(len(seq["skills"])), seq["skills"])
        ax.set_yticks(range(len(mat)), [f"round {k + 1}" for k in range(len(mat))])
        ax.set_title(f"{m}: MC accuracy per skill")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def cost(report: dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = [m for m in ("sft", "sdft") if m in report["methods"] and "cost" in report["methods"][m]]
    bottom = [0.0] * len(names)
    for part, color in (("generation_s", "#7570b3"), ("teacher_s", "#e7298a"), ("student_s", "#66a61e")):
        values = [report["methods"][m]["cost"][part] or 0.0 for m in names]
        ax.bar(names, values, bottom=bottom, label=part.removesuffix("_s"), color=color)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_ylabel("training seconds (headline point)")
    ax.set_title(f"time split; SDFT/SFT ratio per step (fastest runs): {report['cost_ratio']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_all(report: dict[str, Any], out_dir: Path) -> list[Path]:
    return [
        bars(report, out_dir / "bars.png"),
        frontier(report, out_dir / "frontier.png"),
        sequential(report, out_dir / "sequential.png"),
        cost(report, out_dir / "cost.png"),
    ]
