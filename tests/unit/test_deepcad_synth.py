import hashlib
import json
import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from shapely.geometry import Polygon

from lib.deepcad.synth import FAMILIES, SynthDeepCADConfig, make_model, plan, write_dataset
from tests.helpers.deepcad_data import FIXTURE  # noqa: E402

ID_RE = re.compile(r"^(\d{4})/(\d{8})$")
N60 = SynthDeepCADConfig(count=60, seed=3)


@pytest.fixture(scope="module")
def models60():
    return [(mid, fam, make_model(N60.seed, i, fam)) for i, (mid, fam, _) in enumerate(plan(N60))]


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.json"))}


def test_same_seed_gives_byte_identical_files_and_another_seed_differs(tmp_path):
    a, b, c = (SynthDeepCADConfig(out=str(tmp_path / n), count=25, seed=s) for n, s in (("a", 1), ("b", 1), ("c", 2)))
    write_dataset(a, progress=False)
    write_dataset(b, progress=False)
    write_dataset(c, progress=False)
    da, db = _digest(tmp_path / "a"), _digest(tmp_path / "b")
    assert da == db and len(da) == 26
    assert da != _digest(tmp_path / "c")


def test_layout_ids_and_split_file(tmp_path):
    cfg = SynthDeepCADConfig(out=str(tmp_path / "d"), count=50, models_per_folder=20,
                             split_fractions={"train": 0.6, "validation": 0.2, "test": 0.2})
    items = write_dataset(cfg, progress=False)
    root = Path(cfg.out)
    split = json.loads((root / "train_val_test_split.json").read_text())
    assert list(split) == ["train", "validation", "test"]
    assert {k: len(v) for k, v in split.items()} == {"train": 30, "validation": 10, "test": 10}
    listed = [m for v in split.values() for m in v]
    assert sorted(listed) == sorted(m for m, _, _ in items) and len(set(listed)) == 50
    on_disk = sorted(str(p.relative_to(root / "cad_json"))[:-5] for p in (root / "cad_json").rglob("*.json"))
    assert on_disk == sorted(listed)
    for i, (mid, _, _) in enumerate(items):
        m = ID_RE.match(mid)
        assert m, mid
        assert int(m.group(1)) == i // 20 and m.group(2)[:4] == m.group(1)  # folder = the id's first 4 digits
    assert [m for m, _, _ in items] == sorted(m for m, _, _ in items)  # increasing, like the release


def test_config_validation():
    with pytest.raises(ValueError, match="add up to 1"):
        SynthDeepCADConfig(split_fractions={"train": 0.5, "validation": 0.1, "test": 0.1})
    with pytest.raises(ValueError, match="unknown families"):
        SynthDeepCADConfig(families=["plate_with_holes", "teapot"])
    with pytest.raises(ValueError, match="split_fractions keys"):
        SynthDeepCADConfig(split_fractions={"train": 0.9, "val": 0.1})
    with pytest.raises(ValueError, match="models_per_folder"):
        SynthDeepCADConfig(models_per_folder=0)


def test_every_family_appears_once_the_count_allows():
    n = len(FAMILIES)
    for count in (n, n + 3, 3 * n):
        fams = Counter(f for _, f, _ in plan(SynthDeepCADConfig(count=count, seed=5)))
        assert set(fams) == set(FAMILIES)
    only = plan(SynthDeepCADConfig(count=7, families=["flange", "l_bracket"]))
    assert {f for _, f, _ in only} == {"flange", "l_bracket"}


def test_structure_mirrors_the_real_fixture(models60):
    real = json.loads(FIXTURE.read_text())
    kinds = {e["type"]: e for e in real["entities"].values()}
    for _, _, model in models60:
        assert list(model) == list(real)
        assert list(model["properties"]["bounding_box"]) == list(real["properties"]["bounding_box"])
        assert [s["index"] for s in model["sequence"]] == list(range(len(model["sequence"])))
        for step in model["sequence"]:
            ent = model["entities"][step["entity"]]
            assert ent["type"] == step["type"]
            assert set(ent) == set(kinds[step["type"]])
            assert re.fullmatch(r"F[A-Za-z0-9]{14}_0", step["entity"])
            if step["type"] == "ExtrudeFeature":
                assert set(ent["extent_one"]) == set(kinds["ExtrudeFeature"]["extent_one"])
                for ref in ent["profiles"]:
                    assert ref["profile"] in model["entities"][ref["sketch"]]["profiles"]


def test_all_extent_types_operations_and_non_xy_planes_appear(models60):
    ext_types, ops, normals = set(), set(), set()
    negative = False
    for _, _, model in models60:
        for e in model["entities"].values():
            if e["type"] == "ExtrudeFeature":
                ext_types.add(e["extent_type"])
                ops.add(e["operation"])
                negative |= e["extent_one"]["distance"]["value"] < 0
            else:
                z = e["transform"]["z_axis"]
                normals.add((z["x"], z["y"], z["z"]))
    assert ext_types == {"OneSideFeatureExtentType", "SymmetricFeatureExtentType", "TwoSidesFeatureExtentType"}
    assert ops == {"NewBodyFeatureOperation", "JoinFeatureOperation", "CutFeatureOperation",
                   "IntersectFeatureOperation"}
    assert {(0.0, -1.0, 0.0), (1.0, 0.0, 0.0)} <= normals  # XZ and YZ sketches, not only XY
    assert negative  # "cut from the top face" extents are negative, as in real data


def _pt(d) -> np.ndarray:
    return np.array([d["x"], d["y"]])


def _arc_points(c, n=32) -> np.ndarray:
    ref, ctr, r = _pt(c["reference_vector"]), _pt(c["center_point"]), c["radius"]
    a = np.linspace(c["start_angle"], c["end_angle"], n) * c["normal"]["z"]
    rot = np.stack([np.cos(a) * ref[0] - np.sin(a) * ref[1], np.sin(a) * ref[0] + np.cos(a) * ref[1]], axis=1)
    return ctr + r * rot


def _ring(loop) -> np.ndarray:
    curves = loop["profile_curves"]
    if len(curves) == 1 and curves[0]["type"] == "Circle3D":
        c = curves[0]
        t = np.linspace(0, 2 * math.pi, 64, endpoint=False)
        return _pt(c["center_point"]) + c["radius"] * np.stack([np.cos(t), np.sin(t)], axis=1)
    pts = []
    for c in curves:
        pts.append(_arc_points(c)[:-1] if c["type"] == "Arc3D" else _pt(c["start_point"])[None])
    return np.concatenate(pts)


def test_loops_are_closed_and_holes_lie_inside(models60):
    for mid, fam, model in models60:
        for ent in model["entities"].values():
            if ent["type"] != "Sketch":
                continue
            regions = []
            for pid, prof in ent["profiles"].items():
                loops = prof["loops"]
                assert [lp["is_outer"] for lp in loops] == [True] + [False] * (len(loops) - 1)
                for lp in loops:
                    curves = lp["profile_curves"]
                    for c in curves:
                        assert c["type"] in ("Line3D", "Arc3D", "Circle3D")
                        for key in ("start_point", "end_point", "center_point"):
                            if key in c:
                                assert c[key]["z"] == 0.0
                        if c["type"] == "Arc3D":  # endpoints agree with centre, radius, angles and reference
                            pts = _arc_points(c, 2)
                            assert np.allclose(pts[0], _pt(c["start_point"]), atol=1e-12)
                            assert np.allclose(pts[-1], _pt(c["end_point"]), atol=1e-12)
                    if curves[0]["type"] != "Circle3D":
                        for prev, cur in zip(curves, curves[1:] + curves[:1], strict=False):
                            assert prev["end_point"] == cur["start_point"], (mid, fam, pid)  # exactly closed
                polys = [Polygon(_ring(lp)) for lp in loops]
                for p in polys:
                    assert p.is_valid and p.area > 0, (mid, fam, pid)
                outer = polys[0]
                for i, h in enumerate(polys[1:]):
                    assert outer.buffer(-1e-4).contains(h), (mid, fam, pid)  # at least 0.1 mm of wall
                    for h2 in polys[i + 2:]:
                        assert h.distance(h2) > 1e-4, (mid, fam, pid)
                regions.append(Polygon(outer.exterior, [q.exterior for q in polys[1:]]))
            for i, a in enumerate(regions):  # the sketch's profiles are separate regions
                for b in regions[i + 1:]:
                    assert a.intersection(b).area < 1e-12, (mid, fam)


def test_bounding_box_contains_every_curve_point(models60):
    for mid, fam, model in models60:
        bb = model["properties"]["bounding_box"]
        lo = np.array([bb["min_point"][k] for k in "xyz"])
        hi = np.array([bb["max_point"][k] for k in "xyz"])
        size = hi - lo
        # plates 2 mm thick to 0.5 m parts
        assert size.min() >= 0.0015 and 0.01 <= size.max() <= 0.5, (mid, fam, lo, hi)
        sketches = {}
        for step in model["sequence"]:
            ent = model["entities"][step["entity"]]
            if step["type"] == "Sketch":
                sketches[step["entity"]] = ent
        ops = {e.get("operation") for e in model["entities"].values()}
        if "IntersectFeatureOperation" in ops:
            continue  # an intersect trims the earlier bodies' outlines by design; the mesh test checks these
        for ent in model["entities"].values():
            if ent["type"] != "ExtrudeFeature" or ent["operation"] == "CutFeatureOperation":
                continue  # cut sketches may overshoot the part (through-all cuts)
            for ref in ent["profiles"]:
                sk = sketches[ref["sketch"]]
                tr = sk["transform"]
                o, x, y = (np.array([tr[k][a] for a in "xyz"]) for k in ("origin", "x_axis", "y_axis"))
                for lp in sk["profiles"][ref["profile"]]["loops"]:
                    pts = _ring(lp)
                    glob = o + pts[:, :1] * x + pts[:, 1:] * y
                    assert np.all(glob >= lo - 1e-12) and np.all(glob <= hi + 1e-12), (mid, fam)


def test_every_model_parses():
    parse = pytest.importorskip("lib.deepcad.parse")
    cfg = SynthDeepCADConfig(count=120, seed=11)
    for i, (mid, fam, _) in enumerate(plan(cfg)):
        seq = parse.parse_model(make_model(cfg.seed, i, fam))
        assert seq.extrudes, (mid, fam)


def test_every_model_meshes_watertight_with_the_declared_bounding_box():
    parse = pytest.importorskip("lib.deepcad.parse")
    mesh_mod = pytest.importorskip("lib.deepcad.mesh")
    cfg = SynthDeepCADConfig(count=120, seed=11)
    for i, (mid, fam, _) in enumerate(plan(cfg)):
        model = make_model(cfg.seed, i, fam)
        mesh = mesh_mod.build_mesh(parse.parse_model(model))
        assert mesh.is_watertight and mesh.volume > 0, (mid, fam)
        bb = model["properties"]["bounding_box"]
        lo = np.array([bb["min_point"][k] for k in "xyz"])
        hi = np.array([bb["max_point"][k] for k in "xyz"])
        assert np.allclose(mesh.bounds[0], lo, atol=1e-6) and np.allclose(mesh.bounds[1], hi, atol=1e-6), (mid, fam)


def test_full_scale_count_is_fast(tmp_path):
    import time

    t = time.perf_counter()
    items = write_dataset(SynthDeepCADConfig(out=str(tmp_path / "k"), count=1100), progress=False)
    assert len(items) == 1100 and len({m for m, _, _ in items}) == 1100
    assert len(list((tmp_path / "k" / "cad_json").rglob("*.json"))) == 1100
    assert time.perf_counter() - t < 15  # ~2 s here; generous for loaded CI machines
