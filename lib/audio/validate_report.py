"""Audio validation report: the PNG plots and the markdown page built from ``compute_metrics`` output."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from lib.audio.validate import MAX_EXAMPLES, ValidateAudioConfig, evaluate_thresholds, fraction
from lib.quarantine import REASONS
from lib.report import bar_chart, fmt_num, fmt_pct, md_cell, new_figure, no_data, plots_md, save_figure
from lib.thresholds import thresholds_md

PLOT_FILES = ("durations.png", "quarantine.png")


def write_plots(files: pd.DataFrame, metrics: dict, out_dir: str | Path) -> list[Path]:
    """Write the duration histogram per split and the quarantine reasons bar into ``out_dir``; return their paths."""
    out_dir = Path(out_dir)
    figures = (_plot_durations(files, metrics), _plot_quarantine(metrics))
    return [save_figure(fig, out_dir / name) for name, fig in zip(PLOT_FILES, figures, strict=True)]


def _plot_durations(files: pd.DataFrame, metrics: dict) -> Figure:
    fig = new_figure(8, 4.5)
    ax = fig.add_subplot()
    ax.set_title("Duration of the good files by split")
    data = {s: files.loc[files["split"] == s, "seconds"].astype(float).to_numpy() for s in metrics["splits"]}
    data = {s: v for s, v in data.items() if len(v)}
    if not data:
        no_data(ax, "no good files")
        return fig
    lo = min(float(v.min()) for v in data.values())
    hi = max(float(v.max()) for v in data.values())
    ax.hist(list(data.values()), bins=20 if hi > lo else 1, range=(lo, hi) if hi > lo else (lo - 0.5, hi + 0.5),
            label=[f"{s} (n={len(v)})" for s, v in data.items()])
    ax.set_xlabel("seconds")
    ax.set_ylabel("files")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    return fig


def _plot_quarantine(metrics: dict) -> Figure:
    q = metrics["quarantine"]
    by_reason = dict(sorted(q["by_reason"].items(), key=lambda kv: (-kv[1], kv[0])))
    return bar_chart(f"Quarantined files by reason ({q['count']} in all)", "files", by_reason,
                     "none: nothing was quarantined")


def render_report(metrics: dict, failures: list[str], plots: list[Path], cfg: ValidateAudioConfig) -> str:
    """Return the markdown report: status, what was measured on what, tables, plots and thresholds."""
    src, tot = metrics["source"], metrics["totals"]
    lines = ["# Audio validation", ""]
    if failures:
        lines += [f"**Status: FAILED** — {len(failures)} threshold check(s) failed:", ""]
        lines += [f"- {md_cell(m)}" for m in failures]
    else:
        lines += ["**Status: passed** — every threshold holds."]
    fractions = ", ".join(f"{md_cell(k)} {v:g}" for k, v in src["split_fractions"].items())
    split_from = (f"the split file `{md_cell(src['split_file'])}`" if src["split_file"] else
                  f"a stable hash of each id ({fractions}; no split file)")
    max_s = "no limit" if src["max_seconds"] is None else f"{fmt_num(src['max_seconds'])} s"
    lines += ["", "## What was measured", "",
              f"The audio folder `{md_cell(src['root'])}` (`audio.root`), scanned as `train_audio_vae` scans it: "
              f"every {'/'.join(src['extensions'])} file below the root, splits from {split_from}. A file is "
              f"quarantined when it cannot be read, is shorter than {fmt_num(src['min_seconds'])} s or longer than "
              f"{max_s}, its peak is below {src['silence_peak']:g} (silent), or its id is duplicated or not in the "
              f"split file. **{tot['files']} good files** ({fmt_num(tot['seconds'])} s) and "
              f"**{tot['quarantined']} quarantined** ({tot['items']} items in all; the quarantine fraction is "
              f"over items).", ""]

    lines += ["## Splits", "", "| split | files | share | seconds | min (s) | mean (s) | max (s) |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for split, d in metrics["splits"].items():
        lines.append(f"| {md_cell(split)} | {d['count']} | {fmt_pct(fraction(d['count'], tot['files']))} | "
                     f"{fmt_num(d['total_s'])} | {fmt_num(d['min_s'])} | {fmt_num(d['mean_s'])} | "
                     f"{fmt_num(d['max_s'])} |")
    dur = metrics["durations"]
    lines += ["", f"All good files: min {fmt_num(dur['min_s'])} s, mean {fmt_num(dur['mean_s'])} s, "
              f"max {fmt_num(dur['max_s'])} s.", ""]

    lines += ["## Format", "", "| sample rate (Hz) | files |", "| ---: | ---: |"]
    lines += [f"| {rate} | {n} |" for rate, n in metrics["sample_rates"].items()] or ["| – | 0 |"]
    lines += ["", "| channels | files |", "| ---: | ---: |"]
    lines += [f"| {ch} | {n} |" for ch, n in metrics["channels"].items()] or ["| – | 0 |"]
    lines += ["", "Every file is averaged to mono and resampled to `audio.sample_rate` on load.", ""]

    q = metrics["quarantine"]
    lines += ["## Quarantine", "", f"{q['count']} files quarantined ({fmt_pct(q['fraction'])} of {tot['items']})"
              + (f"; by split: {', '.join(f'{md_cell(s)} {n}' for s, n in q['by_split'].items())}." if q["by_split"]
                 else "."), ""]
    if q["by_reason"]:
        lines += ["| reason | meaning | files |", "| --- | --- | ---: |"]
        lines += [f"| `{md_cell(r)}` | {md_cell(REASONS.get(r, 'unknown reason code'))} | {n} |"
                  for r, n in q["by_reason"].items()]
        lines += ["", f"Examples (up to {MAX_EXAMPLES}, spread over reasons):", "",
                  "| id | split | reason | path | detail |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {md_cell(ex['id'])} | {md_cell(ex['split'])} | `{md_cell(ex['reason'])}` | {md_cell(ex['path'])} "
                  f"| {md_cell(ex['detail'])} |" for ex in q["examples"]]
    else:
        lines.append("Nothing was quarantined.")
    lines.append("")

    lines += plots_md(plots, cfg.report_dir)
    lines += thresholds_md(evaluate_thresholds(metrics, cfg))
    return "\n".join(lines)
