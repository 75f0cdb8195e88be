import pandas as pd
import pytest

from lib.config import ConfigError, from_dict
from lib.deepcad.conversations import (
    CADConversationsConfig,
    build_conversations,
    conversation_id,
    length_stats,
    pick_prompt,
)

VIEWS = ["front", "top"]


def models(*rows):
    return pd.DataFrame([{"id": mid, "split": split, "code": code,
                          **{f"image_{v}": f"{mid}_{v}.png" for v in VIEWS}} for mid, split, code in rows])


def test_one_llava_conversation_per_model_and_view(tmp_path):
    m = models(("0000/00000001", "train", "CODE-A"), ("0000/00000002", "validation", "CODE-B"),
               ("0000/00000003", "test", "CODE-C"))
    res = build_conversations(m, VIEWS, tmp_path, CADConversationsConfig())
    assert {s: len(v) for s, v in res.by_split.items()} == {"train": 2, "validation": 2}
    conv = res.by_split["train"][0]
    assert conv == {"id": "00000001_front", "image": "0000/00000001_front.png",
                    "conversations": [{"from": "human", "value": "<image>\nWhat is the CAD code for this 3D model?"},
                                      {"from": "gpt", "value": "CODE-A"}]}
    assert res.truncated == res.dropped == 0 and res.quarantine == []


def test_too_long_answers_are_dropped_or_truncated_and_counted(tmp_path):
    m = models(("0000/00000001", "train", "x" * 50), ("0000/00000002", "train", "short"))
    dropped = build_conversations(m, VIEWS, tmp_path, CADConversationsConfig(max_answer_chars=10))
    assert len(dropped.by_split["train"]) == 2 and dropped.dropped == 2
    cut = build_conversations(m, VIEWS, tmp_path, CADConversationsConfig(max_answer_chars=10, on_too_long="truncate"))
    answers = [c["conversations"][1]["value"] for c in cut.by_split["train"]]
    assert answers.count("x" * 10) == 2 and cut.truncated == 2


def test_image_path_escaping_its_folder_is_quarantined_and_the_rest_kept(tmp_path):
    m = models(("0000/00000001", "train", "A"), ("0000/00000002", "train", "B"))
    m.loc[1, "image_top"] = "../../etc/passwd"
    res = build_conversations(m, VIEWS, tmp_path / "images", CADConversationsConfig())
    assert len(res.by_split["train"]) == 3
    assert [(q.id, q.reason) for q in res.quarantine] == [("0000/00000002", "path_escape")]


def test_prompt_choice_is_seeded_per_conversation_and_uses_every_prompt():
    prompts = ["p1", "p2", "p3"]
    ids = [conversation_id(f"0000/{i:08d}", "front") for i in range(60)]
    picks = [pick_prompt(prompts, i, 0) for i in ids]
    assert set(picks) == set(prompts)
    assert picks == [pick_prompt(prompts, i, 0) for i in ids]  # same seed, same prompts
    assert picks != [pick_prompt(prompts, i, 1) for i in ids]


def test_length_stats_and_config_validation():
    convs = [{"conversations": [{"value": "ab"}, {"value": "abcd"}]},
             {"conversations": [{"value": "abcd"}, {"value": "ab"}]}]
    assert length_stats(convs) == {"prompt": {"min": 2, "mean": 3.0, "max": 4},
                                   "response": {"min": 2, "mean": 3.0, "max": 4}}
    with pytest.raises(ConfigError, match="on_too_long"):
        from_dict(CADConversationsConfig, {"on_too_long": "explode"})
    with pytest.raises(ConfigError, match="prompts"):
        from_dict(CADConversationsConfig, {"prompts": []})


# ------------------------------------------------------------------------------------------ openecad answers

def _box_code(op="new_body", profiles=1):
    from lib.deepcad.cadcode import to_code
    from lib.deepcad.schema import CADSequence, Extrude, Line, Loop, Profile, SketchPlane

    xy = SketchPlane((0.0, 0.0, 0.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))

    def sq(x0):
        p = [(x0, 0.0), (x0 + 0.2, 0.0), (x0 + 0.2, 0.2), (x0, 0.2)]
        return Profile((Loop(tuple(Line(p[i], p[(i + 1) % 4]) for i in range(4)), True),))

    base = Extrude("A", xy, (sq(-0.5),), "new_body", "one_side", 0.3)
    extra = Extrude("B", xy, tuple(sq(0.1 * k) for k in range(profiles)), op, "one_side", 0.1)
    return to_code(CADSequence((base, extra)))


def test_openecad_answers_parse_back_to_the_same_model(tmp_path):
    from lib.deepcad.answers import parse_answer
    from lib.deepcad.openecad import to_openecad

    code = _box_code()
    m = models(("0000/00000001", "train", code), ("0000/00000002", "train", _box_code("intersect", profiles=2)))
    res = build_conversations(m, VIEWS, tmp_path, CADConversationsConfig(answer_format="openecad"))
    answers = {c["conversations"][1]["value"] for c in res.by_split["train"]}
    # the multi-profile intersect has no OpenECAD form: dropped for both views, counted
    assert res.unrepresentable == 2 and len(res.by_split["train"]) == 2
    (answer,) = answers
    assert answer.startswith("SketchPlane0 = add_sketchplane(") and "add_extrude(sketch= Sketch1," in answer
    from lib.deepcad.cadcode import from_code
    assert to_openecad(parse_answer(answer)) == answer == to_openecad(from_code(code))


def test_answers_over_the_token_limit_are_dropped_and_counted(tmp_path):
    from tests.helpers.tiny_vlm import tiny_tokenizer

    folder = tmp_path / "tok"
    tiny_tokenizer().save_pretrained(folder)
    m = models(("0000/00000001", "train", _box_code()), ("0000/00000002", "train", _box_code(profiles=3)))
    from lib.deepcad.conversations import load_token_counter
    count = load_token_counter(folder)
    lengths = sorted(count(c) for c in m.code)
    limit = (lengths[0] + lengths[1]) // 2  # between the two answers' token counts
    cfg = CADConversationsConfig(max_answer_tokens=limit, tokenizer=str(folder))
    res = build_conversations(m, VIEWS, tmp_path, cfg)
    assert res.dropped_tokens == 2 and [c["id"] for c in res.by_split["train"]] == ["00000001_front", "00000001_top"]
    with pytest.raises(FileNotFoundError, match="build_cad_conversations.tokenizer: .*not a folder"):
        build_conversations(m, VIEWS, tmp_path, CADConversationsConfig(max_answer_tokens=5,
                                                                      tokenizer=str(tmp_path / "nope")))
    with pytest.raises(ValueError, match="max_answer_tokens and tokenizer go together"):
        CADConversationsConfig(max_answer_tokens=5)
