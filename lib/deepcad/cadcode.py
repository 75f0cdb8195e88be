"""CAD code: a compact, line-based text form of a :class:`~lib.deepcad.schema.CADSequence`.

It is the answer a vision-language model generates, so every parameter is written out and nothing else.
Typical use is ``to_code(normalize(seq))`` (:func:`lib.deepcad.normalize.normalize`), so values are O(1) and
the fixed ``decimals`` (default 4) keep about 1e-4 of the normalised cube; raw DeepCAD metres would lose most
of their digits.

Grammar (one statement per line; indentation is 2 spaces per level when written, ignored when read; numbers
are fixed-point with ``decimals`` digits, never exponent notation, never ``-0.0000``)::

    bbox min=(X,Y,Z) max=(X,Y,Z)                             # once, first line
    extrude K: OP TYPE e1=D e2=D                              # K = 1, 2, ... in order
      plane o=(X,Y,Z) x=(X,Y,Z) y=(X,Y,Z) n=(X,Y,Z)           # exactly once, right after its extrude line
      profile                                                 # one or more per extrude
        loop outer|inner                                      # one or more per profile
          line (X,Y)->(X,Y)                                   # one or more curves per loop
          arc (X,Y)->(X,Y) c=(X,Y) r=R a0=A a1=A ref=(X,Y) nz=1|-1
          circle c=(X,Y) r=R

``OP`` is new_body|join|cut|intersect, ``TYPE`` one_side|symmetric|two_sides (the short names of
:data:`~lib.deepcad.schema.OPERATIONS` / :data:`~lib.deepcad.schema.EXTENT_TYPES`). Curve points are in the
sketch plane's local 2D frame; arcs keep the JSON's start/end angles (radians) and reference vector.
The text ends with a newline. ``to_code(from_code(t), decimals=d) == t`` for any ``t = to_code(seq, decimals=d)``.
Not carried: extrude names (read back as ``Extrude K``) and circles' normals (not in the schema).
"""
from __future__ import annotations

import math
import re

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

INDENT = "  "
_OPS = tuple(OPERATIONS.values())
_EXTS = tuple(EXTENT_TYPES.values())


def _num(v: float, decimals: int) -> str:
    v = float(v)
    if not math.isfinite(v):
        raise ValueError(f"cannot write non-finite number {v}")
    s = f"{v:.{decimals}f}"
    if s.startswith("-") and float(s) == 0.0:
        s = s[1:]
    return s


def _tup(p, decimals: int) -> str:
    return "(" + ",".join(_num(x, decimals) for x in p) + ")"


def _curve_line(c, d: int) -> str:
    if isinstance(c, Line):
        return f"line {_tup(c.start, d)}->{_tup(c.end, d)}"
    if isinstance(c, Circle):
        return f"circle c={_tup(c.center, d)} r={_num(c.radius, d)}"
    if isinstance(c, Arc):
        return (f"arc {_tup(c.start, d)}->{_tup(c.end, d)} c={_tup(c.center, d)} r={_num(c.radius, d)} "
                f"a0={_num(c.start_angle, d)} a1={_num(c.end_angle, d)} ref={_tup(c.reference_vector, d)} "
                f"nz={'1' if c.normal_z > 0 else '-1'}")
    raise TypeError(f"not a curve: {c!r}")


def to_code(seq: CADSequence, decimals: int = 4) -> str:
    """Return the CAD code text of ``seq`` (grammar in the module docstring), ending with a newline.

    Raises ValueError on a non-finite number or an unknown operation / extent type.
    """
    d = decimals
    out = [f"bbox min={_tup(seq.bbox_min, d)} max={_tup(seq.bbox_max, d)}"]
    for k, ex in enumerate(seq.extrudes, start=1):
        if ex.operation not in _OPS:
            raise ValueError(f"extrude {k}: unknown operation {ex.operation!r}")
        if ex.extent_type not in _EXTS:
            raise ValueError(f"extrude {k}: unknown extent type {ex.extent_type!r}")
        out.append(f"extrude {k}: {ex.operation} {ex.extent_type} e1={_num(ex.extent_one, d)} "
                   f"e2={_num(ex.extent_two, d)}")
        p = ex.plane
        out.append(f"{INDENT}plane o={_tup(p.origin, d)} x={_tup(p.x_axis, d)} y={_tup(p.y_axis, d)} "
                   f"n={_tup(p.normal, d)}")
        for prof in ex.profiles:
            out.append(f"{INDENT * 2}profile")
            for lp in prof.loops:
                out.append(f"{INDENT * 3}loop {'outer' if lp.is_outer else 'inner'}")
                for c in lp.curves:
                    out.append(f"{INDENT * 4}{_curve_line(c, d)}")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# reading

_N = r"([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)"
_P2 = rf"\(\s*{_N}\s*,\s*{_N}\s*\)"
_P3 = rf"\(\s*{_N}\s*,\s*{_N}\s*,\s*{_N}\s*\)"
_S = r"\s+"
_PATTERNS = {
    "bbox": re.compile(rf"bbox{_S}min={_P3}{_S}max={_P3}"),
    "extrude": re.compile(rf"extrude{_S}(\d+)\s*:{_S}(\w+){_S}(\w+){_S}e1={_N}{_S}e2={_N}"),
    "plane": re.compile(rf"plane{_S}o={_P3}{_S}x={_P3}{_S}y={_P3}{_S}n={_P3}"),
    "profile": re.compile(r"profile"),
    "loop": re.compile(r"loop\s+(outer|inner)"),
    "line": re.compile(rf"line{_S}{_P2}\s*->\s*{_P2}"),
    "arc": re.compile(rf"arc{_S}{_P2}\s*->\s*{_P2}{_S}c={_P2}{_S}r={_N}{_S}a0={_N}{_S}a1={_N}{_S}ref={_P2}"
                      rf"{_S}nz=([-+]?1)"),
    "circle": re.compile(rf"circle{_S}c={_P2}{_S}r={_N}"),
}


def _floats(groups, lineno: int) -> list[float]:
    v = [float(g) for g in groups]
    if not all(math.isfinite(x) for x in v):
        raise ValueError(f"line {lineno}: number out of range")
    return v


class _Builder:
    """Collects extrude/profile/loop blocks while reading; checks that none is left empty."""

    def __init__(self):
        self.extrudes: list[Extrude] = []
        self.ext: dict | None = None
        self.prof: dict | None = None
        self.loop: dict | None = None

    def close_loop(self):
        if self.loop is not None:
            if not self.loop["curves"]:
                raise ValueError(f"line {self.loop['line']}: loop has no curves")
            self.prof["loops"].append(Loop(curves=tuple(self.loop["curves"]), is_outer=self.loop["outer"]))
            self.loop = None

    def close_profile(self):
        self.close_loop()
        if self.prof is not None:
            if not self.prof["loops"]:
                raise ValueError(f"line {self.prof['line']}: profile has no loops")
            self.ext["profiles"].append(Profile(loops=tuple(self.prof["loops"])))
            self.prof = None

    def close_extrude(self):
        self.close_profile()
        if self.ext is not None:
            e = self.ext
            if e["plane"] is None:
                raise ValueError(f"line {e['line']}: extrude has no plane line")
            if not e["profiles"]:
                raise ValueError(f"line {e['line']}: extrude has no profile")
            self.extrudes.append(Extrude(name=f"Extrude {len(self.extrudes) + 1}", plane=e["plane"],
                                         profiles=tuple(e["profiles"]), operation=e["op"], extent_type=e["type"],
                                         extent_one=e["e1"], extent_two=e["e2"]))
            self.ext = None


def from_code(text: str) -> CADSequence:
    """Return the :class:`CADSequence` written in CAD code ``text`` (grammar in the module docstring).

    Blank lines and indentation are ignored; the ``bbox`` line is optional (zeros when absent) but may appear
    only once, before the first extrude. Raises ValueError naming the 1-based line number on malformed text.
    """
    b = _Builder()
    bbox = None
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        word = line.split(None, 1)[0]
        pat = _PATTERNS.get(word)
        m = pat.fullmatch(line) if pat else None
        if m is None:
            what = f"malformed {word!r} statement" if pat else f"unknown statement {word!r}"
            raise ValueError(f"line {lineno}: {what}: {line[:120]!r}")
        g = m.groups()
        if word == "bbox":
            if bbox is not None or b.extrudes or b.ext is not None:
                raise ValueError(f"line {lineno}: bbox must come once, before the first extrude")
            v = _floats(g, lineno)
            bbox = (tuple(v[:3]), tuple(v[3:]))
        elif word == "extrude":
            b.close_extrude()
            k = int(g[0])
            if k != len(b.extrudes) + 1:
                raise ValueError(f"line {lineno}: extrude numbered {k}, expected {len(b.extrudes) + 1}")
            if g[1] not in _OPS:
                raise ValueError(f"line {lineno}: unknown operation {g[1]!r} (one of {', '.join(_OPS)})")
            if g[2] not in _EXTS:
                raise ValueError(f"line {lineno}: unknown extent type {g[2]!r} (one of {', '.join(_EXTS)})")
            e1, e2 = _floats(g[3:5], lineno)
            b.ext = {"line": lineno, "op": g[1], "type": g[2], "e1": e1, "e2": e2,
                     "plane": None, "profiles": []}
        elif word == "plane":
            if b.ext is None or b.ext["plane"] is not None or b.ext["profiles"] or b.prof is not None:
                raise ValueError(f"line {lineno}: plane must follow its extrude line directly")
            v = _floats(g, lineno)
            b.ext["plane"] = SketchPlane(origin=tuple(v[0:3]), x_axis=tuple(v[3:6]), y_axis=tuple(v[6:9]),
                                         normal=tuple(v[9:12]))
        elif word == "profile":
            if b.ext is None or b.ext["plane"] is None:
                raise ValueError(f"line {lineno}: profile outside an extrude (or before its plane)")
            b.close_profile()
            b.prof = {"line": lineno, "loops": []}
        elif word == "loop":
            if b.prof is None:
                raise ValueError(f"line {lineno}: loop outside a profile")
            b.close_loop()
            b.loop = {"line": lineno, "outer": g[0] == "outer", "curves": []}
        else:
            if b.loop is None:
                raise ValueError(f"line {lineno}: {word} outside a loop")
            v = _floats(g[:-1] if word == "arc" else g, lineno)
            if word == "line":
                c = Line(start=(v[0], v[1]), end=(v[2], v[3]))
            elif word == "circle":
                c = Circle(center=(v[0], v[1]), radius=v[2])
            else:
                c = Arc(start=(v[0], v[1]), end=(v[2], v[3]), center=(v[4], v[5]), radius=v[6], start_angle=v[7],
                        end_angle=v[8], reference_vector=(v[9], v[10]), normal_z=float(int(g[-1])))
            b.loop["curves"].append(c)
    b.close_extrude()
    if not b.extrudes:
        raise ValueError(f"line {len(text.splitlines()) + 1}: no extrude in the text")
    bmin, bmax = bbox if bbox is not None else ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0))
    return CADSequence(extrudes=tuple(b.extrudes), bbox_min=bmin, bbox_max=bmax)
