import hashlib
import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from lib.config import ConfigError, from_dict
from lib.ssv2.labels import normalize_template, reference_classes
from lib.ssv2.layout import VIDEO_DIR
from lib.ssv2.synth import SynthSSv2Config, class_counts, label_files, plan_dataset, write_dataset
from lib.video.probe import probe_video

REPO = Path(__file__).resolve().parents[2]
TINY = dict(count=8, min_per_class=2, height=48, widths=[64, 71], min_seconds=1.0, max_seconds=1.5, workers=1,
            templates=["Pushing something from left to right", "Covering something with something",
                       "Moving something up"], split_fractions={"train": 0.5, "validation": 0.25, "test": 0.25})


def tiny(tmp_path, **kw) -> SynthSSv2Config:
    return SynthSSv2Config(out=str(tmp_path / "ssv2"), **{**TINY, **kw})


def test_real_balance_follows_real_frequencies():
    cfg = SynthSSv2Config(count=1000, min_per_class=0)
    counts = class_counts(cfg)
    assert sum(counts.values()) == 1000
    real = {c.template: c.videos for c in reference_classes() if c.template in cfg.templates}
    total = sum(real.values())
    for t, n in counts.items():
        assert abs(n - 1000 * real[t] / total) < 1  # largest-remainder rounding


def test_uniform_balance_and_minimum_per_class():
    counts = class_counts(SynthSSv2Config(count=30, templates=TINY["templates"], class_balance="uniform",
                                          min_per_class=2))
    assert sorted(counts.values()) == [10, 10, 10]
    with pytest.raises(ValueError, match="count=5 is below"):
        SynthSSv2Config(count=5, templates=TINY["templates"], min_per_class=2)


def test_unknown_or_unrenderable_template_is_named():
    with pytest.raises(ValueError, match="'Juggling something' is not an SSv2 template"):
        class_counts(SynthSSv2Config(count=8, templates=["Juggling something"], min_per_class=1))
    with pytest.raises(ValueError, match="has no renderer"):
        class_counts(SynthSSv2Config(count=8, templates=["Opening something"], min_per_class=1))


def test_bad_params_are_rejected_by_config():
    with pytest.raises(ConfigError, match="split_fractions must add up to 1"):
        from_dict(SynthSSv2Config, {"split_fractions": {"train": 0.5}})
    with pytest.raises(ConfigError, match="class_balance"):
        from_dict(SynthSSv2Config, {"class_balance": "zipf"})


def test_plan_is_deterministic_stratified_and_in_ssv2_format(tmp_path):
    cfg = tiny(tmp_path)
    plan = plan_dataset(cfg)
    assert plan == plan_dataset(cfg) and plan != plan_dataset(replace(cfg, seed=1))
    assert sorted(int(p.id) for p in plan) == list(range(1, 9))
    per_class = Counter(p.template for p in plan)
    assert sum(per_class.values()) == 8 and min(per_class.values()) >= 2
    for t in per_class:  # every class reaches train and at least one other split
        assert {"train"} < {p.split for p in plan if p.template == t}
    files = label_files(plan)
    classes = files["labels.json"]
    real = json.loads((REPO / "lib/ssv2/reference/labels.json").read_text())
    assert classes == real
    for row in files["train.json"] + files["validation.json"]:
        assert set(row) == {"id", "label", "template", "placeholders"}
        assert normalize_template(row["template"]) in classes
        assert row["template"].count("[") == len(row["placeholders"])
        assert row["label"] == row["label"][:1].lower() + row["label"][1:]
    assert all(set(row) == {"id"} for row in files["test.json"])


def test_written_dataset_is_reproducible_to_the_byte(tmp_path):
    a = tiny(tmp_path / "a")
    b = tiny(tmp_path / "b")
    plan = write_dataset(a, progress=False)
    write_dataset(b, progress=False)
    root_a, root_b = tmp_path / "a/ssv2", tmp_path / "b/ssv2"

    def digest(root):
        return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file()}

    assert digest(root_a) == digest(root_b)
    for p in plan:
        probe = probe_video(root_a / VIDEO_DIR / f"{p.id}.webm")
        assert (probe.height, probe.width, probe.frames, probe.fps) == (48, p.width, p.n_frames, 12.0)
    assert json.loads((root_a / "labels/test.json").read_text()) == [{"id": p.id} for p in plan if p.split == "test"]


def test_renderer_code_change_rerenders(tmp_path, monkeypatch):
    cfg = tiny(tmp_path)
    write_dataset(cfg, progress=False)
    vdir = tmp_path / "ssv2" / VIDEO_DIR
    before = {p.name: p.stat().st_mtime_ns for p in vdir.glob("*.webm")}
    monkeypatch.setattr("lib.ssv2.synth.code_digest", lambda *mods: "another-renderer")
    write_dataset(cfg, progress=False)
    assert all(p.stat().st_mtime_ns != before[p.name] for p in vdir.glob("*.webm"))


def test_resume_renders_only_missing_and_prunes_stale(tmp_path):
    cfg = tiny(tmp_path)
    plan = write_dataset(cfg, progress=False)
    vdir = tmp_path / "ssv2" / VIDEO_DIR
    stamps = {p.name: p.stat().st_mtime_ns for p in vdir.glob("*.webm")}
    (vdir / f"{plan[0].id}.webm").unlink()
    (vdir / f".{plan[1].id}.webm.tmp-dead.webm").write_bytes(b"half")  # what a SIGKILL leaves
    write_dataset(cfg, progress=False)
    after = {p.name: p.stat().st_mtime_ns for p in vdir.glob("*.webm")}
    assert after.keys() == stamps.keys()
    assert [n for n in after if after[n] != stamps[n]] == [f"{plan[0].id}.webm"]
    assert not list(vdir.glob(".*"))

    # other params: videos whose plan entry changed are rendered again, not mixed in
    changed = replace(cfg, crf=40)
    write_dataset(changed, progress=False)
    again = {p.name: p.stat().st_mtime_ns for p in vdir.glob("*.webm")}
    assert all(again[n] != after[n] for n in after)
