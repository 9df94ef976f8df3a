"""The report's figures (matplotlib, Agg): recipe-vs-baseline bars and learning curves.

Sized to be read at 100% zoom in a browser: 10-13 inch wide figures at 110 dpi, 11-13 pt text,
every axis labelled, one legend per figure, written atomically.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from vegalm.io import atomic_path

Series = tuple[str, Sequence[float], Sequence[float]]  # (label, x, y)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 10})
    return plt


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def bar_chart(groups: Sequence[str], bars: dict[str, Sequence[float | None]], path: Path, *, title: str,
              ylabel: str = "dev score (%)") -> Path:
    """Grouped bars: one group per task (x), one bar per arm/run (``bars[label][i]`` for group i)."""
    plt = _plt()
    n = max(len(bars), 1)
    width = 0.8 / n
    fig, ax = plt.subplots(figsize=(max(7.0, 1.1 * len(groups) * max(1, n / 2)) + 2, 4.6))
    colors = plt.get_cmap("tab10").colors
    top = 0.0
    for j, (label, values) in enumerate(bars.items()):
        xs = [i + (j - (n - 1) / 2) * width for i in range(len(groups))]
        ys = [v if v is not None else 0.0 for v in values]
        rects = ax.bar(xs, ys, width=width * 0.95, label=label, color=colors[j % len(colors)])
        for rect, v in zip(rects, values):
            if v is not None:
                ax.annotate(f"{v:.1f}", (rect.get_x() + rect.get_width() / 2, v), ha="center", va="bottom",
                            fontsize=8 if n > 2 else 9, xytext=(0, 2), textcoords="offset points")
                top = max(top, v)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, max(10.0, top * 1.15))
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, path)


def curves(panels: dict[str, list[Series]], path: Path, *, title: str, xlabel: str, ylabel: str | dict[str, str],
           cols: int = 3) -> Path | None:
    """A grid of line plots, one panel per key (a task, a pretraining stage); None if no data.
    ``ylabel`` is one label for every panel or one per panel."""
    from matplotlib.ticker import MaxNLocator

    panels = {k: [s for s in v if len(s[1])] for k, v in panels.items()}
    panels = {k: v for k, v in panels.items() if v}
    if not panels:
        return None
    plt = _plt()
    cols = min(cols, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.3 * cols + 0.6, 3.3 * rows + 0.7), squeeze=False)
    colors = plt.get_cmap("tab10").colors
    labels = sorted({s[0] for v in panels.values() for s in v})
    color_of = {lab: colors[i % len(colors)] for i, lab in enumerate(labels)}
    for ax, (name, series) in zip(axes.flat, panels.items()):
        for label, xs, ys in series:
            style = "--" if "baseline" in label else "-"
            ax.plot(xs, ys, style, marker="o" if len(xs) <= 12 else None, ms=4, lw=1.6,
                    color=color_of[label], label=label)
        ax.set_title(name)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel if isinstance(ylabel, str) else ylabel.get(name, ""))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        xs_all = [x for _, xs, _ in series for x in xs]
        if min(xs_all) == max(xs_all):  # one evaluation: a readable axis around it
            ax.set_xlim(min(xs_all) - 1, max(xs_all) + 1)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles = [plt.Line2D([], [], color=color_of[lab], ls="--" if "baseline" in lab else "-", marker="o", ms=4, label=lab)
               for lab in labels]
    fig.suptitle(title, fontsize=13)
    fig.legend(handles=handles, loc="lower center", ncol=min(4, len(labels)), frameon=False)
    fig.tight_layout(rect=(0, 0.1 / rows, 1, 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
