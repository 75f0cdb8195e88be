"""Tokenizer of CAD code text (:mod:`lib.deepcad.cadcode`): grammar keywords plus 8-bit quantised values.

A language model over characters of ``to_code`` output would spend most of its capacity spelling digits;
DeepCAD instead predicts commands and 256-level parameters. This tokenizer gives the CAD code text that
form while staying exactly convertible to and from text:

- **Keyword tokens**: the statements ``bbox extrude plane profile loop line arc circle``, their word
  arguments (``new_body join cut intersect``, ``one_side symmetric two_sides``, ``outer inner``,
  ``nz=1 nz=-1``) and the structural ``<pad>`` (id 0) ``<bos> <eos> <unk>``. ``<unk>`` is reserved: encode
  never emits it (the text grammar is closed), decode rejects it and the grammar mask never allows it.
- **Value tokens** ``<v0>..<v{n-1}>``: every number becomes one token. Which grid it is on follows from
  its position in the grammar (:data:`ARGS`), so the kinds share the same tokens.

Value kinds (``n = n_levels``, grid ``v = lo + q * step`` for ``q`` in ``0..n-1``; encode rounds to the
nearest level and clips to the ends, so in-range values are off by at most ``step / 2``):

========  ==========================================  ========================  =========================
kind      parameters                                  default range, step       why
========  ==========================================  ========================  =========================
coord     bbox corners, plane origins                 [-1, 1), 2/n              DeepCAD's ``quantize``
                                                                                (same codes); ``normalize``
                                                                                puts these in [-0.75, 0.75]
sketch    2D curve points, centres, radii, extents    [-2, 2), 4/n              local sketch coordinates
                                                                                and tool extents leave the
                                                                                cube (synth intersect parts
                                                                                reach 1.98, extents 1.26)
unit      plane x/y/normal axes, arc reference        [-1, 1], 2/(n-2)          -1, 0 and +1 all on the
          vectors                                                               grid (q = 0, n/2-1, n-2)
angle     arc start/end angles (radians)              [-2π, 2π), 4π/n           0, ±π/2, ±π, ±3π/2 exact
========  ==========================================  ========================  =========================

Token layout of one model (``K`` of ``extrude K:`` is implicit; decode numbers extrudes 1, 2, ...)::

    <bos> bbox v*6  [extrude OP TYPE v(e1) v(e2) plane v*12  [profile [loop outer|inner CURVE+]+]+]+ <eos>
    CURVE = line v*4 | circle v*3 | arc v*11 nz=±1

Precision trade-off: the sketch grid must span [-2, 2) for the round trip to hold on every synthetic model, so
its step is 1/64 of the normalised cube. Re-meshing 8-bit code of synthetic models against the 4-decimal source
gives mean IoU ~0.84 and median Chamfer ~0.011 (~7% of quantised models no longer mesh: collapsed small
features, arcs whose endpoints and angles now disagree); ``sketch_range=(-1, 1)`` clips the few outside
values and gives ~0.89, as does ``n_levels=512``.

A line costs 5 tokens, a circle 4, an arc 13 (start, end, centre, radius, both angles and the reference
vector are all kept, as in the text; no compact form, so the round trip stays a pure re-quantisation), an
extrude header with its plane 18, a profile 1 and a loop 2.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lib.deepcad.cadcode import from_code, to_code
from lib.deepcad.schema import EXTENT_TYPES, OPERATIONS, Arc, CADSequence, Circle, Line

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)  # PAD first: id 0, the usual padding / ignore id
COMMANDS = ("bbox", "extrude", "plane", "profile", "loop", "line", "arc", "circle")
CURVES = ("line", "arc", "circle")
# Word arguments, by the slot name that :data:`ARGS` uses for them.
WORD_GROUPS: dict[str, tuple[str, ...]] = {
    "op": tuple(OPERATIONS.values()),
    "extent": tuple(EXTENT_TYPES.values()),
    "side": ("outer", "inner"),
    "nz": ("nz=1", "nz=-1"),
}
VALUE_KINDS = ("coord", "sketch", "unit", "angle")
# Slots following each statement's keyword, in text order: a value kind or a word group. One source of truth
# for encode, decode and the grammar-constrained decoder (lib.cad.constrained).
ARGS: dict[str, tuple[str, ...]] = {
    "bbox": ("coord",) * 6,
    "extrude": ("op", "extent", "sketch", "sketch"),
    "plane": ("coord",) * 3 + ("unit",) * 9,
    "profile": (),
    "loop": ("side",),
    "line": ("sketch",) * 4,
    "circle": ("sketch",) * 3,
    "arc": ("sketch",) * 7 + ("angle",) * 2 + ("unit",) * 2 + ("nz",),
}
FORMAT = "cad-tokenizer/1"


@dataclass(frozen=True)
class ValueGrid:
    """One value kind's grid: ``value(q) = lo + q * step`` for ``q`` in ``0..n-1``."""

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


class CADTokenizer:
    """CAD code text <-> token ids (see the module docstring for the vocabulary, grids and layout).

    ``encode(text)`` parses with :func:`~lib.deepcad.cadcode.from_code` and quantises; ``decode(ids)``
    rebuilds the :class:`CADSequence` from the grid values and writes it with ``to_code(seq, decimals)``.
    ``from_code(decode(encode(t)))`` is ``from_code(t)`` with every number moved by at most half its grid
    step (plus the ``decimals`` rounding of the written text), and ``encode(decode(ids)) == ids`` for any
    ids ``encode`` returns, as long as ``decimals`` keeps well under half a step (4 decimals: 5e-5 against
    steps >= 2/n; checked in the constructor).
    """

    def __init__(self, n_levels: int = 256, value_range: tuple[float, float] = (-1.0, 1.0),
                 sketch_range: tuple[float, float] = (-2.0, 2.0),
                 angle_range: tuple[float, float] = (-2 * math.pi, 2 * math.pi), decimals: int = 4) -> None:
        if n_levels < 4 or n_levels % 2:
            raise ValueError(f"CADTokenizer: n_levels={n_levels} must be even and >= 4 (so 0 is a level)")
        self.n_levels = int(n_levels)
        self.value_range = _check_range("value_range", value_range)
        self.sketch_range = _check_range("sketch_range", sketch_range)
        self.angle_range = _check_range("angle_range", angle_range)
        self.decimals = int(decimals)
        n = self.n_levels
        self.grids: dict[str, ValueGrid] = {
            kind: ValueGrid(kind, lo, (hi - lo) / n, n)
            for kind, (lo, hi) in (("coord", self.value_range), ("sketch", self.sketch_range),
                                   ("angle", self.angle_range))}
        self.grids["unit"] = ValueGrid("unit", -1.0, 2.0 / (n - 2), n)
        for g in self.grids.values():
            if abs(round(-g.lo / g.step) * g.step + g.lo) > 1e-9 * g.step:
                raise ValueError(f"CADTokenizer: 0 is not a level of the {g.kind} grid (lo={g.lo}, step={g.step}); "
                                 "use a range whose lower end is a whole number of steps below 0, e.g. symmetric")
            if 0.5 * 10.0 ** -self.decimals >= g.step / 4:
                raise ValueError(f"CADTokenizer: decimals={decimals} rounds by more than a quarter of the {g.kind} "
                                 f"step {g.step:.3g}, so decode -> encode would not be exact; raise decimals")
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

    def _name(self, token_id: int) -> str:
        return self.vocab[token_id] if 0 <= token_id < len(self.vocab) else f"<out of vocab {token_id}>"

    # -- encode ----------------------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """Token ids (``<bos> ... <eos>``) of CAD code ``text``; ValueError (naming the line) if it doesn't parse."""
        return self.encode_sequence(from_code(text))

    def encode_sequence(self, seq: CADSequence) -> list[int]:
        """Token ids (``<bos> ... <eos>``) of ``seq``; numbers are rounded to their grid and clipped to its ends."""
        ids = [self.bos_id]

        def stmt(cmd: str, *args) -> None:
            ids.append(self.token_to_id[cmd])
            for slot, a in zip(ARGS[cmd], args, strict=True):
                ids.append(self.token_to_id[a] if slot in WORD_GROUPS else self.value_id(self.grids[slot].level(a)))

        stmt("bbox", *seq.bbox_min, *seq.bbox_max)
        for ex in seq.extrudes:
            stmt("extrude", ex.operation, ex.extent_type, ex.extent_one, ex.extent_two)
            p = ex.plane
            stmt("plane", *p.origin, *p.x_axis, *p.y_axis, *p.normal)
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
        ids.append(self.eos_id)
        return ids

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
            if name not in ARGS:
                raise ValueError(f"token {pos}: {name} where a statement keyword ({', '.join(COMMANDS)}) or <eos> "
                                 "is expected")
            args = ids[pos + 1: pos + 1 + len(ARGS[name])]
            for j, slot in enumerate(ARGS[name]):
                at = pos + 1 + j
                if j >= len(args):
                    raise ValueError(f"token ids end inside {name!r} at position {at}: the sequence is truncated")
                ok = self._name(args[j]) in WORD_GROUPS[slot] if slot in WORD_GROUPS else self.is_value(args[j])
                if not ok:
                    want = "|".join(WORD_GROUPS[slot]) if slot in WORD_GROUPS else f"a value token ({slot})"
                    raise ValueError(f"token {at}: {self._name(args[j])} in {name!r} where {want} is expected")
            out.append((name, args, pos))
            pos += 1 + len(args)

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
        lines = []
        k = 0
        for cmd, args, _ in stmts:
            a = [self._arg_text(s, t) for s, t in zip(ARGS[cmd], args, strict=False)]
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
        return {"format": FORMAT, "n_levels": self.n_levels, "value_range": list(self.value_range),
                "sketch_range": list(self.sketch_range), "angle_range": list(self.angle_range),
                "decimals": self.decimals, "vocab": self.vocab}

    def save(self, path: str | Path) -> None:
        """Write the tokenizer as JSON (constructor arguments plus the vocabulary, for checking on load)."""
        Path(path).write_text(json.dumps(self.config(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> CADTokenizer:
        """Read a tokenizer written by :meth:`save`; ValueError if the file is not one or its vocabulary differs."""
        cfg = json.loads(Path(path).read_text())
        if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
            raise ValueError(f"{path}: not a CAD tokenizer file (format should be {FORMAT!r}); write it with "
                             "CADTokenizer.save")
        tok = cls(n_levels=cfg["n_levels"], value_range=tuple(cfg["value_range"]),
                  sketch_range=tuple(cfg["sketch_range"]), angle_range=tuple(cfg["angle_range"]),
                  decimals=cfg["decimals"])
        if cfg.get("vocab") != tok.vocab:
            raise ValueError(f"{path}: saved vocabulary differs from this code's for the same settings (a file from "
                             "another tokenizer version?); re-save it with this version or use matching code")
        return tok
