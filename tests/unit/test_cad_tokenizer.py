import json
import math
from collections import Counter

import numpy as np
import pytest

from lib.cad.tokenizer import CADTokenizer
from lib.deepcad.cadcode import from_code, to_code
from lib.deepcad.normalize import normalize, quantize, quantize_sequence
from lib.deepcad.parse import load_model, parse_model
from lib.deepcad.schema import Arc, Circle, Line
from lib.deepcad.synth import FAMILIES, make_model
from tests.helpers.deepcad_data import BOX_CODE as BOX
from tests.helpers.deepcad_data import FIXTURE

TOK = CADTokenizer(layout="global")  # this file: the old global layout; test_cad_tokenizer_local.py: the default
# Grid steps written out from the documented ranges (not read back from the tokenizer).
STEP = {"coord": 2 / 256, "sketch": 4 / 256, "unit": 2 / 254, "angle": 4 * math.pi / 256}



def synth_sequences(n=200, seed=5):
    fams = sorted(FAMILIES)
    return [(fams[i % len(fams)], normalize(parse_model(make_model(seed, i, fams[i % len(fams)])))) for i in range(n)]


@pytest.fixture(scope="module")
def corpus():
    seqs = synth_sequences()
    seqs.append(("fixture", normalize(load_model(FIXTURE))))
    return seqs


def flatten(seq):
    """(structure, [(kind, value), ...]) of a sequence, kinds assigned here independently of the tokenizer."""
    struct, vals = [], []
    vals += [("coord", v) for v in (*seq.bbox_min, *seq.bbox_max)]
    for ex in seq.extrudes:
        struct.append((ex.operation, ex.extent_type, len(ex.profiles)))
        vals += [("sketch", ex.extent_one), ("sketch", ex.extent_two)]
        vals += [("coord", v) for v in ex.plane.origin]
        vals += [("unit", v) for v in (*ex.plane.x_axis, *ex.plane.y_axis, *ex.plane.normal)]
        for prof in ex.profiles:
            for lp in prof.loops:
                struct.append(("loop", lp.is_outer, len(lp.curves)))
                for c in lp.curves:
                    if isinstance(c, Line):
                        struct.append("line")
                        vals += [("sketch", v) for v in (*c.start, *c.end)]
                    elif isinstance(c, Circle):
                        struct.append("circle")
                        vals += [("sketch", v) for v in (*c.center, c.radius)]
                    else:
                        assert isinstance(c, Arc)
                        struct.append(("arc", c.normal_z))
                        vals += [("sketch", v) for v in (*c.start, *c.end, *c.center, c.radius)]
                        vals += [("angle", c.start_angle), ("angle", c.end_angle)]
                        vals += [("unit", v) for v in c.reference_vector]
    return struct, vals


def max_error_in_steps(a, b, extra=0.0):
    """Largest |a - b| per value, in units of its grid step, after removing ``extra`` (text rounding)."""
    sa, va = flatten(a)
    sb, vb = flatten(b)
    assert sa == sb
    assert [k for k, _ in va] == [k for k, _ in vb]
    return max((abs(x - y) - extra) / STEP[k] for (k, x), (_, y) in zip(va, vb, strict=False))


def test_vocab_layout():
    # 4 specials, 8 statements, 4 ops + 3 extent types + outer/inner + nz=+-1, 256 values
    assert TOK.vocab_size == 4 + 8 + 4 + 3 + 2 + 2 + 256 == 279
    assert len(set(TOK.vocab)) == TOK.vocab_size
    assert TOK.pad_id == 0 and TOK.vocab[TOK.bos_id] == "<bos>" and TOK.vocab[TOK.eos_id] == "<eos>"
    assert [TOK.vocab[TOK.value_id(q)] for q in (0, 255)] == ["<v0>", "<v255>"]
    assert all(t in TOK.token_to_id for t in ("bbox", "extrude", "plane", "profile", "loop", "outer", "inner", "line",
                                              "arc", "circle", "new_body", "intersect", "two_sides", "nz=-1"))


def test_hand_encoded_box():
    names = [TOK.vocab[i] for i in TOK.encode(BOX)]
    v = [f"<v{q}>" for q in range(256)]
    # coord: (x + 1) * 128; sketch: (x + 2) * 64; unit: (x + 1) * 127
    expected = (["<bos>", "bbox", v[128], v[128], v[128], v[192], v[192], v[160],
                 "extrude", "new_body", "one_side", v[144], v[128],
                 "plane", v[128], v[128], v[128], v[254], v[127], v[127],
                 v[127], v[254], v[127], v[127], v[127], v[254],
                 "profile", "loop", "outer"]
                + ["line", v[128], v[128], v[160], v[128]] + ["line", v[160], v[128], v[160], v[160]]
                + ["line", v[160], v[160], v[128], v[160]] + ["line", v[128], v[160], v[128], v[128]] + ["<eos>"])
    assert names == expected
    assert TOK.decode(TOK.encode(BOX)) == BOX  # every value of BOX lies on its grid


def test_hand_encoded_arc_and_length_13():
    text = BOX.replace("        line (0.0000,0.0000)->(0.5000,0.0000)\n",
                       "        arc (0.5000,0.0000)->(0.0000,0.5000) c=(0.0000,0.0000) r=0.5000 a0=0.0000 a1=1.5708 "
                       "ref=(1.0000,0.0000) nz=-1\n")
    ids = TOK.encode(text)
    assert len(ids) == len(TOK.encode(BOX)) - 5 + 13
    k = ids.index(TOK.token_to_id["arc"])
    assert [TOK.vocab[i] for i in ids[k:k + 13]] == ["arc", "<v160>", "<v128>", "<v128>", "<v160>", "<v128>", "<v128>",
                                                     "<v160>", "<v128>", "<v160>", "<v254>", "<v127>", "nz=-1"]
    # angles: (a + 2 pi) * 64 / pi -> 0 at 128, pi/2 at 160, decoded to 4 decimals
    assert "a0=0.0000 a1=1.5708 ref=(1.0000,0.0000) nz=-1" in TOK.decode(ids)


def test_round_trip_within_half_a_step_on_every_synth_model_and_the_fixture(corpus):
    families = Counter(f for f, _ in corpus)
    assert set(families) == set(FAMILIES) | {"fixture"} and len(corpus) == 201
    worst, worst_text = 0.0, 0.0
    for _fam, seq in corpus:
        text = to_code(seq)
        parsed = from_code(text)
        ids = TOK.encode(text)
        # the tokenizer's own grid values: at most half a step from the text's numbers
        worst = max(worst, max_error_in_steps(TOK.decode_sequence(ids), parsed))
        # through the decoded text (4 decimals): plus at most 5e-5 of rounding
        worst_text = max(worst_text, max_error_in_steps(from_code(TOK.decode(ids)), parsed, extra=5e-5 + 1e-12))
    assert worst <= 0.5 + 1e-9
    assert worst_text <= 0.5 + 1e-9
    assert worst > 0.3  # real rounding happened (the synth values are not all on the grid)


def test_quantised_ids_round_trip_exactly(corpus):
    for _, seq in corpus:
        ids = TOK.encode(to_code(seq))
        text = TOK.decode(ids)
        assert TOK.encode(text) == ids
        assert to_code(from_code(text)) == text and text.endswith("\n")


def test_extrude_numbering_is_implicit(corpus):
    seq = next(s for f, s in corpus if len(s.extrudes) >= 3)
    text = TOK.decode(TOK.encode(to_code(seq)))
    assert [ln.split(":")[0] for ln in text.splitlines() if ln.startswith("extrude")] == \
        [f"extrude {k}" for k in range(1, len(seq.extrudes) + 1)]


def test_coord_grid_is_deepcads_quantize(corpus):
    rng = np.random.default_rng(0)
    vals = np.concatenate([rng.uniform(-1, 1, 2000), np.arange(-256, 256) / 256])
    g = TOK.grids["coord"]
    assert [g.level(v) for v in vals] == quantize(vals).tolist()
    for _, seq in corpus[:40]:
        q = TOK.decode_sequence(TOK.encode_sequence(seq))
        ref = quantize_sequence(seq)
        assert q.bbox_min == pytest.approx(ref.bbox_min, abs=1e-12)
        assert q.bbox_max == pytest.approx(ref.bbox_max, abs=1e-12)
        assert np.allclose([e.plane.origin for e in q.extrudes], [e.plane.origin for e in ref.extrudes], rtol=0,
                           atol=1e-12)


def test_special_values_lie_on_their_grids():
    assert {v: TOK.grids["unit"].value(TOK.grids["unit"].level(v)) for v in (-1.0, 0.0, 1.0)} == \
        {-1.0: -1.0, 0.0: 0.0, 1.0: 1.0}
    ga = TOK.grids["angle"]
    for a in (0.0, math.pi / 2, math.pi, -math.pi / 2, 1.5 * math.pi):
        assert ga.value(ga.level(a)) == pytest.approx(a, abs=1e-12)
    assert TOK.grids["sketch"].value(TOK.grids["sketch"].level(0.0)) == 0.0


def test_out_of_range_values_clip_to_the_grid_ends():
    g = TOK.grids["sketch"]
    assert g.level(5.0) == 255 and g.level(-5.0) == 0 and g.value(255) == pytest.approx(2 - 1 / 64)
    with pytest.raises(ValueError, match="not finite"):
        g.level(float("nan"))


@pytest.mark.parametrize("mutate, match", [
    (lambda ids: ids[:-1], "without <eos>"),
    (lambda ids: ids[:9], "truncated"),
    (lambda ids: ids[:9] + [TOK.value_id(3)] + ids[10:], r"token 9: <v3> in 'extrude' where new_body\|join"),
    (lambda ids: ids + [TOK.value_id(0)], "after <eos>"),
    (lambda ids: ids[:26] + [TOK.unk_id] + ids[26:], "token 26: <unk>"),
    (lambda ids: ids[:29] + [TOK.eos_id], r"token 27 \('loop', statement 5\): loop has no curves"),
    (lambda ids: [ids[0]] + ids[8:], "bounding box comes first"),
])
def test_decode_errors_name_the_token(mutate, match):
    ids = TOK.encode(BOX)
    with pytest.raises(ValueError, match=match):
        TOK.decode(mutate(list(ids)))


def test_decode_accepts_trailing_pads_and_no_bos():
    ids = TOK.encode(BOX)
    assert TOK.decode(ids + [TOK.pad_id] * 3) == BOX
    assert TOK.decode(ids[1:]) == BOX


def test_pad_batch():
    a, b = TOK.encode(BOX), TOK.encode(BOX)[:5]
    arr = TOK.pad_batch([a, b])
    assert arr.shape == (2, len(a)) and arr.dtype == np.int64
    assert arr[1, :5].tolist() == b and (arr[1, 5:] == TOK.pad_id).all()
    with pytest.raises(ValueError, match="raise length"):
        TOK.pad_batch([a], length=10)


def test_save_load_round_trip_and_tamper_check(tmp_path):
    tok = CADTokenizer(n_levels=64, sketch_range=(-1.5, 1.5), layout="global")
    tok.save(tmp_path / "t.json")
    back = CADTokenizer.load(tmp_path / "t.json")
    assert back.vocab == tok.vocab and back.vocab_size == 23 + 64
    assert back.grids == tok.grids
    assert back.encode(BOX) == tok.encode(BOX)
    cfg = json.loads((tmp_path / "t.json").read_text())
    cfg["vocab"][5] = "oops"
    (tmp_path / "bad.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="vocabulary differs"):
        CADTokenizer.load(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(ValueError, match="not a CAD tokenizer file"):
        CADTokenizer.load(tmp_path / "other.json")


def test_constructor_rejects_bad_settings():
    with pytest.raises(ValueError, match="even"):
        CADTokenizer(n_levels=255)
    with pytest.raises(ValueError, match="lo < 0 < hi"):
        CADTokenizer(value_range=(0.0, 1.0))
    with pytest.raises(ValueError, match="raise decimals"):
        CADTokenizer(decimals=2)
    with pytest.raises(ValueError, match="0 is not a level"):
        CADTokenizer(value_range=(-1.0, 2.0), n_levels=256)
