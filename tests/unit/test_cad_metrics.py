"""DeepCAD's metrics (lib.eval.cad_metrics) against hand-computed values."""
import math

import numpy as np
import pytest
import trimesh

from lib.cad.tokenizer import CADTokenizer
from lib.eval.cad_geometry import volumetric_iou
from lib.eval.cad_metrics import (
    best_of,
    chamfer_sq,
    deepcad_accuracy,
    deepcad_chamfer,
    score_one,
    summarize,
    value_right,
)
from tests.helpers.deepcad_data import BOX_CODE as BOX

TOK = CADTokenizer()  # the default local layout
# BOX without bbox: extrude (op, extent, e1, e2) + plane (3 origin, 3 angles, size) + loop (side) + 4 lines (x, y)
N_PARAMS = 4 + 7 + 1 + 4 * 2


def centred_cube(half: float) -> trimesh.Trimesh:
    return trimesh.creation.box((2 * half,) * 3)


def test_iou_of_a_unit_cube_and_its_half_shifted_copy_is_one_third():
    a = trimesh.creation.box((1.0, 1.0, 1.0))
    b = a.copy().apply_translation((0.5, 0.0, 0.0))
    assert volumetric_iou(a, b) == pytest.approx(1 / 3, abs=1e-12)  # 0.5 / (1 + 1 - 0.5)


def test_chamfer_of_a_cube_and_itself_is_zero():
    c = centred_cube(0.5)
    assert deepcad_chamfer(c, c, 2000, independent=False) == 0.0  # the same samples on both
    # DeepCAD samples the truth apart: the floor is 2 E[r²] = 2 area / (π n) (nearest of a Poisson process of
    # density n / area); normalised, the cube has half-side 0.75: area 13.5
    assert deepcad_chamfer(c, c, 8192) == pytest.approx(2 * 13.5 / (math.pi * 8192), rel=0.15)
    assert chamfer_sq(np.zeros((3, 3)), np.zeros((5, 3))) == 0.0


def test_chamfer_of_concentric_cubes_matches_the_analytic_value():
    # small cube half-side a inside big cube half-side b, d = b - a. Every point of the small surface is d from the
    # big surface; a point (b, y, z) of the big one is sqrt(d² + dy² + dz²) from the small cube, dy = max(|y|-a, 0),
    # y uniform on [-b, b]: E[dy²] = d³ / (3b). CD = d² + d² + 2 d³ / (3b).
    a, b = 0.5, 1.0
    d = b - a
    expected = 2 * d**2 + 2 * d**3 / (3 * b)  # 0.58333
    small, big = centred_cube(a), centred_cube(b)
    # Sampling only adds: the nearest sample is farther than the nearest surface point (measured excess about
    # +2.5% at 2,000 points, +1% at 8,192, +0.4% at 32,768), so the bounds are one-sided-ish.
    raw = deepcad_chamfer(small, big, 32768, normalise=False, independent=False)
    assert expected <= raw * 1.002 and raw == pytest.approx(expected, rel=0.006)
    # DeepCAD's normalisation scales both by 0.75 / max|truth bbox| = 0.75: distances x0.75, CD x0.5625
    assert deepcad_chamfer(small, big, 8192) == pytest.approx(0.5625 * expected, rel=0.015)
    assert deepcad_chamfer(small, big, 2000) == pytest.approx(0.5625 * expected, rel=0.04)


def test_out_of_bound_prediction_is_rescaled_as_deepcad_does():
    truth = centred_cube(0.75)  # already normalised: scale 1
    huge = centred_cube(10.0)  # max |p| > 2: rescaled to max |p| = 1, i.e. a cube of half-side 1
    expected = 2 * 0.25**2 + 2 * 0.25**3 / 3  # the concentric case with a = 0.75, b = 1 (big one predicted)
    assert deepcad_chamfer(huge, truth, 8192) == pytest.approx(expected, rel=0.04)  # sampling excess ~ +2.4%


def test_parameter_tolerance_is_three_deepcad_levels_exclusive():
    assert value_right(1.0, 0.0) and value_right(2.9, 0.0) and not value_right(3.0, 0.0)
    assert not value_right(None, 0.0) and value_right("join", "join") and not value_right("cut", "join")


def test_one_level_errors_count_as_right_four_level_errors_as_wrong():
    assert deepcad_accuracy(BOX, BOX, TOK) == {"acc_cmd": 1.0, "acc_param": 1.0}
    # extent e1: one DeepCAD level is 2/256 = 0.0078125 of the cube
    one = deepcad_accuracy(BOX.replace("e1=0.2500", "e1=0.2578"), BOX, TOK)
    four = deepcad_accuracy(BOX.replace("e1=0.2500", "e1=0.2813"), BOX, TOK)
    assert one == {"acc_cmd": 1.0, "acc_param": 1.0}
    assert four["acc_cmd"] == 1.0 and four["acc_param"] == pytest.approx((N_PARAMS - 1) / N_PARAMS)
    # a sketch value (2 tokens, 624 levels over the 0.5 box): one DeepCAD level is 0.5 / 256 of the sketch
    vertex = "(0.5000,0.0000)"

    def moved(x: float) -> str:
        return BOX.replace(vertex, f"({x:.4f},0.0000)")  # both lines through the corner: the box keeps its size

    assert deepcad_accuracy(moved(0.5 - 0.5 / 256), BOX, TOK)["acc_param"] == 1.0
    far = deepcad_accuracy(moved(0.5 - 4 * 0.5 / 256), BOX, TOK)
    assert far["acc_param"] == pytest.approx((N_PARAMS - 1) / N_PARAMS)  # the first line's end (lines carry ends)


def _swap(ids: list[int], old: str, new: str) -> list[int]:
    out, done = list(ids), False
    for i, t in enumerate(out):
        if TOK.vocab[t] == old and not done:
            out[i], done = TOK.token_to_id[new], True
    assert done
    return out


def test_flipped_words_count_as_wrong():
    ids = TOK.encode(BOX)
    r = deepcad_accuracy(_swap(ids, "one_side", "symmetric"), ids, TOK)
    assert r["acc_cmd"] == 1.0 and r["acc_param"] == pytest.approx((N_PARAMS - 1) / N_PARAMS)
    r = deepcad_accuracy(_swap(ids, "new_body", "cut"), ids, TOK)
    assert r["acc_param"] == pytest.approx((N_PARAMS - 1) / N_PARAMS)
    # the last line (to the origin) as a half-turn arc; then its turning direction flipped
    last = len(ids) - 1 - ids[::-1].index(TOK.token_to_id["line"])
    arc = ids[:last] + [TOK.token_to_id["arc"], *ids[last + 1:last + 5], TOK.value_id(128),
                        TOK.token_to_id["nz=1"], TOK.eos_id]
    assert deepcad_accuracy(arc, arc, TOK) == {"acc_cmd": 1.0, "acc_param": 1.0}
    r = deepcad_accuracy(_swap(arc, "nz=1", "nz=-1"), arc, TOK)
    assert r["acc_cmd"] == 1.0 and r["acc_param"] == pytest.approx((N_PARAMS + 1) / (N_PARAMS + 2))
    # the arc answered as a line: a wrong command, whose parameters are not scored
    r = deepcad_accuracy(ids, arc, TOK)
    assert r["acc_cmd"] == pytest.approx(7 / 8) and r["acc_param"] == 1.0


def test_unparseable_and_invalid_answers():
    r = deepcad_accuracy("extrude 1: oops\n", BOX, TOK)
    assert r == {"acc_cmd": 0.0, "acc_param": None}
    bad = score_one("line (0,0)->(1,1)\n", BOX, TOK)
    assert not bad["valid"] and bad["iou"] == 0.0 and math.isnan(bad["cd"]) and bad["acc_param"] is None
    none = score_one(None, BOX, TOK)
    assert not none["valid"] and not none["parse"]


def test_summary_counts_invalid_answers_and_scales_the_median_cd_by_1000():
    def row(valid, iou, cd, acc_param):
        return {"parse": valid, "command_accuracy": 1.0, "parameter_accuracy": 1.0, "exact_match": False,
                "acc_cmd": 1.0 if valid else 0.0, "acc_param": acc_param, "valid": valid, "iou": iou,
                "chamfer": cd if valid else float("nan"), "cd": cd if valid else float("nan"),
                "cd_hi": cd if valid else float("nan")}

    rows = [row(True, 1.0, 0.001, 1.0), row(True, 0.5, 0.002, 0.5), row(True, 0.6, 0.004, 0.9),
            row(False, 0.0, None, None)]
    s = summarize(rows)
    assert s["invalid_rate"] == 0.25 and s["n"] == 4 and s["parse_rate"] == 0.75
    assert s["median_cd"] == pytest.approx(2.0) and s["median_cd_8192"] == pytest.approx(2.0)
    assert s["mean_iou"] == pytest.approx(2.1 / 4) and s["median_iou"] == pytest.approx(0.55)
    assert s["acc_cmd"] == 0.75 and s["acc_param"] == pytest.approx(0.8)  # the invalid answer has no parameters


def test_score_one_of_boxes_and_best_of():
    same = score_one(BOX, BOX, TOK)
    assert same["iou"] == pytest.approx(1.0) and 0.0 < same["cd_hi"] < same["cd"] < 2e-3  # the sampling floor
    tall = score_one(BOX.replace("e1=0.2500", "e1=0.5000"), BOX, TOK)
    assert tall["iou"] == pytest.approx(0.5, abs=1e-12) and tall["cd"] > 0.0
    assert math.isnan(score_one(BOX, BOX, TOK, cd_points_hi=None)["cd_hi"])  # not computed
    picked = best_of([[tall, same], [same, dict(same)]])
    assert picked[0] is same and picked[1] is same  # highest IoU; ties to the first candidate


def test_the_report_verdict_names_the_best_baseline_and_says_win_or_loss():
    from lib.eval.cad_vlm import verdict

    metrics = {"model": {"mean_iou": 0.05}, "nn_retrieval": {"mean_iou": 0.056}, "nn_encoder": {"mean_iou": 0.058},
               "most_frequent": {"mean_iou": 0.04}, "quantised_truth": {"mean_iou": 0.99}}  # the ceiling is no baseline
    assert verdict(metrics) == ("**Verdict:** the model's mean IoU 0.0500 loses to the best baseline, `nn_encoder` "
                                "(0.0580), by 0.0080.")
    metrics["model"]["mean_iou"] = 0.07
    assert "0.0700 beats the best baseline, `nn_encoder`" in verdict(metrics)
