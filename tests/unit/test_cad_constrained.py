from collections import Counter

import numpy as np
import pytest

from lib.cad.constrained import MIN_LENGTH, CADGrammar
from lib.cad.tokenizer import CADTokenizer
from lib.deepcad.cadcode import from_code, to_code
from lib.deepcad.normalize import normalize
from lib.deepcad.parse import load_model, parse_model
from lib.deepcad.synth import FAMILIES, make_model
from tests.helpers.deepcad_data import FIXTURE

TOK = CADTokenizer()
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
    assert MIN_LENGTH == 1 + 7 + 5 + 13 + 1 + 2 + 4 + 1 == 34
    with pytest.raises(ValueError, match="max_len >= 34"):
        CADGrammar(TOK, max_len=33)


def test_random_allowed_sequences_always_parse():
    rng = np.random.default_rng(0)
    seen = Counter()
    for k in range(200):
        max_len = int(rng.integers(34, 250))
        ids = sample(CADGrammar(TOK, max_len), rng)
        assert ids[0] == TOK.bos_id and ids[-1] == TOK.eos_id and len(ids) <= max_len
        text = TOK.decode(ids)
        seq = from_code(text)
        assert to_code(seq) == text and TOK.encode(text) == ids
        seen.update(TOK.vocab[i] for i in ids if not TOK.is_value(i))
        seen["multi_extrude"] += len(seq.extrudes) > 1
        seen["hit_limit"] += len(ids) >= max_len - 3
    # the samples exercise every statement and word, several extrudes, and the forced closing near max_len
    assert all(seen[w] > 0 for w in ("line", "arc", "circle", "inner", "outer", "nz=1", "nz=-1", "cut", "intersect",
                                     "join", "new_body", "one_side", "symmetric", "two_sides"))
    assert seen["multi_extrude"] > 20 and seen["hit_limit"] > 20


def test_unlimited_random_sequences_parse():
    rng = np.random.default_rng(1)
    g = CADGrammar(TOK, max_len=None)
    for _ in range(50):
        from_code(TOK.decode(sample(g, rng)))


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
    names = lambda m: {TOK.vocab[i] for i in np.flatnonzero(m)}
    s = g.initial()
    assert names(g.allowed(s)) == {"<bos>"}
    s = g.advance(s, TOK.bos_id)
    assert names(g.allowed(s)) == {"bbox"}
    ids = TOK.encode(to_code(from_code(
        "extrude 1: new_body one_side e1=0.2 e2=0\nplane o=(0,0,0) x=(1,0,0) y=(0,1,0) n=(0,0,1)\nprofile\n"
        "loop outer\ncircle c=(0,0) r=0.1\n")))
    s = g.check(ids[:-1])  # after the circle
    assert names(g.allowed(s)) == {"line", "arc", "circle", "loop", "profile", "extrude", "<eos>"}
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
    names = lambda g, s: {TOK.vocab[i] for i in np.flatnonzero(g.allowed(s))}
    # with room for one more circle (4 tokens) but not an arc (13) or a new loop (2 + 4)
    g = CADGrammar(TOK, max_len=38)
    assert names(g, g.check(ids[:-1])) == {"circle", "<eos>"}
    g = CADGrammar(TOK, max_len=39)
    assert names(g, g.check(ids[:-1])) == {"circle", "line", "<eos>"}
    g = CADGrammar(TOK, max_len=40)
    assert names(g, g.check(ids[:-1])) == {"circle", "line", "loop", "<eos>"}


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
