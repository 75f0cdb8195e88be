import math

import numpy as np
import pytest
import trimesh

from lib.cad.tokenizer import CADTokenizer
from lib.deepcad.cadcode import to_code
from lib.deepcad.normalize import normalize
from lib.deepcad.parse import parse_model
from lib.deepcad.synth import FAMILIES, make_model
from lib.eval.cad_geometry import (
    chamfer_distance,
    code_accuracy,
    geometry_scores,
    sampled_iou,
    summarize_geometry,
    to_manifold,
    volumetric_iou,
    winding_number,
)
from tests.helpers.deepcad_data import BOX_CODE as BOX

TOK = CADTokenizer(layout="global")  # the accuracy tests below count the global layout's slots
LOCAL = CADTokenizer()


def code_accuracy_g(pred, true, **kw):
    return code_accuracy(pred, true, TOK, **kw)


# statements: bbox extrude plane profile loop line*4 = 9; arguments: 6 + 4 + 12 + 0 + 1 + 4*4 = 39
N_STMTS, N_ARGS = 9, 39


def cube(shift=(0.0, 0.0, 0.0), side=1.0) -> trimesh.Trimesh:
    m = trimesh.creation.box((side, side, side))
    m.apply_translation(np.asarray(shift, dtype=float) + side / 2)  # corner at `shift`
    return m


# -- IoU ------------------------------------------------------------------------------------------------------

def test_iou_analytic_cases():
    a = cube()
    assert volumetric_iou(a, a) == pytest.approx(1.0, abs=1e-12)
    assert volumetric_iou(a, cube((0.5, 0, 0))) == pytest.approx(1 / 3, abs=1e-12)  # 0.5 / (2 - 0.5)
    assert volumetric_iou(a, cube((0.5, 0.5, 0))) == pytest.approx(1 / 7, abs=1e-12)  # 0.25 / 1.75
    assert volumetric_iou(a, cube((0.25, 0.25, 0.25), side=0.5)) == pytest.approx(1 / 8, abs=1e-12)  # nested
    assert volumetric_iou(a, cube((3, 0, 0))) == 0.0
    assert volumetric_iou(a, cube((1, 0, 0))) == pytest.approx(0.0, abs=1e-12)  # touching faces


def test_winding_number_inside_outside():
    s = trimesh.creation.icosphere(subdivisions=2)
    pts = np.random.default_rng(0).uniform(-1.5, 1.5, (500, 3))
    r = np.linalg.norm(pts, axis=1)
    w = winding_number(s, pts)
    assert np.allclose(w[r < 0.9], 1.0, atol=1e-9) and np.allclose(w[r > 1.1], 0.0, atol=1e-9)


def test_sampled_iou_agrees_with_exact():
    a = trimesh.creation.icosphere(subdivisions=2)
    b = a.copy().apply_translation((0.6, 0.0, 0.0))
    assert sampled_iou(a, b, n_samples=20_000, seed=1) == pytest.approx(volumetric_iou(a, b), abs=0.02)


def test_open_mesh_falls_back_to_sampling():
    a = cube()
    open_box = trimesh.Trimesh(a.vertices, a.faces[a.face_normals[:, 0] > -0.5], process=False)  # no -x side
    assert len(open_box.faces) == 10
    with pytest.raises(ValueError, match="not a closed manifold"):
        to_manifold(open_box)
    shifted = cube((0.5, 0, 0))
    iou = volumetric_iou(open_box, shifted, n_samples=20_000, seed=0)
    assert iou == pytest.approx(1 / 3, abs=0.02)
    assert iou == sampled_iou(a, shifted, n_samples=20_000, seed=0)  # an open side changes no inside test here


def test_unmerged_triangle_soup_still_uses_exact_booleans():
    a = cube()
    soup = trimesh.Trimesh(a.triangles.reshape(-1, 3), np.arange(36).reshape(-1, 3), process=False)
    assert volumetric_iou(soup, cube((0.5, 0, 0))) == pytest.approx(1 / 3, abs=1e-12)


# -- Chamfer ---------------------------------------------------------------------------------------------------

def test_chamfer_identical_and_translated():
    a = cube()
    assert chamfer_distance(a, a) == 0.0
    assert chamfer_distance(a, a, seed=7) == 0.0
    d = 0.01
    cd = chamfer_distance(a, cube((d, 0, 0)))
    # Upper bound: the same seed pairs each sample with its translate, at distance d. Lower bound: samples on
    # a's -x face and b's +x face (~1/6 of each) lie outside the other cube, so at least d from any sample.
    assert d / 10 < cd <= d + 1e-12
    assert chamfer_distance(a, cube((d, 0, 0)), squared=True) <= d**2 + 1e-15


def test_chamfer_far_apart_is_at_least_the_gap():
    cd = chamfer_distance(cube(), cube((4, 0, 0)), n_points=512)
    assert 3.0 <= cd <= 3.0 + 2 * math.sqrt(3)


# -- code accuracy ---------------------------------------------------------------------------------------------

def replace_line(text: str, index: int, new: str) -> str:
    lines = text.splitlines()
    lines[index] = new
    return "\n".join(lines) + "\n"


def test_code_accuracy_identical():
    assert code_accuracy_g(BOX, BOX) == {"parse": True, "command_accuracy": 1.0, "parameter_accuracy": 1.0,
                                       "exact_match": True}
    assert code_accuracy_g(TOK.encode(BOX), BOX)["exact_match"]


def test_code_accuracy_value_tolerance_is_one_level():
    # sketch step is 4/256 = 0.015625: one level off counts as right, three levels off as wrong
    one = replace_line(BOX, 5, "        line (0.0156,0.0000)->(0.5000,0.0000)")
    three = replace_line(BOX, 5, "        line (0.0469,0.0000)->(0.5000,0.0000)")
    assert code_accuracy_g(one, BOX) == {"parse": True, "command_accuracy": 1.0, "parameter_accuracy": 1.0,
                                       "exact_match": False}
    r = code_accuracy_g(three, BOX)
    assert r["parameter_accuracy"] == pytest.approx((N_ARGS - 1) / N_ARGS) and r["command_accuracy"] == 1.0


def test_code_accuracy_local_layout_counts_levels_of_the_sketch_grid():
    # local default: BOX's sketch spans 0..0.5, so one level of its 2-token coordinates is 0.5 / 624 = 8e-4;
    # moving the first line's end point by one level changes one low digit, which stays within tolerance
    assert code_accuracy(BOX, BOX, LOCAL)["exact_match"]
    one = BOX.replace("(0.5000,0.0000)->(0.5000,0.5000)", "(0.4992,0.0000)->(0.5000,0.5000)").replace(
        "line (0.0000,0.0000)->(0.5000,0.0000)", "line (0.0000,0.0000)->(0.4992,0.0000)")
    r = code_accuracy(one, BOX, LOCAL)
    assert r["parameter_accuracy"] == 1.0 and not r["exact_match"]
    far = one.replace("0.4992", "0.4000")
    assert code_accuracy(far, BOX, LOCAL)["parameter_accuracy"] < 1.0


def test_code_accuracy_words_and_commands():
    op = BOX.replace("new_body", "join")
    assert code_accuracy_g(op, BOX)["parameter_accuracy"] == pytest.approx((N_ARGS - 1) / N_ARGS)
    circ = replace_line(BOX, 8, "        circle c=(0.0000,0.5000) r=0.1000")
    r = code_accuracy_g(circ, BOX)
    assert r["command_accuracy"] == pytest.approx(8 / 9) and r["parameter_accuracy"] == pytest.approx(35 / 39)


def test_code_accuracy_unparseable_text_and_misaligned_ids():
    r = code_accuracy_g("extrude 1: oops\n", BOX)
    assert r == {"parse": False, "command_accuracy": 0.0, "parameter_accuracy": 0.0, "exact_match": False}
    ids = TOK.encode(BOX)
    no_plane = ids[:13] + ids[26:]  # drop "plane" and its 12 values
    r = code_accuracy_g(no_plane, BOX)
    # pred: bbox extrude profile loop line1..4; true: bbox extrude plane profile loop line1..4
    # aligned: bbox, extrude match; profile/plane, loop/profile, line1/loop differ; line2..4 vs line1..3 match
    assert r["parse"] is False and r["command_accuracy"] == pytest.approx(5 / 9)
    # args: bbox 6 + extrude 4 + line2 vs line1 (a,0,a,a)~(0,0,a,0): 2, line3 vs line2: 2, line4 vs line3: 2
    assert r["parameter_accuracy"] == pytest.approx(16 / 39)
    with pytest.raises(ValueError, match="reference"):
        code_accuracy_g(BOX, no_plane)


# -- geometry from code ----------------------------------------------------------------------------------------

def test_geometry_scores_of_boxes():
    same = geometry_scores(BOX, BOX)
    assert same["valid"] and same["iou"] == pytest.approx(1.0) and same["chamfer"] == 0.0 and same["error"] is None
    tall = geometry_scores(BOX.replace("e1=0.2500", "e1=0.5000"), BOX)  # twice the height: IoU 1/2
    assert tall["valid"] and tall["iou"] == pytest.approx(0.5, abs=1e-12) and tall["chamfer"] > 0.01


def test_geometry_scores_invalid_predictions():
    bad_text = geometry_scores("line (0,0)->(1,1)\n", BOX)
    assert not bad_text["valid"] and bad_text["iou"] == 0.0 and math.isnan(bad_text["chamfer"])
    open_loop = replace_line(BOX, 8, "        line (0.0000,0.5000)->(0.1000,0.1000)")
    r = geometry_scores(open_loop, BOX)
    assert not r["valid"] and "open loop" in r["error"]
    with pytest.raises(ValueError, match="reference CAD code does not build"):
        geometry_scores(BOX, open_loop)
    s = summarize_geometry([geometry_scores(BOX, BOX), bad_text, geometry_scores(BOX.replace("e1=0.2500", "e1=0.5000"),
                                                                                 BOX)])
    assert s["invalid_rate"] == pytest.approx(1 / 3) and s["mean_iou"] == pytest.approx(0.5)
    assert s["n"] == 3 and s["median_chamfer"] > 0.0 and math.isfinite(s["mean_chamfer"])


def test_quantised_synth_models_stay_close_to_their_source():
    # one model per family: 8-bit tokens move every number by <= half a step, so solids change a little
    rows = []
    for fam in sorted(FAMILIES):
        text = to_code(normalize(parse_model(make_model(0, 2, fam))))
        rows.append(geometry_scores(TOK.decode(TOK.encode(text)), text))
    s = summarize_geometry(rows)
    assert s["invalid_rate"] == 0.0 and 0.85 < s["mean_iou"] < 1.0 and 0.0 < s["median_chamfer"] < 0.03
    assert all(r["iou"] < 1.0 for r in rows)  # quantisation really happened
    # the default (local) layout: each sketch on its own grid, the frame with 2-token values
    texts = [to_code(normalize(parse_model(make_model(0, 2, fam)))) for fam in sorted(FAMILIES)]
    local = summarize_geometry([geometry_scores(LOCAL.decode(LOCAL.encode(t)), t) for t in texts])
    assert local["invalid_rate"] == 0.0 and local["mean_iou"] > 0.99 and local["median_chamfer"] < 0.003
