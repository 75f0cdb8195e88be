import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
from shapely.geometry import Polygon

from lib.deepcad.normalize import dequantize, normalize, quantize, quantize_sequence
from lib.deepcad.parse import load_model, loop_gaps, parse_model, polygonize_loop
from lib.deepcad.schema import Arc, Circle, Line, Loop
from lib.quarantine import QuarantineError

REPO = Path(__file__).resolve().parents[2]
from tests.helpers.deepcad_data import FIXTURE  # noqa: E402

SKETCH, EXTRUDE, PROFILE = "FQtakFubjNXh4U6_0", "Fg5Co82E19unP7q_0", "JGC"


@pytest.fixture(scope="module")
def raw():
    return json.loads(FIXTURE.read_text())


@pytest.fixture
def data(raw):
    return copy.deepcopy(raw)


def p3(x, y, z=0.0):
    return {"x": x, "y": y, "z": z}


def jline(a, b):
    return {"type": "Line3D", "start_point": p3(*a), "end_point": p3(*b), "curve": "c"}


def jarc(start, end, center, r, a0, a1, ref, nz):
    return {"type": "Arc3D", "start_point": p3(*start), "end_point": p3(*end), "center_point": p3(*center),
            "radius": r, "start_angle": a0, "end_angle": a1, "reference_vector": p3(*ref), "normal": p3(0, 0, nz),
            "curve": "c"}


def set_curves(d, curves):
    d["entities"][SKETCH]["profiles"][PROFILE]["loops"] = [{"is_outer": True, "profile_curves": curves}]
    return d


def square(s=0.02):
    pts = [(0, 0), (s, 0), (s, s), (0, s)]
    return [jline(pts[i], pts[(i + 1) % 4]) for i in range(4)]


def reason_of(d):
    with pytest.raises(QuarantineError) as ei:
        parse_model(d)
    return ei.value.reason


# ---------------------------------------------------------------------------------------------------- real data


def test_real_fixture_parses():
    seq = load_model(FIXTURE)
    assert len(seq.extrudes) == 1
    ex = seq.extrudes[0]
    assert ex.operation == "new_body" and ex.extent_type == "one_side"
    assert ex.extent_one == pytest.approx(0.005) and ex.extent_two == 0.0
    assert ex.plane.normal == (0.0, 0.0, 1.0) and ex.plane.x_axis == (1.0, 0.0, 0.0)
    (prof,) = ex.profiles
    (loop,) = prof.loops
    assert loop.is_outer
    (circle,) = loop.curves
    assert isinstance(circle, Circle) and circle.radius == pytest.approx(0.039)
    assert circle.center == pytest.approx((0.00043049, -0.00098815))
    assert seq.bbox_max[2] == pytest.approx(0.005) and seq.bbox_min[1] == pytest.approx(-0.039988148152828216)


# ---------------------------------------------------------------------------------------------------- valid variants


def test_square_with_a_reversed_line_parses(data):
    curves = square()
    curves[2] = jline((0, 0.02), (0.02, 0.02))  # stored end->start, as real data does
    seq = parse_model(set_curves(data, curves))
    assert len(seq.extrudes[0].profiles[0].loops[0].curves) == 4


@pytest.mark.parametrize("reverse_arc", [False, True])
def test_arc_cap_json_parses(data, reverse_arc):
    s = 0.02
    if reverse_arc:  # stored from (0,s) to (s,s), clockwise about -z
        arc = jarc((0, s), (s, s), (s / 2, s), s / 2, 0.0, math.pi, (-1, 0), -1.0)
    else:
        arc = jarc((s, s), (0, s), (s / 2, s), s / 2, 0.0, math.pi, (1, 0), 1.0)
    curves = [jline((0, 0), (s, 0)), jline((s, 0), (s, s)), arc, jline((0, s), (0, 0))]
    seq = parse_model(set_curves(data, curves))
    loop = seq.extrudes[0].profiles[0].loops[0]
    assert isinstance(loop.curves[2], Arc)
    area = Polygon(polygonize_loop(loop)).area
    assert area == pytest.approx(s * s + math.pi * (s / 2) ** 2 / 2, rel=5e-3)


def test_two_sides_with_zero_first_distance_is_fine(data):
    ent = data["entities"][EXTRUDE]
    ent["extent_type"] = "TwoSidesFeatureExtentType"
    ent["extent_one"]["distance"]["value"] = 0.0
    ent["extent_two"]["distance"]["value"] = 0.003
    ex = parse_model(data).extrudes[0]
    assert ex.extent_type == "two_sides" and ex.extent_two == pytest.approx(0.003)


def test_extent_two_ignored_unless_two_sides(data):
    data["entities"][EXTRUDE]["extent_two"]["distance"]["value"] = 0.7
    assert parse_model(data).extrudes[0].extent_two == 0.0


def test_profiles_on_two_planes_split_into_join(data):
    sk2 = copy.deepcopy(data["entities"][SKETCH])
    sk2["transform"]["origin"] = p3(0, 0, 0.005)
    data["entities"]["S2"] = sk2
    data["entities"][EXTRUDE]["profiles"].append({"profile": PROFILE, "sketch": "S2"})
    seq = parse_model(data)
    assert [e.operation for e in seq.extrudes] == ["new_body", "join"]
    assert seq.extrudes[1].plane.origin == (0.0, 0.0, 0.005)


# ---------------------------------------------------------------------------------------------------- one per reason


def test_json_syntax(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text('{"entities": {')
    with pytest.raises(QuarantineError) as ei:
        load_model(p)
    assert ei.value.reason == "json_syntax"
    (tmp_path / "empty.json").write_bytes(b"")
    with pytest.raises(QuarantineError, match="json_syntax"):
        load_model(tmp_path / "empty.json")


@pytest.mark.parametrize("breaker, path", [
    (lambda d: d["properties"].pop("bounding_box"), "properties.bounding_box"),
    (lambda d: d["entities"][EXTRUDE]["extent_one"]["distance"].pop("value"),
     f"entities.{EXTRUDE}.extent_one.distance.value"),
    (lambda d: d["entities"][SKETCH]["profiles"][PROFILE]["loops"][0]["profile_curves"][0].update(radius="39mm"),
     f"entities.{SKETCH}.profiles.{PROFILE}.loops[0].profile_curves[0].radius"),
    (lambda d: d["entities"][SKETCH]["transform"]["z_axis"].pop("y"), f"entities.{SKETCH}.transform.z_axis.y"),
    (lambda d: d.pop("sequence"), "(root).sequence"),
    (lambda d: d["entities"][SKETCH]["profiles"][PROFILE]["loops"][0].update(is_outer="yes"), "is_outer"),
])
def test_missing_field_names_the_path(data, breaker, path):
    breaker(data)
    with pytest.raises(QuarantineError) as ei:
        parse_model(data)
    assert ei.value.reason == "missing_field"
    assert path in ei.value.detail


def test_empty_sequence(data):
    data["sequence"] = [s for s in data["sequence"] if s["type"] != "ExtrudeFeature"]
    assert reason_of(data) == "empty_sequence"


def test_unknown_curve(data):
    data["entities"][SKETCH]["profiles"][PROFILE]["loops"][0]["profile_curves"][0]["type"] = "NurbsCurve3D"
    assert reason_of(data) == "unknown_curve"


def test_unknown_extent(data):
    data["entities"][EXTRUDE]["extent_type"] = "ToEntityFeatureExtentType"
    assert reason_of(data) == "unknown_extent"


def test_unknown_operation(data):
    data["entities"][EXTRUDE]["operation"] = "MagicFeatureOperation"
    assert reason_of(data) == "unknown_operation"


@pytest.mark.parametrize("field, value", [("profile", "NOPE"), ("sketch", "NoSuchSketch")])
def test_dangling_profile(data, field, value):
    data["entities"][EXTRUDE]["profiles"][0][field] = value
    assert reason_of(data) == "dangling_profile"


def test_open_loop(data):
    curves = square()
    curves[2] = jline((0.02, 0.02), (0.004, 0.02))  # stops short of (0, 0.02)
    assert reason_of(set_curves(data, curves)) == "open_loop"


def test_lone_line_is_open(data):
    assert reason_of(set_curves(data, [jline((0, 0), (0.01, 0))])) == "open_loop"


def test_self_intersecting_loop(data):
    bowtie = [jline((0, 0), (0.02, 0.02)), jline((0.02, 0.02), (0.02, 0)), jline((0.02, 0), (0, 0.02)),
              jline((0, 0.02), (0, 0))]
    assert reason_of(set_curves(data, bowtie)) == "self_intersecting_loop"


@pytest.mark.parametrize("extent_type, e1, e2", [
    ("OneSideFeatureExtentType", 0.0, 0.0),
    ("OneSideFeatureExtentType", float("nan"), 0.0),
    ("SymmetricFeatureExtentType", float("inf"), 0.0),
    ("TwoSidesFeatureExtentType", 0.005, float("nan")),
    ("TwoSidesFeatureExtentType", 0.0, 0.0),
])
def test_bad_extent(data, extent_type, e1, e2):
    ent = data["entities"][EXTRUDE]
    ent["extent_type"] = extent_type
    ent["extent_one"]["distance"]["value"] = e1
    ent["extent_two"]["distance"]["value"] = e2
    assert reason_of(data) == "bad_extent"


# ---------------------------------------------------------------------------------------------------- normalize


def test_normalize_scales_to_075():
    seq = load_model(FIXTURE)
    n = normalize(seq)
    m = max(abs(v) for v in n.bbox_min + n.bbox_max)
    assert m == pytest.approx(0.75)
    s = 0.75 / 0.039988148152828216
    assert n.extrudes[0].extent_one == pytest.approx(0.005 * s)
    assert n.extrudes[0].profiles[0].loops[0].curves[0].radius == pytest.approx(0.039 * s)
    assert n.extrudes[0].plane.normal == seq.extrudes[0].plane.normal


def test_quantize_error_bound():
    n = 256
    v = np.concatenate([np.linspace(-1, 1 - 1 / n, 10007), np.random.default_rng(0).uniform(-1, 1 - 1 / n, 5000)])
    q = quantize(v, n)
    assert q.min() >= 0 and q.max() <= n - 1 and q.dtype.kind == "i"
    assert np.max(np.abs(dequantize(q, n) - v)) <= 1 / n + 1e-12
    assert quantize([-1.0, 0.0, 1.0]).tolist() == [0, 128, 255]


def test_quantize_sequence_error_bound():
    n = 256
    seq = normalize(load_model(FIXTURE))
    qs = quantize_sequence(seq, n)
    c0, c1 = seq.extrudes[0].profiles[0].loops[0].curves[0], qs.extrudes[0].profiles[0].loops[0].curves[0]
    vals0 = [*c0.center, c0.radius, seq.extrudes[0].extent_one, *seq.bbox_min, *seq.bbox_max]
    vals1 = [*c1.center, c1.radius, qs.extrudes[0].extent_one, *qs.bbox_min, *qs.bbox_max]
    err = np.abs(np.array(vals1) - np.array(vals0))
    assert err.max() <= 1 / n + 1e-12
    assert all(abs(round((v + 1) * n / 2) - (v + 1) * n / 2) < 1e-9 for v in vals1)  # on the grid


# ---------------------------------------------------------------------------------------------------- polygonize


def test_polygonize_circle_area():
    r = 0.039
    ring = polygonize_loop(Loop(curves=(Circle(center=(0.3, -0.2), radius=r),), is_outer=True))
    assert ring.shape == (64, 2)
    assert Polygon(ring).area == pytest.approx(math.pi * r * r, rel=5e-3)


def _cap_loop(variant):
    """Square [0,2]^2 with a half-disc cap of radius 1 on top (area 4 + pi/2), stored four ways."""
    ccw = Arc(start=(2, 2), end=(0, 2), center=(1, 2), radius=1, start_angle=0, end_angle=math.pi,
              reference_vector=(1, 0), normal_z=1)
    cw = Arc(start=(0, 2), end=(2, 2), center=(1, 2), radius=1, start_angle=0, end_angle=math.pi,
             reference_vector=(-1, 0), normal_z=-1)
    l1, l2, l3 = Line((0, 0), (2, 0)), Line((2, 0), (2, 2)), Line((0, 2), (0, 0))
    if variant == "ccw":
        curves = (l1, l2, ccw, l3)
    elif variant == "cw_reversed":  # arc stored from its far end, clockwise about -z
        curves = (l1, l2, cw, l3)
    elif variant == "loop_clockwise":  # whole loop walked the other way; the ccw arc is stored reversed
        curves = (Line((0, 0), (0, 2)), ccw, Line((2, 2), (2, 0)), Line((2, 0), (0, 0)))
    else:  # first curve stored reversed too, and arc with a shifted start angle
        shifted = Arc(start=(2, 2), end=(0, 2), center=(1, 2), radius=1, start_angle=math.pi / 2,
                      end_angle=3 * math.pi / 2, reference_vector=(0, -1), normal_z=1)
        curves = (Line((2, 0), (0, 0)), l2, shifted, l3)
    return Loop(curves=curves, is_outer=True)


@pytest.mark.parametrize("variant", ["ccw", "cw_reversed", "loop_clockwise", "first_reversed"])
def test_polygonize_square_with_arc_cap(variant):
    loop = _cap_loop(variant)
    assert max(loop_gaps(loop)) < 1e-12
    ring = polygonize_loop(loop)
    assert not np.allclose(ring[0], ring[-1])
    poly = Polygon(ring)
    assert poly.is_valid
    assert poly.area == pytest.approx(4 + math.pi / 2, rel=5e-3)
    assert ring[:, 1].max() == pytest.approx(3.0)  # the cap bulges up, not into the square
    steps = np.linalg.norm(np.diff(np.vstack([ring, ring[:1]]), axis=0), axis=1)
    assert steps.max() <= 2.0 + 1e-9  # consecutive points: a walk along the boundary, no jumps


@pytest.mark.parametrize("stored", ["ccw", "cw"])
def test_polygonize_three_quarter_arc(stored):
    """Pac-man: a 270 degree arc of radius 1 closed through the centre; area 3*pi/4."""
    if stored == "ccw":
        arc = Arc(start=(1, 0), end=(0, -1), center=(0, 0), radius=1, start_angle=0, end_angle=1.5 * math.pi,
                  reference_vector=(1, 0), normal_z=1)
    else:
        arc = Arc(start=(0, -1), end=(1, 0), center=(0, 0), radius=1, start_angle=0, end_angle=1.5 * math.pi,
                  reference_vector=(0, -1), normal_z=-1)
    loop = Loop(curves=(arc, Line((0, -1), (0, 0)), Line((0, 0), (1, 0))), is_outer=True)
    assert Polygon(polygonize_loop(loop)).area == pytest.approx(0.75 * math.pi, rel=5e-3)
