import json

import numpy as np
import pytest
from PIL import Image

from lib.deepcad.cadcode import from_code, to_code
from lib.deepcad.render_models import RenderDeepCADConfig, merge_shards, plan_render, read_models, run_shard
from lib.render import silhouette
from tests.helpers.deepcad_data import bad_root


def render(root, out, **kw):
    cfg = RenderDeepCADConfig(out=str(out), **{"shards": 2, "image_size": 64, **kw})
    for i in range(cfg.shards):
        run_shard(root, cfg, i, progress=False)
    return cfg, merge_shards(root, cfg)


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("deepcad")
    good, expected = bad_root(base / "root")
    cfg, summary = render(base / "root", base / "out")
    return base, good, expected, cfg, summary


def test_every_malformed_model_is_quarantined_with_its_reason(bad_run):
    base, good, expected, cfg, summary = bad_run
    quarantine = json.loads((base / "out/quarantine.json").read_text())
    assert {q["id"]: q["reason"] for q in quarantine} == expected
    assert summary["models"] == len(good) and summary["quarantined"] == len(expected)


def test_good_models_render_every_view_and_keep_their_code(bad_run):
    base, good, expected, cfg, summary = bad_run
    models = read_models(base / "out")
    assert sorted(models["id"]) == sorted(good)
    for row in models.itertuples():
        assert to_code(from_code(row.code)) == row.code
        assert row.watertight and row.volume > 0
        for view in cfg.views:
            with Image.open(base / "out/images" / getattr(row, f"image_{view}")) as im:
                assert (im.size, im.mode) == ((64, 64), "RGB")
                assert silhouette(np.asarray(im)).mean() > 0.01
        assert (base / "out/meshes" / row.mesh).is_file()
    # only the good models' files exist: nothing a bad model started is left
    pngs = sorted(p.relative_to(base / "out/images").as_posix() for p in (base / "out/images").rglob("*.png"))
    assert pngs == sorted(f"{m}_{v}.png" for m in good for v in cfg.views)


def test_blank_renders_are_quarantined(tmp_path):
    good, _ = bad_root(tmp_path / "root")
    render(tmp_path / "root", tmp_path / "out", min_foreground=0.999)
    reasons = {q["id"]: q["reason"] for q in json.loads((tmp_path / "out/quarantine.json").read_text())}
    assert all(reasons[g] == "blank_render" for g in good)


def test_plan_fingerprints_move_only_with_their_shard(tmp_path):
    good, _ = bad_root(tmp_path / "root")
    before = plan_render(tmp_path / "root", 3)
    (tmp_path / "root/cad_json" / f"{good[0]}.json").write_text("{}")
    after = plan_render(tmp_path / "root", 3)
    changed = [i for i in range(3) if before.fingerprints(3)[i] != after.fingerprints(3)[i]]
    assert changed == [next(m.shard for m in before.items if m.id == good[0])]


def test_unknown_view_is_a_config_error():
    with pytest.raises(ValueError, match="views must be"):
        RenderDeepCADConfig(views=["diagonal"])


def test_a_failed_background_write_fails_the_shard_and_writes_no_shard_file(tmp_path):
    # the PNGs are written by a background thread while the next model renders; an error there must surface
    good, _ = bad_root(tmp_path / "root")
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    folder = good[0].split("/")[0]
    (out / "images" / folder).write_text("a file where the image folder goes")
    cfg = RenderDeepCADConfig(out=str(out), shards=1, image_size=64)
    with pytest.raises(OSError):
        run_shard(tmp_path / "root", cfg, 0, progress=False)
    assert not list(out.glob("shards/*.parquet"))


def test_png_compress_level_changes_the_bytes_not_the_pixels(tmp_path):
    good, _ = bad_root(tmp_path / "root")
    small = render(tmp_path / "root", tmp_path / "a", shards=1)[0]
    render(tmp_path / "root", tmp_path / "b", shards=1, png_compress_level=1)
    rel = read_models(small.out)["image_front"].iloc[0]
    a, b = tmp_path / "a/images" / rel, tmp_path / "b/images" / rel
    assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))
    assert a.stat().st_size < b.stat().st_size
