"""reports/index.html: one static page over every stage's report: the headline numbers with their baselines, each
stage's images (strips, grids, plots) and a link to its report.md. No scripts, no external resources: it opens from
the file system (`xdg-open reports/index.html`) and from any static host the same way."""
from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

from lib.summary import dig

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".svg", ".gif")

# (label, value name, baseline name) rows of the headline table; names are lib.summary's "group.key"
MODEL_ROWS = [
    ("APT one-step video SR: PSNR dB (EMA generator vs bicubic)", "apt.psnr_db", "apt.baseline_psnr_db"),
    ("Video VAE: PSNR dB at its largest resolution (vs bicubic at equal values)", "video_vae.psnr_db",
     "video_vae.baseline_psnr_db"),
    ("Curriculum VAE: PSNR gain dB over bicubic", "curriculum_vae.gain_db", None),
    ("Audio VAE: log-spectral distance gain dB over a same-size mel", "audio_vae.lsd_gain_db", None),
    ("CAD VLM: mean IoU (vs nearest-neighbour retrieval)", "cad_vlm.mean_iou", "cad_vlm.baseline_mean_iou"),
    ("CAD VLM: exact match (vs retrieval)", "cad_vlm.exact_match", "cad_vlm.baseline_exact_match"),
]
DATA_ROWS = [("SSv2 videos", "ssv2.videos"), ("SSv2 quarantine rate", "ssv2.quarantine_rate"),
             ("DeepCAD models", "deepcad.models"), ("DeepCAD quarantine rate", "deepcad.quarantine_rate"),
             ("Speech files", "audio.files"), ("Speech quarantine rate", "audio.quarantine_rate"),
             ("Loader clips/s (stable config)", "loader.clips_per_s"),
             ("Loader efficiency (vs decode ceiling)", "loader.efficiency")]


def _value(summary: dict[str, Any], name: str | None) -> Any:
    return None if name is None else dig(summary, name)


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def stage_sections(reports: Path) -> list[tuple[str, list[Path], list[Path]]]:
    """``(stage, its images, its Markdown reports)`` for each folder of ``reports`` with a report or an image, in
    name order (benchmarks included); report.md alone when the folder has one, else every .md."""
    out = []
    if not reports.is_dir():
        return out
    for folder in sorted(p for p in reports.iterdir() if p.is_dir()):
        images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                        and ".dvc" not in p.parts)
        report = folder / "report.md"
        mds = [report] if report.is_file() else sorted(folder.glob("*.md"))
        if images or mds:
            out.append((folder.name, images, mds))
    return out


def render_page(reports: Path, summary: dict[str, Any], out: Path) -> str:
    """Return the HTML of ``out`` (links relative to its folder) over the folders of ``reports``."""
    base = out.parent

    def rel(p: Path) -> str:
        return html.escape(Path(os.path.relpath(p, base)).as_posix(), quote=True)

    rows = []
    for label, value, baseline in MODEL_ROWS:
        v, b = _value(summary, value), _value(summary, baseline)
        verdict = ""
        if isinstance(v, (int, float)) and isinstance(b, (int, float)):
            verdict = "beats" if v > b else "loses to" if v < b else "ties"
        elif isinstance(v, (int, float)) and baseline is None:
            verdict = "beats" if v > 0 else "loses to" if v < 0 else "ties"
        rows.append(f"<tr><td>{html.escape(label)}</td><td>{_fmt(v)}</td><td>{_fmt(b)}</td>"
                    f"<td class=\"{verdict.replace(' ', '-')}\">{verdict or '–'} baseline</td></tr>")
    data = [f"<tr><td>{html.escape(label)}</td><td>{_fmt(_value(summary, name))}</td></tr>"
            for label, name in DATA_ROWS]
    sections = []
    found = stage_sections(reports)
    for stage, images, mds in found:
        links = " · ".join(f"<a href=\"{rel(m)}\">{html.escape(m.name)}</a>" for m in mds)
        figs = "".join(f"<figure><a href=\"{rel(i)}\"><img src=\"{rel(i)}\" alt=\"{html.escape(stage)}: "
                       f"{html.escape(i.stem)}\" loading=\"lazy\"></a><figcaption>{html.escape(i.name)}</figcaption>"
                       f"</figure>" for i in images)
        sections.append(f"<section id=\"{html.escape(stage)}\"><h2>{html.escape(stage)}</h2><p>{links}</p>"
                        f"<div class=\"figs\">{figs}</div></section>")
    toc = " · ".join(f"<a href=\"#{html.escape(s)}\">{html.escape(s)}</a>" for s, *_ in found)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Pipeline reports</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; }}
table {{ border-collapse: collapse; margin: 1em 0; }} td, th {{ border: 1px solid #ccc; padding: .3em .6em; }}
td:nth-child(n+2) {{ text-align: right; }} .beats {{ color: #070; }} .loses-to {{ color: #a00; font-weight: bold; }}
.figs {{ display: flex; flex-wrap: wrap; gap: 1em; }} figure {{ margin: 0; max-width: 380px; }}
img {{ max-width: 100%; border: 1px solid #ddd; }} figcaption {{ font-size: .8em; color: #555; }}
</style></head><body>
<h1>Pipeline reports</h1>
<p>Headline numbers from <a href="{rel(reports / 'summary.json')}">summary.json</a> (stage <code>summarize</code>);
every trained model beside its trivial baseline on held-out data. A model that loses is shown as a loss.</p>
<table><tr><th>model</th><th>value</th><th>baseline</th><th></th></tr>
{chr(10).join(rows)}
</table>
<table><tr><th>data and loader</th><th>value</th></tr>
{chr(10).join(data)}
</table>
<p>{toc}</p>
{chr(10).join(sections)}
</body></html>
"""
