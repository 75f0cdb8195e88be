"""OpenECAD's answer format: a :class:`~lib.deepcad.schema.CADSequence` as calls of OpenECAD's Python CAD API.

OpenECAD (Yuan et al. 2024) fine-tunes TinyLLaVA to answer an image with code of this form (one extrude)::

    SketchPlane0 = add_sketchplane(
    \torigin= [0., 0., 0.], normal= [0., -1., 0.], x_axis= [1., 0., 0.])
    Loops0 = []
    Curves0_0 = []
    Line0_0_0 = add_line(start= [-0.5, 0.], end= [0., 0.])
    Arc0_0_1 = add_arc(start= [0., 0.], end= [0., 0.5], mid= [0.1464, 0.3536])
    Circle0_1_0 = add_circle(center= [0., 0.], radius= 0.1)
    Loop0_0 = add_loop(Curves0_0)
    Profile0 = add_profile(Loops0)
    Sketch0 = add_sketch(sketch_plane= SketchPlane0, profile= Profile0)
    Extrude0 = add_extrude(sketch= Sketch0,
    \toperation= 0, type= 0, extent_one= 0.5, extent_two= 0.)

so a conversation set in this format can fine-tune an OpenECAD checkpoint (``train_cad_vlm.base_model``). As in
OpenECAD (and DeepCAD's cadlib, which it builds on): one extrude per profile, the profile's first loop is its outer
loop, an arc is three points (start, end, and the point halfway along it), ``operation`` indexes new body / join /
cut / intersect and ``type`` one side / symmetric / two sides. Sketch planes are always written absolutely
(``add_sketchplane``; OpenECAD's own fallback); ``add_sketchplane_ref`` is not read.

Numbers are written with ``decimals`` digits and trailing zeros dropped, as numpy prints them (``0.``, ``-0.25``).
The reader never executes the text: it walks Python's syntax tree and accepts only these statements.

Round trip: ``to_openecad(from_openecad(t)) == t`` for every ``t = to_openecad(seq)``, and ``from_openecad(t)``
is ``seq`` at the written precision, with its extrudes split per profile. A multi-profile ``intersect`` cannot be
split (the body would keep the overlap with every profile instead of with their union), so :func:`to_openecad`
raises :class:`NotRepresentable` for it.
"""
from __future__ import annotations

import ast
import math

import numpy as np

from lib.deepcad.schema import (
    EXTENT_TYPES,
    OPERATIONS,
    Arc,
    CADSequence,
    Circle,
    Extrude,
    Line,
    Loop,
    Profile,
    SketchPlane,
)

OPERATION_IDS = tuple(OPERATIONS.values())  # new_body, join, cut, intersect: OpenECAD's operation= 0..3
EXTENT_IDS = tuple(EXTENT_TYPES.values())  # one_side, symmetric, two_sides: OpenECAD's type= 0..2
MARKER = "add_sketchplane"  # present in every OpenECAD answer, never in CAD code


class NotRepresentable(ValueError):
    """The sequence has no exact OpenECAD form (a multi-profile intersect)."""


# ---------------------------------------------------------------------------------------------------- writing


def _num(v: float, decimals: int) -> str:
    v = float(v)
    if not math.isfinite(v):
        raise ValueError(f"cannot write non-finite number {v}")
    s = f"{v:.{decimals}f}".rstrip("0")
    if s in ("-0.", "-."):
        s = "0."
    return s


def _vec(p, decimals: int) -> str:
    return "[" + ", ".join(_num(x, decimals) for x in p) + "]"


def _curve(c, name: str, d: int) -> str:
    if isinstance(c, Line):
        return f"{name} = add_line(start= {_vec(c.start, d)}, end= {_vec(c.end, d)})"
    if isinstance(c, Arc):
        return (f"{name} = add_arc(start= {_vec(c.start, d)}, end= {_vec(c.end, d)}, "
                f"mid= {_vec(c.mid_point(), d)})")
    if isinstance(c, Circle):
        return f"{name} = add_circle(center= {_vec(c.center, d)}, radius= {_num(c.radius, d)})"
    raise TypeError(f"not a curve: {c!r}")


def split_profiles(seq: CADSequence) -> list[tuple[Extrude, Profile]]:
    """Return (extrude, profile) per OpenECAD extrude: one per profile, in order.

    Raises NotRepresentable for an ``intersect`` of several profiles (module docstring).
    """
    out = []
    for k, ex in enumerate(seq.extrudes, start=1):
        if ex.operation == "intersect" and len(ex.profiles) > 1:
            raise NotRepresentable(f"extrude {k}: an intersect of {len(ex.profiles)} profiles has no OpenECAD form "
                                   "(one extrude per profile would intersect with each profile in turn)")
        out += [(ex, prof) for prof in ex.profiles]
    return out


def to_openecad(seq: CADSequence, decimals: int = 4) -> str:
    """Return ``seq`` as OpenECAD API code (module docstring), ending with a newline."""
    d, lines = decimals, []
    for i, (ex, prof) in enumerate(split_profiles(seq)):
        if ex.operation not in OPERATION_IDS or ex.extent_type not in EXTENT_IDS:
            raise ValueError(f"extrude {i}: unknown operation {ex.operation!r} or extent type {ex.extent_type!r}")
        p = ex.plane
        lines += [f"SketchPlane{i} = add_sketchplane(",
                  f"\torigin= {_vec(p.origin, d)}, normal= {_vec(p.normal, d)}, x_axis= {_vec(p.x_axis, d)})",
                  f"Loops{i} = []"]
        loops = sorted(prof.loops, key=lambda lp: not lp.is_outer)  # outer first; stable for the holes
        for j, lp in enumerate(loops):
            lines.append(f"Curves{i}_{j} = []")
            for k, c in enumerate(lp.curves):
                kind = type(c).__name__
                lines.append(_curve(c, f"{kind}{i}_{j}_{k}", d))
            lines.append(f"Loop{i}_{j} = add_loop(Curves{i}_{j})")
        lines += [f"Profile{i} = add_profile(Loops{i})",
                  f"Sketch{i} = add_sketch(sketch_plane= SketchPlane{i}, profile= Profile{i})",
                  f"Extrude{i} = add_extrude(sketch= Sketch{i},",
                  f"\toperation= {OPERATION_IDS.index(ex.operation)}, type= {EXTENT_IDS.index(ex.extent_type)}, "
                  f"extent_one= {_num(ex.extent_one, d)}, extent_two= {_num(ex.extent_two, d)})"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------- reading


def arc_through(start, end, mid) -> Arc:
    """Return the :class:`Arc` from ``start`` through ``mid`` to ``end`` whose ``mid_point()`` is ``mid``.

    The angles run from 0 at ``start`` to twice the angle of ``mid``, so writing the arc again gives back the
    same three points. Raises ValueError when the points are (nearly) collinear or coincide.
    """
    a, b, m = (np.asarray(p, dtype=float) for p in (start, end, mid))
    cross = (m[0] - a[0]) * (b[1] - m[1]) - (m[1] - a[1]) * (b[0] - m[0])
    scale = max(np.linalg.norm(m - a) * np.linalg.norm(b - m), 1e-300)
    if abs(cross) <= 1e-9 * scale or not np.all(np.isfinite([a, b, m])):
        raise ValueError(f"arc points start={list(a)} mid={list(m)} end={list(b)} are collinear or coincide")
    # circumcentre of the three points
    d = 2 * (a[0] * (m[1] - b[1]) + m[0] * (b[1] - a[1]) + b[0] * (a[1] - m[1]))
    sq = [p @ p for p in (a, m, b)]
    cx = (sq[0] * (m[1] - b[1]) + sq[1] * (b[1] - a[1]) + sq[2] * (a[1] - m[1])) / d
    cy = (sq[0] * (b[0] - m[0]) + sq[1] * (a[0] - b[0]) + sq[2] * (m[0] - a[0])) / d
    c = np.array([cx, cy])
    r = float(np.linalg.norm(a - c))
    ref = (a - c) / r
    nz = 1.0 if cross > 0 else -1.0  # start -> mid -> end turns left: counter-clockwise
    um = (m - c) / np.linalg.norm(m - c)
    phi = math.atan2(nz * (ref[0] * um[1] - ref[1] * um[0]), ref @ um) % (2 * math.pi)
    return Arc(start=(float(a[0]), float(a[1])), end=(float(b[0]), float(b[1])), center=(float(cx), float(cy)),
               radius=r, start_angle=0.0, end_angle=2 * phi, reference_vector=(float(ref[0]), float(ref[1])),
               normal_z=nz)


_CALLS = {  # function -> its keyword arguments (positional: the add_loop / add_profile list name)
    "add_sketchplane": ("origin", "normal", "x_axis"),
    "add_line": ("start", "end"),
    "add_arc": ("start", "end", "mid"),
    "add_circle": ("center", "radius"),
    "add_loop": (),
    "add_profile": (),
    "add_sketch": ("sketch_plane", "profile"),
    "add_extrude": ("sketch", "operation", "type", "extent_one", "extent_two"),
}
_VECTOR_LEN = {"origin": 3, "normal": 3, "x_axis": 3, "start": 2, "end": 2, "mid": 2, "center": 2}


def _number(node: ast.AST, where: str) -> float:
    try:
        v = ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        v = None
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ValueError(f"{where}: expected a finite number, got {ast.unparse(node)!r}")
    return float(v)


def _argument(name: str, node: ast.AST, where: str):
    if name in ("sketch_plane", "profile", "sketch"):
        if not isinstance(node, ast.Name):
            raise ValueError(f"{where}: {name}= must name a variable, got {ast.unparse(node)!r}")
        return node.id
    if name in _VECTOR_LEN:
        if not isinstance(node, ast.List | ast.Tuple) or len(node.elts) != _VECTOR_LEN[name]:
            raise ValueError(f"{where}: {name}= must be a list of {_VECTOR_LEN[name]} numbers")
        return tuple(_number(e, f"{where}: {name}=") for e in node.elts)
    return _number(node, f"{where}: {name}=")


def from_openecad(text: str) -> CADSequence:
    """Return the :class:`CADSequence` written as OpenECAD API code ``text`` (module docstring).

    Each extrude reads back with one profile; the bounding box is not part of the format (zeros). Raises
    ValueError naming the 1-based line of the first statement it cannot read, without executing anything.
    """
    try:
        tree = ast.parse(text)
    except SyntaxError as err:
        raise ValueError(f"line {err.lineno}: not Python syntax: {err.msg}") from None
    lists: dict[str, list] = {}  # Curves*/Loops* -> members in order
    values: dict[str, object] = {}  # SketchPlane*/Loop*/Profile*/Sketch* -> what they built
    current_curves: list | None = None
    current_loops: list | None = None
    extrudes: list[Extrude] = []
    for stmt in tree.body:
        where = f"line {stmt.lineno}"
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)):
            raise ValueError(f"{where}: expected `Name = add_...(...)` or `Name = []`, got {ast.unparse(stmt)[:80]!r}")
        target, value = stmt.targets[0].id, stmt.value
        if isinstance(value, ast.List) and not value.elts:
            lists[target] = []
            if target.startswith("Curves"):
                current_curves = lists[target]
            elif target.startswith("Loops"):
                current_loops = lists[target]
            else:
                raise ValueError(f"{where}: only Curves*/Loops* lists are read, got {target!r}")
            continue
        if not (isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id in _CALLS):
            raise ValueError(f"{where}: unknown statement {ast.unparse(value)[:80]!r} (reads "
                             f"{', '.join(_CALLS)})")
        fn = value.func.id
        kw = {k.arg: k.value for k in value.keywords}
        if set(kw) != set(_CALLS[fn]) or len(value.args) != (1 if fn in ("add_loop", "add_profile") else 0):
            raise ValueError(f"{where}: {fn} takes {', '.join(_CALLS[fn]) or 'one list'}, got "
                             f"{ast.unparse(value)[:80]!r}")
        args = {k: _argument(k, v, where) for k, v in kw.items()}
        if fn == "add_sketchplane":
            origin, n, x = args["origin"], np.array(args["normal"]), np.array(args["x_axis"])
            values[target] = SketchPlane(origin=origin, x_axis=tuple(x.tolist()),
                                         y_axis=tuple(np.cross(n, x).tolist()), normal=tuple(n.tolist()))
        elif fn in ("add_line", "add_arc", "add_circle"):
            if current_curves is None:
                raise ValueError(f"{where}: {fn} before any `Curves... = []`")
            if fn == "add_line":
                current_curves.append(Line(start=args["start"], end=args["end"]))
            elif fn == "add_arc":
                try:
                    current_curves.append(arc_through(args["start"], args["end"], args["mid"]))
                except ValueError as err:
                    raise ValueError(f"{where}: {err}") from None
            else:
                if args["radius"] <= 0:
                    raise ValueError(f"{where}: circle radius must be > 0, got {args['radius']}")
                current_curves.append(Circle(center=args["center"], radius=args["radius"]))
        elif fn == "add_loop":
            curves = _named_list(value.args[0], lists, "Curves", where)
            if not curves:
                raise ValueError(f"{where}: loop has no curves")
            if current_loops is None:
                raise ValueError(f"{where}: add_loop before any `Loops... = []`")
            current_loops.append(Loop(curves=tuple(curves), is_outer=not current_loops))
            current_curves = None
        elif fn == "add_profile":
            loops = _named_list(value.args[0], lists, "Loops", where)
            if not loops:
                raise ValueError(f"{where}: profile has no loops")
            values[target] = Profile(loops=tuple(loops))
            current_loops = None
        elif fn == "add_sketch":
            plane, prof = (values.get(args[k]) for k in ("sketch_plane", "profile"))
            if not isinstance(plane, SketchPlane) or not isinstance(prof, Profile):
                raise ValueError(f"{where}: add_sketch needs a defined SketchPlane and Profile")
            values[target] = (plane, prof)
        else:
            sketch = values.get(args["sketch"])
            op, ext = int(args["operation"]), int(args["type"])
            if not isinstance(sketch, tuple):
                raise ValueError(f"{where}: add_extrude needs a defined Sketch, got {args['sketch']!r}")
            if op != args["operation"] or not 0 <= op < len(OPERATION_IDS):
                raise ValueError(f"{where}: operation= must be 0..{len(OPERATION_IDS) - 1}, got {args['operation']}")
            if ext != args["type"] or not 0 <= ext < len(EXTENT_IDS):
                raise ValueError(f"{where}: type= must be 0..{len(EXTENT_IDS) - 1}, got {args['type']}")
            extrudes.append(Extrude(name=f"Extrude {len(extrudes) + 1}", plane=sketch[0], profiles=(sketch[1],),
                                    operation=OPERATION_IDS[op], extent_type=EXTENT_IDS[ext],
                                    extent_one=args["extent_one"], extent_two=args["extent_two"]))
    if not extrudes:
        raise ValueError(f"line {len(text.splitlines()) + 1}: no add_extrude in the text")
    return CADSequence(extrudes=tuple(extrudes))


def _named_list(node: ast.AST, lists: dict[str, list], prefix: str, where: str) -> list:
    if not (isinstance(node, ast.Name) and node.id.startswith(prefix) and node.id in lists):
        raise ValueError(f"{where}: expected a `{prefix}...` list defined above, got {ast.unparse(node)!r}")
    return lists[node.id]
