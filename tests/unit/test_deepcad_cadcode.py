import math
import re
from pathlib import Path

import pytest

from lib.deepcad.cadcode import from_code, to_code
from lib.deepcad.normalize import normalize, quantize_sequence
from lib.deepcad.parse import load_model
from lib.deepcad.schema import Arc, CADSequence, Circle, Extrude, Line, Loop, Profile, SketchPlane

REPO = Path(__file__).resolve().parents[2]
from tests.helpers.deepcad_data import FIXTURE  # noqa: E402

XY = SketchPlane((0.0, 0.0, 0.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
YZ = SketchPlane((0.1, -0.2, 0.05), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (1.0, 0.0, 0.0))
TILT = SketchPlane((-0.3, 0.0, 0.25), (0.7071067811865476, 0.0, -0.7071067811865476), (0.0, 1.0, 0.0),
                   (0.7071067811865476, 0.0, 0.7071067811865476))


def square(x0, y0, s):
    p = [(x0, y0), (x0 + s, y0), (x0 + s, y0 + s), (x0, y0 + s)]
    return tuple(Line(p[i], p[(i + 1) % 4]) for i in range(4))


def hand_built() -> CADSequence:
    cap_ccw = Arc(start=(0.4, 0.2), end=(0.0, 0.2), center=(0.2, 0.2), radius=0.2, start_angle=0.0,
                  end_angle=math.pi, reference_vector=(1.0, 0.0), normal_z=1.0)
    cap_cw = Arc(start=(-0.5, 0.3), end=(-0.3, 0.3), center=(-0.4, 0.3), radius=0.1, start_angle=0.0,
                 end_angle=math.pi, reference_vector=(-1.0, 0.0), normal_z=-1.0)
    plate = Profile((Loop(square(-0.6, -0.6, 1.2), True),
                     Loop((Circle((-0.0000001, 0.1), 0.05),), False),        # tiny negative -> "0.0000"
                     Loop((Line((0.1, -0.3), (0.1, -0.1)), Line((0.1, -0.1), (-0.1, -0.1)),  # hole walked cw
                           Line((-0.1, -0.1), (-0.1, -0.3)), Line((-0.1, -0.3), (0.1, -0.3))), False)))
    tab = Profile((Loop((Line((0.0, 0.0), (0.4, 0.0)), Line((0.4, 0.0), (0.4, 0.2)), cap_ccw,
                         Line((0.0, 0.2), (0.0, 0.0))), True),))
    slot = Profile((Loop((Line((-0.5, 0.0), (-0.3, 0.0)), Line((-0.3, 0.0), (-0.3, 0.3)), cap_cw,
                          Line((-0.5, 0.3), (-0.5, 0.0))), True),))
    disc = Profile((Loop((Circle((0.0, 0.0), 0.25),), True),))
    return CADSequence(
        extrudes=(
            Extrude("a", XY, (plate,), "new_body", "one_side", 0.1),
            Extrude("b", YZ, (tab, slot), "join", "symmetric", 0.05),
            Extrude("c", TILT, (disc,), "cut", "two_sides", -0.02, 0.3),
            Extrude("d", XY, (disc, tab), "intersect", "one_side", -0.123456789),
        ),
        bbox_min=(-0.6, -0.6, -0.1234), bbox_max=(0.6, 0.6, 0.75))


def test_fixture_code_and_round_trip():
    seq = load_model(FIXTURE)
    text = to_code(seq)
    assert text.splitlines()[1] == "extrude 1: new_body one_side e1=0.0050 e2=0.0000"
    assert "circle c=(0.0004,-0.0010) r=0.0390" in text
    assert to_code(from_code(text)) == text
    norm = to_code(normalize(seq))
    assert to_code(from_code(norm)) == norm
    q = to_code(quantize_sequence(normalize(seq)))
    assert to_code(from_code(q)) == q


@pytest.mark.parametrize("decimals", [4, 6, 2])
def test_hand_built_round_trip_exact(decimals):
    text = to_code(hand_built(), decimals=decimals)
    assert to_code(from_code(text), decimals=decimals) == text
    assert "..." not in text and "e-" not in text and "e+" not in text
    assert "-0.0000" not in text and not re.search(r"-0\.0+\b(?!\d)", text.replace("-0.0000", "X"))
    for op in ("new_body", "join", "cut", "intersect"):
        assert f": {op} " in text
    for et in ("one_side", "symmetric", "two_sides"):
        assert f" {et} e1=" in text
    assert "nz=1" in text and "nz=-1" in text and "loop inner" in text


def test_from_code_values_within_half_a_digit():
    seq = hand_built()
    back = from_code(to_code(seq))
    assert len(back.extrudes) == 4
    for a, b in zip(seq.extrudes, back.extrudes, strict=False):
        assert (a.operation, a.extent_type) == (b.operation, b.extent_type)
        assert b.extent_one == pytest.approx(a.extent_one, abs=5e-5)
        assert b.extent_two == pytest.approx(a.extent_two, abs=5e-5)
        assert b.plane.normal == pytest.approx(a.plane.normal, abs=5e-5)
        assert len(a.profiles) == len(b.profiles)
        for pa, pb in zip(a.profiles, b.profiles, strict=False):
            for la, lb in zip(pa.loops, pb.loops, strict=False):
                assert la.is_outer == lb.is_outer
                assert [type(c) for c in la.curves] == [type(c) for c in lb.curves]
                for ca, cb in zip(la.curves, lb.curves, strict=False):
                    if isinstance(ca, Arc):
                        assert cb.normal_z == ca.normal_z and cb.end_angle == pytest.approx(ca.end_angle, abs=5e-5)
    assert back.bbox_max == pytest.approx((0.6, 0.6, 0.75))


def test_code_text_layout():
    text = to_code(hand_built())
    lines = text.splitlines()
    assert text.endswith("\n") and lines[0].startswith("bbox min=(")
    assert lines[2].startswith("  plane o=(") and lines[3] == "    profile" and lines[4] == "      loop outer"
    assert lines[5].startswith("        line (")


@pytest.mark.parametrize("mutate, lineno, msg", [
    (lambda ls: ls.__setitem__(5, "        line (0.1,0.2)->(0.3)"), 6, "malformed 'line'"),
    (lambda ls: ls.__setitem__(1, ls[1].replace("new_body", "union")), 2, "unknown operation"),
    (lambda ls: ls.__setitem__(1, ls[1].replace("one_side", "both")), 2, "unknown extent type"),
    (lambda ls: ls.pop(2), 3, "profile outside an extrude"),
    (lambda ls: ls.__setitem__(4, "      loop sideways"), 5, "malformed 'loop'"),
    (lambda ls: ls.__setitem__(6, "        spline (0,0)"), 7, "unknown statement 'spline'"),
    (lambda ls: ls.insert(3, "        circle c=(0.0,0.0) r=0.1"), 4, "outside a loop"),
    (lambda ls: ls.__setitem__(1, ls[1].replace("extrude 1", "extrude 2")), 2, "expected 1"),
    (lambda ls: ls.__setitem__(5, "        circle c=(0.0,0.0) r=1e999"), 6, "out of range"),
])
def test_from_code_error_names_line(mutate, lineno, msg):
    lines = to_code(hand_built()).splitlines()
    mutate(lines)
    with pytest.raises(ValueError, match=rf"^line {lineno}: .*{re.escape(msg)}"):
        from_code("\n".join(lines) + "\n")


def test_from_code_empty_blocks_name_their_line():
    with pytest.raises(ValueError, match=r"^line 4: loop has no curves"):
        from_code("extrude 1: cut one_side e1=1.0 e2=0.0\n  plane o=(0,0,0) x=(1,0,0) y=(0,1,0) n=(0,0,1)\n"
                  "  profile\n    loop outer\n")
    with pytest.raises(ValueError, match=r"^line 1: extrude has no plane"):
        from_code("extrude 1: cut one_side e1=1.0 e2=0.0\nextrude 2: cut one_side e1=1.0 e2=0.0\n")
    with pytest.raises(ValueError, match=r"no extrude"):
        from_code("bbox min=(0,0,0) max=(1,1,1)\n")


def test_from_code_is_lenient_on_whitespace_and_bbox():
    text = to_code(hand_built())
    messy = "\n".join("   " + ln.strip().replace(",", ", ") + "  " for ln in text.splitlines()[1:]) + "\n\n"
    seq = from_code(messy)
    assert seq.bbox_min == (0.0, 0.0, 0.0)
    assert to_code(seq).splitlines()[1:] == text.splitlines()[1:]


def test_to_code_rejects_non_finite():
    seq = hand_built()
    bad = CADSequence(extrudes=seq.extrudes, bbox_min=(float("nan"), 0.0, 0.0), bbox_max=seq.bbox_max)
    with pytest.raises(ValueError):
        to_code(bad)


def test_cad_code_round_trip_is_exact_on_every_generated_family():
    from lib.deepcad.normalize import normalize
    from lib.deepcad.parse import parse_model
    from lib.deepcad.synth import FAMILIES, make_model

    for i in range(60):
        family = sorted(FAMILIES)[i % len(FAMILIES)]
        text = to_code(normalize(parse_model(make_model(3, i, family))))
        assert to_code(from_code(text)) == text, family
