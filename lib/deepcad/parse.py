"""Read DeepCAD JSON (Fusion 360 export) into a typed :class:`~lib.deepcad.schema.CADSequence`.

Every way a model can be malformed maps to one :data:`lib.quarantine.REASONS` code, raised as
``QuarantineError(reason, detail)``; ``missing_field`` details name the JSON path (``entities.<id>.extent_one...``).

Only ``ExtrudeFeature`` items of ``sequence`` become extrudes; sketches are read through the extrudes that
reference them, and only the referenced profiles are validated. Profiles of one extrude that lie on different
sketch planes are split into consecutive extrudes (as DeepCAD's reader does); when the first is ``new_body``
the later ones become ``join``.

Loops: curves are stored in loop order, but each curve may be stored reversed (its start point touching the
previous curve's start, not end), as the real data does. :func:`polygonize_loop` walks a loop in order and
returns its ring; :func:`loop_gaps` measures how far its curves are from touching.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from shapely.geometry import LinearRing, Polygon

from lib.deepcad.schema import (
    CURVE_TYPES,
    EXTENT_TYPES,
    OPERATIONS,
    Arc,
    CADSequence,
    Circle,
    Curve,
    Extrude,
    Line,
    Loop,
    Profile,
    SketchPlane,
)
from lib.quarantine import QuarantineError

# a loop is closed when every joint gap is at most CLOSE_TOL times the loop's bounding-box diagonal
CLOSE_TOL = 1e-3
TWO_PI = 2.0 * math.pi


# --------------------------------------------------------------------------------------------------------------
# loop geometry


def _endpoints(c: Curve) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(c, Circle):
        p = np.array([c.center[0] + c.radius, c.center[1]])
        return p, p
    return np.asarray(c.start, dtype=float), np.asarray(c.end, dtype=float)


def _orient(curves: tuple[Curve, ...]) -> tuple[list[bool], list[float]]:
    """Walk ``curves`` in order; return per-curve ``reversed`` flags and the joint gaps (last one closes)."""
    n = len(curves)
    ends = [_endpoints(c) for c in curves]
    if n == 1:
        s, e = ends[0]
        return [False], [float(np.linalg.norm(e - s))]
    # first curve: the orientation whose end lies nearest to either end of the second curve
    s0, e0 = ends[0]
    s1, e1 = ends[1]
    d_fwd = min(np.linalg.norm(e0 - s1), np.linalg.norm(e0 - e1))
    d_rev = min(np.linalg.norm(s0 - s1), np.linalg.norm(s0 - e1))
    flags = [bool(d_rev < d_fwd)]
    first = e0 if flags[0] else s0
    cur = s0 if flags[0] else e0
    gaps = []
    for i in range(1, n):
        s, e = ends[i]
        ds, de = float(np.linalg.norm(cur - s)), float(np.linalg.norm(cur - e))
        rev = de < ds
        flags.append(rev)
        gaps.append(min(ds, de))
        cur = s if rev else e
    gaps.append(float(np.linalg.norm(cur - first)))
    return flags, gaps


def loop_size(loop: Loop) -> float:
    """Return the diagonal of the loop's bounding box (endpoints, arc centres ± radius, circles)."""
    pts = []
    for c in loop.curves:
        if isinstance(c, Line):
            pts += [c.start, c.end]
        else:
            r = c.radius
            pts += [(c.center[0] - r, c.center[1] - r), (c.center[0] + r, c.center[1] + r)]
            if isinstance(c, Arc):
                pts += [c.start, c.end]
    a = np.asarray(pts, dtype=float)
    return float(np.linalg.norm(a.max(axis=0) - a.min(axis=0)))


def loop_gaps(loop: Loop) -> list[float]:
    """Return the distances between consecutive curves' touching ends (last entry: last curve to first).

    Each curve may be stored reversed. A loop of one Circle gives ``[0.0]``.
    """
    return _orient(loop.curves)[1]


def _arc_sweep(arc: Arc) -> tuple[float, float]:
    """Return (start angle about the centre, signed sweep) of ``arc`` going from ``arc.start`` to ``arc.end``.

    The side is chosen by the sweep magnitude ``|end_angle - start_angle|`` (independent of the reference-vector
    and normal conventions); for a half circle, where both sides sweep pi, by the arc's mid point.
    """
    cx, cy = arc.center
    t0 = math.atan2(arc.start[1] - cy, arc.start[0] - cx)
    t1 = math.atan2(arc.end[1] - cy, arc.end[0] - cx)
    mag = abs(arc.end_angle - arc.start_angle)
    chord = math.hypot(arc.end[0] - arc.start[0], arc.end[1] - arc.start[1])
    if chord <= 1e-9 * max(arc.radius, 1e-300):  # start == end: full turn or nothing
        sign = 1.0 if arc.normal_z >= 0 else -1.0
        return t0, (sign * TWO_PI if mag > math.pi else 0.0)
    ccw = (t1 - t0) % TWO_PI
    cw = ccw - TWO_PI  # negative
    if abs(abs(ccw - mag) - abs(-cw - mag)) > 1e-3:
        return t0, (ccw if abs(ccw - mag) < abs(-cw - mag) else cw)
    mx, my = arc.mid_point()
    r = arc.radius
    best = None
    for sweep in (ccw, cw):
        t = t0 + sweep / 2
        d = math.hypot(cx + r * math.cos(t) - mx, cy + r * math.sin(t) - my)
        if best is None or d < best[0]:
            best = (d, sweep)
    return t0, best[1]


def _sample_curve(c: Curve, segments_per_circle: int) -> np.ndarray:
    """Return points along ``c`` from its stored start to its stored end, both included."""
    if isinstance(c, Line):
        return np.array([c.start, c.end], dtype=float)
    if isinstance(c, Circle):
        t = np.linspace(0.0, TWO_PI, segments_per_circle + 1)
        return np.stack([c.center[0] + c.radius * np.cos(t), c.center[1] + c.radius * np.sin(t)], axis=1)
    t0, sweep = _arc_sweep(c)
    k = max(1, int(math.ceil(segments_per_circle * abs(sweep) / TWO_PI - 1e-9)))
    t = t0 + np.linspace(0.0, sweep, k + 1)
    pts = np.stack([c.center[0] + c.radius * np.cos(t), c.center[1] + c.radius * np.sin(t)], axis=1)
    pts[0] = c.start
    if abs(sweep) < TWO_PI:
        pts[-1] = c.end
    else:
        pts[-1] = c.start
    return pts


def polygonize_loop(loop: Loop, segments_per_circle: int = 64) -> np.ndarray:
    """Return the loop as a closed polygon ring ``[N, 2]`` (float), in loop order, last point not repeated.

    Curves are walked in their stored order; a curve stored reversed (its start touching the previous
    curve's start) is traversed backwards. Arcs are sampled with ``segments_per_circle`` segments per full
    turn (at least one), in the direction given by their sweep, whichever way they are stored (``normal_z``
    +1 or -1). A lone Circle gives ``segments_per_circle`` points counter-clockwise. The ring's orientation
    is the loop's own (not forced CCW); consecutive duplicate points are removed. Does not check closure:
    see :func:`loop_gaps`. Raises ValueError for a Circle inside a multi-curve loop or an empty loop.
    """
    curves = loop.curves
    if not curves:
        raise ValueError("empty loop")
    if len(curves) > 1 and any(isinstance(c, Circle) for c in curves):
        raise ValueError("a Circle can only form a loop on its own")
    flags, _ = _orient(curves)
    parts = []
    for c, rev in zip(curves, flags, strict=False):
        pts = _sample_curve(c, segments_per_circle)
        if rev:
            pts = pts[::-1]
        parts.append(pts[:-1])
    ring = np.concatenate(parts, axis=0)
    if len(ring) > 1:  # drop consecutive duplicates (including last == first)
        scale = max(float(np.ptp(ring, axis=0).max()), 1e-300)
        nxt = np.roll(ring, -1, axis=0)
        keep = np.linalg.norm(ring - nxt, axis=1) > 1e-12 * scale
        if keep.any():
            ring = ring[keep]
    return ring


def check_loop(loop: Loop, close_tol: float = CLOSE_TOL, where: str = "loop") -> None:
    """Raise QuarantineError ``open_loop`` or ``self_intersecting_loop`` if ``loop`` is not a simple closed ring.

    Returns None when the loop is fine.
    """
    curves = loop.curves
    if len(curves) > 1 and any(isinstance(c, Circle) for c in curves):
        raise QuarantineError("open_loop", f"{where}: a Circle among {len(curves)} curves")
    size = loop_size(loop)
    tol = close_tol * size
    gaps = loop_gaps(loop)
    if len(curves) == 1 and isinstance(curves[0], Line):
        raise QuarantineError("open_loop", f"{where}: a single line")
    worst = int(np.argmax(gaps))
    if gaps[worst] > tol:
        raise QuarantineError("open_loop", f"{where}: gap {gaps[worst]:.3g} after curve {worst} "
                                           f"(tolerance {tol:.3g} = {close_tol:g} x loop size {size:.3g})")
    ring = polygonize_loop(loop)
    if len(ring) < 3:
        raise QuarantineError("self_intersecting_loop", f"{where}: degenerate ring of {len(ring)} points")
    try:
        simple = LinearRing(ring).is_simple and Polygon(ring).is_valid and Polygon(ring).area > 0
    except Exception as exc:  # noqa: BLE001 - shapely/GEOS errors on degenerate input
        raise QuarantineError("self_intersecting_loop", f"{where}: {exc}") from exc
    if not simple:
        raise QuarantineError("self_intersecting_loop", f"{where}: polygonised ring ({len(ring)} points) is not simple")


# --------------------------------------------------------------------------------------------------------------
# JSON access helpers: absent or ill-typed -> missing_field naming the path


def _missing(path: str, why: str) -> QuarantineError:
    return QuarantineError("missing_field", f"{path}: {why}")


def _field(obj: Any, key: str, path: str, typ: type | tuple[type, ...], what: str) -> Any:
    if not isinstance(obj, dict):
        raise _missing(path, f"expected an object, got {type(obj).__name__}")
    if key not in obj:
        raise _missing(f"{path}.{key}", "absent")
    v = obj[key]
    if not isinstance(v, typ) or (isinstance(v, bool) and bool not in (typ if isinstance(typ, tuple) else (typ,))):
        raise _missing(f"{path}.{key}", f"expected {what}, got {type(v).__name__}")
    return v


def _number(obj: Any, key: str, path: str, finite: bool = True) -> float:
    v = float(_field(obj, key, path, (int, float), "a number"))
    if finite and not math.isfinite(v):
        raise _missing(f"{path}.{key}", f"not a finite number ({v})")
    return v


def _vec3(obj: Any, key: str, path: str) -> tuple[float, float, float]:
    p = _field(obj, key, path, dict, "an {x,y,z} object")
    sub = f"{path}.{key}"
    return (_number(p, "x", sub), _number(p, "y", sub), _number(p, "z", sub))


def _vec2(obj: Any, key: str, path: str) -> tuple[float, float]:
    p = _field(obj, key, path, dict, "an {x,y,z} object")
    sub = f"{path}.{key}"
    return (_number(p, "x", sub), _number(p, "y", sub))


# --------------------------------------------------------------------------------------------------------------
# entities


def _parse_curve(d: Any, path: str) -> Curve:
    ctype = _field(d, "type", path, str, "a string")
    if ctype not in CURVE_TYPES:
        raise QuarantineError("unknown_curve", f"{path}.type = {ctype!r}")
    if ctype == "Line3D":
        return Line(start=_vec2(d, "start_point", path), end=_vec2(d, "end_point", path))
    center = _vec2(d, "center_point", path)
    radius = _number(d, "radius", path)
    if radius <= 0:
        raise _missing(f"{path}.radius", f"must be positive, got {radius}")
    if ctype == "Circle3D":
        return Circle(center=center, radius=radius)
    nz = _vec3(d, "normal", path)[2]
    if abs(nz) < 0.5:
        raise _missing(f"{path}.normal", f"not along the sketch normal (z = {nz})")
    return Arc(start=_vec2(d, "start_point", path), end=_vec2(d, "end_point", path), center=center, radius=radius,
               start_angle=_number(d, "start_angle", path), end_angle=_number(d, "end_angle", path),
               reference_vector=_vec2(d, "reference_vector", path), normal_z=1.0 if nz > 0 else -1.0)


def _parse_profile(d: Any, path: str, close_tol: float) -> Profile:
    loops_raw = _field(d, "loops", path, list, "a list")
    if not loops_raw:
        raise _missing(f"{path}.loops", "empty list")
    loops = []
    for i, lr in enumerate(loops_raw):
        lp = f"{path}.loops[{i}]"
        is_outer = _field(lr, "is_outer", lp, bool, "a boolean")
        curves_raw = _field(lr, "profile_curves", lp, list, "a list")
        if not curves_raw:
            raise _missing(f"{lp}.profile_curves", "empty list")
        curves = tuple(_parse_curve(c, f"{lp}.profile_curves[{j}]") for j, c in enumerate(curves_raw))
        loop = Loop(curves=curves, is_outer=is_outer)
        check_loop(loop, close_tol, where=lp)
        loops.append(loop)
    return Profile(loops=tuple(loops))


def _parse_plane(sketch: Any, path: str) -> SketchPlane:
    t = _field(sketch, "transform", path, dict, "an object")
    tp = f"{path}.transform"
    return SketchPlane(origin=_vec3(t, "origin", tp), x_axis=_vec3(t, "x_axis", tp), y_axis=_vec3(t, "y_axis", tp),
                       normal=_vec3(t, "z_axis", tp))


def _extent_value(ent: dict, key: str, path: str) -> float:
    ext = _field(ent, key, path, dict, "an object")
    dist = _field(ext, "distance", f"{path}.{key}", dict, "an object")
    return _number(dist, "value", f"{path}.{key}.distance", finite=False)


def _parse_extrude(eid: str, ent: Any, entities: dict, cache: dict, close_tol: float) -> list[Extrude]:
    path = f"entities.{eid}"
    if not isinstance(ent, dict):
        raise _missing(path, f"expected an object, got {type(ent).__name__}")
    op_raw = _field(ent, "operation", path, str, "a string")
    if op_raw not in OPERATIONS:
        raise QuarantineError("unknown_operation", f"{path}.operation = {op_raw!r}")
    et_raw = _field(ent, "extent_type", path, str, "a string")
    if et_raw not in EXTENT_TYPES:
        raise QuarantineError("unknown_extent", f"{path}.extent_type = {et_raw!r}")
    if "start_extent" in ent:  # absent: profile plane, as DeepCAD assumes
        st = _field(_field(ent, "start_extent", path, dict, "an object"), "type", f"{path}.start_extent", str,
                    "a string")
        if st != "ProfilePlaneStartDefinition":
            raise QuarantineError("unknown_extent", f"{path}.start_extent.type = {st!r} (only profile-plane starts)")
    op, et = OPERATIONS[op_raw], EXTENT_TYPES[et_raw]
    e1 = _extent_value(ent, "extent_one", path)
    e2 = 0.0
    if et == "two_sides":
        e2 = _extent_value(ent, "extent_two", path)
        if not (math.isfinite(e1) and math.isfinite(e2)):
            raise QuarantineError("bad_extent", f"{path}: extent_one = {e1}, extent_two = {e2}")
        if e1 == 0.0 and e2 == 0.0:
            raise QuarantineError("bad_extent", f"{path}: two_sides with both distances zero")
    elif not math.isfinite(e1) or e1 == 0.0:
        raise QuarantineError("bad_extent", f"{path}.extent_one.distance.value = {e1}")

    refs = _field(ent, "profiles", path, list, "a list")
    if not refs:
        raise _missing(f"{path}.profiles", "empty list")
    groups: list[tuple[SketchPlane, list[Profile]]] = []
    for i, ref in enumerate(refs):
        rp = f"{path}.profiles[{i}]"
        sid = _field(ref, "sketch", rp, str, "a string")
        pid = _field(ref, "profile", rp, str, "a string")
        sketch = entities.get(sid)
        if not isinstance(sketch, dict) or sketch.get("type") != "Sketch":
            raise QuarantineError("dangling_profile", f"{rp}.sketch = {sid!r}: no such Sketch entity")
        sp = f"entities.{sid}"
        profiles = _field(sketch, "profiles", sp, dict, "an object")
        if pid not in profiles:
            raise QuarantineError("dangling_profile", f"{rp}.profile = {pid!r}: not in {sp}.profiles")
        key = (sid, pid)
        if key not in cache:
            cache[key] = (_parse_plane(sketch, sp), _parse_profile(profiles[pid], f"{sp}.profiles.{pid}", close_tol))
        plane, prof = cache[key]
        for g in groups:
            if g[0] == plane:
                g[1].append(prof)
                break
        else:
            groups.append((plane, [prof]))
    name = ent.get("name") if isinstance(ent.get("name"), str) else eid
    out = []
    for k, (plane, profs) in enumerate(groups):
        out.append(Extrude(name=name if len(groups) == 1 else f"{name}.{k}", plane=plane, profiles=tuple(profs),
                           operation="join" if (k > 0 and op == "new_body") else op, extent_type=et,
                           extent_one=e1, extent_two=e2))
    return out


def parse_model(data: Any, close_tol: float = CLOSE_TOL) -> CADSequence:
    """Return the :class:`CADSequence` of a parsed DeepCAD JSON document ``data``.

    Lengths stay in the JSON's units. ``close_tol`` is the loop-closure tolerance relative to each loop's size.
    Raises QuarantineError (missing_field, empty_sequence, unknown_curve, unknown_extent, unknown_operation,
    dangling_profile, open_loop, self_intersecting_loop, bad_extent) on a malformed model.
    """
    if not isinstance(data, dict):
        raise _missing("(root)", f"expected an object, got {type(data).__name__}")
    entities = _field(data, "entities", "(root)", dict, "an object")
    sequence = _field(data, "sequence", "(root)", list, "a list")
    props = _field(data, "properties", "(root)", dict, "an object")
    bb = _field(props, "bounding_box", "properties", dict, "an object")
    bmin = _vec3(bb, "min_point", "properties.bounding_box")
    bmax = _vec3(bb, "max_point", "properties.bounding_box")

    extrudes: list[Extrude] = []
    cache: dict = {}
    for i, item in enumerate(sequence):
        ip = f"sequence[{i}]"
        itype = _field(item, "type", ip, str, "a string")
        if itype != "ExtrudeFeature":
            continue
        eid = _field(item, "entity", ip, str, "a string")
        if eid not in entities:
            raise _missing(f"entities.{eid}", f"absent (named by {ip}.entity)")
        ent = entities[eid]
        if isinstance(ent, dict) and ent.get("type") != "ExtrudeFeature":
            raise _missing(f"entities.{eid}.type", f"expected 'ExtrudeFeature', got {ent.get('type')!r}")
        extrudes.extend(_parse_extrude(eid, ent, entities, cache, close_tol))
    if not extrudes:
        raise QuarantineError("empty_sequence", f"no ExtrudeFeature among {len(sequence)} sequence items")
    return CADSequence(extrudes=tuple(extrudes), bbox_min=bmin, bbox_max=bmax)


def load_model(path: str | Path, close_tol: float = CLOSE_TOL) -> CADSequence:
    """Read a DeepCAD JSON file and return its :class:`CADSequence` (see :func:`parse_model`).

    Raises QuarantineError("json_syntax") when the file is not valid UTF-8 JSON (an empty file included).
    """
    raw = Path(path).read_bytes()
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise QuarantineError("json_syntax", f"{Path(path).name}: {exc}") from exc
    return parse_model(data, close_tol)
