from collections import Counter

import numpy as np
import pytest

from lib.cad.constrained import CADGrammar
from lib.cad.tokenizer import CADTokenizer
from lib.deepcad.cadcode import from_code, to_code
from lib.deepcad.normalize import normalize
from lib.deepcad.parse import load_model, parse_model
from lib.deepcad.synth import FAMILIES, make_model
from tests.helpers.deepcad_data import FIXTURE

TOK = CADTokenizer(layout="global")  # this file: the old global layout; test_cad_tokenizer_local.py: the default
ID = TOK.token_to_id


def sample(grammar: CADGrammar, rng: np.random.Generator) -> list[int]:
    """Uniformly random allowed token at every step until <eos> (a hard cap guards against a hang)."""
    state, ids = grammar.initial(), []
    while not state.done:
        assert len(ids) < 5000
        t = int(rng.choice(np.flatnonzero(grammar.allowed(state))))
        ids.append(t)
        state = grammar.advance(state, t)
    return ids


def test_shortest_model_is_34_tokens():
    # <bos> | bbox + 6 | extrude op type e1 e2 | plane + 12 | profile | loop outer | circle + 3 | <eos>
    assert CADGrammar(TOK).min_length == 1 + 7 + 5 + 13 + 1 + 2 + 4 + 1 == 34
    with pytest.raises(ValueError, match="max_len >= 34"):
        CADGrammar(TOK, max_len=33)


def test_random_allowed_sequences_always_parse():
    rng = np.random.default_rng(0)
    seen = Counter()
    for _ in range(200):
        max_len = int(rng.integers(34, 250))
        ids = sample(CADGrammar(TOK, max_len), rng)
        assert ids[0] == TOK.bos_id and ids[-1] == TOK.eos_id and len(ids) <= max_len
        text = TOK.decode(ids)
        seq = from_code(text)
        assert to_code(seq) == text and TOK.encode(text) == ids
        seen.update(TOK.vocab[i] for i in ids if not TOK.is_value(i))
        seen["multi_extrude"] += len(seq.extrudes) > 1
        seen["hit_limit"] += len(ids) >= max_len - 3
        for loop in loops_of(ids):  # every loop closes: a circle, or a chain ending where it started
            # (near max_len a two-line loop may be forced shut)
            assert loop_is_closed(loop, non_degenerate=len(ids) < max_len - 20), [TOK.vocab[i] for i in ids]
    # the samples exercise every statement and word, several extrudes, and the forced closing near max_len
    assert all(seen[w] > 0 for w in ("line", "arc", "circle", "inner", "outer", "nz=1", "nz=-1", "cut", "intersect",
                                     "join", "new_body", "one_side", "symmetric", "two_sides"))
    assert seen["multi_extrude"] > 10 and seen["hit_limit"] > 20


def test_the_unlimited_grammar_accepts_limited_samples():
    # uniform random end points almost never land on the loop's start, so without a limit a random chain runs on;
    # a model learns to close (every training loop closes), and max_len forces it
    rng = np.random.default_rng(1)
    unlimited = CADGrammar(TOK, max_len=None)
    for _ in range(50):
        ids = sample(CADGrammar(TOK, max_len=400), rng)
        assert unlimited.accepts(ids)
        from_code(TOK.decode(ids))


def loops_of(ids: list[int]) -> list[list[tuple[str, list[int]]]]:
    """The curve statements (name, value ids) of each loop of an id sequence."""
    loops, current = [], None
    for name, args, _ in TOK.statements(ids):
        if name in ("loop", "profile", "extrude"):
            current = [] if name == "loop" else None
            if current is not None:
                loops.append(current)
        elif name in ("line", "arc", "circle") and current is not None:
            current.append((name, list(args)))
    return loops


def loop_is_closed(loop, *, non_degenerate: bool = True) -> bool:
    if [name for name, _ in loop] == ["circle"]:
        return True
    chain = all(a[2:4] == b[:2] for (_, a), (_, b) in zip(loop, loop[1:], strict=False))
    names = [name for name, _ in loop]
    long_enough = len(loop) >= 3 or (len(loop) == 2 and "arc" in names) or not non_degenerate
    return chain and long_enough and loop[-1][1][2:4] == loop[0][1][:2]


def test_every_loop_of_the_training_answers_closes_at_the_token_level():
    fams = sorted(FAMILIES)
    for i in range(100):
        ids = TOK.encode(to_code(normalize(parse_model(make_model(3, i, fams[i % len(fams)])))))
        assert all(loop_is_closed(loop) for loop in loops_of(ids))


def test_chain_rules_start_point_no_zero_length_and_closing():
    g = CADGrammar(TOK)
    v = TOK.value_id
    head = TOK.encode(to_code(from_code(
        "extrude 1: new_body one_side e1=0.2 e2=0\nplane o=(0,0,0) x=(1,0,0) y=(0,1,0) n=(0,0,1)\nprofile\n"
        "loop outer\ncircle c=(0,0) r=0.1\n")))[:-5]  # up to "loop outer"
    s = g.check(head + [ID["line"], v(10), v(20), v(30)])
    assert set(np.flatnonzero(g.allowed(s))) == set(range(TOK.value_offset, TOK.value_offset + 256))
    s = g.check(head + [ID["line"], v(10), v(20), v(10), v(20)])  # zero length: allowed, does not close
    assert {TOK.vocab[i] for i in np.flatnonzero(g.allowed(s))} == {"line", "arc"}
    s = g.check(head + [ID["line"], v(10), v(20), v(30), v(20)])
    names = {TOK.vocab[i] for i in np.flatnonzero(g.allowed(s))}
    assert names == {"line", "arc"}  # the loop is open: only a chain curve may follow
    s = g.advance(s, ID["line"])
    assert {int(i) for i in np.flatnonzero(g.allowed(s))} == {v(30)}  # starts where the last line ended
    s = g.check(head + [ID["line"], v(10), v(20), v(30), v(20), ID["line"], v(30), v(20), v(10), v(20)])
    assert {TOK.vocab[i] for i in np.flatnonzero(g.allowed(s))} == {"line", "arc"}  # two lines retrace: still open
    s = g.check(head + [ID["line"], v(10), v(20), v(30), v(20), ID["arc"], v(30), v(20), v(10), v(20)])
    assert g.allowed(s)[v(0)] and not g.allowed(s)[ID["line"]]  # line + arc back to the start: closed
    s = g.check(head + [ID["line"], v(10), v(20), v(30), v(20), ID["line"], v(30), v(20), v(30), v(40),
                        ID["line"], v(30), v(40), v(10), v(20)])
    assert {TOK.vocab[i] for i in np.flatnonzero(g.allowed(s))} == {"loop", "profile", "extrude", "<eos>"}


def test_at_the_minimum_length_only_the_minimal_model_fits():
    rng = np.random.default_rng(2)
    g = CADGrammar(TOK, max_len=34)
    for _ in range(20):
        ids = sample(g, rng)
        words = [TOK.vocab[i] for i in ids if not TOK.is_value(i)]
        assert len(ids) == 34
        assert words[:3] == ["<bos>", "bbox", "extrude"] and words[5:] == ["plane", "profile", "loop", words[8],
                                                                          "circle", "<eos>"]


def test_every_real_sequence_is_accepted_even_at_its_exact_length():
    fams = sorted(FAMILIES)
    seqs = [normalize(parse_model(make_model(9, i, fams[i % len(fams)]))) for i in range(200)]
    seqs.append(normalize(load_model(FIXTURE)))
    for seq in seqs:
        ids = TOK.encode(to_code(seq))
        assert CADGrammar(TOK).accepts(ids)
        g = CADGrammar(TOK, max_len=len(ids))
        state = g.initial()
        for pos, t in enumerate(ids):
            assert g.allowed(state)[t], (pos, TOK.vocab[t])
            assert g.remaining(state) <= len(ids) - pos
            state = g.advance(state, t)
        assert state.done and state.length == len(ids)


def test_masks_at_choice_points():
    g = CADGrammar(TOK)

    def names(m):
        return {TOK.vocab[i] for i in np.flatnonzero(m)}

    s = g.initial()
    assert names(g.allowed(s)) == {"<bos>"}
    s = g.advance(s, TOK.bos_id)
    assert names(g.allowed(s)) == {"bbox"}
    ids = TOK.encode(to_code(from_code(
        "extrude 1: new_body one_side e1=0.2 e2=0\nplane o=(0,0,0) x=(1,0,0) y=(0,1,0) n=(0,0,1)\nprofile\n"
        "loop outer\ncircle c=(0,0) r=0.1\n")))
    s = g.check(ids[:-1])  # after the circle: the loop is closed
    assert names(g.allowed(s)) == {"loop", "profile", "extrude", "<eos>"}
    s = g.check(ids[:9])  # after "extrude"
    assert names(g.allowed(s)) == {"new_body", "join", "cut", "intersect"}
    s = g.check(ids[:11])  # after the extent type: values
    assert g.allowed(s).sum() == 256 and all(TOK.is_value(i) for i in np.flatnonzero(g.allowed(s)))
    done = g.advance(g.check(ids[:-1]), TOK.eos_id)
    assert done.done and names(g.allowed(done)) == {"<pad>"}
    assert g.advance(done, TOK.pad_id) == done
    for state in (g.initial(), s, g.check(ids[:-1])):
        assert not g.allowed(state)[TOK.unk_id]


def test_near_the_limit_only_closing_tokens_are_allowed():
    ids = TOK.encode(to_code(from_code(
        "extrude 1: new_body one_side e1=0.2 e2=0\nplane o=(0,0,0) x=(1,0,0) y=(0,1,0) n=(0,0,1)\nprofile\n"
        "loop outer\ncircle c=(0,0) r=0.1\n")))
    assert len(ids) == 34

    def names(g, s):
        return {TOK.vocab[i] for i in np.flatnonzero(g.allowed(s))}

    # after a closed loop: a new loop needs "loop outer" + a circle (6) and then <eos>
    g = CADGrammar(TOK, max_len=39)
    assert names(g, g.check(ids[:-1])) == {"<eos>"}
    g = CADGrammar(TOK, max_len=40)
    assert names(g, g.check(ids[:-1])) == {"loop", "<eos>"}
    # an open chain near the limit: the curve's end point is forced onto the loop's start
    head = ids[:-5]  # up to "loop outer"
    v = TOK.value_id
    chain = head + [ID["line"], v(10), v(20), v(30), v(20), ID["arc"], v(30), v(20)]
    g = CADGrammar(TOK, max_len=len(chain) + 11 + 1 + 1)  # the arc's 9 other slots + 2 end values, then <eos>
    s = g.check(chain)
    assert {int(i) for i in np.flatnonzero(g.allowed(s))} == {v(10)}
    s = g.advance(s, v(10))
    assert {int(i) for i in np.flatnonzero(g.allowed(s))} == {v(20)}


def test_illegal_tokens_are_refused_with_position():
    g = CADGrammar(TOK)
    ids = TOK.encode(to_code(normalize(load_model(FIXTURE))))
    with pytest.raises(ValueError, match=r"token 1: extrude not allowed here; allowed: bbox"):
        g.check([TOK.bos_id, ID["extrude"]])
    with pytest.raises(ValueError, match=r"token 29: <eos> not allowed"):
        g.check(ids[:29] + [TOK.eos_id])  # a loop with no curve yet
    with pytest.raises(ValueError, match="out of vocabulary"):
        g.advance(g.initial(), 10_000)
    assert not g.accepts(ids[:-1]) and not g.accepts(ids[:29] + [TOK.eos_id]) and g.accepts(ids)
