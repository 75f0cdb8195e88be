"""lib.deepcad.openecad: OpenECAD API code written and read back, on every generated family and the real fixture."""
import math
import re

import numpy as np
import pytest

from lib.deepcad.cadcode import from_code, to_code
from lib.deepcad.mesh import build_mesh
from lib.deepcad.normalize import normalize
from lib.deepcad.openecad import NotRepresentable, arc_through, from_openecad, to_openecad
from lib.deepcad.parse import load_model, parse_model
from lib.deepcad.schema import Arc, CADSequence, Circle, Extrude, Line, Loop, Profile, SketchPlane
from lib.deepcad.synth import FAMILIES, make_model
from lib.eval.cad_geometry import volumetric_iou
from tests.helpers.deepcad_data import FIXTURE

XY = SketchPlane((0.0, 0.0, 0.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))


def corpus(per_family=3, seed=5):
    out = [(f, normalize(parse_model(make_model(seed, i, f)))) for f in sorted(FAMILIES) for i in range(per_family)]
    return [*out, ("fixture", normalize(load_model(FIXTURE)))]


CORPUS = corpus()


@pytest.mark.parametrize("family, seq", CORPUS, ids=[f"{f}{i}" for i, (f, _) in enumerate(CORPUS)])
def test_text_is_a_fixed_point_and_the_model_survives(family, seq):
    text = to_openecad(seq)
    back = from_openecad(text)
    assert to_openecad(back) == text
    # one OpenECAD extrude per profile, each with the original's plane, operation and extents at 4 decimals
    flat = [(ex, prof) for ex in seq.extrudes for prof in ex.profiles]
    assert len(back.extrudes) == len(flat)
    for got, (ex, prof) in zip(back.extrudes, flat, strict=True):
        assert (got.operation, got.extent_type) == (ex.operation, ex.extent_type)
        assert got.extent_one == pytest.approx(ex.extent_one, abs=5.0001e-5)
        for a, b in ((got.plane.origin, ex.plane.origin), (got.plane.normal, ex.plane.normal),
                     (got.plane.x_axis, ex.plane.x_axis), (got.plane.y_axis, ex.plane.y_axis)):
            np.testing.assert_allclose(a, b, atol=2e-4)
        assert len(got.profiles[0].loops) == len(prof.loops)
        assert got.profiles[0].loops[0].is_outer
    # and the solid: exact volumetric IoU of the two meshes
    assert volumetric_iou(build_mesh(back), build_mesh(seq)) > 0.995, family


def test_the_fixture_reads_the_same_through_cad_code():
    seq = normalize(load_model(FIXTURE))
    assert to_openecad(from_code(to_code(seq))) == to_openecad(seq)


def test_written_form_matches_openecad():
    arc = Arc(start=(0.5, 0.0), end=(0.0, 0.5), center=(0.0, 0.0), radius=0.5, start_angle=0.0,
              end_angle=math.pi / 2, reference_vector=(1.0, 0.0), normal_z=1.0)
    outer = Loop((Line((0.0, 0.0), (0.5, 0.0)), arc, Line((0.0, 0.5), (0.0, 0.0))), True)
    hole = Loop((Circle((0.1, 0.1), 0.05),), False)
    seq = CADSequence((Extrude("E", XY, (Profile((hole, outer)),), "cut", "two_sides", -0.25, 0.125),))
    assert to_openecad(seq) == (
        "SketchPlane0 = add_sketchplane(\n"
        "\torigin= [0., 0., 0.], normal= [0., 0., 1.], x_axis= [1., 0., 0.])\n"
        "Loops0 = []\n"
        "Curves0_0 = []\n"
        "Line0_0_0 = add_line(start= [0., 0.], end= [0.5, 0.])\n"
        "Arc0_0_1 = add_arc(start= [0.5, 0.], end= [0., 0.5], mid= [0.3536, 0.3536])\n"
        "Line0_0_2 = add_line(start= [0., 0.5], end= [0., 0.])\n"
        "Loop0_0 = add_loop(Curves0_0)\n"
        "Curves0_1 = []\n"
        "Circle0_1_0 = add_circle(center= [0.1, 0.1], radius= 0.05)\n"
        "Loop0_1 = add_loop(Curves0_1)\n"
        "Profile0 = add_profile(Loops0)\n"
        "Sketch0 = add_sketch(sketch_plane= SketchPlane0, profile= Profile0)\n"
        "Extrude0 = add_extrude(sketch= Sketch0,\n"
        "\toperation= 2, type= 2, extent_one= -0.25, extent_two= 0.125)\n")


@pytest.mark.parametrize("nz", [1.0, -1.0])
def test_arc_through_three_points(nz):
    # a 270-degree arc around (0.2, -0.1), radius 0.3, clockwise when nz = -1
    c, r = np.array([0.2, -0.1]), 0.3
    angles = np.array([0.3, 0.3 + nz * 3 * math.pi / 4, 0.3 + nz * 3 * math.pi / 2])
    start, mid, end = (c + r * np.array([math.cos(a), math.sin(a)]) for a in angles)
    arc = arc_through(start, end, mid)
    assert arc.normal_z == nz
    np.testing.assert_allclose(arc.center, c, atol=1e-12)
    assert arc.radius == pytest.approx(r, abs=1e-12)
    np.testing.assert_allclose(arc.mid_point(), mid, atol=1e-12)
    np.testing.assert_allclose(arc.point_at(arc.end_angle), end, atol=1e-12)
    assert arc.end_angle == pytest.approx(3 * math.pi / 2)
    with pytest.raises(ValueError, match="collinear"):
        arc_through((0, 0), (1, 1), (0.5, 0.5))


def test_a_multi_profile_intersect_is_not_representable():
    sq = lambda x0: Loop(tuple(Line(p, q) for p, q in zip(  # noqa: E731
        [(x0, 0), (x0 + 0.1, 0), (x0 + 0.1, 0.1), (x0, 0.1)], [(x0 + 0.1, 0), (x0 + 0.1, 0.1), (x0, 0.1), (x0, 0)],
        strict=True)), True)
    two = (Profile((sq(0.0),)), Profile((sq(0.5),)))
    base = Extrude("A", XY, (Profile((sq(0.0),)),), "new_body", "one_side", 0.2)
    cut = CADSequence((base, Extrude("B", XY, two, "cut", "one_side", 0.1)))
    assert len(from_openecad(to_openecad(cut)).extrudes) == 3
    with pytest.raises(NotRepresentable, match="extrude 2: an intersect of 2 profiles"):
        to_openecad(CADSequence((base, Extrude("B", XY, two, "intersect", "one_side", 0.1))))


@pytest.mark.parametrize("text, message", [
    ("import os\n", "line 1: expected `Name = add_...(...)`"),
    ("x = __import__('os').system('true')\n", "line 1: unknown statement"),
    ("Loops0 = []\nCurves0_0 = []\nLine0 = add_line(start= [0, 0])\n", "line 3: add_line takes start, end"),
    ("Loops0 = []\nCurves0_0 = []\nLine0 = add_line(start= [0, 0], end= [1, float('nan')])\n",
     "line 3: end=: expected a finite number, got \"float('nan')\""),
    ("SketchPlane0 = add_sketchplane(origin= [0, 0], normal= [0, 0, 1], x_axis= [1, 0, 0])\n",
     "line 1: origin= must be a list of 3 numbers"),
    ("Loops0 = []\nLoop0_0 = add_loop(Curves9)\n", "line 2: expected a `Curves...` list defined above"),
    ("Loops0 = []\n", "no add_extrude"),
    ("Extrude0 = add_extrude(sketch= Sketch0,\n\toperation= 0, type= 0, extent_one= 1, extent_two= 0)\n",
     "line 1: add_extrude needs a defined Sketch"),
    ("SketchPlane0 = add_sketchplane(\n", "line 1: not Python syntax"),
])
def test_bad_text_is_refused_with_its_line(text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        from_openecad(text)


def test_bad_operation_index_is_refused():
    seq = CADSequence((Extrude("A", XY, (Profile((Loop((Circle((0.0, 0.0), 0.2),), True),)),), "join",
                               "symmetric", 0.1),))
    text = to_openecad(seq)
    assert "operation= 1, type= 1" in text
    with pytest.raises(ValueError, match=r"line \d+: operation= must be 0..3, got 7"):
        from_openecad(text.replace("operation= 1", "operation= 7"))
