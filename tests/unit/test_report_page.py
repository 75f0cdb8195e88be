"""reports/index.html (lib/report_page.py): every image and report linked by a path that exists, losses shown."""
import html
import re
from pathlib import Path

from lib.report_page import render_page, stage_sections


def fake_reports(root: Path) -> Path:
    reports = root / "reports"
    for stage, files in {"eval_apt": ["report.md", "strip.png"], "validate_ssv2": ["report.md", "a.png", "b.png"],
                         "benchmarks": ["render.md", "scale.md"], "train_apt": []}.items():
        (reports / stage).mkdir(parents=True)
        for f in files:
            (reports / stage / f).write_bytes(b"x")
    (reports / "eval_vae/sub").mkdir(parents=True)
    (reports / "eval_vae/sub/strip <1>.png").write_bytes(b"x")  # a name that needs escaping
    return reports


def test_every_link_and_image_resolves_from_the_page(tmp_path):
    reports = fake_reports(tmp_path)
    page = reports / "index.html"
    text = render_page(reports, {"apt": {"psnr_db": 23.9, "baseline_psnr_db": 23.8},
                                 "video_vae": {"psnr_db": 17.2, "baseline_psnr_db": 26.6}}, page)
    srcs = re.findall(r'<img src="([^"]+)"', text)
    hrefs = [h for h in re.findall(r'href="([^"#][^"]*)"', text) if not h.startswith("data:")]
    assert len(srcs) == 4
    for link in srcs + hrefs:
        target = reports / html.unescape(link)
        assert target.is_file() or target.name == "summary.json", link
    assert {s for s, *_ in stage_sections(reports)} == {"eval_apt", "validate_ssv2", "benchmarks", "eval_vae"}
    assert "render.md" in text and "scale.md" in text  # a folder without report.md lists its reports


def test_a_model_that_loses_to_its_baseline_is_shown_as_a_loss(tmp_path):
    reports = fake_reports(tmp_path)
    text = render_page(reports, {"apt": {"psnr_db": 23.9, "baseline_psnr_db": 23.8},
                                 "video_vae": {"psnr_db": 17.2, "baseline_psnr_db": 26.6},
                                 "curriculum_vae": {"gain_db": -9.1}}, reports / "index.html")
    rows = {re.sub("<[^>]+>", "|", r).split("|")[2]: r for r in re.findall(r"<tr><td>.*?</tr>", text)}
    assert "beats baseline" in rows["APT one-step video SR: PSNR dB (EMA generator vs bicubic)"]
    assert "loses to baseline" in rows["Video VAE: PSNR dB at its largest resolution (vs bicubic at equal values)"]
    assert "loses to baseline" in rows["Curriculum VAE: PSNR gain dB over bicubic"]
    assert "–" in rows["CAD VLM: mean IoU (vs nearest-neighbour retrieval)"]  # not run: no verdict
