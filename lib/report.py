"""Report building blocks shared by every validation/evaluation stage: figures saved atomically, bar
charts, and markdown-safe number formatting."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from lib.io import atomic_path


def new_figure(width: float, height: float) -> Figure:
    """Return a headless (Agg) matplotlib Figure of ``width`` x ``height`` inches with constrained layout."""
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig

def save_figure(fig: Figure, path: Path) -> Path:
    """Save ``fig`` as PNG at ``path`` atomically; return ``path``."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path

def no_data(ax, text: str) -> None:
    """Blank ``ax`` and write ``text`` in its middle (a plot that has nothing to show says so)."""
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=14, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])

def shorten(text: str, width: int = 100) -> str:
    """Return ``text`` cut to ``width`` characters with an ellipsis."""
    return text if len(text) <= width else text[: width - 1] + "…"


def bar_chart(title: str, xlabel: str, counts: dict[str, int], empty: str, height_per_bar: float = 0.4) -> Figure:
    """Return a horizontal bar chart of ``counts`` (first key on top); shows ``empty`` when there are none."""
    fig = new_figure(8, max(3.0, height_per_bar * len(counts) + 1.5))
    ax = fig.add_subplot()
    ax.set_title(title)
    if not counts:
        no_data(ax, empty)
        return fig
    labels = list(counts)
    values = [counts[k] for k in labels]
    bars = ax.barh(labels, values, color="tab:blue")
    ax.bar_label(bars, padding=2, fontsize=9)
    ax.invert_yaxis()
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.margins(x=0.1)
    ax.grid(axis="x", alpha=0.3)
    return fig

def plots_md(plots: list[Path | str], report_dir: Path | str) -> list[str]:
    """Return a report's "Plots" section: each figure linked relative to ``report_dir``; nothing without plots."""
    if not plots:
        return []
    lines = ["## Plots", ""]
    for p in plots:
        rel = os.path.relpath(Path(p).resolve(), Path(report_dir).resolve()).replace(os.sep, "/")
        lines += [f"![{Path(p).stem}]({rel})", ""]
    return lines


def md_cell(value: Any) -> str:
    """Return ``value`` as text safe inside a markdown table cell."""
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")

def fmt_num(value: float | None, signed: bool = False) -> str:
    """Return ``value`` with 2 decimals (trailing .00 dropped unless signed); an en dash for None/NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    text = f"{value:+.2f}" if signed else f"{value:.2f}"
    return text[:-3] if text.endswith(".00") and not signed else text

def fmt_pct(value: float | None) -> str:
    """Return a fraction as a percentage with one decimal; an en dash for None."""
    return "–" if value is None else f"{100 * value:.1f}%"
