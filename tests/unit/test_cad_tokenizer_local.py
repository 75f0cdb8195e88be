"""The default (local, per-sketch frame) layout of CADTokenizer; test_cad_tokenizer.py covers the global one."""
import json
import math

import numpy as np
import pytest

from lib.cad.constrained import MIN_LENGTH, CADGrammar
from lib.cad.tokenizer import FORMAT, CADTokenizer, arc_from_sweep, axes_to_euler, euler_to_axes, signed_sweep
from lib.deepcad.cadcode import from_code, to_code
from lib.deepcad.mesh import build_mesh
from lib.deepcad.normalize import normalize
from lib.deepcad.parse import load_model, parse_model
from lib.deepcad.synth import FAMILIES, make_model
from lib.eval.cad_geometry import volumetric_iou
from tests.helpers.deepcad_data import BOX_CODE as BOX
from tests.helpers.deepcad_data import FIXTURE

TOK = CADTokenizer()
ID = TOK.token_to_id


def texts(per_family=3, seed=11):
    fams = sorted(FAMILIES)
    out = [(f, to_code(normalize(parse_model(make_model(seed, i, f))))) for i in range(per_family) for f in fams]
    return [*out, ("fixture", to_code(normalize(load_model(FIXTURE))))]


@pytest.fixture(scope="module")
def corpus():
    return texts()


def test_defaults_and_vocab():
    assert TOK.layout == "local" and TOK.n_levels == 256 and TOK.sketch_digits == 2 and TOK.frame_digits == 2
    assert TOK.vocab == CADTokenizer(layout="global").vocab  # both layouts share one vocabulary
    assert TOK.vocab_size == 4 + 8 + 4 + 3 + 2 + 2 + 256 == 279
    assert MIN_LENGTH == CADGrammar(TOK).min_length == 1 + 7 + (3 + 4) + (1 + 6 + 3 + 2) + 1 + 2 + (1 + 6) + 1 == 38
    # statements: line = end point, arc = end point + sweep + direction, circle = box corner + diameter
    assert [len(TOK.args[c]) for c in ("line", "arc", "circle", "extrude", "plane")] == [4, 6, 6, 6, 11]
    one = CADTokenizer(sketch_digits=1, frame_digits=1)
    assert [len(one.args[c]) for c in ("line", "arc", "circle", "extrude", "plane")] == [2, 4, 3, 4, 7]


@pytest.mark.parametrize("n", [64, 512])
def test_bit_depth_changes_the_vocab_and_still_round_trips(n, corpus):
    tok = CADTokenizer(n_levels=n)
    assert tok.vocab_size == 23 + n and tok.vocab[-1] == f"<v{n - 1}>"
    for _, text in corpus[::4]:
        ids = tok.encode(text)
        assert max(ids) < tok.vocab_size
        q = tok.decode(ids)
        assert tok.encode(q) == ids and tok.decode(tok.encode(q)) == q


@pytest.mark.parametrize("kwargs", [{}, {"sketch_digits": 1}, {"frame_digits": 1, "sketch_digits": 1}])
def test_text_tokens_text_is_the_requantised_text(kwargs, corpus):
    tok = CADTokenizer(**kwargs)
    for _, text in corpus:
        ids = tok.encode(text)
        q = tok.decode(ids)
        assert tok.encode(q) == ids  # ids are a fixed point
        assert tok.decode(tok.encode(q)) == q  # so the re-quantised text is too
        assert to_code(from_code(q)) == q and q.endswith("\n")


def test_quantised_truth_rebuilds_the_solid(corpus):
    by_family: dict[str, list[float]] = {}
    for fam, text in corpus:
        q = TOK.decode(TOK.encode(text))
        by_family.setdefault(fam, []).append(volumetric_iou(build_mesh(from_code(q)), build_mesh(from_code(text))))
    for fam, ious in by_family.items():
        assert np.median(ious) >= 0.99 and min(ious) >= 0.97, (fam, ious)
    assert by_family["fixture"][0] > 0.999


def test_a_sketch_on_the_local_grid_round_trips_exactly():
    # size 0.4992 = 624 steps of 8e-4, the finest local step at 4 decimals: every value is a whole number of steps,
    # the arc is written the way decode writes arcs (a0=0, a1=sweep, reference towards the start)
    text = """bbox min=(0.0000,0.0000,0.0000) max=(0.5000,0.5000,0.1016)
extrude 1: new_body one_side e1=0.1000 e2=0.0000
  plane o=(0.0000,0.0000,0.0000) x=(1.0000,0.0000,0.0000) y=(0.0000,1.0000,0.0000) n=(0.0000,0.0000,1.0000)
    profile
      loop outer
        line (0.0000,0.0000)->(0.4992,0.0000)
        line (0.4992,0.0000)->(0.4992,0.4192)
        arc (0.4992,0.4192)->(0.4192,0.4992) c=(0.4192,0.4192) r=0.0800 a0=0.0000 a1=1.5708 ref=(1.0000,0.0000) nz=1
        line (0.4192,0.4992)->(0.0000,0.4992)
        line (0.0000,0.4992)->(0.0000,0.0000)
      loop inner
        circle c=(0.2400,0.2400) r=0.0800
"""
    ids = TOK.encode(text)
    assert TOK.decode(ids) == text
    names = [TOK.vocab[i] for i in ids]
    k = names.index("arc")
    # end point (524, 624) as two base-256 digits each, sweep pi/2 = level 64, counter-clockwise
    assert names[k:k + 7] == ["arc", "<v2>", "<v12>", "<v2>", "<v112>", "<v64>", "nz=1"]
    assert names[names.index("circle"):][:7] == ["circle", "<v0>", "<v200>", "<v0>", "<v200>", "<v0>", "<v200>"]
    assert TOK.decode(TOK.encode(BOX)) == BOX


def test_frame_moves_the_plane_to_the_sketch_corner_and_keeps_the_solid():
    text = BOX.replace("o=(0.0000,0.0000,0.0000)", "o=(0.1000,0.0000,0.0000)")
    text = text.replace("line (0.0000,", "line (-0.1000,").replace(">(0.0000,", ">(-0.1000,")
    q = TOK.decode(TOK.encode(text))
    assert "o=(0.0000,0.0000,0.0000)" in q  # the sketch corner (-0.1 + 0.1, 0) is the new origin
    assert volumetric_iou(build_mesh(from_code(q)), build_mesh(from_code(text))) > 0.999


def test_left_handed_plane_and_reversed_curves_are_kept():
    # y = -(n x x) and the loop written clockwise with one curve stored backwards
    text = """bbox min=(0.0000,-0.5000,0.0000) max=(0.5000,0.0000,0.2500)
extrude 1: new_body one_side e1=0.2500 e2=0.0000
  plane o=(0.0000,0.0000,0.0000) x=(1.0000,0.0000,0.0000) y=(0.0000,-1.0000,0.0000) n=(0.0000,0.0000,1.0000)
    profile
      loop outer
        line (0.0000,0.0000)->(0.5000,0.0000)
        line (0.5000,0.5000)->(0.5000,0.0000)
        arc (0.5000,0.5000)->(0.0000,0.5000) c=(0.2500,0.5000) r=0.2500 a0=0.0000 a1=3.1416 ref=(1.0000,0.0000) nz=1
        line (0.0000,0.5000)->(0.0000,0.0000)
"""
    q = TOK.decode(TOK.encode(text))
    assert "y=(0.0000,1.0000,0.0000)" in q and "n=(0.0000,0.0000,1.0000)" in q  # right-handed, normal kept
    assert volumetric_iou(build_mesh(from_code(q)), build_mesh(from_code(text))) > 0.999


def test_euler_angles_and_arcs_from_sweeps():
    rng = np.random.default_rng(0)
    for _ in range(50):
        m, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        x, n = m[:, 0], m[:, 2]
        bx, by, bn = euler_to_axes(*axes_to_euler(x, n))
        assert np.allclose(bx, x) and np.allclose(bn, n) and np.allclose(by, np.cross(n, x))
    for n in ([0, 0, 1], [0, 0, -1], [0, -1, 0], [1, 0, 0]):  # axis-aligned planes: angles on the pi/2 grid
        x = [1, 0, 0] if n[0] == 0 else [0, 1, 0]
        assert all(abs(a / (math.pi / 2) - round(a / (math.pi / 2))) < 1e-12 for a in axes_to_euler(x, n))
    for sweep in (0.3, -0.3, math.pi, -math.pi, 4.0, -5.5):
        arc = arc_from_sweep((0.1, 0.2), (0.4, -0.1), sweep)
        assert signed_sweep(arc) == pytest.approx(sweep)
        assert np.allclose(arc.point_at(arc.end_angle), arc.end) and np.allclose(arc.point_at(0.0), arc.start)


def sample(grammar, rng):
    state, ids = grammar.initial(), []
    while not state.done:
        assert len(ids) < 5000
        t = int(rng.choice(np.flatnonzero(grammar.allowed(state))))
        ids.append(t)
        state = grammar.advance(state, t)
    return ids


def test_constrained_decoding_from_random_logits_gives_parseable_code():
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(120):
        max_len = int(rng.integers(MIN_LENGTH, 220))
        g = CADGrammar(TOK, max_len)
        state, ids = g.initial(), []
        while not state.done:  # greedy over random logits, masked
            logits = rng.normal(size=TOK.vocab_size)
            t = int(np.argmax(np.where(g.allowed(state), logits, -np.inf)))
            ids.append(t)
            state = g.advance(state, t)
        assert len(ids) <= max_len and ids[-1] == TOK.eos_id
        text = TOK.decode(ids)
        seq = from_code(text)
        assert to_code(seq) == text
        seen.update(TOK.vocab[i] for i in ids if not TOK.is_value(i))
        for stmt in TOK.statements(ids):  # loops: a circle, or >= 3 chain curves (2 with an arc)
            assert stmt[0] != "arc" or TOK.level_of(stmt[1][4]) >= 1
    assert {"line", "arc", "circle", "inner", "nz=-1", "cut", "two_sides"} <= seen


def test_every_encoded_model_is_accepted_at_its_exact_length(corpus):
    for _, text in corpus:
        ids = TOK.encode(text)
        g = CADGrammar(TOK, max_len=len(ids))
        state = g.initial()
        for pos, t in enumerate(ids):
            assert g.allowed(state)[t], (pos, TOK.vocab[t])
            assert g.remaining(state) <= len(ids) - pos
            state = g.advance(state, t)
        assert state.done


def test_grammar_closes_chains_by_count_and_masks_the_zero_sweep():
    g = CADGrammar(TOK)
    head = TOK.encode(BOX)[:30]  # up to "loop outer"
    v = TOK.value_id
    names = lambda s: {TOK.vocab[i] for i in np.flatnonzero(g.allowed(s))}  # noqa: E731
    line = [ID["line"], v(0), v(1), v(0), v(2)]
    assert names(g.check(head + line)) == {"line", "arc"}
    assert names(g.check(head + line * 2)) == {"line", "arc"}  # two lines: no area yet
    assert names(g.check(head + line * 3)) == {"line", "arc", "loop", "profile", "extrude", "<eos>"}
    arc = [ID["arc"], v(0), v(1), v(0), v(2)]
    s = g.check(head + line + arc)
    assert not g.allowed(s)[v(0)] and g.allowed(s)[v(1)]  # sweep level 0 is a line, not an arc
    assert "<eos>" in names(g.check(head + line + arc + [v(5), ID["nz=1"]]))
    # near the limit the loop is closed with the cheapest curves: after one line only an arc fits
    g = CADGrammar(TOK, max_len=len(head) + 5 + 7 + 1)
    assert names(g.check(head + line)) == {"arc"}


def test_decode_errors_are_clear():
    ids = TOK.encode(BOX)
    with pytest.raises(ValueError, match=r"token 9: <v3> in 'extrude' where new_body\|join"):
        TOK.decode(ids[:9] + [TOK.value_id(3)] + ids[10:])
    arc = [ID["arc"], TOK.value_id(0), TOK.value_id(1), TOK.value_id(0), TOK.value_id(1), TOK.value_id(0), ID["nz=1"]]
    with pytest.raises(ValueError, match=r"token 35: <v0> in 'arc' where a sweep level >= 1"):
        TOK.decode(ids[:30] + arc + [TOK.eos_id])
    with pytest.raises(ValueError, match=r"profile cannot follow extrude \(expected plane\)"):
        TOK.decode(ids[:15] + ids[27:])
    with pytest.raises(ValueError, match="no curves after it"):
        TOK.decode(ids[:30] + [TOK.eos_id])
    with pytest.raises(ValueError, match="token 30: <unk>"):
        TOK.decode(ids[:30] + [TOK.unk_id] + ids[30:])
    with pytest.raises(ValueError, match="without <eos>"):
        TOK.decode(ids[:-1])
    with pytest.raises(ValueError, match="circle shares a loop"):
        TOK.encode(BOX.replace("        line (0.0000,0.5000)->(0.0000,0.0000)\n",
                               "        circle c=(0.1000,0.1000) r=0.0500\n"))


def test_save_load_keeps_the_layout(tmp_path):
    tok = CADTokenizer(n_levels=64, sketch_digits=1)
    tok.save(tmp_path / "t.json")
    back = CADTokenizer.load(tmp_path / "t.json")
    assert (back.layout, back.sketch_digits, back.n_levels) == ("local", 1, 64) and back.encode(BOX) == tok.encode(BOX)
    cfg = json.loads((tmp_path / "t.json").read_text())
    assert cfg["format"] == FORMAT
    old = {k: cfg[k] for k in ("n_levels", "value_range", "sketch_range", "angle_range", "decimals", "vocab")}
    (tmp_path / "old.json").write_text(json.dumps({**old, "format": "cad-tokenizer/1"}))
    assert CADTokenizer.load(tmp_path / "old.json").layout == "global"  # files from before the local layout
