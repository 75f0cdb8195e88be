"""Triangle meshes of DeepCAD construction sequences: sketch loops -> polygons -> prisms -> booleans.

Each extrude's profiles are polygonised in the sketch plane's local frame (shapely), extruded by manifold3d
(``Manifold.extrude`` of a ``CrossSection``), placed in 3D through the plane, and combined with the body so far
by manifold3d (exact, robust booleans that always return a manifold); trimesh holds the final mesh. Anything
that does not give a watertight solid of positive volume raises ``QuarantineError("mesh_failed", ...)`` naming
the extrude step.
"""
from __future__ import annotations

import math

import manifold3d
import numpy as np
import shapely
import trimesh
from shapely.geometry import LinearRing, MultiPolygon, Polygon
from shapely.geometry.polygon import orient

from lib.deepcad.schema import Arc, CADSequence, Circle, Extrude, Line, Loop, Profile
from lib.quarantine import QuarantineError

# Curves are chained when endpoints agree to this fraction of the loop's size. Fusion writes shared sketch
# points, so real gaps are float noise; anything larger is a genuinely open loop.
CHAIN_REL_TOL = 1e-5
CHAIN_ABS_TOL = 1e-12


def _arc_points(arc: Arc, segments_per_circle: int) -> np.ndarray:
    """Sample ``arc`` so the samples run from ``arc.start`` to ``arc.end`` (endpoints exact)."""
    start, end = np.asarray(arc.start, float), np.asarray(arc.end, float)
    sweep = float(arc.end_angle) - float(arc.start_angle)
    n = max(2, math.ceil(abs(sweep) / (2 * math.pi) * segments_per_circle))
    angles = np.linspace(float(arc.start_angle), float(arc.end_angle), n + 1)
    pts = np.column_stack(arc.point_at(angles))  # point_at broadcasts over an angle array
    fwd = np.linalg.norm(pts[0] - start) + np.linalg.norm(pts[-1] - end)
    rev = np.linalg.norm(pts[0] - end) + np.linalg.norm(pts[-1] - start)
    if rev < fwd:
        # The angles describe the arc from end to start (curve stored reversed relative to its angles).
        pts = pts[::-1].copy()
    if min(fwd, rev) > 1e-3 * max(abs(float(arc.radius)), 1e-12) + CHAIN_ABS_TOL:
        # Angles and endpoints disagree: trust the endpoints and centre, keep the stored sweep's size. The stored
        # turning (counter-clockwise when > 0) breaks a tie such as a half circle whose 4-decimal text misses.
        turn = math.copysign(1.0, float(arc.normal_z) * sweep) * (1.0 if fwd <= rev else -1.0)
        pts = _arc_from_endpoints(arc, abs(sweep), segments_per_circle, turn)
    # Pin the ends to the stored points so chaining and closure are exact, not float-noisy.
    pts[0], pts[-1] = start, end
    return pts


def _arc_from_endpoints(arc: Arc, sweep_abs: float, segments_per_circle: int, turn: float = 1.0) -> np.ndarray:
    """Fallback arc from start to end around the centre, turning the way whose sweep best matches ``sweep_abs``
    (``turn``'s way, counter-clockwise when > 0, when both match to 0.05 rad)."""
    c = np.asarray(arc.center, float)
    a0 = math.atan2(arc.start[1] - c[1], arc.start[0] - c[0])
    a1 = math.atan2(arc.end[1] - c[1], arc.end[0] - c[0])
    ccw = (a1 - a0) % (2 * math.pi)
    if ccw == 0.0:
        ccw = 2 * math.pi
    cw = ccw - 2 * math.pi
    err_ccw, err_cw = abs(ccw - sweep_abs), abs(abs(cw) - sweep_abs)
    delta = (ccw if turn > 0 else cw) if abs(err_ccw - err_cw) < 0.05 else ccw if err_ccw <= err_cw else cw
    n = max(2, math.ceil(abs(delta) / (2 * math.pi) * segments_per_circle))
    ang = a0 + np.linspace(0.0, delta, n + 1)
    r = float(np.hypot(arc.start[0] - c[0], arc.start[1] - c[1]))
    return np.column_stack([c[0] + r * np.cos(ang), c[1] + r * np.sin(ang)])


def _curve_points(curve, segments_per_circle: int) -> np.ndarray:
    """Points along one open curve from its ``start`` to its ``end``."""
    if isinstance(curve, Line):
        return np.array([curve.start, curve.end], dtype=float)
    if isinstance(curve, Arc):
        return _arc_points(curve, segments_per_circle)
    raise QuarantineError("mesh_failed", f"unexpected curve {type(curve).__name__} in a chained loop")


def loop_ring(loop: Loop, segments_per_circle: int = 64) -> np.ndarray:
    """Return the loop as a closed ring ``[N, 2]`` of local 2D points in chain order.

    The first point is not repeated at the end. Curves are chained by matching endpoints, so curves stored
    reversed relative to their neighbours are flipped; arcs are sampled in proportion to their sweep
    (``segments_per_circle`` per full turn), a lone circle with ``segments_per_circle`` points.
    Raises ``QuarantineError("mesh_failed")`` when the curves do not chain into one closed loop.
    """
    curves = list(loop.curves)
    if not curves:
        raise QuarantineError("mesh_failed", "empty loop")
    if any(isinstance(c, Circle) for c in curves):
        if len(curves) != 1:
            raise QuarantineError("mesh_failed", "a circle shares a loop with other curves")
        c = curves[0]
        t = np.linspace(0.0, 2 * math.pi, segments_per_circle, endpoint=False)
        return np.column_stack([c.center[0] + c.radius * np.cos(t), c.center[1] + c.radius * np.sin(t)])

    pieces = [_curve_points(c, segments_per_circle) for c in curves]
    ends = np.array([[p[0], p[-1]] for p in pieces])  # [K, 2 (start/end), 2]
    scale = float(np.ptp(ends.reshape(-1, 2), axis=0).max()) if len(pieces) > 1 else 0.0
    tol = CHAIN_REL_TOL * scale + CHAIN_ABS_TOL

    chain = [pieces[0]]
    head, tail = pieces[0][0], pieces[0][-1]
    remaining = list(range(1, len(pieces)))
    while remaining:
        # Greedy: the remaining curve with an endpoint nearest the current tail comes next.
        d_start = np.linalg.norm(ends[remaining, 0] - tail, axis=1)
        d_end = np.linalg.norm(ends[remaining, 1] - tail, axis=1)
        j = int(np.argmin(np.minimum(d_start, d_end)))
        gap = min(d_start[j], d_end[j])
        if gap > tol:
            raise QuarantineError("mesh_failed", f"open loop: gap {gap:.3g} between chained curves (tol {tol:.3g})")
        piece = pieces[remaining.pop(j)]
        if d_end[j] < d_start[j]:
            piece = piece[::-1]  # stored end-to-start relative to the chain
        chain.append(piece[1:])
        tail = piece[-1]
    gap = float(np.linalg.norm(tail - head))
    if gap > tol:
        raise QuarantineError("mesh_failed", f"open loop: chain ends {gap:.3g} from its start (tol {tol:.3g})")

    ring = np.concatenate(chain, axis=0)[:-1]  # last point is the head again
    # Drop repeated points (zero-length lines, coincident joints); they make degenerate triangles.
    keep = np.ones(len(ring), dtype=bool)
    keep[1:] = np.linalg.norm(np.diff(ring, axis=0), axis=1) > tol
    ring = ring[keep]
    if len(ring) > 1 and np.linalg.norm(ring[-1] - ring[0]) <= tol:
        ring = ring[:-1]
    return ring


def profile_polygon(profile: Profile, segments_per_circle: int = 64) -> Polygon | MultiPolygon:
    """Return the profile's region as a shapely polygon in local 2D: outer ring CCW, holes CW.

    Normally a ``Polygon``; a ``MultiPolygon`` only when holes touch the outer ring or each other along an
    edge and so split the region (legal in a sketch, invalid as a shapely polygon). The outer loop is the
    one flagged ``is_outer``, or the largest if the flags don't single one out. Raises
    ``QuarantineError("mesh_failed")`` for a loop that crosses itself or has no area: that is real bad
    geometry and is never smoothed over with ``buffer(0)``.
    """
    if not profile.loops:
        raise QuarantineError("mesh_failed", "profile has no loops")
    rings = [loop_ring(lp, segments_per_circle) for lp in profile.loops]
    for ring in rings:
        if len(ring) < 3:
            raise QuarantineError("mesh_failed", f"loop has {len(ring)} distinct points")
        if not LinearRing(ring).is_simple:
            raise QuarantineError("mesh_failed", "self-intersecting loop")
    areas = [abs(Polygon(r).area) for r in rings]
    flagged = [i for i, lp in enumerate(profile.loops) if lp.is_outer]
    outer = flagged[0] if len(flagged) == 1 else int(np.argmax(areas))
    if areas[outer] <= 0.0:
        raise QuarantineError("mesh_failed", "outer loop has zero area")
    holes = [r for i, r in enumerate(rings) if i != outer]

    poly = Polygon(rings[outer], holes)
    if poly.is_valid:
        return orient(poly, sign=1.0)  # orientation alone never needs buffer(0)
    # Each ring is simple, so invalidity comes from how holes sit (touching the boundary along an edge,
    # overlapping each other): the region is still well defined as outer minus the holes.
    region = Polygon(rings[outer]).difference(shapely.union_all([Polygon(h) for h in holes]))
    region = _polygonal(region)
    if region.is_empty or region.area <= 0.0:
        raise QuarantineError("mesh_failed", "holes cover the whole profile")
    if isinstance(region, Polygon):
        return orient(region, 1.0)
    return MultiPolygon([orient(p, 1.0) for p in region.geoms])


def _polygonal(geom) -> Polygon | MultiPolygon:
    """Keep only the areal parts of a shapely result (booleans can return stray lines/points)."""
    if isinstance(geom, (Polygon, MultiPolygon)):
        return geom
    polys = [g for g in getattr(geom, "geoms", []) if isinstance(g, Polygon) and g.area > 0]
    return MultiPolygon(polys) if polys else Polygon()


def _z_range(extrude: Extrude) -> tuple[float, float]:
    """Local z interval swept by the extrude.

    As in DeepCAD's cadlib, the solid is the union of prisms that each start at the sketch plane: side one
    to ``extent_one``, and (symmetric) to ``-extent_one`` or (two_sides) to ``-extent_two``. Every piece
    contains z=0, so the union is one interval.
    """
    e1, e2 = float(extrude.extent_one), float(extrude.extent_two)
    ends = [0.0, e1]
    if extrude.extent_type == "symmetric":
        ends.append(-e1)
    elif extrude.extent_type == "two_sides":
        ends.append(-e2)
    elif extrude.extent_type != "one_side":
        raise QuarantineError("mesh_failed", f"unknown extent_type {extrude.extent_type!r}")
    if not all(math.isfinite(v) for v in ends):
        raise QuarantineError("mesh_failed", "non-finite extent")
    return min(ends), max(ends)


def _extrude_manifold(extrude: Extrude, segments_per_circle: int) -> manifold3d.Manifold:
    """The extrude's solid as a manifold3d object: the profiles' region (united in 2D by shapely, which also
    vets each loop) extruded by manifold3d itself, then placed on the sketch plane."""
    z0, z1 = _z_range(extrude)
    height = z1 - z0
    if not height > 0.0:
        raise QuarantineError("mesh_failed", "zero extrude height")
    if not extrude.profiles:
        raise QuarantineError("mesh_failed", "extrude has no profiles")
    # Uniting in 2D first merges adjacent profiles (regions of one sketch sharing edges) before extrusion,
    # which is cheaper and cleaner than 3D unions of prisms with coincident faces.
    region = _polygonal(shapely.union_all([profile_polygon(p, segments_per_circle) for p in extrude.profiles]))
    polys = [region] if isinstance(region, Polygon) else list(region.geoms)
    polys = [p for p in polys if not p.is_empty and p.area > 0.0]
    if not polys:
        raise QuarantineError("mesh_failed", "profiles have no area")
    contours = []  # outer rings counter-clockwise, holes clockwise: the positive fill rule keeps the region
    for poly in polys:
        poly = orient(poly, 1.0)
        contours.append(np.asarray(poly.exterior.coords)[:-1])
        contours.extend(np.asarray(ring.coords)[:-1] for ring in poly.interiors)
    # manifold3d's own extrusion: ~4 ms a model less than trimesh's extrude_polygon + merge_vertices + a Mesh64
    # round trip (10 -> 6.3 ms a model's whole build); on the 120 default models the solids' volumes matched the
    # old path's to 1e-7 and the same models were quarantined (measured when it changed)
    prism = manifold3d.Manifold.extrude(manifold3d.CrossSection(contours, manifold3d.FillRule.Positive), height)
    pl = extrude.plane
    frame = np.array([pl.x_axis, pl.y_axis, pl.normal], dtype=float)  # rows: local x, y, z in global
    origin = np.asarray(pl.origin, dtype=float)
    # a left-handed frame mirrors the prism; manifold3d reverses the winding of a mirroring transform itself
    solid = prism.translate((0.0, 0.0, z0)).transform(np.hstack([frame.T, origin[:, None]]))
    if solid.status() != manifold3d.Error.NoError:
        raise QuarantineError("mesh_failed", f"prism is not a manifold ({solid.status().name})")
    return solid


def _to_trimesh(m: manifold3d.Manifold) -> trimesh.Trimesh:
    """trimesh of a manifold3d solid with its shared vertices, winding outward (positive volume)."""
    out = m.to_mesh64()
    verts = np.asarray(out.vert_properties, dtype=float)[:, :3]
    faces = np.asarray(out.tri_verts, dtype=np.int64)
    # manifold3d already shares vertices; trimesh's merge-by-position would collapse float-noise slivers
    # (a sketch one ulp off a face) into non-manifold edges, so keep its topology as is.
    mesh = trimesh.Trimesh(vertices=verts, faces=faces, process=False)
    if mesh.volume < 0:
        mesh.invert()
    return mesh


def extrude_solid(extrude: Extrude, segments_per_circle: int = 64) -> trimesh.Trimesh:
    """Return the solid swept by one extrude, in global coordinates, as a watertight ``trimesh.Trimesh``.

    Profiles are extruded along ``plane.normal`` over the extent (see :func:`_z_range`) and united.
    Raises ``QuarantineError("mesh_failed")`` if the sketch or extent gives no valid solid.
    """
    return _to_trimesh(_extrude_manifold(extrude, segments_per_circle))


def build_mesh(seq: CADSequence, segments_per_circle: int = 64) -> trimesh.Trimesh:
    """Return the model's final solid as a watertight ``trimesh.Trimesh`` with positive volume.

    Extrudes apply in order to the body so far: new_body/join unite, cut subtracts, intersect keeps the
    common part. Raises ``QuarantineError("mesh_failed", detail)`` naming the failing extrude step when a
    sketch cannot be meshed, the sequence starts with a cut/intersect, a step leaves the body empty, or
    the result is not a watertight solid of positive volume.
    """
    if not seq.extrudes:
        raise QuarantineError("mesh_failed", "sequence has no extrudes")
    body: manifold3d.Manifold | None = None
    for i, ext in enumerate(seq.extrudes):
        step = f"extrude {i} ({ext.name!r}, {ext.operation})"
        try:
            solid = _extrude_manifold(ext, segments_per_circle)
        except QuarantineError as err:
            raise QuarantineError("mesh_failed", f"{step}: {err.detail}") from err
        except Exception as err:  # triangulation or geometry library errors on odd input
            raise QuarantineError("mesh_failed", f"{step}: {type(err).__name__}: {err}") from err
        op = ext.operation
        if body is None:
            if op in ("cut", "intersect"):
                raise QuarantineError("mesh_failed", f"{step}: {op} with no body before it")
            body = solid
        elif op in ("new_body", "join"):
            body = body + solid
        elif op == "cut":
            body = body - solid
        elif op == "intersect":
            body = body ^ solid
        else:
            raise QuarantineError("mesh_failed", f"{step}: unknown operation {op!r}")
        if body.status() != manifold3d.Error.NoError:
            raise QuarantineError("mesh_failed", f"{step}: boolean failed ({body.status().name})")
        # An empty body mid-sequence means the model's earlier work was all removed: a broken model even
        # if a later extrude adds material, so stop here and say which step did it.
        if body.is_empty() or body.volume() <= 0.0:
            raise QuarantineError("mesh_failed", f"{step}: body is empty after the {op}")

    mesh = _to_trimesh(body)
    if not mesh.is_watertight:
        raise QuarantineError("mesh_failed", f"final mesh is not watertight ({len(mesh.faces)} faces)")
    if not mesh.volume > 0.0:
        raise QuarantineError("mesh_failed", f"final mesh has non-positive volume {mesh.volume:.3g}")
    return mesh


def mesh_bounds(mesh: trimesh.Trimesh) -> tuple[np.ndarray, np.ndarray]:
    """Return the mesh's axis-aligned bounds as (min xyz, max xyz), each a float array of 3."""
    b = np.asarray(mesh.bounds, dtype=float)
    return b[0].copy(), b[1].copy()
