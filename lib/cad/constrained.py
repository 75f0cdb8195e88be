"""Grammar-constrained decoding: which token ids may come next so the result is always valid CAD code.

A generator that masks its logits with :meth:`CADGrammar.allowed` and picks any allowed token can only
produce id sequences that :meth:`CADTokenizer.decode <lib.cad.tokenizer.CADTokenizer.decode>` turns into
text :func:`~lib.deepcad.cadcode.from_code` parses: ``<bos> bbox`` first, each ``extrude`` with its word
arguments, two values and then ``plane``, at least one profile per extrude, one loop per profile and one
curve per loop, the right number of values after every keyword, and ``<eos>`` only after a curve.

Loops close, at the token level, as every loop of the training data does. In the default **local** layout
(:mod:`lib.cad.tokenizer`) every chain closes by construction (a curve carries only its end point; the first
starts at the last one's end), so a loop is one ``circle`` or a chain of ``line``/``arc`` that may be followed by
``loop``/``profile``/``extrude``/``<eos>`` once it has three curves, or two when one is an arc (two lines would
retrace each other); an arc's sweep may not be level 0 (no turn). In the **global** layout a chain's first two
values (the start point) must repeat the previous curve's end point, and the loop is closed once its last end
point is its first start point after as many curves; reaching the start sooner does not close it, and near
``max_len`` the end point is forced onto it. Zero-length curves stay allowed: small fillets quantise to one point
in the training data. Other geometry (self-intersections) is still for the mesh builder to judge.

The state is the statement's slots still to fill (the tokenizer's ``args``) plus the *choice point*
reached once they are filled:

==========  ======================================================  ===========================
point       allowed there                                           reached after
==========  ======================================================  ===========================
start       ``<bos>``                                               (initial state)
bbox        ``bbox``                                                ``<bos>``
extrude     ``extrude``                                             bbox's values
plane       ``plane``                                               extrude's arguments
profile     ``profile``                                             plane's values
loop        ``loop``                                                ``profile``
curve       ``line arc circle``                                     ``loop outer|inner``
more        open loop: ``line arc``; closed: ``loop profile         a curve's arguments
            extrude <eos>``
done        ``<pad>`` (so finished rows of a batch can keep going)  ``<eos>``
==========  ======================================================  ===========================

Length: with ``max_len`` (total ids, ``<bos>`` and ``<eos>`` included) a statement is only allowed when the
cheapest way to finish after it still fits, the cheapest finish from each point being precomputed
(``loop circle`` then ``<eos>`` and so on; a whole minimal model is 38 tokens in the local layout,
:data:`MIN_LENGTH`, 34 in the global one; an open chain costs the cheapest curves that close it more). Near the
limit the mask closes the loop (local: only the curves that still fit and close it; global: the end point is
forced onto the loop's start) and then the model: every sampled sequence ends with ``<eos>`` within ``max_len``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from lib.cad.tokenizer import BOS, CURVES, PAD, WORD_GROUPS, CADTokenizer

# Statements allowed at each choice point; "<eos>" is allowed only at "more".
POINT_COMMANDS: dict[str, tuple[str, ...]] = {
    "bbox": ("bbox",),
    "extrude": ("extrude",),
    "plane": ("plane",),
    "profile": ("profile",),
    "loop": ("loop",),
    "curve": CURVES,
    "more": ("loop", "profile", "extrude"),  # with the loop closed; an open chain takes CHAIN_CURVES only
}
CHAIN_CURVES = ("line", "arc")
# Choice point reached after a statement's slots are filled.
NEXT_POINT: dict[str, str] = {"bbox": "extrude", "extrude": "plane", "plane": "profile", "profile": "loop",
                              "loop": "curve", "line": "more", "arc": "more", "circle": "more"}


def _finish_costs(args: dict[str, tuple[str, ...]], first_close=lambda cmd: 0) -> dict[str, int]:
    """Fewest tokens from each choice point to ``<eos>`` inclusive (fixed point of the min over statements);
    ``first_close(cmd)``: what closing a loop started with chain curve ``cmd`` costs on top."""
    inf = 10**9
    cost = {p: inf for p in POINT_COMMANDS}
    cost.update(done=0, start=inf)
    for _ in range(len(cost) + 1):
        for p, cmds in POINT_COMMANDS.items():
            best = min(1 + len(args[c]) + cost[NEXT_POINT[c]] + (first_close(c) if p == "curve" and c in CHAIN_CURVES
                                                                  else 0) for c in cmds)
            cost[p] = min(cost[p], best, 1 if p == "more" else inf)
        cost["start"] = 1 + cost["bbox"]
    return cost


def closes(curves: int, has_arc: bool) -> bool:
    """Whether a chain of ``curves`` lines/arcs makes a loop with area: three curves, or two when one is an arc."""
    return curves >= 3 or (curves == 2 and has_arc)




@dataclass(frozen=True)
class GrammarState:
    """Where a partial id sequence stands: ids read, slots left in the statement, the next choice point, and
    the loop being drawn (its first start point, the current end point, curves so far, whether an arc is in it).
    """

    length: int
    pending: tuple[str, ...]
    point: str
    cmd: str = ""  # statement whose slots are being read
    args: tuple[int, ...] = ()  # ids of its slots read so far
    loop_start: tuple[int, int] | None = None
    cursor: tuple[int, int] | None = None
    curves: int = 0
    has_arc: bool = False
    closed: bool = True  # no loop open (before the first loop, or after a circle or a closing curve)

    @property
    def done(self) -> bool:
        """Whether ``<eos>`` has been read."""
        return self.point == "done"


class CADGrammar:
    """The token-level CAD code grammar of ``tokenizer``, optionally limited to ``max_len`` ids in all.

    ``allowed(state)`` is the bool mask ``[vocab_size]`` of tokens that may come next; ``advance(state, id)``
    the state after reading one (ValueError if not allowed). ``initial()`` expects ``<bos>``.
    """

    def __init__(self, tokenizer: CADTokenizer, max_len: int | None = None) -> None:
        self.args = tokenizer.args
        self.local = tokenizer.layout == "local"
        self.finish_cost = _finish_costs(self.args, lambda c: self._close_cost(1, c == "arc") if self.local
                                         else 1 + len(self.args["line"]))
        self.min_length = self.finish_cost["start"]
        if max_len is not None and max_len < self.min_length:
            raise ValueError(f"CADGrammar: max_len={max_len} is below the shortest complete model ({self.min_length} "
                             f"tokens: <bos> bbox, one extrude with its plane, a profile, a loop, a circle, <eos>); "
                             f"use max_len >= {self.min_length} or None")
        # global layout: one line back to the loop's start; local: the cheapest curves that make the chain close
        self.closing_cost = 1 + len(self.args["line"])
        self.tok = tokenizer
        self.max_len = max_len
        V = tokenizer.vocab_size
        ids = tokenizer.token_to_id

        def mask(names=(), values: bool = False) -> np.ndarray:
            m = np.zeros(V, dtype=bool)
            m[[ids[n] for n in names]] = True
            if values:
                m[tokenizer.value_offset: tokenizer.value_offset + tokenizer.n_levels] = True
            m.setflags(write=False)
            return m

        self._slot_masks = {slot: mask(names=group) for slot, group in WORD_GROUPS.items()}
        self._slot_masks.update({kind: mask(values=True) for kind in tokenizer.grids})
        for kind in tokenizer.grids:  # an arc's sweep: not level 0 (no turn)
            for q in range(tokenizer.min_level(kind)):
                m = self._slot_masks[kind].copy()
                m[tokenizer.value_id(q)] = False
                m.setflags(write=False)
                self._slot_masks[kind] = m
        self._bos, self._pad = mask(names=(BOS,)), mask(names=(PAD,))
        self._eos_id, self._pad_id, self._bos_id = tokenizer.eos_id, tokenizer.pad_id, tokenizer.bos_id
        self._cmd_ids = {c: ids[c] for c in self.args}
        self._id_cmd = {i: c for c, i in self._cmd_ids.items()}

    def initial(self) -> GrammarState:
        """The state before any token (expects ``<bos>``)."""
        return GrammarState(length=0, pending=(), point="start")

    def remaining(self, state: GrammarState) -> int:
        """Fewest further ids (``<eos>`` included) that complete a valid model from ``state``."""
        if state.point == "more" and not state.closed:
            if self.local:
                return len(state.pending) + self._close_cost(state.curves, state.has_arc) + self.finish_cost["more"]
            closes_here = state.cmd == "circle" or (bool(state.pending) and self._may_close(state))
            return len(state.pending) + (0 if closes_here else self.closing_cost) + self.finish_cost["more"]
        return len(state.pending) + self.finish_cost[state.point]

    def _close_cost(self, curves: int, has_arc: bool) -> int:
        """Local layout: fewest tokens of lines/arcs after which a chain of ``curves`` closes (0: closed)."""
        line, arc = 1 + len(self.args["line"]), 1 + len(self.args["arc"])
        return min(k * line + j * arc for k in range(4) for j in range(3) if closes(curves + k + j, has_arc or j > 0))

    def _fits(self, state: GrammarState, cmd: str) -> bool:
        if self.max_len is None:
            return True
        after = state.length + 1 + len(self.args[cmd])
        if cmd in CHAIN_CURVES and self.local:  # the chain must still be able to close after this curve
            first = state.point == "curve"
            after += self._close_cost((0 if first else state.curves) + 1, (not first and state.has_arc) or cmd == "arc")
        elif cmd in CHAIN_CURVES and state.point == "curve":  # a loop's first line/arc cannot close it
            after += self.closing_cost
        return after + self.finish_cost[NEXT_POINT[cmd]] <= self.max_len

    def _must_close(self, state: GrammarState) -> bool:
        """Whether the chain curve being read must end on the loop's start (no room for a closing line after)."""
        if self.max_len is None or self.local:
            return False
        return state.length + len(state.pending) + self.closing_cost + self.finish_cost["more"] > self.max_len

    def _may_close(self, state: GrammarState) -> bool:
        """Whether the chain curve being read closes the loop if it ends on its start (two lines would retrace
        each other)."""
        if state.curves >= 2:
            return True
        return state.curves == 1 and (state.has_arc or state.cmd == "arc")

    def _point_mask(self, state: GrammarState) -> np.ndarray | None:
        """The values allowed in the start/end point slots of a line or arc (None: any value)."""
        slot = len(state.args)
        if self.local or state.cmd not in CHAIN_CURVES or slot > 3:
            return None
        m = np.zeros(self.tok.vocab_size, dtype=bool)
        if slot < 2:  # start point: the previous curve's end point
            if state.cursor is None:
                return None
            m[state.cursor[slot]] = True
            return m
        if state.loop_start is None:  # unreachable: slots 0-1 set it
            return None
        if self._must_close(state):
            m[state.loop_start[slot - 2]] = True
            return m
        return None

    def allowed(self, state: GrammarState) -> np.ndarray:
        """Bool mask ``[vocab_size]`` of the ids that may follow ``state`` (never empty)."""
        if state.pending:
            point = self._point_mask(state)
            return self._slot_masks[state.pending[0]].copy() if point is None else point
        if state.point == "start":
            return self._bos.copy()
        if state.point == "done":
            return self._pad.copy()
        m = np.zeros(self.tok.vocab_size, dtype=bool)
        commands = CHAIN_CURVES if state.point == "more" and not state.closed else POINT_COMMANDS[state.point]
        if self.local and state.point == "more" and state.closed and state.cmd != "circle":
            commands = CHAIN_CURVES + commands  # a closed chain may still grow
        for c in commands:
            if self._fits(state, c):
                m[self._cmd_ids[c]] = True
        if state.point == "more" and state.closed and (self.max_len is None or state.length + 1 <= self.max_len):
            m[self._eos_id] = True
        return m

    def advance(self, state: GrammarState, token: int) -> GrammarState:
        """The state after reading ``token``; ValueError (naming position, token and what is allowed) otherwise."""
        token = int(token)
        if not (0 <= token < self.tok.vocab_size and self.allowed(state)[token]):
            allowed = np.flatnonzero(self.allowed(state))
            names = [self.tok.vocab[i] for i in allowed[:8]] + (["..."] if len(allowed) > 8 else [])
            got = self.tok.vocab[token] if 0 <= token < self.tok.vocab_size else f"id {token} (out of vocabulary)"
            raise ValueError(f"token {state.length}: {got} not allowed here; allowed: {' '.join(names)}")
        n = state.length + 1
        if state.pending:
            return self._read_slot(replace(state, length=n, pending=state.pending[1:], args=(*state.args, token)))
        if state.point == "start":
            return GrammarState(n, (), "bbox")
        if state.point == "done":
            return state  # padding does not count towards the length
        if token == self._eos_id:
            return GrammarState(n, (), "done")
        cmd = self._id_cmd[token]
        state = replace(state, length=n, pending=self.args[cmd], point=NEXT_POINT[cmd], cmd=cmd, args=())
        if cmd == "loop":
            state = replace(state, loop_start=None, cursor=None, curves=0, has_arc=False, closed=False)
        elif self.local and cmd in CURVES:  # local chains close implicitly: only the count of curves matters
            curves, has_arc = state.curves + 1, state.has_arc or cmd == "arc"
            state = replace(state, curves=curves, has_arc=has_arc, closed=cmd == "circle" or closes(curves, has_arc))
            return state
        return state if state.pending else self._read_slot(state)

    def _read_slot(self, state: GrammarState) -> GrammarState:
        """Update the loop after a slot of a curve statement was read (``state.args`` holds it)."""
        args = state.args
        if self.local:
            return state
        if state.cmd == "circle" and not state.pending:
            return replace(state, curves=state.curves + 1, closed=True)
        if state.cmd not in CHAIN_CURVES:
            return state
        if len(args) == 2 and state.loop_start is None:
            state = replace(state, loop_start=(args[0], args[1]))
        if len(args) == 4:
            end = (args[2], args[3])
            # a curve forced onto the start by the length budget closes even when degenerate
            closes = end == state.loop_start and (self._may_close(state) or self._must_close(state))
            state = replace(state, cursor=end, curves=state.curves + 1, closed=closes,
                            has_arc=state.has_arc or state.cmd == "arc")
        return state

    def check(self, ids) -> GrammarState:
        """Run ``ids`` (starting with ``<bos>``) through the grammar; the final state, or ValueError at the first
        token not allowed."""
        state = self.initial()
        for t in ids:
            state = self.advance(state, t)
        return state

    def accepts(self, ids) -> bool:
        """Whether ``ids`` is a complete sequence the grammar allows (every token allowed, ends in ``<eos>``)."""
        try:
            return self.check(ids).done
        except ValueError:
            return False


MIN_LENGTH = CADGrammar(CADTokenizer()).min_length  # ids in the shortest model of the default tokenizer
