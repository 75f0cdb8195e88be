"""DeepCAD validation: measure renders and conversations, check thresholds, plot and report.

Works on what ``render_deepcad`` and ``build_cad_conversations`` wrote; every image is opened again
here (an independent check of the render stage's own blank test).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
from annotated_types import Ge, Interval
from PIL import Image

from lib import archive
from lib.config import Checked
from lib.io import atomic_path
from lib.quarantine import REASONS
from lib.report import bar_chart, fmt_num, md_cell, new_figure, no_data, save_figure

SPLITS = ("train", "validation", "test")
BACKGROUND = (255, 255, 255)
PLOT_FILES = ("counts.png", "png_sizes.png", "lengths.png", "foreground.png", "samples.png")


@dataclass(frozen=True)
class ValidateDeepCADConfig(Checked):
    """``validate_deepcad`` params: where to write, and the thresholds that fail the stage."""

    report_dir: str = "reports/validate_deepcad"
    min_models: Annotated[int, Ge(0)] = 10
    max_quarantine_fraction: Annotated[float, Interval(ge=0, le=1)] = 0.05
    max_unreadable_images: Annotated[int, Ge(0)] = 0
    # per image: non-background pixel fraction below this is "blank"
    min_foreground: Annotated[float, Interval(ge=0, le=1)] = 0.002
    max_blank_images: Annotated[int, Ge(0)] = 0
    max_dropped_fraction: Annotated[float, Interval(ge=0, le=1)] = 0.05  # conversations dropped for length / all
    sample_models: Annotated[int, Ge(0)] = 4  # models shown in samples.png


def image_stats(image_dir: Path, names: list[str]) -> pd.DataFrame:
    """Open every image; return one row per name: exists, readable, size, mode, bytes, foreground fraction."""
    rows = []
    for name in names:
        path = image_dir / name  # a file, or a member of a shard archive (lib.archive)
        found = archive.exists(path)
        row = {"image": name, "exists": found, "readable": False, "width": 0, "height": 0,
               "mode": "", "bytes": archive.size(path) if found else 0, "foreground": 0.0}
        if row["exists"]:
            try:
                with archive.open_binary(path) as fh, Image.open(fh) as im:
                    im.load()
                    row.update(readable=True, width=im.width, height=im.height, mode=im.mode)
                    rgb = np.asarray(im.convert("RGB"))
                row["foreground"] = float(np.any(rgb != np.array(BACKGROUND, np.uint8), axis=-1).mean())
            except (OSError, ValueError):
                pass
        rows.append(row)
    return pd.DataFrame(rows)


def compute_metrics(models: pd.DataFrame, views: list[str], images: pd.DataFrame, render_quarantine: list[dict],
                    conversations: dict[str, list[dict]], conv_summary: dict, cfg: ValidateDeepCADConfig) -> dict:
    """Return the nested metrics of the DeepCAD branch (see the report for definitions)."""
    n_models = len(models)
    items = n_models + len(render_quarantine)
    by_reason: dict[str, int] = {}
    for q in render_quarantine:
        by_reason[q["reason"]] = by_reason.get(q["reason"], 0) + 1
    readable = images[images["readable"]]
    sizes = sorted({f"{w}x{h}" for w, h in zip(readable["width"], readable["height"], strict=False)})
    modes = sorted(set(readable["mode"]))
    view_of = {name: v for v in views for name in models[f"image_{v}"]}
    images = images.assign(view=images["image"].map(view_of))
    blank = images[images["readable"] & (images["foreground"] < cfg.min_foreground)]
    per_view = {v: _view_stats(g[g["readable"]]["foreground"], cfg.min_foreground) for v, g in images.groupby("view")}
    n_conv = sum(len(v) for v in conversations.values())
    dropped = int(conv_summary.get("dropped", 0))
    responses = [len(c["conversations"][1]["value"]) for v in conversations.values() for c in v]
    prompts = [len(c["conversations"][0]["value"]) for v in conversations.values() for c in v]
    w = int(readable["width"].max()) if len(readable) else 0
    h = int(readable["height"].max()) if len(readable) else 0
    return {
        "models": n_models,
        "images": int(len(images)),
        "conversations": n_conv,
        "splits": {s: {"models": int((models["split"] == s).sum()),
                       "images": int((models["split"] == s).sum()) * len(views),
                       "conversations": len(conversations.get(s, []))} for s in SPLITS},
        "quarantine": {"count": len(render_quarantine), "fraction": len(render_quarantine) / items if items else 0.0,
                       "by_reason": dict(sorted(by_reason.items()))},
        "images_check": {"missing": int((~images["exists"]).sum()),
                         "unreadable": int((images["exists"] & ~images["readable"]).sum()),
                         "resolutions": sizes, "modes": modes,
                         "uniform": len(sizes) <= 1 and len(modes) <= 1,
                         "blank": int(len(blank)), "blank_examples": blank["image"].head(10).tolist()},
        "png_bytes": _stats(readable["bytes"]),
        "in_memory_mib": len(readable) * w * h * 3 / 2**20,
        "per_view": per_view,
        "lengths": {"prompt_chars": _stats(pd.Series(prompts, dtype=float)),
                    "response_chars": _stats(pd.Series(responses, dtype=float))},
        "conversation_limits": {"truncated": int(conv_summary.get("truncated", 0)), "dropped": dropped,
                                "dropped_fraction": dropped / (n_conv + dropped) if n_conv + dropped else 0.0},
        "extrudes": _stats(models["extrudes"].astype(float)) if n_models else _stats(pd.Series([], dtype=float)),
    }


def _view_stats(foreground: pd.Series, min_foreground: float) -> dict[str, float | int]:
    """Foreground of one view's readable images (missing or unreadable ones are counted elsewhere, not as blank)."""
    if len(foreground) == 0:
        return {"mean_foreground": 0.0, "min_foreground": 0.0, "blank": 0}
    return {"mean_foreground": float(foreground.mean()), "min_foreground": float(foreground.min()),
            "blank": int((foreground < min_foreground).sum())}


def _stats(values: pd.Series) -> dict[str, float]:
    if len(values) == 0:
        return {"min": 0.0, "mean": 0.0, "max": 0.0}
    return {"min": float(values.min()), "mean": float(values.mean()), "max": float(values.max())}


def check_thresholds(metrics: dict, cfg: ValidateDeepCADConfig) -> list[tuple[str, str, str, bool]]:
    """Return (params key, limit, measured, passed) for every threshold."""
    q = metrics["quarantine"]
    ic = metrics["images_check"]
    cl = metrics["conversation_limits"]
    return [
        ("validate_deepcad.min_models", str(cfg.min_models), str(metrics["models"]),
         metrics["models"] >= cfg.min_models),
        ("validate_deepcad.max_quarantine_fraction", str(cfg.max_quarantine_fraction),
         f"{q['fraction']:.4f} ({q['count']} models)", q["fraction"] <= cfg.max_quarantine_fraction),
        ("validate_deepcad.max_unreadable_images", str(cfg.max_unreadable_images),
         f"{ic['missing'] + ic['unreadable']} (missing {ic['missing']}, unreadable {ic['unreadable']})",
         ic["missing"] + ic["unreadable"] <= cfg.max_unreadable_images),
        ("validate_deepcad.max_blank_images", str(cfg.max_blank_images), str(ic["blank"]),
         ic["blank"] <= cfg.max_blank_images),
        ("validate_deepcad.max_dropped_fraction", str(cfg.max_dropped_fraction), f"{cl['dropped_fraction']:.4f}",
         cl["dropped_fraction"] <= cfg.max_dropped_fraction),
        ("uniform resolution and colour mode", "one size, one mode",
         f"{', '.join(ic['resolutions']) or '-'} / {', '.join(ic['modes']) or '-'}", ic["uniform"]),
    ]


def failures(results: list[tuple[str, str, str, bool]]) -> list[str]:
    """Return one message per failed threshold, naming its key, limit and what was measured."""
    return [f"{key}: limit {limit}, measured {measured}" for key, limit, measured, ok in results if not ok]


def dvc_metrics(metrics: dict) -> dict:
    """Return the numbers for metrics.json (at most two levels deep, numbers only)."""
    return {
        "models": metrics["models"], "images": metrics["images"], "conversations": metrics["conversations"],
        "splits": {f"{s}_{k}": v for s, d in metrics["splits"].items() for k, v in d.items()},
        "quarantine": {"count": metrics["quarantine"]["count"], "fraction": metrics["quarantine"]["fraction"],
                       **{r: metrics["quarantine"]["by_reason"].get(r, 0) for r in REASONS}},
        "images_check": {k: metrics["images_check"][k] for k in ("missing", "unreadable", "blank")},
        "png_kib_mean": metrics["png_bytes"]["mean"] / 1024,
        "in_memory_mib": metrics["in_memory_mib"],
        "response_chars": metrics["lengths"]["response_chars"],
        "conversations_dropped": metrics["conversation_limits"]["dropped"],
        "conversations_truncated": metrics["conversation_limits"]["truncated"],
    }


def write_plots(models: pd.DataFrame, views: list[str], images: pd.DataFrame, conversations: dict[str, list[dict]],
                metrics: dict, image_dir: Path, out_dir: Path, cfg: ValidateDeepCADConfig) -> list[Path]:
    """Write counts, PNG sizes, lengths, per-view foreground and a sample sheet; return their paths."""
    out_dir = Path(out_dir)
    paths = []
    counts = {f"{s} {k}": v for s, d in metrics["splits"].items() for k, v in d.items() if v}
    paths.append(save_figure(bar_chart("Per split", "count", counts, "nothing rendered"), out_dir / PLOT_FILES[0]))
    paths.append(save_figure(_hist("PNG file size", "KiB", images.loc[images["readable"], "bytes"] / 1024),
                             out_dir / PLOT_FILES[1]))
    responses = [len(c["conversations"][1]["value"]) for v in conversations.values() for c in v]
    paths.append(save_figure(_hist("CAD code answer length", "characters", pd.Series(responses, dtype=float)),
                             out_dir / PLOT_FILES[2]))
    paths.append(save_figure(_foreground_plot(models, views, images, cfg), out_dir / PLOT_FILES[3]))
    paths.append(_sample_sheet(models, views, image_dir, out_dir / PLOT_FILES[4], cfg.sample_models))
    return paths


def _hist(title: str, xlabel: str, values: pd.Series):
    fig = new_figure(7, 3.5)
    ax = fig.add_subplot()
    ax.set_title(title)
    if len(values) == 0:
        no_data(ax, "no data")
        return fig
    ax.hist(values, bins=min(30, max(5, len(values) // 3)), color="tab:blue")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.grid(axis="y", alpha=0.3)
    return fig


def _foreground_plot(models: pd.DataFrame, views: list[str], images: pd.DataFrame, cfg: ValidateDeepCADConfig):
    fig = new_figure(7, 3.5)
    ax = fig.add_subplot()
    ax.set_title("Non-background pixel fraction per view (blank below the dashed line)")
    data = [images.loc[images["image"].isin(models[f"image_{v}"]), "foreground"].to_numpy() for v in views]
    if not any(len(d) for d in data):
        no_data(ax, "no images")
        return fig
    ax.boxplot(data, tick_labels=views)
    ax.axhline(cfg.min_foreground, ls="--", color="tab:red")
    ax.set_ylabel("fraction of pixels")
    return fig


def _sample_sheet(models: pd.DataFrame, views: list[str], image_dir: Path, path: Path, n: int) -> Path:
    """A grid: one row per sample model (first of each split, then in id order), one column per view."""
    picks = models.drop_duplicates("split").head(n)
    picks = pd.concat([picks, models[~models["id"].isin(picks["id"])]]).head(n)
    tile = 160
    sheet = Image.new("RGB", (tile * max(1, len(views)), tile * max(1, len(picks))), BACKGROUND)
    for r, row in enumerate(picks.itertuples(index=False)):
        for c, v in enumerate(views):
            p = image_dir / getattr(row, f"image_{v}")
            try:
                with archive.open_binary(p) as fh, Image.open(fh) as im:
                    sheet.paste(im.convert("RGB").resize((tile, tile)), (c * tile, r * tile))
            except (OSError, ValueError):  # missing or unreadable: already counted; leave the tile blank
                pass
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")
    return path


def render_report(metrics: dict, results: list[tuple[str, str, str, bool]], plots: list[Path],
                  models: pd.DataFrame, views: list[str], source: dict, cfg: ValidateDeepCADConfig) -> str:
    """Return the markdown report: status, what was measured on what, tables, plots, thresholds."""
    failed = [r for r in results if not r[3]]
    lines = ["# DeepCAD validation", ""]
    lines += [f"**Status: FAILED** — {len(failed)} threshold check(s) failed." if failed
              else "**Status: passed** — every threshold holds.", ""]
    lines += ["## What was measured", "",
              f"Renders of `render_deepcad` in `{md_cell(source.get('render_out'))}` from dataset root "
              f"`{md_cell(source.get('root'))}` ({metrics['models']} models × {len(views)} views: "
              f"{', '.join(views)}) and the conversations of `build_cad_conversations` in "
              f"`{md_cell(source.get('conversations_out'))}`. Every image was opened again here; foreground = "
              "fraction of pixels differing from the white background.", "",
              "## Per split", "", "| split | models | images | conversations |", "| --- | ---: | ---: | ---: |"]
    for s, d in metrics["splits"].items():
        lines.append(f"| {s} | {d['models']} | {d['images']} | {d['conversations']} |")
    ic = metrics["images_check"]
    lines += ["", "## Images", "",
              f"- missing: {ic['missing']}, unreadable: {ic['unreadable']}, "
              f"blank (< {fmt_num(100 * cfg.min_foreground)}% foreground): {ic['blank']}",
              f"- resolutions: {', '.join(ic['resolutions']) or '-'}; colour modes: {', '.join(ic['modes']) or '-'}"
              f" ({'uniform' if ic['uniform'] else '**not uniform**'})",
              f"- PNG size (KiB): min {fmt_num(metrics['png_bytes']['min'] / 1024)}, mean "
              f"{fmt_num(metrics['png_bytes']['mean'] / 1024)}, max {fmt_num(metrics['png_bytes']['max'] / 1024)}",
              f"- estimated in-memory size of all images as uint8 RGB: {fmt_num(metrics['in_memory_mib'])} MiB", "",
              "| view | mean foreground | min foreground | blank |", "| --- | ---: | ---: | ---: |"]
    for v, d in metrics["per_view"].items():
        lines.append(f"| {v} | {d['mean_foreground']:.3f} | {d['min_foreground']:.3f} | {d['blank']} |")
    ln = metrics["lengths"]
    cl = metrics["conversation_limits"]
    lines += ["", "## Conversations", "",
              f"- prompt characters: min {fmt_num(ln['prompt_chars']['min'])}, mean "
              f"{fmt_num(ln['prompt_chars']['mean'])}, max {fmt_num(ln['prompt_chars']['max'])}",
              f"- response (CAD code) characters: min {fmt_num(ln['response_chars']['min'])}, mean "
              f"{fmt_num(ln['response_chars']['mean'])}, max {fmt_num(ln['response_chars']['max'])}",
              f"- over the length limit: {cl['truncated']} truncated, {cl['dropped']} dropped", "",
              f"Extrudes per model: min {fmt_num(metrics['extrudes']['min'])}, mean "
              f"{fmt_num(metrics['extrudes']['mean'])}, max {fmt_num(metrics['extrudes']['max'])}.", ""]
    if len(models):
        first = models.iloc[0]
        lines += [f"Example answer (model `{md_cell(first['id'])}`):", "", "```", first["code"], "```", ""]
    q = metrics["quarantine"]
    lines += ["## Quarantine", "", f"{q['count']} models quarantined ({100 * q['fraction']:.1f}%).", ""]
    if q["by_reason"]:
        lines += ["| reason | models | meaning |", "| --- | ---: | --- |"]
        lines += [f"| `{r}` | {n} | {REASONS.get(r, '')} |" for r, n in q["by_reason"].items()]
        lines.append("")
    lines += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots] + [""]
    lines += ["## Thresholds", "", "| check | limit | measured | result |", "| --- | --- | --- | --- |"]
    lines += [f"| `{k}` | {lim} | {md_cell(m)} | {'pass' if ok else '**FAIL**'} |" for k, lim, m, ok in results]
    return "\n".join(lines) + "\n"
