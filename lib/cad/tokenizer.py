"""Tokenizer of CAD code text (:mod:`lib.deepcad.cadcode`): grammar keywords plus quantised value tokens.

A language model over characters of ``to_code`` output would spend most of its capacity spelling digits;
DeepCAD instead predicts commands and 256-level parameters. This tokenizer gives the CAD code text that
form while staying exactly convertible to and from text.

- **Keyword tokens**: the statements ``bbox extrude plane profile loop line arc circle``, their word
  arguments (``new_body join cut intersect``, ``one_side symmetric two_sides``, ``outer inner``,
  ``nz=1 nz=-1``) and the structural ``<pad>`` (id 0) ``<bos> <eos> <unk>``. ``<unk>`` is reserved: encode
  never emits it (the text grammar is closed), decode rejects it and the grammar mask never allows it.
- **Value tokens** ``<v0>..<v{n-1}>`` (``n = n_levels``, default 256): which grid a value token is on
  follows from its slot in the grammar (:attr:`CADTokenizer.args`), so all kinds share the same tokens.

Two layouts share that vocabulary (``layout=``; the default is ``local``).

**local** (default; DeepCAD's per-sketch normalisation, Wu et al. 2021, ``cadlib``). Each extrude's sketch is
quantised in its own frame: the box of its loop vertices and circles is moved to the origin and scaled by its
larger side ``size``, so sketch values are fractions of the sketch, not of the model. The frame travels in the
``plane`` statement: the 3D point where the box's corner lies (the new plane origin), the plane orientation as
three ZYZ Euler angles (``n = Rz(phi) Ry(theta) e_z``, ``x = Rz(phi) Ry(theta) Rz(gamma) e_x``, ``y = n x x``;
a left-handed plane is mirrored into a right-handed one with its sketch, losslessly) and ``size``. Loops are
closed chains: each line/arc carries only its end point, a curve starts where the previous one ended, and the
first starts at the last one's end (curves are chained and flipped as needed, like the mesh builder does; a gap
in an open loop is closed). Arcs are (end point, sweep, turning direction), circles their box (lower-left corner,
diameter), so the box of the decoded sketch is on the grid too::

    <bos> bbox c*6  [extrude OP TYPE E(e1) E(e2) plane O*3 a*3 S  [profile [loop outer|inner CURVE+]+]+]+ <eos>
    CURVE = line U U | arc U U w nz=±1 | circle U U U          (E, O, S: frame_digits tokens; U: sketch_digits)

A multi-token value is a base-``n`` number, most significant token first.

==========  ===============================================  =================================================
kind        grid                                             why
==========  ===============================================  =================================================
coord       bbox corners: [-1, 1), 2/n (DeepCAD's codes)     the box does not shape the solid
length (E)  e1, e2: step ``10**-decimals`` (1e-4), 0 a       the text's own step: a 2 mm plate of a 200 mm part
            level (with ``frame_digits=1``: ~4/n)            keeps its thickness
origin (O)  the sketch box's corner in 3D: step 1e-4         re-read exactly from the text
size (S)    the box's larger side: ``(k+1) * 4e-4``          the re-read box of rounded circles lands on it
angle (a)   theta, phi, gamma: [-π, π), 2π/n                 multiples of π/2 (every axis-aligned plane) exact
local (U)   ``q * size / top``, ``top = min(n**sd - 2,       0, 1/2 and 1 of the sketch exact; the step never
            size / 8e-4)`` rounded down to even              drops below 8e-4, so the 4-decimal text is re-read
                                                             onto the same levels
sweep (w)   arc sweep: ``q * 2π/n``, q >= 1                  quarter and half turns exact; 0 would be a line
==========  ===============================================  =================================================

Encoding puts the sketch's levels exactly on ``0..top`` (0 on both axes, ``top`` along the longer side), so
``encode(decode(ids)) == ids`` for every id sequence ``encode`` returns.

Costs (``fd = frame_digits``, ``sd = sketch_digits``, both 2 by default): a line ``1 + 2 sd`` tokens (5), an arc
``3 + 2 sd`` (7), a circle ``1 + 3 sd`` (7), an extrude with its plane ``5 + 6 fd`` (17), a profile 1, a loop 2;
the shortest model is 38 tokens. Decoding writes the plane at the frame's corner (``o`` moves within the plane)
and the arcs as ``a0=0 a1=|sweep| nz=±1`` with the reference vector towards the start, so the decoded text is a
re-quantised equivalent of the input, not the same digits.

Measured fidelity (``benchmarks/cad_token_fidelity.py --n 1100``, ``reports/benchmarks/cad_token_fidelity.md``;
decoded code re-meshed against the 4-decimal source, exact IoU, a model that no longer meshes counting 0):

=====================================  =========  ===========  ========  ===========  =====================
setting                                mean IoU   median IoU   failing   tokens mean  families with median
                                                                         / max        >= 0.99, mean >= 0.97
=====================================  =========  ===========  ========  ===========  =====================
local (default: 2-token frame and      0.9975     0.9990       0%        126 / 230    10 / 10, fixture 0.9997
sketch values)
local, ``sketch_digits=1``             0.9916     0.9961       0%        102 / 174    6 / 10 (L/T/U walls)
local, ``frame_digits=1`` too          0.8999     0.9311       0.1%      89 / 162     0 / 10
local, ``n_levels=1024``, 1-digit      0.9973     0.9988       0%        102 / 174    10 / 10
global (old)                           0.8845     0.9195       1.7%      135 / 312    0 / 10
=====================================  =========  ===========  ========  ===========  =====================

Why two tokens: one 8-bit token over the cube moves a 2 mm plate of a 200 mm part by up to a third of its
thickness (extents, plane origins), and one 8-bit token per sketch value in the sketch's own frame still moves a
3 mm wall of a 120 mm L-section by ~0.24 mm (median IoU ~0.98 for L/T/U sections). Two base-``n`` tokens give
the frame values the text's own step (1e-4) and the sketch values ``max(size / (n**2 - 2), 8e-4)``: below
that, the 4-decimal text could not be read back onto the same levels.

**global** (``cad-tokenizer/1``, kept for comparison and old checkpoints): every number of the text in text
order on one global grid per kind, ``coord`` [-1, 1) 2/n for the bbox and plane origins, ``sketch`` [-2, 2) 4/n
for curve points, radii and extents, ``unit`` [-1, 1] 2/(n-2) for axes and arc reference vectors, ``angle``
[-2π, 2π) 4π/n for arc angles::

    <bos> bbox v*6  [extrude OP TYPE v(e1) v(e2) plane v*12  [profile [loop outer|inner CURVE+]+]+]+ <eos>
    CURVE = line v*4 | circle v*3 | arc v*11 nz=±1

Its sketch step is 1/64 of the normalised cube, so small features collapse and arcs whose end points and
angles no longer agree fail to mesh (mean IoU 0.88, 1.7% of models failing, table above). A line costs 5
tokens, a circle 4, an arc 13, an extrude with its plane 18.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lib.deepcad.answers import parse_answer
from lib.deepcad.cadcode import from_code, to_code
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

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)  # PAD first: id 0, the usual padding / ignore id
COMMANDS = ("bbox", "extrude", "plane", "profile", "loop", "line", "arc", "circle")
CURVES = ("line", "arc", "circle")
# Word arguments, by the slot name that the grammar tables use for them.
WORD_GROUPS: dict[str, tuple[str, ...]] = {
    "op": tuple(OPERATIONS.values()),
    "extent": tuple(EXTENT_TYPES.values()),
    "side": ("outer", "inner"),
    "nz": ("nz=1", "nz=-1"),
}
LAYOUTS = ("local", "global")
# Token slots following each statement's keyword, in order: a value kind or a word group. One source of truth
# for encode, decode and the grammar-constrained decoder (lib.cad.constrained). A multi-token value (the local
# layout's frame values, ``frame_digits`` tokens each, most significant first) repeats its kind.
GLOBAL_ARGS: dict[str, tuple[str, ...]] = {
    "bbox": ("coord",) * 6,
    "extrude": ("op", "extent", "sketch", "sketch"),
    "plane": ("coord",) * 3 + ("unit",) * 9,
    "profile": (),
    "loop": ("side",),
    "line": ("sketch",) * 4,
    "circle": ("sketch",) * 3,
    "arc": ("sketch",) * 7 + ("angle",) * 2 + ("unit",) * 2 + ("nz",),
}


def local_args(frame_digits: int = 2, sketch_digits: int = 2) -> dict[str, tuple[str, ...]]:
    """The local layout's token slots with ``frame_digits`` tokens per frame value and ``sketch_digits`` per sketch
    value (see the module docstring)."""
    d, k = int(frame_digits), int(sketch_digits)
    return {
        "bbox": ("coord",) * 6,
        "extrude": ("op", "extent", *("length",) * (2 * d)),
        "plane": (*("origin",) * (3 * d), *("angle",) * 3, *("size",) * d),
        "profile": (),
        "loop": ("side",),
        "line": ("local",) * (2 * k),
        "arc": (*("local",) * (2 * k), "sweep", "nz"),
        "circle": ("local",) * (3 * k),
    }


ARGS: dict[str, tuple[str, ...]] = local_args()  # the default tokenizer's grammar (CADTokenizer().args)
FORMAT = "cad-tokenizer/2"
FORMATS = ("cad-tokenizer/1", FORMAT)  # /1: files written before the local layout (always global)
ARC_TOL = 1e-3  # relative to the radius: an arc's angles "agree" with its end points (as lib.deepcad.mesh)


@dataclass(frozen=True)
class ValueGrid:
    """One value kind's grid: ``value(q) = lo + q * step`` for ``q`` in ``0..n-1`` (``n`` may be ``n_levels ** d``
    for a value spread over ``d`` tokens)."""

    kind: str
    lo: float
    step: float
    n: int

    @property
    def hi(self) -> float:
        """The largest value on the grid (level ``n - 1``)."""
        return self.lo + (self.n - 1) * self.step

    def level(self, v: float) -> int:
        """Nearest level of ``v``, clipped to ``0..n-1`` (so an in-range value is off by <= step / 2)."""
        if not math.isfinite(v):
            raise ValueError(f"{self.kind} value {v} is not finite; only finite CAD parameters can be tokenised")
        return int(np.clip(np.round((v - self.lo) / self.step), 0, self.n - 1))

    def value(self, q: int) -> float:
        """The float value of level ``q``."""
        return self.lo + q * self.step


def _check_range(name: str, r) -> tuple[float, float]:
    lo, hi = (float(x) for x in r)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < 0.0 < hi):
        raise ValueError(f"CADTokenizer: {name}={r!r} must be (lo, hi) with lo < 0 < hi (zero must be a level)")
    return lo, hi


# -- plane orientation (local layout) -------------------------------------------------------------------------

def _rz(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _ry(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def euler_to_axes(theta: float, phi: float, gamma: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Right-handed plane axes ``(x, y, normal)`` of ZYZ Euler angles: the columns of Rz(phi) Ry(theta) Rz(gamma)."""
    r = _rz(phi) @ _ry(theta) @ _rz(gamma)
    return r[:, 0], r[:, 1], r[:, 2]


def axes_to_euler(x, normal) -> tuple[float, float, float]:
    """ZYZ Euler angles ``(theta, phi, gamma)`` of a right-handed frame with these x axis and normal.

    Axes are normalised (x is first made orthogonal to the normal). When the normal is +-z, ``phi`` is 0 and
    ``gamma`` carries the whole turn about z.
    """
    n = np.asarray(normal, float)
    n = n / np.linalg.norm(n)
    x = np.asarray(x, float)
    x = x - (x @ n) * n
    x = x / np.linalg.norm(x)
    s = math.hypot(n[0], n[1])
    theta = math.atan2(s, n[2])
    if s < 1e-6:  # gimbal lock: Rz(phi) Ry(0 or pi) Rz(gamma) depends on phi +- gamma only
        return (0.0 if n[2] > 0 else math.pi), 0.0, math.atan2(x[1], x[0] if n[2] > 0 else -x[0])
    phi = math.atan2(n[1], n[0])
    # third row of R: (-sin t cos g, sin t sin g, cos t); x's z component is R[2, 0], y = n x x gives R[2, 1]
    y = np.cross(n, x)
    return theta, phi, math.atan2(y[2], -x[2])


def signed_sweep(arc: Arc) -> float:
    """Counter-clockwise signed angle (radians) turned going along ``arc`` from its ``start`` to its ``end``.

    From the stored angles (``nz * (a1 - a0)``), negated when the angles run from ``end`` to ``start``; when
    neither way matches the end points (to ``ARC_TOL`` of the radius), from the end points around the centre,
    turning the way whose size best matches the stored sweep (as :mod:`lib.deepcad.mesh` draws it).
    """
    a0, a1 = float(arc.start_angle), float(arc.end_angle)
    p0, p1 = np.asarray(arc.point_at(a0)), np.asarray(arc.point_at(a1))
    s, e = np.asarray(arc.start, float), np.asarray(arc.end, float)
    fwd = np.linalg.norm(p0 - s) + np.linalg.norm(p1 - e)
    rev = np.linalg.norm(p0 - e) + np.linalg.norm(p1 - s)
    sweep = (1.0 if arc.normal_z > 0 else -1.0) * (a1 - a0)
    chord = float(np.linalg.norm(e - s))
    if (min(fwd, rev) <= ARC_TOL * max(abs(float(arc.radius)), 1e-12) + 1e-12 or float(arc.radius) == 0.0
            or min(fwd, rev) < 0.1 * chord):  # rounded text of a small arc: still clearly one way round
        return sweep if fwd <= rev else -sweep
    c = np.asarray(arc.center, float)
    t0, t1 = math.atan2(s[1] - c[1], s[0] - c[0]), math.atan2(e[1] - c[1], e[0] - c[0])
    ccw = (t1 - t0) % (2 * math.pi) or 2 * math.pi
    cw = ccw - 2 * math.pi
    return ccw if abs(ccw - abs(sweep)) <= abs(abs(cw) - abs(sweep)) else cw


def arc_from_sweep(start, end, sweep: float) -> Arc:
    """The arc from ``start`` to ``end`` turning ``sweep`` radians (counter-clockwise > 0), as CAD code writes it:
    ``a0 = 0``, ``a1 = |sweep|``, ``nz = sign(sweep)`` and the reference vector pointing at the start.
    Coincident end points give a point arc (radius 0, centre at the start)."""
    s, e = np.asarray(start, float), np.asarray(end, float)
    chord = float(np.linalg.norm(e - s))
    nz = 1.0 if sweep > 0 else -1.0
    if chord == 0.0 or sweep == 0.0:
        return Arc(start=tuple(s), end=tuple(e), center=tuple(s), radius=0.0, start_angle=0.0,
                   end_angle=abs(sweep), reference_vector=(1.0, 0.0), normal_z=nz)
    half = abs(sweep) / 2
    r = chord / (2 * math.sin(half))
    d = (e - s) / chord
    left = np.array([-d[1], d[0]])
    c = (s + e) / 2 + nz * (chord / (2 * math.tan(half))) * left
    ref = (s - c) / r
    return Arc(start=(float(s[0]), float(s[1])), end=(float(e[0]), float(e[1])), center=(float(c[0]), float(c[1])),
               radius=float(r), start_angle=0.0, end_angle=abs(sweep), reference_vector=(float(ref[0]), float(ref[1])),
               normal_z=nz)


def chain_loop(loop: Loop) -> list[tuple[tuple[float, float], tuple[float, float], float | None]]:
    """The loop's lines and arcs in chain order as ``(start, end, signed sweep or None for a line)``.

    Starts with the first curve as stored and each time takes the remaining curve with an end point nearest the
    current end, flipping it (and its sweep) when it is stored the other way round, as
    :func:`lib.deepcad.mesh.loop_ring` does. Gaps are not checked here: the tokens close every loop.
    """
    items = []
    for c in loop.curves:
        if isinstance(c, Line):
            items.append((tuple(map(float, c.start)), tuple(map(float, c.end)), None))
        elif isinstance(c, Arc):
            items.append((tuple(map(float, c.start)), tuple(map(float, c.end)), signed_sweep(c)))
        else:
            raise ValueError(f"a circle shares a loop with {len(loop.curves) - 1} other curve(s); a loop is one "
                             "circle or a chain of lines and arcs")
    out = [items[0]]
    rest = items[1:]
    while rest:
        tail = np.asarray(out[-1][1])
        d = [(min(np.linalg.norm(np.asarray(s) - tail), np.linalg.norm(np.asarray(e) - tail)), i)
             for i, (s, e, _) in enumerate(rest)]
        _, j = min(d)
        s, e, w = rest.pop(j)
        if np.linalg.norm(np.asarray(e) - tail) < np.linalg.norm(np.asarray(s) - tail):
            s, e, w = e, s, (None if w is None else -w)
        out.append((s, e, w))
    return out


class CADTokenizer:
    """CAD code text <-> token ids (see the module docstring for the vocabulary, layouts and grids).

    ``encode(text)`` parses with :func:`~lib.deepcad.answers.parse_answer` (CAD code or OpenECAD code) and
    quantises; ``decode(ids)``
    rebuilds the :class:`CADSequence` from the grid values and writes it with ``to_code(seq, decimals)``.
    ``encode(decode(ids)) == ids`` for any ids ``encode`` returns, so ``decode(encode(t))`` is a fixed point:
    the re-quantised text. In the global layout ``from_code(decode(encode(t)))`` is ``from_code(t)`` with every
    number moved by at most half its grid step; in the local layout it is the same solid with every sketch point
    moved by at most half a local step (``size / (2 (n-2))``), written in the quantised frame.
    """

    def __init__(self, n_levels: int = 256, value_range: tuple[float, float] = (-1.0, 1.0),
                 sketch_range: tuple[float, float] = (-2.0, 2.0),
                 angle_range: tuple[float, float] = (-2 * math.pi, 2 * math.pi), decimals: int = 4,
                 layout: str = "local", frame_digits: int = 2, frame_range: tuple[float, float] = (-2.0, 2.0),
                 sketch_digits: int = 2) -> None:
        if n_levels < 4 or n_levels % 2:
            raise ValueError(f"CADTokenizer: n_levels={n_levels} must be even and >= 4 (so 0 is a level)")
        if layout not in LAYOUTS:
            raise ValueError(f"CADTokenizer: layout={layout!r} must be one of {LAYOUTS}")
        if frame_digits not in (1, 2, 3):
            raise ValueError(f"CADTokenizer: frame_digits={frame_digits} must be 1, 2 or 3 (tokens per frame value)")
        if sketch_digits not in (1, 2):
            raise ValueError(f"CADTokenizer: sketch_digits={sketch_digits} must be 1 or 2 (tokens per sketch value)")
        self.n_levels = int(n_levels)
        self.layout = layout
        self.value_range = _check_range("value_range", value_range)
        self.sketch_range = _check_range("sketch_range", sketch_range)
        self.angle_range = _check_range("angle_range", angle_range)
        self.frame_range = _check_range("frame_range", frame_range)
        self.frame_digits = int(frame_digits)
        self.sketch_digits = int(sketch_digits)
        self.decimals = int(decimals)
        n = self.n_levels
        self.grids: dict[str, ValueGrid] = {"coord": ValueGrid("coord", self.value_range[0],
                                                               (self.value_range[1] - self.value_range[0]) / n, n)}
        if layout == "global":
            self.args = GLOBAL_ARGS
            self.grids["sketch"] = ValueGrid("sketch", self.sketch_range[0],
                                             (self.sketch_range[1] - self.sketch_range[0]) / n, n)
            self.grids["angle"] = ValueGrid("angle", self.angle_range[0],
                                            (self.angle_range[1] - self.angle_range[0]) / n, n)
            self.grids["unit"] = ValueGrid("unit", -1.0, 2.0 / (n - 2), n)
            checked = self.grids.values()
        else:
            self.args = local_args(self.frame_digits, self.sketch_digits)
            q = 10.0 ** -self.decimals
            big = n ** self.frame_digits
            span = self.frame_range[1] - self.frame_range[0]

            def frame(kind: str, unit: float, positive: bool = False) -> ValueGrid:
                step = math.ceil(span / big / unit - 1e-9) * unit  # a whole number of text units
                return ValueGrid(kind, step if positive else -(big // 2) * step, step, big)

            self.grids["length"] = frame("length", q)
            self.grids["origin"] = frame("origin", q)
            self.grids["size"] = frame("size", 4 * q, positive=True)
            self.grids["angle"] = ValueGrid("angle", -math.pi, 2 * math.pi / n, n)
            self.grids["local"] = ValueGrid("local", 0.0, 1.0, n ** self.sketch_digits)  # levels; see local_top
            self.grids["sweep"] = ValueGrid("sweep", 0.0, 2 * math.pi / n, n)
            # the local step never drops below this, so decode -> encode stays exact through the 4-decimal text
            self.min_step = 8 * q
            checked = (self.grids["coord"],)
        for g in checked:
            if abs(round(-g.lo / g.step) * g.step + g.lo) > 1e-9 * g.step:
                raise ValueError(f"CADTokenizer: 0 is not a level of the {g.kind} grid (lo={g.lo}, step={g.step}); "
                                 "use a range whose lower end is a whole number of steps below 0, e.g. symmetric")
            if 0.5 * 10.0 ** -self.decimals >= g.step / 4:
                raise ValueError(f"CADTokenizer: decimals={decimals} rounds by more than a quarter of the {g.kind} "
                                 f"step {g.step:.3g}, so decode -> encode would not be exact; raise decimals")
        # the values of each statement, one kind per value (a multi-token value's repeated slots joined)
        self.fields: dict[str, tuple[str, ...]] = {}
        for cmd, slots in self.args.items():
            kinds, i = [], 0
            while i < len(slots):
                kinds.append(slots[i])
                i += 1 if slots[i] in WORD_GROUPS else self.digits(slots[i])
            self.fields[cmd] = tuple(kinds)
        words = [w for group in WORD_GROUPS.values() for w in group]
        self.vocab: list[str] = [*SPECIALS, *COMMANDS, *words, *(f"<v{q}>" for q in range(n))]
        self.token_to_id: dict[str, int] = {t: i for i, t in enumerate(self.vocab)}
        self.value_offset = len(SPECIALS) + len(COMMANDS) + len(words)

    # -- vocabulary ------------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Number of token ids (specials + keywords + ``n_levels`` value tokens)."""
        return len(self.vocab)

    @property
    def pad_id(self) -> int:
        return self.token_to_id[PAD]

    @property
    def bos_id(self) -> int:
        return self.token_to_id[BOS]

    @property
    def eos_id(self) -> int:
        return self.token_to_id[EOS]

    @property
    def unk_id(self) -> int:
        return self.token_to_id[UNK]

    def value_id(self, q: int) -> int:
        """Token id of value level ``q``."""
        return self.value_offset + int(q)

    def is_value(self, token_id: int) -> bool:
        """Whether ``token_id`` is a value token ``<vq>``."""
        return self.value_offset <= token_id < self.value_offset + self.n_levels

    def level_of(self, token_id: int) -> int:
        """The level ``q`` of value token ``token_id`` (ValueError for any other token)."""
        if not self.is_value(token_id):
            raise ValueError(f"token id {token_id} ({self._name(token_id)}) is not a value token")
        return int(token_id) - self.value_offset

    def digits(self, kind: str) -> int:
        """How many tokens one value of ``kind`` takes (``frame_digits`` for the local frame values, else 1)."""
        if self.layout != "local":
            return 1
        if kind in ("length", "origin", "size"):
            return self.frame_digits
        return self.sketch_digits if kind == "local" else 1

    def local_top(self, size: float) -> int:
        """The level of a sketch's far side: ``n ** sketch_digits - 2``, or fewer (even) when the sketch is so small
        that the step ``size / top`` would drop below ``8 * 10**-decimals`` (the text's rounding)."""
        top = self.n_levels ** self.sketch_digits - 2
        fit = int(size / self.min_step + 1e-9) // 2 * 2
        return max(2, min(top, fit))

    def min_level(self, kind: str) -> int:
        """The lowest level allowed in a slot of ``kind`` (1 for an arc's sweep, which 0 would make a line)."""
        return 1 if kind == "sweep" else 0

    def _name(self, token_id: int) -> str:
        return self.vocab[token_id] if 0 <= token_id < len(self.vocab) else f"<out of vocab {token_id}>"

    def _value_ids(self, kind: str, v: float) -> list[int]:
        k = int(v) if kind == "local" else self.grids[kind].level(v)  # local values come as levels
        d = self.digits(kind)
        out = []
        for _ in range(d):
            out.append(self.value_id(k % self.n_levels))
            k //= self.n_levels
        return out[::-1]

    # -- encode ----------------------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """Token ids (``<bos> ... <eos>``) of answer ``text`` (either format); ValueError naming the line if bad."""
        return self.encode_sequence(parse_answer(text))

    def encode_sequence(self, seq: CADSequence) -> list[int]:
        """Token ids (``<bos> ... <eos>``) of ``seq``; numbers are rounded to their grid and clipped to its ends."""
        ids = [self.bos_id]

        def stmt(cmd: str, *args) -> None:
            ids.append(self.token_to_id[cmd])
            for kind, a in zip(self.fields[cmd], args, strict=True):
                ids.extend([self.token_to_id[a]] if kind in WORD_GROUPS else self._value_ids(kind, a))

        stmt("bbox", *seq.bbox_min, *seq.bbox_max)
        for ex in seq.extrudes:
            stmt("extrude", ex.operation, ex.extent_type, ex.extent_one, ex.extent_two)
            if self.layout == "global":
                p = ex.plane
                stmt("plane", *p.origin, *p.x_axis, *p.y_axis, *p.normal)
                self._encode_global_profiles(ex, stmt)
            else:
                self._encode_local_sketch(ex, stmt)
        ids.append(self.eos_id)
        return ids

    def _encode_global_profiles(self, ex: Extrude, stmt) -> None:
        for prof in ex.profiles:
            stmt("profile")
            for lp in prof.loops:
                stmt("loop", "outer" if lp.is_outer else "inner")
                for c in lp.curves:
                    if isinstance(c, Line):
                        stmt("line", *c.start, *c.end)
                    elif isinstance(c, Circle):
                        stmt("circle", *c.center, c.radius)
                    elif isinstance(c, Arc):
                        stmt("arc", *c.start, *c.end, *c.center, c.radius, c.start_angle, c.end_angle,
                             *c.reference_vector, "nz=1" if c.normal_z > 0 else "nz=-1")
                    else:
                        raise TypeError(f"encode_sequence: not a curve: {c!r}")

    def _encode_local_sketch(self, ex: Extrude, stmt) -> None:
        p = ex.plane
        x, y, nrm = (np.asarray(a, float) for a in (p.x_axis, p.y_axis, p.normal))
        mirror = -1.0 if float(np.cross(x, y) @ nrm) < 0 else 1.0  # left-handed: flip local y (and turnings)
        profiles = []  # per profile: [(is_outer, ("circle", c, r) | ("chain", [(end, sweep|None), ...]))]
        pts = []
        for prof in ex.profiles:
            loops = []
            for lp in prof.loops:
                if len(lp.curves) == 1 and isinstance(lp.curves[0], Circle):
                    c = lp.curves[0]
                    cen, r = (float(c.center[0]), mirror * float(c.center[1])), abs(float(c.radius))
                    pts += [(cen[0] - r, cen[1] - r), (cen[0] + r, cen[1] + r)]
                    loops.append((lp.is_outer, ("circle", (cen, r))))
                    continue
                chain = [((e[0], mirror * e[1]), None if w is None else mirror * w) for _, e, w in chain_loop(lp)]
                pts += [e for e, _ in chain]
                loops.append((lp.is_outer, ("chain", chain)))
            profiles.append(loops)
        pts = np.asarray(pts, float)
        p0 = pts.min(axis=0)
        extent_x, extent_y = (float(v) for v in pts.max(axis=0) - p0)
        extent = max(extent_x, extent_y)
        theta, phi, gamma = axes_to_euler(x, nrm)
        # the 3D corner of the sketch box, snapped; its in-plane snapping error shifts the local points back
        yr = mirror * y
        corner = np.asarray(p.origin, float) + p0[0] * x + p0[1] * yr
        g = self.grids["origin"]
        snapped = np.array([g.value(g.level(v)) for v in corner])
        shift = p0 + np.array([(snapped - corner) @ x, (snapped - corner) @ yr])
        gs = self.grids["size"]
        size = gs.value(gs.level(extent))  # (k + 1) steps: never 0
        stmt("plane", *snapped, theta, phi, gamma, size)
        # Decoding then encoding gives these ids again when the levels span the grid exactly: from 0 on both axes to
        # the top level along the longer one (so the re-read box is this frame). The snapped corner's shift already
        # puts them there, unless the origin grid is coarser than the local one (frame_digits=1); then the levels
        # are moved onto it (by about the snapping error).
        top = self.local_top(size)
        along = 0 if extent_x >= extent_y else 1

        def lv(value: float, axis: int) -> int:
            return int(np.round((value - shift[axis]) / size * top))

        items = []  # per profile: [(is_outer, ("circle", [u, v, d]) | ("chain", [[u, v, sweep|None], ...]))]
        for loops in profiles:
            out = []
            for is_outer, (what, data) in loops:
                if what == "circle":  # by its box (corner, diameter): the box of decoded circles is on the grid
                    (cx, cy), r = data
                    q = [lv(cx - r, 0), lv(cy - r, 1)]
                    out.append((is_outer, ("circle", [*q, lv((cx, cy)[along] + r, along) - q[along]])))
                else:
                    out.append((is_outer, ("chain", [[lv(e[0], 0), lv(e[1], 1), w] for e, w in data])))
            items.append(out)
        self._span_grid([x for out in items for x in out], top, along)
        for out in items:
            stmt("profile")
            for is_outer, (what, data) in out:
                stmt("loop", "outer" if is_outer else "inner")
                if what == "circle":
                    stmt("circle", *data)
                    continue
                for u, v, w in data:
                    if w is None or self.grids["sweep"].level(abs(w)) == 0:  # a line, or an arc turning < half a step
                        stmt("line", u, v)
                    else:
                        stmt("arc", u, v, abs(w), "nz=1" if w > 0 else "nz=-1")

    @staticmethod
    def _span_grid(loops, top: int, along: int) -> None:
        """Move sketch levels (in place) so they start at 0 on both axes and end at ``top`` along ``along``."""
        def boxes():  # (lo, hi) per axis of every vertex and circle, as [item, index, extra]
            for _, (what, data) in loops:
                if what == "circle":
                    yield data, True
                else:
                    for p in data:
                        yield p, False

        for axis in (0, 1):
            m = min(p[axis] for p, _ in boxes())
            for p, _ in boxes():
                p[axis] -= m
        hi = max(p[along] + (p[2] if circ else 0) for p, circ in boxes())
        if hi != top:
            for p, circ in boxes():
                if p[along] + (p[2] if circ else 0) == hi:
                    if circ:
                        p[2] += top - hi
                    else:
                        p[along] = top
        for p, circ in boxes():
            p[0], p[1] = min(max(p[0], 0), top), min(max(p[1], 0), top)
            if circ:
                p[2] = max(0, min(p[2], top - p[0], top - p[1]))

    # -- decode ----------------------------------------------------------------------------------------

    def statements(self, ids) -> list[tuple[str, list[int], int]]:
        """Split ids into ``(command, argument ids, position of the command)``, checking every slot.

        A leading ``<bos>`` is skipped; reading stops at ``<eos>``, after which only ``<pad>`` may follow.
        Raises ValueError naming the token position, what was found and what the grammar expects there;
        nesting (bbox first, plane after extrude, ...) is checked by :meth:`decode_sequence`.
        """
        ids = [int(i) for i in ids]
        pos = 1 if ids and ids[0] == self.bos_id else 0
        out = []
        while True:
            if pos >= len(ids):
                raise ValueError(f"token ids end at position {pos} without <eos>: the sequence is truncated "
                                 "(generate with a larger max_len, or constrained=True, which always closes)")
            t = ids[pos]
            name = self._name(t)
            if t == self.eos_id:
                extra = [i for i in ids[pos + 1:] if i != self.pad_id]
                if extra:
                    raise ValueError(f"token {pos + 1}: {self._name(extra[0])} after <eos>; only <pad> may follow")
                return out
            if name not in self.args:
                raise ValueError(f"token {pos}: {name} where a statement keyword ({', '.join(COMMANDS)}) or <eos> "
                                 "is expected")
            slots = self.args[name]
            args = ids[pos + 1: pos + 1 + len(slots)]
            for j, slot in enumerate(slots):
                at = pos + 1 + j
                if j >= len(args):
                    raise ValueError(f"token ids end inside {name!r} at position {at}: the sequence is truncated")
                if slot in WORD_GROUPS:
                    ok = self._name(args[j]) in WORD_GROUPS[slot]
                else:
                    ok = self.is_value(args[j]) and self.level_of(args[j]) >= self.min_level(slot)
                if not ok:
                    want = "|".join(WORD_GROUPS[slot]) if slot in WORD_GROUPS else f"a value token ({slot})"
                    if slot not in WORD_GROUPS and self.is_value(args[j]):
                        want = f"a {slot} level >= {self.min_level(slot)} (an arc must turn; use a line)"
                    raise ValueError(f"token {at}: {self._name(args[j])} in {name!r} where {want} is expected")
            out.append((name, args, pos))
            pos += 1 + len(args)

    def _values(self, cmd: str, args: list[int]) -> list:
        """The statement's arguments as floats (multi-token values joined) and words."""
        out, i = [], 0
        for slot in self.fields[cmd]:
            if slot in WORD_GROUPS:
                out.append(self.vocab[args[i]])
                i += 1
                continue
            k = 0
            for j in range(self.digits(slot)):
                k = k * self.n_levels + self.level_of(args[i + j])
            out.append(k if slot == "local" else self.grids[slot].value(k))
            i += self.digits(slot)
        return out

    def _arg_text(self, slot: str, token_id: int) -> str:
        if slot in WORD_GROUPS:
            return self.vocab[token_id]
        return repr(self.grids[slot].value(self.level_of(token_id)))

    def decode_sequence(self, ids) -> CADSequence:
        """The :class:`CADSequence` of ``ids`` with the exact grid values (no decimal rounding).

        Raises ValueError naming the token position for a bad slot, or the statement for bad nesting.
        """
        stmts = self.statements(ids)
        if not stmts or stmts[0][0] != "bbox":
            at = stmts[0][2] if stmts else 1
            raise ValueError(f"token {at}: token ids must start with <bos> bbox (the bounding box comes first)")
        if self.layout == "local":
            return self._decode_local(stmts)
        lines = []
        k = 0
        for cmd, args, _ in stmts:
            a = [self._arg_text(s, t) for s, t in zip(self.args[cmd], args, strict=False)]
            if cmd == "bbox":
                lines.append(f"bbox min=({a[0]},{a[1]},{a[2]}) max=({a[3]},{a[4]},{a[5]})")
            elif cmd == "extrude":
                k += 1
                lines.append(f"extrude {k}: {a[0]} {a[1]} e1={a[2]} e2={a[3]}")
            elif cmd == "plane":
                lines.append("plane o=({},{},{}) x=({},{},{}) y=({},{},{}) n=({},{},{})".format(*a))
            elif cmd == "profile":
                lines.append("profile")
            elif cmd == "loop":
                lines.append(f"loop {a[0]}")
            elif cmd == "line":
                lines.append(f"line ({a[0]},{a[1]})->({a[2]},{a[3]})")
            elif cmd == "circle":
                lines.append(f"circle c=({a[0]},{a[1]}) r={a[2]}")
            else:
                lines.append("arc ({},{})->({},{}) c=({},{}) r={} a0={} a1={} ref=({},{}) {}".format(*a))
        try:
            return from_code("\n".join(lines) + "\n")
        except ValueError as err:  # from_code names the line; line i is statement i, say which token that is
            msg = str(err)
            if msg.startswith("line "):
                n = int(msg.split(":", 1)[0].split()[1])
                if 1 <= n <= len(stmts):
                    raise ValueError(f"token {stmts[n - 1][2]} ({stmts[n - 1][0]!r}, statement {n}): "
                                     f"{msg.split(':', 1)[1].strip()}") from err
            raise ValueError(f"token ids do not form a CAD model: {msg}") from err

    def _decode_local(self, stmts) -> CADSequence:
        expect = {"bbox": ("extrude",), "extrude": ("plane",), "plane": ("profile",), "profile": ("loop",),
                  "loop": CURVES, "line": ("line", "arc", "loop", "profile", "extrude"),
                  "arc": ("line", "arc", "loop", "profile", "extrude"), "circle": ("loop", "profile", "extrude")}
        extrudes: list[Extrude] = []
        bbox = ((0.0,) * 3, (0.0,) * 3)
        ext = plane = size = unit = None
        profiles: list[Profile] = []
        loops: list[Loop] = []
        chain: list | None = None
        side = True

        def close_loop():
            nonlocal chain
            if chain is not None:
                ends = [e for e, _ in chain]
                curves = []
                for i, (e, w) in enumerate(chain):
                    s = ends[i - 1]  # the first curve starts at the last one's end
                    curves.append(Line(start=s, end=e) if w is None else arc_from_sweep(s, e, w))
                loops.append(Loop(curves=tuple(curves), is_outer=side))
                chain = None

        def close_profile():
            nonlocal loops
            close_loop()
            if loops:
                profiles.append(Profile(loops=tuple(loops)))
                loops = []

        def close_extrude():
            nonlocal profiles
            close_profile()
            if ext is not None:
                op, et, e1, e2 = ext
                extrudes.append(Extrude(name=f"Extrude {len(extrudes) + 1}", plane=plane, profiles=tuple(profiles),
                                        operation=op, extent_type=et, extent_one=e1, extent_two=e2))
                profiles = []

        prev = None
        for i, (cmd, args, pos) in enumerate(stmts):
            if prev is not None and cmd not in expect[prev]:
                raise ValueError(f"token {pos} ({cmd!r}, statement {i + 1}): {cmd} cannot follow {prev} (expected "
                                 f"{' or '.join(expect[prev])})")
            if i == 0 and cmd != "bbox":
                raise ValueError(f"token {pos}: token ids must start with <bos> bbox")
            a = self._values(cmd, args)
            if cmd == "bbox":
                bbox = (tuple(a[:3]), tuple(a[3:6]))
            elif cmd == "extrude":
                close_extrude()
                ext = (a[0], a[1], a[2], a[3])
            elif cmd == "plane":
                x, y, n = euler_to_axes(a[3], a[4], a[5])
                plane = SketchPlane(origin=tuple(a[:3]), x_axis=tuple(map(float, x)), y_axis=tuple(map(float, y)),
                                    normal=tuple(map(float, n)))
                size = a[6]
                unit = size / self.local_top(size)  # local values decode as levels: times this
            elif cmd == "profile":
                close_profile()
            elif cmd == "loop":
                close_loop()
                side = a[0] == "outer"
            elif cmd == "circle":
                r = a[2] * unit / 2  # a circle is its box: lower-left corner and diameter
                loops.append(Loop(curves=(Circle(center=(a[0] * unit + r, a[1] * unit + r), radius=r),),
                                  is_outer=side))
            else:
                if chain is None:
                    chain = []
                end = (a[0] * unit, a[1] * unit)
                chain.append((end, None if cmd == "line" else (a[2] if a[3] == "nz=1" else -a[2])))
            prev = cmd
        if prev in (None, "bbox", "extrude", "plane", "profile", "loop"):
            at = stmts[-1][2]
            raise ValueError(f"token {at} ({prev!r}, statement {len(stmts)}): the model ends before its first curve "
                             f"({'no extrude' if prev in (None, 'bbox') else f'{prev} has no curves after it'})")
        close_extrude()
        return CADSequence(extrudes=tuple(extrudes), bbox_min=bbox[0], bbox_max=bbox[1])

    def decode(self, ids) -> str:
        """CAD code text of ``ids`` (``to_code`` with ``self.decimals``); parseable by ``from_code``."""
        return to_code(self.decode_sequence(ids), decimals=self.decimals)

    # -- batches and files -----------------------------------------------------------------------------

    def pad_batch(self, seqs: list[list[int]], length: int | None = None) -> np.ndarray:
        """``[B, L]`` int64 array of ``seqs`` right-padded with ``<pad>`` to ``length`` (default: the longest).

        Raises ValueError when a sequence is longer than ``length`` (truncating would cut off ``<eos>``).
        """
        L = max((len(s) for s in seqs), default=0) if length is None else int(length)
        out = np.full((len(seqs), L), self.pad_id, dtype=np.int64)
        for i, s in enumerate(seqs):
            if len(s) > L:
                raise ValueError(f"pad_batch: sequence {i} has {len(s)} tokens > length={L}; raise length or "
                                 "drop the sequence")
            out[i, :len(s)] = s
        return out

    def config(self) -> dict:
        """The constructor arguments and the vocabulary, as saved by :meth:`save`."""
        return {"format": FORMAT, "layout": self.layout, "n_levels": self.n_levels,
                "value_range": list(self.value_range), "sketch_range": list(self.sketch_range),
                "angle_range": list(self.angle_range), "frame_digits": self.frame_digits,
                "frame_range": list(self.frame_range), "sketch_digits": self.sketch_digits,
                "decimals": self.decimals, "vocab": self.vocab}

    def save(self, path: str | Path) -> None:
        """Write the tokenizer as JSON (constructor arguments plus the vocabulary, for checking on load)."""
        Path(path).write_text(json.dumps(self.config(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> CADTokenizer:
        """Read a tokenizer written by :meth:`save`; ValueError if the file is not one or its vocabulary differs.

        Files of format ``cad-tokenizer/1`` (before the local layout) load as ``layout="global"``.
        """
        cfg = json.loads(Path(path).read_text())
        if not isinstance(cfg, dict) or cfg.get("format") not in FORMATS:
            raise ValueError(f"{path}: not a CAD tokenizer file (format should be {FORMAT!r}); write it with "
                             "CADTokenizer.save")
        tok = cls(n_levels=cfg["n_levels"], value_range=tuple(cfg["value_range"]),
                  sketch_range=tuple(cfg["sketch_range"]), angle_range=tuple(cfg["angle_range"]),
                  decimals=cfg["decimals"], layout=cfg.get("layout", "global"),
                  frame_digits=cfg.get("frame_digits", 2), frame_range=tuple(cfg.get("frame_range", (-2.0, 2.0))),
                  sketch_digits=cfg.get("sketch_digits", 2))
        if cfg.get("vocab") != tok.vocab:
            raise ValueError(f"{path}: saved vocabulary differs from this code's for the same settings (a file from "
                             "another tokenizer version?); re-save it with this version or use matching code")
        return tok
