import math

import numpy as np
import pytest
from shapely.geometry import Polygon

from lib.deepcad.mesh import build_mesh, extrude_solid, loop_ring, mesh_bounds, profile_polygon
from lib.deepcad.schema import Arc, CADSequence, Circle, Extrude, Line, Loop, Profile, SketchPlane
from lib.quarantine import QuarantineError

XY = SketchPlane(origin=(0.0, 0.0, 0.0), x_axis=(1.0, 0.0, 0.0), y_axis=(0.0, 1.0, 0.0), normal=(0.0, 0.0, 1.0))


def rect_loop(x0, y0, x1, y1, is_outer=True):
    p = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    return Loop(tuple(Line(p[i], p[(i + 1) % 4]) for i in range(4)), is_outer)


def circle_loop(cx, cy, r, is_outer=True):
    return Loop((Circle((cx, cy), r),), is_outer)


def ext(loops_or_profiles, operation="new_body", extent_type="one_side", e1=1.0, e2=0.0, plane=XY, name="e"):
    profiles = tuple(p if isinstance(p, Profile) else Profile((p,)) for p in loops_or_profiles)
    return Extrude(name, plane, profiles, operation, extent_type, e1, e2)


def box(x0, y0, x1, y1, z0, z1, operation="new_body", name="box"):
    plane = SketchPlane((0.0, 0.0, z0), XY.x_axis, XY.y_axis, XY.normal)
    return ext([rect_loop(x0, y0, x1, y1)], operation, "one_side", z1 - z0, plane=plane, name=name)


def seq(*extrudes):
    return CADSequence(tuple(extrudes))


def assert_solid(mesh):
    assert mesh.is_watertight
    assert mesh.is_winding_consistent
    assert mesh.volume > 0


# --- single extrudes and extent types -------------------------------------------------------------------------

def test_rectangle_one_side_volume_and_bounds():
    mesh = build_mesh(seq(ext([rect_loop(0, 0, 2, 1)], e1=0.5)))
    assert_solid(mesh)
    assert mesh.volume == pytest.approx(1.0, abs=1e-6)
    lo, hi = mesh_bounds(mesh)
    np.testing.assert_allclose(lo, [0, 0, 0], atol=1e-12)
    np.testing.assert_allclose(hi, [2, 1, 0.5], atol=1e-12)


def test_negative_extent_goes_below_the_plane():
    mesh = build_mesh(seq(ext([rect_loop(0, 0, 2, 1)], e1=-0.5)))
    assert_solid(mesh)
    assert mesh.volume == pytest.approx(1.0, abs=1e-6)
    lo, hi = mesh_bounds(mesh)
    assert (lo[2], hi[2]) == pytest.approx((-0.5, 0.0), abs=1e-12)


def test_symmetric_extends_extent_one_each_side():
    mesh = build_mesh(seq(ext([rect_loop(0, 0, 2, 1)], extent_type="symmetric", e1=0.5)))
    assert_solid(mesh)
    assert mesh.volume == pytest.approx(2.0, abs=1e-6)
    lo, hi = mesh_bounds(mesh)
    assert (lo[2], hi[2]) == pytest.approx((-0.5, 0.5), abs=1e-12)


def test_two_sides_uses_extent_two_below():
    mesh = build_mesh(seq(ext([rect_loop(0, 0, 2, 1)], extent_type="two_sides", e1=0.5, e2=0.25)))
    assert_solid(mesh)
    assert mesh.volume == pytest.approx(1.5, abs=1e-6)
    lo, hi = mesh_bounds(mesh)
    assert (lo[2], hi[2]) == pytest.approx((-0.25, 0.5), abs=1e-12)


def test_circle_volume_close_to_pi():
    mesh = build_mesh(seq(ext([circle_loop(0, 0, 1)], e1=1.0)))
    assert_solid(mesh)
    assert mesh.volume == pytest.approx(math.pi, rel=5e-3)


def test_plate_with_hole():
    profile = Profile((rect_loop(-2, -2, 2, 2), circle_loop(0, 0, 1, is_outer=False)))
    mesh = build_mesh(seq(ext([profile], e1=0.5)))
    assert_solid(mesh)
    assert mesh.volume == pytest.approx((16 - math.pi) * 0.5, rel=1e-2)
    assert mesh.euler_number == 0  # a solid with one through hole has genus 1


def test_two_profiles_of_one_extrude_are_united():
    # Two adjacent regions of one sketch sharing an edge, and a third disjoint one.
    e = ext([rect_loop(0, 0, 1, 1), rect_loop(1, 0, 2, 1), rect_loop(3, 0, 4, 1)], e1=1.0)
    mesh = extrude_solid(e)
    assert_solid(mesh)
    assert mesh.volume == pytest.approx(3.0, abs=1e-6)
    assert len(mesh.split(only_watertight=True)) == 2


# --- booleans --------------------------------------------------------------------------------------------------

def test_cut_removes_exact_volume():
    plate = box(0, 0, 4, 4, 0, 1)
    plane = SketchPlane((0.0, 0.0, 0.5), XY.x_axis, XY.y_axis, XY.normal)
    cut = ext([rect_loop(1, 1, 2, 2)], "cut", "symmetric", 2.0, plane=plane)
    mesh = build_mesh(seq(plate, cut))
    assert_solid(mesh)
    assert mesh.volume == pytest.approx(15.0, abs=1e-6)


def test_flush_through_cut_and_flush_boss():
    # DeepCAD's usual "cut through" has exactly the plate's thickness: both cap faces are coplanar.
    top = SketchPlane((0.0, 0.0, 1.0), XY.x_axis, XY.y_axis, XY.normal)
    mesh = build_mesh(seq(box(0, 0, 4, 4, 0, 1), ext([rect_loop(1, 1, 2, 2)], "cut", e1=-1.0, plane=top)))
    assert_solid(mesh)
    assert mesh.volume == pytest.approx(15.0, abs=1e-6)
    assert mesh.euler_number == 0  # a through hole, not a skin-covered pocket
    mesh = build_mesh(seq(box(0, 0, 4, 4, 0, 1), ext([rect_loop(1, 1, 2, 2)], "join", e1=1.0, plane=top)))
    assert_solid(mesh)
    assert mesh.volume == pytest.approx(17.0, abs=1e-6)
    assert mesh.euler_number == 2 and len(mesh.split()) == 1  # fused into one body


def test_join_of_overlapping_boxes_is_union_volume():
    # Coplanar top and bottom faces: the hard case for booleans.
    mesh = build_mesh(seq(box(0, 0, 2, 2, 0, 1), box(1, 1, 3, 3, 0, 1, "join")))
    assert_solid(mesh)
    assert mesh.volume == pytest.approx(4 + 4 - 1, abs=1e-6)


def test_intersect_keeps_overlap_volume():
    mesh = build_mesh(seq(box(0, 0, 2, 2, 0, 1), box(1, 1, 3, 3, 0.5, 1.5, "intersect")))
    assert_solid(mesh)
    assert mesh.volume == pytest.approx(0.5, abs=1e-6)
    lo, hi = mesh_bounds(mesh)
    np.testing.assert_allclose(lo, [1, 1, 0.5], atol=1e-9)
    np.testing.assert_allclose(hi, [2, 2, 1], atol=1e-9)


def test_new_body_unites_with_the_body_so_far():
    mesh = build_mesh(seq(box(0, 0, 1, 1, 0, 1), box(5, 0, 6, 1, 0, 1, "new_body")))
    assert_solid(mesh)
    assert mesh.volume == pytest.approx(2.0, abs=1e-6)


# --- arcs and curve chaining -----------------------------------------------------------------------------------

def slot_loop():
    """Stadium: centres (0,0) and (2,0), radius 0.5. Curves stored in mixed directions."""
    r = 0.5
    bottom = Line((0.0, -r), (2.0, -r))
    # Right cap stored end-to-start (start=(2,0.5), end=(2,-0.5)) with angles that run from its end to its start.
    right = Arc(start=(2.0, r), end=(2.0, -r), center=(2.0, 0.0), radius=r, start_angle=-math.pi / 2,
                end_angle=math.pi / 2, reference_vector=(1.0, 0.0), normal_z=1.0)
    top = Line((0.0, r), (2.0, r))  # reversed relative to the chain
    # Left cap clockwise (normal_z=-1), from (0,-0.5) through (-0.5,0) to (0,0.5): reversed relative to the chain.
    left = Arc(start=(0.0, -r), end=(0.0, r), center=(0.0, 0.0), radius=r, start_angle=-math.pi / 2,
               end_angle=math.pi / 2, reference_vector=(-1.0, 0.0), normal_z=-1.0)
    return Loop((bottom, right, top, left), True)


def test_arc_point_at_conventions_used_by_slot():
    lp = slot_loop()
    left = lp.curves[3]
    np.testing.assert_allclose(left.mid_point(), (-0.5, 0.0), atol=1e-12)
    np.testing.assert_allclose(left.point_at(left.start_angle), left.start, atol=1e-12)


def test_slot_with_arcs_area():
    ring = loop_ring(slot_loop())
    assert not np.allclose(ring[0], ring[-1])  # closing point not repeated
    poly = profile_polygon(Profile((slot_loop(),)))
    assert isinstance(poly, Polygon) and poly.is_valid
    assert poly.exterior.is_ccw
    analytic = 2.0 * 1.0 + math.pi * 0.25
    assert poly.area == pytest.approx(analytic, rel=2e-3)
    minx, miny, maxx, maxy = poly.bounds
    assert (minx, maxx) == pytest.approx((-0.5, 2.5), abs=1e-9)
    assert (miny, maxy) == pytest.approx((-0.5, 0.5), abs=1e-9)
    mesh = build_mesh(seq(ext([slot_loop()], e1=2.0)))
    assert_solid(mesh)
    assert mesh.volume == pytest.approx(2 * analytic, rel=2e-3)


def test_loop_ring_chains_shuffled_reversed_lines():
    a, b, c, d = (0, 0), (2, 0), (2, 1), (0, 1)
    lp = Loop((Line(a, b), Line(c, d), Line(c, b), Line(a, d)), True)  # out of order, two reversed
    ring = loop_ring(lp)
    assert len(ring) == 4
    assert Polygon(ring).area == pytest.approx(2.0)


def test_open_loop_is_mesh_failed():
    lp = Loop((Line((0, 0), (1, 0)), Line((1, 0), (1, 1)), Line((1, 1), (0, 0.5))), True)
    with pytest.raises(QuarantineError) as info:
        loop_ring(lp)
    assert info.value.reason == "mesh_failed"


def test_self_intersecting_loop_is_not_hidden():
    bowtie = Loop((Line((0, 0), (1, 1)), Line((1, 1), (1, 0)), Line((1, 0), (0, 1)), Line((0, 1), (0, 0))), True)
    with pytest.raises(QuarantineError) as info:
        build_mesh(seq(ext([bowtie])))
    assert info.value.reason == "mesh_failed"
    assert "extrude 0" in info.value.detail


def test_clockwise_outer_and_ccw_hole_are_oriented():
    outer = Loop(tuple(reversed(rect_loop(0, 0, 4, 4).curves)), True)
    hole = rect_loop(1, 1, 2, 2, is_outer=False)
    poly = profile_polygon(Profile((outer, hole)))
    assert poly.exterior.is_ccw and not poly.interiors[0].is_ccw
    assert poly.area == pytest.approx(15.0)


# --- placement in 3D -------------------------------------------------------------------------------------------

def test_sketch_on_yz_plane_extrudes_along_x():
    plane = SketchPlane((0.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (1.0, 0.0, 0.0))
    mesh = build_mesh(seq(ext([rect_loop(0, 0, 2, 1)], e1=0.5, plane=plane)))
    assert_solid(mesh)
    assert mesh.volume == pytest.approx(1.0, abs=1e-6)
    lo, hi = mesh_bounds(mesh)
    np.testing.assert_allclose(lo, [0, 0, 0], atol=1e-12)
    np.testing.assert_allclose(hi, [0.5, 2, 1], atol=1e-12)


def test_left_handed_frame_still_gives_positive_volume():
    plane = SketchPlane((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (-1.0, 0.0, 0.0))
    mesh = build_mesh(seq(ext([rect_loop(0, 0, 2, 1)], e1=0.5, plane=plane)))
    assert_solid(mesh)
    assert mesh.volume == pytest.approx(1.0, abs=1e-6)
    lo, hi = mesh_bounds(mesh)
    np.testing.assert_allclose(lo, [0.5, 0, 0], atol=1e-12)
    np.testing.assert_allclose(hi, [1.0, 2, 1], atol=1e-12)


# --- failures --------------------------------------------------------------------------------------------------

def test_cut_removing_everything_is_mesh_failed():
    with pytest.raises(QuarantineError) as info:
        build_mesh(seq(box(0, 0, 1, 1, 0, 1), box(-1, -1, 2, 2, -1, 2, "cut", name="big_cut")))
    assert info.value.reason == "mesh_failed"
    assert "extrude 1" in info.value.detail and "big_cut" in info.value.detail


@pytest.mark.parametrize("op", ["cut", "intersect"])
def test_first_extrude_cut_or_intersect_is_mesh_failed(op):
    with pytest.raises(QuarantineError) as info:
        build_mesh(seq(box(0, 0, 1, 1, 0, 1, op)))
    assert info.value.reason == "mesh_failed"
    assert "extrude 0" in info.value.detail


def test_zero_extent_is_mesh_failed():
    with pytest.raises(QuarantineError) as info:
        build_mesh(seq(ext([rect_loop(0, 0, 1, 1)], e1=0.0)))
    assert info.value.reason == "mesh_failed"


# --- a realistic multi-step part ---------------------------------------------------------------------------------

def five_step_part():
    plate = ext([Profile((rect_loop(-3, -2, 3, 2), circle_loop(-2, 0, 0.4, False), circle_loop(2, 0, 0.4, False)))],
                e1=0.5, name="plate")
    top = SketchPlane((0.0, 0.0, 0.5), XY.x_axis, XY.y_axis, XY.normal)
    boss = ext([circle_loop(0, 0, 1.2)], "join", e1=1.5, plane=top, name="boss")
    bore = ext([circle_loop(0, 0, 0.6)], "cut", "symmetric", 5.0, plane=top, name="bore")
    side = SketchPlane((0.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (1.0, 0.0, 0.0))
    slot = ext([slot_loop()], "cut", "symmetric", 0.25, plane=SketchPlane((0.0, -1.0, 1.0), (0.0, 1.0, 0.0),
                                                                               (0.0, 0.0, 1.0), (1.0, 0.0, 0.0)),
               name="slot")
    trim = ext([rect_loop(-2.5, -0.5, 2.5, 3.0)], "intersect", "two_sides", 2.8, 2.5, plane=side, name="trim")
    return seq(plate, boss, bore, slot, trim)


def test_five_step_part_is_a_fast_solid():
    import time

    part = five_step_part()
    build_mesh(part)  # warm-up (imports, first-call allocations)
    t0 = time.perf_counter()
    mesh = build_mesh(part)
    elapsed = time.perf_counter() - t0
    assert_solid(mesh)
    lo, hi = mesh_bounds(mesh)
    np.testing.assert_allclose(lo, [-2.5, -2, 0], atol=1e-9)  # the intersect trimmed x to [-2.5, 2.8]
    np.testing.assert_allclose(hi, [2.8, 2, 2], atol=1e-9)
    assert elapsed < 0.5  # loose bound for slow CI; typically a few tens of milliseconds


def test_arc_with_inconsistent_angles_falls_back_to_endpoints():
    # Reference vector points the wrong way: the angles describe the opposite half circle.
    bad = Arc(start=(1.0, 0.0), end=(-1.0, 0.0), center=(0.0, 0.0), radius=1.0, start_angle=0.0,
              end_angle=math.pi, reference_vector=(0.0, 1.0), normal_z=1.0)
    lp = Loop((Line((-1.0, 0.0), (1.0, 0.0)), bad), True)
    poly = profile_polygon(Profile((lp,)))
    assert poly.area == pytest.approx(math.pi / 2, rel=2e-3)


def test_hole_touching_outer_edge_gives_a_notch():
    # Legal in a sketch, invalid as a shapely polygon: built as outer minus hole, without buffer(0).
    profile = Profile((rect_loop(0, 0, 4, 4), rect_loop(0, 1, 1, 2, is_outer=False)))
    assert profile_polygon(profile).area == pytest.approx(15.0)
    mesh = build_mesh(seq(ext([profile], e1=1.0)))
    assert_solid(mesh)
    assert mesh.volume == pytest.approx(15.0, abs=1e-6)


def test_half_circles_from_4_decimal_text_keep_their_stored_turning():
    # a synthetic slot (slotted_plate) written at 4 decimals: the rounded centres miss the end points by more than
    # 1e-3 r, so its ends are drawn from the end points, where both turnings sweep ~pi; the stored
    # (counter-clockwise) turning must win, or an end bulges into the slot
    arc = dict(radius=0.0559, start_angle=0.0, end_angle=3.1416, normal_z=1.0)
    curves = (Line(start=(-0.5874, -0.3416), end=(-0.2903, -0.17)),
              Arc(start=(-0.2903, -0.17), end=(-0.3461, -0.0733), center=(-0.3182, -0.1217),
                  reference_vector=(0.5, -0.866), **arc),
              Line(start=(-0.3461, -0.0733), end=(-0.6432, -0.2448)),
              Arc(start=(-0.6432, -0.2448), end=(-0.5874, -0.3416), center=(-0.6153, -0.2932),
                  reference_vector=(-0.5, 0.866), **arc))
    r, length = 0.0559, math.hypot(0.5874 - 0.2903, 0.3416 - 0.17)
    assert Polygon(loop_ring(Loop(curves=curves, is_outer=True))).area == pytest.approx(
        2 * r * length + math.pi * r * r, rel=0.01)
