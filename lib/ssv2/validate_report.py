"""SSv2 validation report: the PNG plots and the markdown page built from ``compute_metrics`` output."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from lib.quarantine import REASONS
from lib.report import bar_chart, fmt_num, fmt_pct, md_cell, new_figure, no_data, plots_md, save_figure, shorten
from lib.ssv2.validate import (
    DECODE_REASONS,
    LABELLED_SPLITS,
    MAX_EXAMPLES,
    NOT_CONFIGURED,
    SPLITS,
    ValidateSSv2Config,
    evaluate_thresholds,
    fraction,
)
from lib.thresholds import thresholds_md

PLOT_FILES = ("class_balance.png", "durations.png", "resolutions.png", "quarantine.png")



def write_plots(manifest: pd.DataFrame, metrics: dict, out_dir: str | Path) -> list[Path]:
    """Write class_balance, durations, resolutions and quarantine PNGs into ``out_dir``; return their paths."""
    out_dir = Path(out_dir)
    makers = (_plot_class_balance, _plot_durations, _plot_resolutions, _plot_quarantine)
    paths = []
    for name, make in zip(PLOT_FILES, makers, strict=False):
        fig = make(manifest, metrics)
        paths.append(save_figure(fig, out_dir / name))
    return paths








def _plot_class_balance(manifest: pd.DataFrame, metrics: dict) -> Figure:
    rows = sorted(metrics["classes"]["per_class"],
                  key=lambda r: (-(r["real_videos"] or 0), r["class_index"], r["template"]))
    fig = new_figure(13, max(3.0, 0.3 * len(rows) + 1.6))
    ax = fig.add_subplot()
    title = "Videos per class (train + validation): ours vs expected from the real SSv2 frequency"
    if not rows:
        no_data(ax, "no labelled videos")
        ax.set_title(title)
        return fig
    y = list(range(len(rows)))
    ours = [r["videos"] for r in rows]
    expected = [r["expected"] or 0.0 for r in rows]
    h = 0.4
    ax.barh([v - h / 2 for v in y], ours, height=h, label="ours", color="tab:blue")
    ax.barh([v + h / 2 for v in y], expected, height=h, label="expected (real share x our labelled total)",
            color="tab:orange")
    for v, n in zip(y, ours, strict=False):
        ax.text(n, v - h / 2, f" {n}", va="center", fontsize=7)
    ax.set_yticks(y, [shorten(r["template"]) for r in rows], fontsize=8)
    ax.set_ylim(len(rows) - 0.5, -0.5)  # most frequent real class on top, no empty margin
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.tick_params(axis="x", labeltop=len(rows) > 20)  # long charts: counts readable at both ends
    ax.set_xlabel("videos")
    ax.margins(x=0.08)
    ax.set_title(title, fontsize=11)
    fig.legend(loc="outside upper center", ncols=2, fontsize=8, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    return fig




def _plot_durations(manifest: pd.DataFrame, metrics: dict) -> Figure:
    fig = new_figure(8, 4.5)
    ax = fig.add_subplot()
    ax.set_title("Source duration (probe_duration_s) by split")
    data = {s: g["probe_duration_s"].dropna().astype(float).to_numpy()
            for s, g in manifest.groupby("split", sort=False)} if len(manifest) else {}
    data = {s: data[s] for s in [*SPLITS, *sorted(set(data) - set(SPLITS))] if s in data and len(data[s])}
    if not data:
        no_data(ax, "no videos")
        return fig
    lo = min(float(v.min()) for v in data.values())
    hi = max(float(v.max()) for v in data.values())
    bins = 20 if hi > lo else 1
    ax.hist(list(data.values()), bins=bins, range=(lo, hi) if hi > lo else (lo - 0.5, hi + 0.5),
            label=[f"{s} (n={len(v)})" for s, v in data.items()])
    ax.set_xlabel("seconds")
    ax.set_ylabel("videos")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    return fig




def _plot_resolutions(manifest: pd.DataFrame, metrics: dict) -> Figure:
    return bar_chart("Source resolution (width x height)", "videos", metrics["resolutions"], "no videos")


def _plot_quarantine(manifest: pd.DataFrame, metrics: dict) -> Figure:
    by_reason = dict(sorted(metrics["quarantine"]["by_reason"].items(), key=lambda kv: (-kv[1], kv[0])))
    return bar_chart(f"Quarantined items by reason ({metrics['quarantine']['count']} in all)", "items",
                      by_reason, "none: nothing was quarantined")


# ---------------------------------------------------------------------------------------------
# report


def render_report(metrics: dict, failures: list[str], plots: list[Path], cfg: ValidateSSv2Config) -> str:
    """Return the markdown report: status, what was measured on what, tables, plots and thresholds."""
    src = metrics["source"]
    tot = metrics["totals"]
    lines = ["# SSv2 validation", ""]
    if failures:
        lines += [f"**Status: FAILED** — {len(failures)} threshold check(s) failed:", ""]
        lines += [f"- {md_cell(m)}" for m in failures]
    else:
        lines += ["**Status: passed** — every threshold holds."]
    lines += ["", "## What was measured", "",
              f"The output of `ingest_ssv2` in `{md_cell(src.get('ingest_out', '?'))}`, ingested from dataset root "
              f"`{md_cell(src.get('root', '?'))}` (mode `{md_cell(src.get('mode', '?'))}`): "
              f"**{tot['videos']} good videos** and **{tot['quarantined']} quarantined items** "
              f"({tot['items']} items in all; fractions below are over items).",
              "Per-class counts cover the labelled splits (train + validation); the expected count of a class "
              "is its share of the real SSv2 videos among the classes present here, times our labelled total "
              "of those classes. Durations, frame rates and resolutions are those of the source videos "
              "(`probe_*` columns).", ""]

    lines += ["## Splits", "", "| split | videos | share | labelled classes | mean duration (s) |",
              "| --- | ---: | ---: | ---: | ---: |"]
    per_split_classes = {s: sum(1 for r in metrics["classes"]["per_class"] if r.get(s)) for s in LABELLED_SPLITS}
    for split, n in metrics["splits"].items():
        dur = metrics["durations"]["by_split"].get(split, {}).get("mean_s")
        lines.append(f"| {split} | {n} | {fmt_pct(fraction(n, tot['videos']))} | "
                     f"{per_split_classes.get(split, '–')} | {fmt_num(dur)} |")
    lines.append("")

    cls = metrics["classes"]
    lines += ["## Classes", "",
              f"{cls['seen']} of the {cls['reference_classes']} SSv2 classes are present in the labelled splits "
              f"({cls['labelled_videos']} videos). Largest absolute deviation from the real frequency: "
              f"{fmt_num(cls['max_abs_deviation'])} videos (`{md_cell(cls['max_abs_deviation_class'] or '–')}`); "
              f"smallest class: {cls['min_videos'] if cls['min_videos'] is not None else '–'} videos "
              f"(`{md_cell(cls['min_videos_class'] or '–')}`).", ""]
    if cls["not_in_reference"]:
        lines += [f"Not in the real SSv2 class list (no expected count): "
                  f"{', '.join(f'`{md_cell(t)}`' for t in cls['not_in_reference'])}.", ""]
    if cls["per_class"]:
        lines += ["| index | class | train | validation | ours | real SSv2 videos | real share | expected "
                  "| deviation |",
                  "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in cls["per_class"]:
            lines.append(f"| {r['class_index']} | {md_cell(r['template'])} | {r['train']} | {r['validation']} | "
                         f"{r['videos']} | {r['real_videos'] if r['real_videos'] is not None else '–'} | "
                         f"{fmt_pct(r['real_share'])} | {fmt_num(r['expected'])} | "
                         f"{fmt_num(r['deviation'], signed=True)} |")
        lines.append("")

    q = metrics["quarantine"]
    dec = metrics["decode_failures"]
    lines += ["## Quarantine", "",
              f"{q['count']} items quarantined ({fmt_pct(q['fraction'])} of {tot['items']}); "
              f"decode failures ({', '.join(DECODE_REASONS)}): {dec['count']}; "
              f"missing ids: {metrics['missing']['missing_video']} label entries without a video, "
              f"{metrics['missing']['missing_label']} videos without a label; "
              f"duplicate ids: {metrics['duplicates']['ids']}.", ""]
    if q["by_reason"]:
        lines += ["| reason | meaning | items |", "| --- | --- | ---: |"]
        for reason, n in q["by_reason"].items():
            lines.append(f"| `{md_cell(reason)}` | {md_cell(REASONS.get(reason, 'unknown reason code'))} | {n} |")
        lines += ["", f"Examples (up to {MAX_EXAMPLES}, spread over reasons):", "",
                  "| id | split | reason | path | detail |", "| --- | --- | --- | --- | --- |"]
        for ex in q["examples"]:
            lines.append(f"| {md_cell(ex['id'])} | {md_cell(ex['split'])} | `{md_cell(ex['reason'])}` | "
                         f"{md_cell(ex['path'])} | {md_cell(ex['detail'])} |")
    else:
        lines.append("Nothing was quarantined.")
    lines.append("")

    lab = metrics["labels"]
    lines += ["## Label consistency", "",
              f"{lab['checked']} labelled rows checked: the label must equal the bracketed template filled with "
              f"the placeholders (case and whitespace ignored), the bracketed template must normalise to the "
              f"template, and the class index must be the template's index in the real labels.json. "
              f"{lab['mismatches']} rows disagree (label text {lab['label_text']}, bracketed template "
              f"{lab['template_raw']}, class index {lab['class_index']}).", ""]
    if lab["examples"]:
        lines += ["| id | problem |", "| --- | --- |"]
        lines += [f"| {md_cell(ex['id'])} | {md_cell(ex['detail'])} |" for ex in lab["examples"]]
        lines.append("")

    dur = metrics["durations"]
    lines += ["## Videos", "",
              f"Duration (s): min {fmt_num(dur['min_s'])}, mean {fmt_num(dur['mean_s'])}, max {fmt_num(dur['max_s'])}. "
              f"Source fps: {', '.join(fmt_num(v) for v in metrics['fps']['source']) or '–'}; "
              f"training copy fps: {', '.join(fmt_num(v) for v in metrics['fps']['copy']) or '–'}.", ""]
    if metrics["resolutions"]:
        lines += ["| source resolution | videos |", "| --- | ---: |"]
        lines += [f"| {wh} | {n} |" for wh, n in metrics["resolutions"].items()]
        lines.append("")

    b = cfg.exposure_bands
    lines += ["## Exposure", "",
              "Views per train video = steps × batch_size × grad_accum / train videos. Bands: "
              f"conservative < {fmt_num(b.conservative)}; moderate {fmt_num(b.conservative)}–{fmt_num(b.moderate)}; "
              f"high: above {fmt_num(b.moderate)} up to {fmt_num(b.risky)} (between moderate and risky); "
              f"risky > {fmt_num(b.risky)}.", ""]
    if metrics["exposure"]:
        lines += ["| trainer | steps | batch_size | grad_accum | samples | train videos | views per video | band |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        for name, row in metrics["exposure"].items():
            if not row["configured"]:
                lines.append(f"| {md_cell(name)} | – | – | – | – | – | – | {NOT_CONFIGURED} |")
                continue
            lines.append(f"| {md_cell(name)} | {row['steps']} | {row['batch_size']} | {row['grad_accum']} | "
                         f"{row['samples']} | {row['train_videos']} | {fmt_num(row['views_per_video'])} | "
                         f"{row['band']} |")
    else:
        lines.append("No trainers listed in `validate_ssv2.exposure_trainers`.")
    lines.append("")

    lines += plots_md(plots, cfg.report_dir)
    lines += thresholds_md(evaluate_thresholds(metrics, cfg))
    return "\n".join(lines)
