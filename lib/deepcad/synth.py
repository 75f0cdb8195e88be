"""Embedded DeepCAD-format data: plausible mechanical parts written in the real dataset's own layout.

The real DeepCAD download cannot be fetched here, so this writes ``<out>/cad_json/<folder>/<id>.json``
and ``<out>/train_val_test_split.json`` exactly as the release lays them out, with every JSON shaped
like a real Fusion 360 export (see ``tests/fixtures/deepcad/cylinder_r39mm_h5mm.json``): the
same keys (and key order), Fusion-like entity ids, metres, curves in each sketch's local frame, and a
declared ``properties.bounding_box``.

Each part family is a function ``rng -> model dict``. Geometry is designed in millimetres on a 0.5 mm
grid (tidy numbers; shared loop vertices are the very same floats, so loops close exactly) and converted
to metres only when written. Every model comes from its own RNG ``(seed, index)``, so models can be
made in any order or in parallel and the same seed gives byte-identical files.

Conventions (DeepCAD's, as in :mod:`lib.deepcad.schema`): an extrude sweeps its profiles along the
sketch's ``z_axis`` by ``extent_one`` (may be negative); ``symmetric`` sweeps ``extent_one`` both ways;
``two_sides`` sweeps ``extent_two`` the other way; new_body/join unite, cut subtracts, intersect keeps
the common part. All loops are written counter-clockwise (holes too), so every arc is counter-clockwise
about normal +z, with ``start_angle`` 0 and ``end_angle`` the sweep.
"""
from __future__ import annotations

import json
import math
import string
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
from annotated_types import Ge, Interval, MinLen
from tqdm import tqdm

from lib.config import Checked
from lib.deepcad.layout import CAD_JSON_DIR, SPLIT_FILE, SPLITS, model_path
from lib.io import atomic_write_text

GAP = 2.0  # mm of material kept between a hole and an edge or another hole, so walls are never paper thin
IDS_PER_FOLDER = 10_000  # an 8-digit id's first 4 digits are its folder, as in the real release

# Canonical Fusion construction planes: (x_axis, y_axis, z_axis). XZ's normal is -Y in Fusion.
_CANON = {
    "XY": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
    "XZ": ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, -1.0, 0.0)),
    "YZ": ((0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (1.0, 0.0, 0.0)),
}
# Right-handed frames for the opposite normals (as Fusion gives when sketching on a downward/backward face).
_FLIPPED = {
    (0.0, 0.0, -1.0): ((1.0, 0.0, 0.0), (0.0, -1.0, 0.0)),
    (0.0, 1.0, 0.0): ((-1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
    (-1.0, 0.0, 0.0): ((0.0, -1.0, 0.0), (0.0, 0.0, 1.0)),
}

NEW, JOIN, CUT, INTERSECT = ("NewBodyFeatureOperation", "JoinFeatureOperation", "CutFeatureOperation",
                             "IntersectFeatureOperation")
ONE, SYM, TWO = "OneSideFeatureExtentType", "SymmetricFeatureExtentType", "TwoSidesFeatureExtentType"


# ----------------------------------------------------------------------------------------------------------
# Geometry in millimetres. A loop is a list of segments, each one of
#   ("line", start, end) | ("arc", start, end, center, radius, sweep) | ("circle", center, radius)
# with 2D points as tuples of floats in the sketch's local frame.

def _u(rng: np.random.Generator, lo: float, hi: float, step: float = 0.5) -> float:
    """A uniform draw in [lo, hi] snapped to ``step`` (and kept inside the interval)."""
    lo_s, hi_s = math.ceil(lo / step - 1e-9) * step, math.floor(hi / step + 1e-9) * step
    if hi_s < lo_s:
        return float(lo_s)
    return float(min(max(round(float(rng.uniform(lo, hi)) / step) * step, lo_s), hi_s))


def _pick(rng: np.random.Generator, options, p=None):
    return options[int(rng.choice(len(options), p=p))]


def _circle(c, r) -> list:
    return [("circle", (float(c[0]), float(c[1])), float(r))]


def _rounded_polygon(pts: list[tuple[float, float]], radii: list[float]) -> list:
    """A CCW orthogonal polygon with its convex corners rounded by quarter arcs (radius 0: sharp)."""
    n = len(pts)
    entry, exit_ = [], []
    arcs = {}
    for i, (v, r) in enumerate(zip(pts, radii, strict=False)):
        if r <= 0:
            entry.append(v)
            exit_.append(v)
            continue
        prev, nxt = pts[i - 1], pts[(i + 1) % n]
        d_in = np.sign([v[0] - prev[0], v[1] - prev[1]])
        d_out = np.sign([nxt[0] - v[0], nxt[1] - v[1]])
        if d_in[0] * d_out[1] - d_in[1] * d_out[0] <= 0:
            raise ValueError(f"corner {v} is not convex; only convex corners can be rounded here")
        a = (v[0] - r * d_in[0], v[1] - r * d_in[1])
        b = (v[0] + r * d_out[0], v[1] + r * d_out[1])
        c = (a[0] + r * d_out[0], a[1] + r * d_out[1])
        a, b, c = (tuple(float(x) + 0.0 for x in p) for p in (a, b, c))
        entry.append(a)
        exit_.append(b)
        arcs[i] = ("arc", a, b, c, float(r), math.pi / 2)
    segs = []
    for i in range(n):
        if i in arcs:
            segs.append(arcs[i])
        j = (i + 1) % n
        p, q = exit_[i], entry[j]
        if p != q:  # two fillets meeting (a full round) leave no straight piece between them
            segs.append(("line", p, q))
    # Check the fillets fit: each straight piece must still run the polygon edge's direction.
    for i in range(n):
        j = (i + 1) % n
        d = np.sign([pts[j][0] - pts[i][0], pts[j][1] - pts[i][1]])
        span = (entry[j][0] - exit_[i][0]) * d[0] + (entry[j][1] - exit_[i][1]) * d[1]
        if span < -1e-9:
            raise ValueError(f"fillet radii too large for edge {pts[i]} -> {pts[j]}")
    return segs


def _rounded_rect(x0, y0, x1, y1, rc=0.0) -> list:
    return _rounded_polygon([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], [rc] * 4)


def _obround(c, half_len: float, r: float, angle_deg: float) -> list:
    """A slot: two parallel lines joined by two 180-degree arcs, centred on ``c``, CCW."""
    exact = {0: (1.0, 0.0), 90: (0.0, 1.0)}  # no cos(pi/2) noise for the common orientations
    d = exact.get(int(angle_deg), (math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))))
    nrm = (-d[1], d[0])
    c1 = (c[0] - half_len * d[0], c[1] - half_len * d[1])
    c2 = (c[0] + half_len * d[0], c[1] + half_len * d[1])

    def off(p, s):
        return (p[0] + s * r * nrm[0] + 0.0, p[1] + s * r * nrm[1] + 0.0)

    p1, p2, p3, p4 = off(c1, -1), off(c2, -1), off(c2, 1), off(c1, 1)
    return [("line", p1, p2), ("arc", p2, p3, c2, float(r), math.pi),
            ("line", p3, p4), ("arc", p4, p1, c1, float(r), math.pi)]


@dataclass(frozen=True)
class _Plane:
    """A sketch frame in mm: origin and orthonormal axes (z is the extrude direction)."""

    origin: tuple[float, float, float]
    x: tuple[float, float, float]
    y: tuple[float, float, float]
    z: tuple[float, float, float]
    # The origin in metres as written. Offsets are applied in metres with the same float arithmetic a
    # mesher uses for a prism's end face (origin + normal * distance), so a sketch drawn on a face lies
    # exactly on it: (a + b) / 1000 and a / 1000 + b / 1000 can differ by an ulp, which leaves 1e-18 m
    # slivers that make boolean results non-watertight once vertices are merged.
    om: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        if self.om is None:
            object.__setattr__(self, "om", tuple(float(o) / 1000 + 0.0 for o in self.origin))

    def at(self, u: float, v: float, w: float = 0.0) -> np.ndarray:
        """Global mm point of local (u, v) lifted ``w`` along the normal."""
        return np.asarray(self.origin) + u * np.asarray(self.x) + v * np.asarray(self.y) + w * np.asarray(self.z)

    def offset(self, d: float, dm: float | None = None) -> _Plane:
        """The parallel plane ``d`` mm along the normal (``dm``: the same distance in metres, if it must
        match a face computed elsewhere)."""
        dm = d / 1000 if dm is None else dm
        return _Plane(tuple(float(a) + 0.0 for a in self.at(0.0, 0.0, d)), self.x, self.y, self.z,
                      tuple(o + zi * dm + 0.0 for o, zi in zip(self.om, self.z, strict=False)))

    def local(self, p) -> tuple[float, float]:
        """Local (u, v) of a global mm point (exact, since our axes are signed unit axes)."""
        d = np.asarray(p, float) - np.asarray(self.origin)
        return (float(d @ np.asarray(self.x)) + 0.0, float(d @ np.asarray(self.y)) + 0.0)


def _canon(kind: str, origin=(0.0, 0.0, 0.0)) -> _Plane:
    x, y, z = _CANON[kind]
    return _Plane(tuple(float(o) for o in origin), x, y, z)


def _plane_with_normal(normal, origin, om=None) -> _Plane:
    """A frame with the given signed-axis normal: a canonical plane, or its flipped twin."""
    n = tuple(float(a) + 0.0 for a in normal)
    o = tuple(float(v) + 0.0 for v in origin)
    for x, y, z in _CANON.values():
        if z == n:
            return _Plane(o, x, y, z, om)
    x, y = _FLIPPED[n]
    return _Plane(o, x, y, n, om)


def _face(plane: _Plane, kind: str, e1: float, e2: float = 0.0, top: bool = True) -> _Plane:
    """The end face (top: the +normal end) of an extrude from ``plane``, as a plane to sketch on."""
    ends = [0.0, e1] + ([-e1] if kind == SYM else [-e2] if kind == TWO else [])
    ends_m = [v / 1000 for v in ends]
    z0, z1 = min(ends_m), max(ends_m)
    # A prism is built from z0 with height z1 - z0, so its top sits at (z1 - z0) + z0, not always z1.
    return plane.offset(max(ends) if top else min(ends), ((z1 - z0) + z0) if top else z0)


def _body_extent(rng, thickness: float) -> tuple[str, float, float, float, float]:
    """(extent_type, e1, e2, lo, hi): an extrude giving a body ``thickness`` thick, and its span along the normal."""
    kind = _pick(rng, [ONE, ONE, ONE, SYM, TWO])
    if kind == ONE:
        e1 = thickness if rng.random() < 0.85 else -thickness
        return ONE, e1, 0.0, min(0.0, e1), max(0.0, e1)
    if kind == SYM:
        return SYM, thickness / 2, 0.0, -thickness / 2, thickness / 2
    e1 = _u(rng, 0.25 * thickness, 0.75 * thickness, 0.25)
    return TWO, e1, thickness - e1, -(thickness - e1), e1


def _through_cut(rng, plane: _Plane, lo: float, hi: float,
                 face: _Plane | None = None) -> tuple[_Plane, str, float, float]:
    """(plane, extent_type, e1, e2) of a cut that passes right through a body spanning [lo, hi] along
    ``plane``'s normal: symmetric or two-sided from the plane, or one-sided (negative) from the far face."""
    kind = _pick(rng, [SYM, TWO, ONE])
    if kind == SYM:
        return plane, SYM, max(abs(lo), abs(hi)) + 1.0, 0.0
    if kind == TWO:
        return plane, TWO, hi + 1.0, -lo + 1.0
    # "Sketch on the top face, cut through all": start on the face at hi, go down past lo.
    return (face or plane.offset(hi)), ONE, -(hi - lo + 1.0), 0.0


def _place_circles(rng, box, inset: float, n: int, rmin: float, rmax: float, taken=()) -> list:
    """Up to ``n`` non-overlapping circles (centre, r) strictly inside ``box`` shrunk by ``inset`` + r + GAP.

    Rejection sampling: ``taken`` circles (centre, r) are avoided too. A rounded rectangle contains its box
    shrunk by the corner radius, so ``inset`` = corner radius keeps holes clear of the rounded corners.
    """
    x0, y0, x1, y1 = box
    out = list(taken)
    placed = []
    for _ in range(60 * n):
        if len(placed) == n:
            break
        r = _u(rng, rmin, rmax, 0.5)
        m = inset + r + GAP
        if x1 - x0 <= 2 * m or y1 - y0 <= 2 * m:
            continue
        c = (_u(rng, x0 + m, x1 - m, 0.5), _u(rng, y0 + m, y1 - m, 0.5))
        if any(math.hypot(c[0] - o[0], c[1] - o[1]) < r + ro + GAP for o, ro in out):
            continue
        out.append((c, r))
        placed.append((c, r))
    return placed


# ----------------------------------------------------------------------------------------------------------
# Model builder: collects entities in the real JSON's shapes and key order.

_ALNUM = string.ascii_letters + string.digits


def _pt(p) -> dict:
    """A local 2D mm point as the JSON's metre point (z=0), keys in the real files' order."""
    return {"y": float(p[1]) / 1000 + 0.0, "x": float(p[0]) / 1000 + 0.0, "z": 0.0}


def _vec(v, divisor: float = 1.0) -> dict:
    # Divide (not multiply by 1e-3): 4.5 / 1000 is the same float as an extent of 4.5 mm written as
    # 4.5 / 1000, so a face sketch sits exactly on the face it was drawn on (4.5 * 1e-3 is 1 ulp off).
    return {"y": float(v[1]) / divisor + 0.0, "x": float(v[0]) / divisor + 0.0, "z": float(v[2]) / divisor + 0.0}


_NORMAL = {"y": 0.0, "x": 0.0, "z": 1.0}


def _distance(role: str, value: float) -> dict:
    return {"type": "ModelParameter", "role": role, "name": "none", "value": float(value) + 0.0}


class _Builder:
    """Accumulates sketches and extrudes of one model; :meth:`model` returns the JSON document."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.entities: dict[str, dict] = {}
        self.sequence: list[dict] = []
        # Most real parts sit at the origin; some are placed elsewhere, which normalisation must undo.
        self.shift = (np.zeros(3) if rng.random() < 0.7
                      else np.array([_u(rng, -40, 40, 1.0) for _ in range(3)]))

    def canon(self, kind: str) -> _Plane:
        """A canonical construction plane, moved by the model's shift."""
        return _canon(kind, tuple(float(v) for v in self.shift))

    def _entity_id(self) -> str:
        while True:  # Fusion ids: "F" + 14 base-62 characters + "_0"
            eid = "F" + "".join(_ALNUM[int(i)] for i in self.rng.integers(0, 62, 14)) + "_0"
            if eid not in self.entities:
                return eid

    def sketch(self, plane: _Plane, profiles: list[list[list]]) -> tuple[str, list[str]]:
        """Add a Sketch whose profiles are lists of loops (the first is the outer one); return
        (sketch id, profile ids)."""
        sid = self._entity_id()
        prefix = "".join(string.ascii_uppercase[int(i)] for i in self.rng.integers(0, 26, 2))
        counter = [0]

        def short_id() -> str:  # "JGB", "JGC", ...: one namespace for the sketch's curves and profiles
            counter[0] += 1
            k, digits = counter[0], ""
            while k:
                k, d = divmod(k, 26)
                digits = string.ascii_uppercase[d] + digits
            return prefix + digits

        json_profiles: dict[str, dict] = {}
        pids = []
        for loops in profiles:
            json_loops = []
            for li, loop in enumerate(loops):
                json_loops.append({"is_outer": li == 0, "profile_curves": [self._curve(s, short_id()) for s in loop]})
            pid = short_id()
            json_profiles[pid] = {"loops": json_loops, "properties": {}}
            pids.append(pid)
        self.entities[sid] = {
            "transform": {"origin": _vec(plane.om), "y_axis": _vec(plane.y), "x_axis": _vec(plane.x),
                          "z_axis": _vec(plane.z)},
            "type": "Sketch",
            "name": f"Sketch {sum(1 for s in self.sequence if s['type'] == 'Sketch') + 1}",
            "profiles": json_profiles,
            "reference_plane": {},
        }
        self.sequence.append({"index": len(self.sequence), "type": "Sketch", "entity": sid})
        return sid, pids

    @staticmethod
    def _curve(seg, cid: str) -> dict:
        if seg[0] == "line":
            return {"type": "Line3D", "start_point": _pt(seg[1]), "curve": cid, "end_point": _pt(seg[2])}
        if seg[0] == "circle":
            return {"center_point": _pt(seg[1]), "type": "Circle3D", "radius": seg[2] / 1000, "curve": cid,
                    "normal": dict(_NORMAL)}
        _, s, e, c, r, sweep = seg
        ref = np.array([s[0] - c[0], s[1] - c[1]]) / r
        ref = ref / np.linalg.norm(ref)
        return {"center_point": _pt(c), "end_point": _pt(e), "end_angle": float(sweep), "curve": cid,
                "radius": r / 1000, "start_point": _pt(s), "start_angle": 0.0, "normal": dict(_NORMAL),
                "type": "Arc3D", "reference_vector": {"y": float(ref[1]) + 0.0, "x": float(ref[0]) + 0.0, "z": 0.0}}

    def extrude(self, sketch_id: str, profile_ids: list[str], operation: str, extent_type: str,
                e1: float, e2: float = 0.0) -> str:
        """Add an ExtrudeFeature of the sketch's profiles (extents in mm); return its id."""
        eid = self._entity_id()
        self.entities[eid] = {
            "name": f"Extrude {sum(1 for s in self.sequence if s['type'] == 'ExtrudeFeature') + 1}",
            "type": "ExtrudeFeature",
            "profiles": [{"profile": p, "sketch": sketch_id} for p in profile_ids],
            "extent_two": {"distance": _distance("AgainstDistance", e2 / 1000 if extent_type == TWO else 0.0),
                           "type": "DistanceExtentDefinition",
                           "taper_angle": _distance("Side2TaperAngle", 0.0)},
            "extent_one": {"distance": _distance("AlongDistance", e1 / 1000),
                           "type": "DistanceExtentDefinition",
                           "taper_angle": _distance("TaperAngle", 0.0)},
            "operation": operation,
            "start_extent": {"type": "ProfilePlaneStartDefinition"},
            "extent_type": extent_type,
        }
        self.sequence.append({"index": len(self.sequence), "type": "ExtrudeFeature", "entity": eid})
        return eid

    def model(self) -> dict:
        """The finished JSON document; entities in shuffled order, as real exports list them unordered."""
        keys = list(self.entities)
        order = self.rng.permutation(len(keys))
        doc = {"entities": {keys[int(i)]: self.entities[keys[int(i)]] for i in order},
               "properties": {}, "sequence": self.sequence}
        doc["properties"]["bounding_box"] = bounding_box(doc)
        return doc


# ----------------------------------------------------------------------------------------------------------
# Part families. Each designs its part so that cuts never remove a bounding-box extreme and intersections
# reach the extremes of both boxes, which keeps the analytic bounding box exact.

def plate_with_holes(rng: np.random.Generator) -> dict:
    """A (sometimes rounded) rectangular plate with 1-6 round holes, in the profile or cut afterwards."""
    b = _Builder(rng)
    W = _u(rng, 40, 200, 1.0)
    H = _u(rng, 30, min(150.0, W), 1.0)
    T = _u(rng, 2, 15)
    rc = _u(rng, 2, min(W, H) * 0.2) if rng.random() < 0.5 else 0.0
    plane = b.canon(_pick(rng, ["XY", "XY", "XZ", "YZ"]))
    x0, y0 = (-W / 2, -H / 2) if rng.random() < 0.5 else (0.0, 0.0)
    box = (x0, y0, x0 + W, y0 + H)
    n = int(rng.integers(1, 7))
    rmax = max(2.0, min(W, H) / 8)
    if n == 4 and rc >= 4.0 and rng.random() < 0.6:
        # Corner holes concentric with the corner radii, as on real mounting plates.
        r = _u(rng, 1.5, rc - 1.5)
        holes = [((x, y), r) for x, y in ((x0 + rc, y0 + rc), (x0 + W - rc, y0 + rc),
                                          (x0 + W - rc, y0 + H - rc), (x0 + rc, y0 + H - rc))]
    else:
        holes = _place_circles(rng, box, rc, n, 1.5, rmax) or [((x0 + W / 2, y0 + H / 2), _u(rng, 1.5, min(W, H) / 5))]
    kind, e1, e2, lo, hi = _body_extent(rng, T)
    outer = _rounded_rect(*box, rc)
    if rng.random() < 0.6:
        sid, pids = b.sketch(plane, [[outer] + [_circle(c, r) for c, r in holes]])
        b.extrude(sid, pids, NEW, kind, e1, e2)
    else:
        sid, pids = b.sketch(plane, [[outer]])
        b.extrude(sid, pids, NEW, kind, e1, e2)
        cplane, ckind, c1, c2 = _through_cut(rng, plane, lo, hi, _face(plane, kind, e1, e2))
        sid, pids = b.sketch(cplane, [[_circle(c, r)] for c, r in holes])
        b.extrude(sid, pids, CUT, ckind, c1, c2)
    return b.model()


def _section_cut_holes(rng, b: _Builder, S: _Plane, u_range, w_range, v_face: tuple[float, float],
                       n: int, rmax: float, slots: bool = False) -> None:
    """Cut holes (or slots) through a wall of an extruded section.

    The wall lies between ``v_face`` along the section plane's y axis; holes go through it along that axis,
    centred in the (u, w) rectangle ``u_range`` x ``w_range`` (u: section x axis, w: extrude direction).
    The cut sketch sits on a plane whose normal is the section's y axis.
    """
    lo_v, hi_v = v_face
    plane = _plane_with_normal(S.y, S.at(0.0, 0.0), S.om)
    # Local rectangle of the (u, w) box on the cut plane.
    corners = [plane.local(S.at(u, 0.0, w)) for u in u_range for w in w_range]
    xs, ys = [c[0] for c in corners], [c[1] for c in corners]
    box = (min(xs), min(ys), max(xs), max(ys))
    if slots:
        r = _u(rng, 1.5, max(1.5, rmax))
        long_x = (box[2] - box[0]) >= (box[3] - box[1])
        span = (box[2] - box[0]) if long_x else (box[3] - box[1])
        cross = (box[3] - box[1]) if long_x else (box[2] - box[0])
        r = min(r, max(1.0, (cross - 2 * GAP) / 2 - 0.5))
        k = max(1, min(n, int(span // (2 * r + 3 * GAP))))
        pitch = span / k
        half = _u(rng, 0.0, max(0.0, (cross - 2 * r - 2 * GAP) / 2 - 0.5))
        loops = []
        for i in range(k):
            t = (box[0] if long_x else box[1]) + pitch * (i + 0.5)
            c = (t, (box[1] + box[3]) / 2) if long_x else ((box[0] + box[2]) / 2, t)
            # Slots run across the long direction, side by side along it.
            loops.append([_obround(c, half, r, 90 if long_x else 0)] if half > 0 else [_circle(c, r)])
    else:
        loops = [[_circle(c, r)] for c, r in _place_circles(rng, box, 0.0, n, 1.5, max(1.5, rmax))]
    if not loops:
        return
    cplane, ckind, c1, c2 = _through_cut(rng, plane, lo_v, hi_v)
    sid, pids = b.sketch(cplane, loops)
    b.extrude(sid, pids, CUT, ckind, c1, c2)


def _width_extent(rng, width: float) -> tuple[str, float, float, float]:
    """(extent_type, e1, w_lo, w_hi) for extruding a section ``width`` long."""
    if rng.random() < 0.5:
        return SYM, width / 2, -width / 2, width / 2
    return ONE, width, 0.0, width


def _l_section(rng) -> tuple[list, float, float, float, float, float]:
    """An L profile (foot along u, leg along v) with optional heel and tip rounds: (loop, a, b, t, tip_u, tip_v)."""
    t = _u(rng, 3, 12, 1.0)
    a = _u(rng, max(30.0, 4 * t), 120, 1.0)
    bh = _u(rng, max(25.0, 4 * t), 100, 1.0)
    pts = [(0.0, 0.0), (a, 0.0), (a, t), (t, t), (t, bh), (0.0, bh)]
    heel = _u(rng, 1.0, 1.5 * t) if rng.random() < 0.4 else 0.0
    tip = _pick(rng, [0.0, 0.0, t / 2, _u(rng, 0.5, t / 2 - 0.5)])
    radii = [heel, tip, tip, 0.0, tip, tip]
    return _rounded_polygon(pts, radii), a, bh, t, tip, heel


def l_bracket(rng: np.random.Generator) -> dict:
    """An L-section bracket extruded on XZ or YZ, with holes cut through the foot and/or the upright leg."""
    b = _Builder(rng)
    S = b.canon(_pick(rng, ["XZ", "YZ"]))
    loop, a, bh, t, tip, _ = _l_section(rng)
    width = _u(rng, 20, 100, 1.0)
    kind, e1, wlo, whi = _width_extent(rng, width)
    sid, pids = b.sketch(S, [[loop]])
    b.extrude(sid, pids, NEW, kind, e1)
    rmax = min(width / 6, (a - t) / 6, 6.0)
    where = _pick(rng, ["foot", "leg", "both"])
    if where in ("foot", "both"):
        _section_cut_holes(rng, b, S, (t, a - tip), (wlo, whi), (0.0, t), int(rng.integers(1, 5)), rmax)
    if where in ("leg", "both"):
        # The leg's holes go along the section's x axis: view it as a section whose y axis is S.x.
        leg = _Plane(S.origin, S.y, S.x, tuple(-c for c in S.z), S.om)  # (v, u, -w): u becomes the through axis
        _section_cut_holes(rng, b, leg, (t, bh - tip), (-whi, -wlo), (0.0, t), int(rng.integers(1, 3)),
                           min(width / 6, (bh - t) / 6, 6.0))
    return b.model()


def t_section(rng: np.random.Generator) -> dict:
    """A T-section beam (web and flange, optional rounds), sometimes with holes through the flange."""
    b = _Builder(rng)
    S = b.canon(_pick(rng, ["XY", "XZ", "YZ"]))
    tw = _u(rng, 3, 12, 1.0)
    W = _u(rng, max(30.0, 3 * tw), 120, 1.0)
    tf = _u(rng, 3, 12, 1.0)
    h = _u(rng, 15, 100, 1.0)
    pts = [(-tw / 2, 0.0), (tw / 2, 0.0), (tw / 2, h), (W / 2, h), (W / 2, h + tf), (-W / 2, h + tf),
           (-W / 2, h), (-tw / 2, h)]
    rf = _pick(rng, [0.0, _u(rng, 0.5, tf / 2)])
    rw = _pick(rng, [0.0, _u(rng, 0.5, tw / 2)])
    loop = _rounded_polygon(pts, [rw, rw, 0.0, rf, rf, rf, rf, 0.0])
    length = _u(rng, 30, 200, 1.0)
    kind, e1, wlo, whi = _width_extent(rng, length)
    sid, pids = b.sketch(S, [[loop]])
    b.extrude(sid, pids, NEW, kind, e1)
    if rng.random() < 0.6:
        # Holes through the flange on one side of the web.
        side = _pick(rng, [1.0, -1.0])
        u_in, u_out = side * (tw / 2), side * (W / 2 - rf)
        _section_cut_holes(rng, b, S, (min(u_in, u_out), max(u_in, u_out)), (wlo, whi), (h, h + tf),
                           int(rng.integers(1, 5)), min((W - tw) / 8, 5.0))
    return b.model()


def u_channel(rng: np.random.Generator) -> dict:
    """A U channel (base and two walls), sometimes with holes or slots through the base."""
    b = _Builder(rng)
    S = b.canon(_pick(rng, ["XY", "XZ", "YZ"]))
    t = _u(rng, 2, 10, 1.0)
    tb = _u(rng, 2, 10, 1.0)
    W = _u(rng, max(30.0, 5 * t), 150, 1.0)
    H = _u(rng, max(15.0, 2 * tb + 4), 100, 1.0)
    x0 = -W / 2 if rng.random() < 0.5 else 0.0
    pts = [(x0, 0.0), (x0 + W, 0.0), (x0 + W, H), (x0 + W - t, H), (x0 + W - t, tb), (x0 + t, tb), (x0 + t, H),
           (x0, H)]
    ro = _pick(rng, [0.0, _u(rng, 0.5, min(t, tb))])
    rt = _pick(rng, [0.0, t / 2])
    loop = _rounded_polygon(pts, [ro, ro, rt, rt, 0.0, 0.0, rt, rt])
    length = _u(rng, 40, 250, 1.0)
    kind, e1, wlo, whi = _width_extent(rng, length)
    sid, pids = b.sketch(S, [[loop]])
    b.extrude(sid, pids, NEW, kind, e1)
    if rng.random() < 0.7:
        _section_cut_holes(rng, b, S, (x0 + t, x0 + W - t), (wlo, whi), (0.0, tb), int(rng.integers(1, 5)),
                           min((W - 2 * t) / 6, 6.0), slots=rng.random() < 0.5)
    return b.model()


def flange(rng: np.random.Generator) -> dict:
    """A disc with a centre bore and a bolt circle of holes, plus a hub joined on one face."""
    b = _Builder(rng)
    S = b.canon(_pick(rng, ["XY", "XY", "XZ", "YZ"]))
    n = int(rng.integers(3, 9))
    rb = _u(rng, 3, 20)                     # bore
    Rh = _u(rng, rb + 3, rb + 20)           # hub
    rh = _u(rng, 1.5, 6)                    # bolt holes
    # Bolt circle clear of the hub and wide enough that neighbouring holes keep GAP between them.
    Rb_min = max(Rh + rh + GAP, (2 * rh + GAP) / (2 * math.sin(math.pi / n)))
    Rb = _u(rng, Rb_min + 0.5, Rb_min + 40)
    R = _u(rng, Rb + rh + GAP + 0.5, Rb + rh + 20)
    T = _u(rng, 3, 15)
    phase = _pick(rng, [0.0, math.pi / n])
    bolts = [((Rb * math.cos(phase + 2 * math.pi * k / n), Rb * math.sin(phase + 2 * math.pi * k / n)), rh)
             for k in range(n)]
    kind, e1, e2, lo, hi = _body_extent(rng, T)
    if e1 < 0 and kind == ONE:
        kind, e1, lo, hi = ONE, T, 0.0, T  # keep the hub on the +normal side below
    if rng.random() < 0.6:
        sid, pids = b.sketch(S, [[_circle((0, 0), R), _circle((0, 0), rb)] + [_circle(c, r) for c, r in bolts]])
        b.extrude(sid, pids, NEW, kind, e1, e2)
    else:
        sid, pids = b.sketch(S, [[_circle((0, 0), R), _circle((0, 0), rb)]])
        b.extrude(sid, pids, NEW, kind, e1, e2)
        cplane, ckind, c1, c2 = _through_cut(rng, S, lo, hi, _face(S, kind, e1, e2))
        sid, pids = b.sketch(cplane, [[_circle(c, r)] for c, r in bolts])
        b.extrude(sid, pids, CUT, ckind, c1, c2)
    hub_h = _u(rng, 4, 40)
    top = _face(S, kind, e1, e2)  # the hub is sketched on the disc's top face
    sid, pids = b.sketch(top, [[_circle((0, 0), Rh), _circle((0, 0), rb)]])
    b.extrude(sid, pids, JOIN, ONE, hub_h)
    return b.model()


def stepped_shaft(rng: np.random.Generator) -> dict:
    """2-4 coaxial cylinders joined end to end, each sketched on the previous one's end face."""
    b = _Builder(rng)
    S = b.canon(_pick(rng, ["XY", "YZ", "XZ"]))
    k = int(rng.integers(2, 5))
    radii: list[float] = []
    for _ in range(k):
        r = _u(rng, 4, 40)
        while radii and abs(r - radii[-1]) < 1.0:
            r = _u(rng, 4, 40)
        radii.append(r)
    lengths = [_u(rng, 5, 80) for _ in range(k)]
    plane = S
    for i, (r, L) in enumerate(zip(radii, lengths, strict=False)):
        sid, pids = b.sketch(plane, [[_circle((0, 0), r)]])
        if i == 0 and rng.random() < 0.3:
            # First step centred on the base plane: the next face is at L/2.
            b.extrude(sid, pids, NEW, SYM, L / 2)
            plane = _face(plane, SYM, L / 2)
        else:
            b.extrude(sid, pids, NEW if i == 0 else JOIN, ONE, L)
            plane = _face(plane, ONE, L)  # the next step is sketched on this one's end face
    if rng.random() < 0.5 and min(radii) > 4.0:
        # A blind centre hole drilled from the last end face back into the shaft.
        rr = _u(rng, 1.5, min(radii) - 2.5)
        depth = _u(rng, 2, max(2.0, lengths[-1] * 0.9))
        sid, pids = b.sketch(plane, [[_circle((0, 0), rr)]])
        b.extrude(sid, pids, CUT, ONE, -depth)
    return b.model()


def boss_on_plate(rng: np.random.Generator) -> dict:
    """A plate with 1-2 cylindrical bosses joined on top, each bored (blind or through)."""
    b = _Builder(rng)
    S = b.canon(_pick(rng, ["XY", "XY", "XZ", "YZ"]))
    W = _u(rng, 40, 180, 1.0)
    H = _u(rng, 30, min(150.0, W), 1.0)
    T = _u(rng, 3, 15)
    rc = _u(rng, 2, min(W, H) * 0.15) if rng.random() < 0.5 else 0.0
    box = (-W / 2, -H / 2, W / 2, H / 2)
    bosses = _place_circles(rng, box, rc, int(rng.integers(1, 3)), 4.0, max(4.0, min(W, H) / 5))
    if not bosses:
        bosses = [((0.0, 0.0), _u(rng, 4, min(W, H) / 2 - rc - GAP - 1))]
    sid, pids = b.sketch(S, [[_rounded_rect(*box, rc)]])
    kind, e1, e2 = (TWO, _u(rng, 1, T - 1, 0.5), 0.0) if rng.random() < 0.2 else (ONE, T, 0.0)
    if kind == TWO:
        e2 = T - e1
    hi = e1
    lo = hi - T
    b.extrude(sid, pids, NEW, kind, e1, e2)
    Hb = _u(rng, 3, 40)
    face = _face(S, kind, e1, e2)
    sid, pids = b.sketch(face, [[_circle(c, r)] for c, r in bosses])
    b.extrude(sid, pids, JOIN, ONE, Hb)
    bores = [(c, _u(rng, 1.0, r - 1.5)) for c, r in bosses]
    through = rng.random() < 0.5
    depth = (hi + Hb - lo + 1.0) if through else _u(rng, 1, Hb + T - 1.0)
    sid, pids = b.sketch(_face(face, ONE, Hb), [[_circle(c, r)] for c, r in bores])
    b.extrude(sid, pids, CUT, ONE, -depth)
    return b.model()


def slotted_plate(rng: np.random.Generator) -> dict:
    """A plate with 1-4 obround slots (lines + 180-degree arcs), as holes of its profile or cut afterwards."""
    b = _Builder(rng)
    S = b.canon(_pick(rng, ["XY", "XY", "XZ", "YZ"]))
    W = _u(rng, 50, 200, 1.0)
    H = _u(rng, 40, min(160.0, W), 1.0)
    T = _u(rng, 2, 12)
    rc = _u(rng, 2, min(W, H) * 0.15) if rng.random() < 0.5 else 0.0
    box = (-W / 2, -H / 2, W / 2, H / 2)
    slots, taken = [], []
    for _ in range(int(rng.integers(1, 5))):
        for _try in range(40):
            r = _u(rng, 2, min(8.0, H / 10))
            half = _u(rng, 2, min(W, H) / 5)
            ang = _pick(rng, [0, 0, 90, 90, 45, 30])
            reach = half + r  # the slot lies within this circle: place with it (conservative)
            m = rc + reach + GAP
            if 2 * m >= W or 2 * m >= H:
                continue
            c = (_u(rng, -W / 2 + m, W / 2 - m), _u(rng, -H / 2 + m, H / 2 - m))
            if any(math.hypot(c[0] - o[0], c[1] - o[1]) < reach + ro + GAP for o, ro in taken):
                continue
            taken.append((c, reach))
            slots.append(_obround(c, half, r, ang))
            break
    if not slots:
        slots.append(_obround((0.0, 0.0), _u(rng, 2, W / 4), _u(rng, 2, H / 6), 0))
    kind, e1, e2, lo, hi = _body_extent(rng, T)
    outer = _rounded_rect(*box, rc)
    if rng.random() < 0.5:
        sid, pids = b.sketch(S, [[outer] + slots])
        b.extrude(sid, pids, NEW, kind, e1, e2)
    else:
        sid, pids = b.sketch(S, [[outer]])
        b.extrude(sid, pids, NEW, kind, e1, e2)
        cplane, ckind, c1, c2 = _through_cut(rng, S, lo, hi, _face(S, kind, e1, e2))
        sid, pids = b.sketch(cplane, [[s] for s in slots])
        b.extrude(sid, pids, CUT, ckind, c1, c2)
    return b.model()


def block_with_pocket(rng: np.random.Generator) -> dict:
    """A block with 1-2 pockets (rounded rectangle, circle or slot) cut into its top face."""
    b = _Builder(rng)
    S = b.canon(_pick(rng, ["XY", "XY", "XZ", "YZ"]))
    W = _u(rng, 30, 150, 1.0)
    D = _u(rng, 30, min(150.0, 1.5 * W), 1.0)
    H = _u(rng, 10, 80, 1.0)
    rc = _u(rng, 1, min(W, D) * 0.1) if rng.random() < 0.4 else 0.0
    x0, y0 = (-W / 2, -D / 2) if rng.random() < 0.6 else (0.0, 0.0)
    kind, e1, e2, lo, hi = _body_extent(rng, H)
    sid, pids = b.sketch(S, [[_rounded_rect(x0, y0, x0 + W, y0 + D, rc)]])
    b.extrude(sid, pids, NEW, kind, e1, e2)
    wall = max(3.0, rc + 1.0)  # keeps the rim (the top face's outline) intact
    k = 2 if (rng.random() < 0.3 and W > 40) else 1
    loops = []
    cell = (W - 2 * wall - (k - 1) * wall) / k  # pockets side by side along x, one wall between them
    for i in range(k):
        cx0 = x0 + wall + i * (cell + wall)
        px0, px1, py0, py1 = cx0, cx0 + cell, y0 + wall, y0 + D - wall
        shape = _pick(rng, ["rect", "rect", "circle", "slot"])
        pw, ph = px1 - px0, py1 - py0
        if shape == "circle":
            loops.append(_circle(((px0 + px1) / 2, (py0 + py1) / 2), _u(rng, 2, min(pw, ph) / 2 - 0.5)))
        elif shape == "slot":
            r = _u(rng, 1.5, min(pw, ph) / 2 - 0.5)
            long_x = pw >= ph
            half = _u(rng, 0.0, max(0.0, (max(pw, ph) / 2 - r) - 0.5))
            c = ((px0 + px1) / 2, (py0 + py1) / 2)
            loops.append(_obround(c, half, r, 0 if long_x else 90) if half > 0 else _circle(c, r))
        else:
            sw, sh = _u(rng, pw * 0.5, pw, 0.5), _u(rng, ph * 0.5, ph, 0.5)
            cx, cy = (px0 + px1) / 2, (py0 + py1) / 2
            pr = _u(rng, 0.0, min(sw, sh) / 3)
            loops.append(_rounded_rect(cx - sw / 2, cy - sh / 2, cx + sw / 2, cy + sh / 2, pr))
    depth = _u(rng, 0.2 * H, 0.8 * H)
    top = _face(S, kind, e1, e2)
    sid, pids = b.sketch(top, [[lp] for lp in loops])
    if rng.random() < 0.5:
        b.extrude(sid, pids, CUT, ONE, -depth)
    else:
        # Two sides: a little above the face (clean boolean) and ``depth`` down into the block.
        b.extrude(sid, pids, CUT, TWO, 1.0, depth)
    return b.model()


def intersect_part(rng: np.random.Generator) -> dict:
    """An L section extruded symmetric, intersected with a rounded rectangle or disc extruded across it.

    The second shape is designed so the result reaches the extremes of both boxes: it covers the L's heel
    (so the full leg height survives) and is trimmed inside the L's width, so intersecting the two boxes
    gives the exact bounding box.
    """
    b = _Builder(rng)
    S = b.canon(_pick(rng, ["XZ", "YZ", "XY"]))
    loop, a, bh, t, tip, heel = _l_section(rng)
    w = _u(rng, 15, 60, 1.0)  # the L spans w in [-w, w]
    sid, pids = b.sketch(S, [[loop]])
    b.extrude(sid, pids, NEW, SYM, w)
    plan = _plane_with_normal(S.y, S.at(0.0, -1.0))  # a plan-view plane just below the foot
    if rng.random() < 0.6:
        u0, u1 = -_u(rng, 2, 10), _u(rng, t + heel + 5, a - 3)
        w0, w1 = -_u(rng, 5, w - 2), _u(rng, 5, w - 2)
        rc = _u(rng, 0.0, min(u1 - u0, w1 - w0) / 3)
        pts = [plan.local(S.at(u, 0.0, ww)) for u in (u0, u1) for ww in (w0, w1)]
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        shape = _rounded_rect(min(xs), min(ys), max(xs), max(ys), rc)
    else:
        uc = _u(rng, t + 2, a - 2)
        R = _u(rng, uc + 1, uc + min(w - 1, a))
        R = min(R, w - 1.0)  # the disc must stay inside the L's width
        if uc >= R:  # the disc must still cover the heel (u = 0)
            uc = _u(rng, 1, R - 0.5)
        shape = _circle(plan.local(S.at(uc, 0.0, 0.0)), R)
    sid, pids = b.sketch(plan, [[shape]])
    if rng.random() < 0.5:
        b.extrude(sid, pids, INTERSECT, ONE, bh + 2.0)
    else:
        b.extrude(sid, pids, INTERSECT, TWO, bh + 2.0, 1.0)
    return b.model()


FAMILIES: dict[str, Callable[[np.random.Generator], dict]] = {
    "plate_with_holes": plate_with_holes,
    "l_bracket": l_bracket,
    "t_section": t_section,
    "u_channel": u_channel,
    "flange": flange,
    "stepped_shaft": stepped_shaft,
    "boss_on_plate": boss_on_plate,
    "slotted_plate": slotted_plate,
    "block_with_pocket": block_with_pocket,
    "intersect_part": intersect_part,
}


# ----------------------------------------------------------------------------------------------------------
# Bounding box

def _outer_bbox2d(loop: dict) -> tuple[float, float, float, float]:
    """Local (umin, vmin, umax, vmax) of a loop's curves, arcs through their axis extremes."""
    xs, ys = [], []
    for c in loop["profile_curves"]:
        t = c["type"]
        if t == "Line3D":
            for k in ("start_point", "end_point"):
                xs.append(c[k]["x"])
                ys.append(c[k]["y"])
        elif t == "Circle3D":
            cx, cy, r = c["center_point"]["x"], c["center_point"]["y"], c["radius"]
            xs += [cx - r, cx + r]
            ys += [cy - r, cy + r]
        else:
            cx, cy, r = c["center_point"]["x"], c["center_point"]["y"], c["radius"]
            for k in ("start_point", "end_point"):
                xs.append(c[k]["x"])
                ys.append(c[k]["y"])
            ref = c["reference_vector"]
            sign = 1.0 if c["normal"]["z"] >= 0 else -1.0
            a0 = math.atan2(ref["y"], ref["x"]) + sign * c["start_angle"]
            a1 = math.atan2(ref["y"], ref["x"]) + sign * c["end_angle"]
            lo, hi = min(a0, a1), max(a0, a1)
            k0 = math.ceil(lo / (math.pi / 2) - 1e-9)
            for k in range(k0, math.floor(hi / (math.pi / 2) + 1e-9) + 1):
                dx, dy = ((1, 0), (0, 1), (-1, 0), (0, -1))[k % 4]
                xs.append(cx + dx * r)
                ys.append(cy + dy * r)
    return min(xs), min(ys), max(xs), max(ys)


def _sweep_range(ext: dict) -> tuple[float, float]:
    e1 = ext["extent_one"]["distance"]["value"]
    ends = [0.0, e1]
    if ext["extent_type"] == SYM:
        ends.append(-e1)
    elif ext["extent_type"] == TWO:
        ends.append(-ext["extent_two"]["distance"]["value"])
    return min(ends), max(ends)


def bounding_box(model: dict) -> dict:
    """Return the model's ``properties.bounding_box`` dict (BoundingBox3D, metres) in the real files' shape.

    Analytic: each new_body/join extrude contributes the box of its outer loops swept over its extent,
    intersect extrudes clip the box so far, and cuts are ignored (they can only shrink the part, and the
    families never cut away an extreme). Exact for our axis-aligned sketch planes; a conservative box for
    tilted ones. Swap this function to measure a mesh instead.
    """
    ents = model["entities"]
    lo = hi = None
    for step in model["sequence"]:
        if step["type"] != "ExtrudeFeature":
            continue
        ext = ents[step["entity"]]
        if ext["operation"] == CUT:
            continue
        w0, w1 = _sweep_range(ext)
        pts = []
        for ref in ext["profiles"]:
            sk = ents[ref["sketch"]]
            tr = sk["transform"]
            o, x, y, z = (np.array([tr[k]["x"], tr[k]["y"], tr[k]["z"]])
                          for k in ("origin", "x_axis", "y_axis", "z_axis"))
            u0, v0, u1, v1 = _outer_bbox2d(sk["profiles"][ref["profile"]]["loops"][0])
            pts += [o + u * x + v * y + w * z for u in (u0, u1) for v in (v0, v1) for w in (w0, w1)]
        pts = np.array(pts)
        elo, ehi = pts.min(axis=0), pts.max(axis=0)
        if lo is None:
            lo, hi = elo, ehi
        elif ext["operation"] == INTERSECT:
            lo, hi = np.maximum(lo, elo), np.minimum(hi, ehi)
        else:
            lo, hi = np.minimum(lo, elo), np.maximum(hi, ehi)
    if lo is None:
        raise ValueError("model has no new_body/join/intersect extrude, so no bounding box")
    return {"max_point": _vec(hi), "type": "BoundingBox3D", "min_point": _vec(lo)}


# ----------------------------------------------------------------------------------------------------------
# Dataset

@dataclass(frozen=True)
class SynthDeepCADConfig(Checked):
    """``synth_deepcad`` params: where to write, how many models, which families, how to split."""

    out: str = "data/raw/deepcad_synth"
    seed: int = 0
    count: Annotated[int, Ge(1)] = 24
    split_fractions: dict[str, Annotated[float, Ge(0)]] = field(  # keys from lib.deepcad.layout.SPLITS
        default_factory=lambda: {"train": 0.8, "validation": 0.1, "test": 0.1})
    families: Annotated[list[str], MinLen(1)] = field(default_factory=lambda: list(FAMILIES))  # keys of FAMILIES
    models_per_folder: Annotated[int, Interval(ge=1, le=IDS_PER_FOLDER)] = 1000

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = set(self.split_fractions) - set(SPLITS)
        if unknown:
            raise ValueError(f"split_fractions keys must be among {list(SPLITS)}, got {sorted(unknown)}")
        if abs(sum(self.split_fractions.values()) - 1.0) > 1e-6:
            raise ValueError(f"split_fractions must add up to 1, got {sum(self.split_fractions.values())}")
        bad = [f for f in self.families if f not in FAMILIES]
        if bad:
            raise ValueError(f"unknown families {bad}; known: {list(FAMILIES)}")
        if len(set(self.families)) != len(self.families):
            raise ValueError(f"families must not repeat, got {self.families}")
        if -(-self.count // self.models_per_folder) > IDS_PER_FOLDER:
            raise ValueError("count / models_per_folder needs more than 10000 folders (4-digit folder names)")


def _split_quota(n: int, fractions: list[float]) -> list[int]:
    # Largest remainder, so the split sizes are the fractions to within one model.
    raw = [f * n for f in fractions]
    quota = [math.floor(r) for r in raw]
    for i in sorted(range(len(raw)), key=lambda i: -(raw[i] - quota[i]))[: n - sum(quota)]:
        quota[i] += 1
    return quota


def plan(cfg: SynthDeepCADConfig) -> list[tuple[str, str, str]]:
    """Return ``[(model_id "folder/id", family, split), ...]`` for every model, in id order.

    Deterministic from ``cfg.seed``. Model ``i`` lives in folder ``i // models_per_folder``; its 8-digit id
    starts with the folder's 4 digits and the ids in a folder are a seeded sparse increasing sample of the
    10000 possible, like the real release. Families are dealt in shuffled rounds, so each appears once per
    ``len(families)`` models; splits are shuffled with sizes given by the fractions.
    """
    n_folders = -(-cfg.count // cfg.models_per_folder)
    ids: list[str] = []
    for f in range(n_folders):
        # Separate streams ([seed, tag, k], three words) never coincide with a model's [seed, index] stream.
        nums = np.sort(np.random.default_rng([cfg.seed, 1, f]).choice(IDS_PER_FOLDER, cfg.models_per_folder,
                                                                      replace=False))
        take = min(cfg.models_per_folder, cfg.count - f * cfg.models_per_folder)
        ids += [f"{f:04d}/{f * IDS_PER_FOLDER + int(k):08d}" for k in nums[:take]]
    fams = []
    nf = len(cfg.families)
    for block in range(-(-cfg.count // nf)):
        perm = np.random.default_rng([cfg.seed, 2, block]).permutation(nf)
        fams += [cfg.families[int(i)] for i in perm]
    names = list(SPLITS)
    quotas = _split_quota(cfg.count, [cfg.split_fractions.get(s, 0.0) for s in names])
    splits = [s for s, q in zip(names, quotas, strict=False) for _ in range(q)]
    order = np.random.default_rng([cfg.seed, 3, 0]).permutation(cfg.count)
    splits = [splits[int(i)] for i in order]
    return list(zip(ids, fams[: cfg.count], splits, strict=False))


def make_model(seed: int, index: int, family: str) -> dict:
    """Return model ``index``'s JSON document, drawn from its own RNG ``(seed, index)``."""
    return FAMILIES[family](np.random.default_rng([seed, index]))


def write_dataset(cfg: SynthDeepCADConfig, progress: bool = True) -> list[tuple[str, str, str]]:
    """Write every model's JSON and the split file under ``cfg.out``; return the plan (see :func:`plan`).

    Files are written atomically (``json.dumps(model, indent=1)``, like the release, no trailing newline);
    the split file goes last, so a root with a split file is complete. Same config, byte-identical files.
    """
    items = plan(cfg)
    root = Path(cfg.out)

    def write(i: int) -> None:
        model_id, family, _ = items[i]
        atomic_write_text(model_path(root, model_id), json.dumps(make_model(cfg.seed, i, family), indent=1))

    for folder in sorted({mid.split("/")[0] for mid, _, _ in items}):
        (root / CAD_JSON_DIR / folder).mkdir(parents=True, exist_ok=True)
    # Threads: each write ends in an fsync, which releases the GIL, so I/O overlaps with generation.
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in tqdm(pool.map(write, range(len(items))), total=len(items), desc="synth_deepcad",
                      disable=not progress, unit="model"):
            pass
    split = {s: [mid for mid, _, sp in items if sp == s] for s in SPLITS}
    atomic_write_text(root / SPLIT_FILE, json.dumps(split, indent=1))
    return items
