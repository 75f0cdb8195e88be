import io
import json

import numpy as np
import pytest
from PIL import Image

from lib.archive import exists, read_bytes
from lib.archive import members as archive_members
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
            with Image.open(io.BytesIO(read_bytes(base / "out" / getattr(row, f"image_{view}")))) as im:
                assert (im.size, im.mode) == ((64, 64), "RGB")
                assert silhouette(np.asarray(im)).mean() > 0.01
        assert exists(base / "out" / row.mesh) and row.mesh.endswith(f"/meshes/{row.id}.ply")
    # only the good models' files exist, in the shards' archives: nothing a bad model started is left
    assert not (base / "out/images").exists() and not (base / "out/.staging").exists()
    names = sorted(m for z in (base / "out/archives").iterdir() for m in archive_members(z))
    assert names == sorted([*(f"images/{m}_{v}.png" for m in good for v in cfg.views),
                            *(f"meshes/{m}.ply" for m in good)])


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


def test_a_failed_background_write_fails_the_shard_and_writes_no_shard_file(tmp_path, monkeypatch):
    # the PNGs are written by a background thread while the next model renders; an error there must surface
    import lib.render

    bad_root(tmp_path / "root")
    out = tmp_path / "out"

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(lib.render, "save_png", disk_full)
    cfg = RenderDeepCADConfig(out=str(out), shards=1, image_size=64)
    with pytest.raises(OSError, match="No space left"):
        run_shard(tmp_path / "root", cfg, 0, progress=False)
    assert not list(out.glob("shards/*.parquet")) and not list(out.glob("archives/*.zip"))


def test_png_compress_level_changes_the_bytes_not_the_pixels(tmp_path):
    good, _ = bad_root(tmp_path / "root")
    render(tmp_path / "root", tmp_path / "a", shards=1)
    render(tmp_path / "root", tmp_path / "b", shards=1, png_compress_level=0)  # stored: no compression at all
    a = read_bytes(tmp_path / "a" / read_models(tmp_path / "a")["image_front"].iloc[0])
    b = read_bytes(tmp_path / "b" / read_models(tmp_path / "b")["image_front"].iloc[0])
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(a))), np.asarray(Image.open(io.BytesIO(b))))
    assert len(a) * 5 < len(b)  # level 0 stores every byte of the 64 x 64 render; level 6 compresses it ~15x
