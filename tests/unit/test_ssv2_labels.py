import json
from pathlib import Path

import pytest

from lib.ssv2.labels import (
    bracket_template,
    fill_template,
    normalize_template,
    read_classes,
    read_split,
    reference_classes,
)

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "fixtures" / "ssv2"


def test_reference_classes_are_the_real_174_with_published_total():
    classes = reference_classes()
    assert len(classes) == 174
    assert sum(c.videos for c in classes) == 168_913 + 24_777 + 27_157
    assert classes[0].template == "Approaching something with your camera" and classes[0].index == 0
    assert classes[-1].template == "Wiping something off of something" and classes[-1].index == 173


def test_reference_index_matches_labels_json_layout():
    path = SHARED / "labels.json" if SHARED.is_dir() else REPO / "lib/ssv2/reference/labels.json"
    real = json.loads(path.read_text())
    assert {c.template: str(c.index) for c in reference_classes()} == real


@pytest.mark.parametrize("raw, norm", [
    ("Pushing [something] from left to right", "Pushing something from left to right"),
    ("[Something] falling like a rock", "Something falling like a rock"),
    ("Putting [number of] [something] onto [something]", "Putting number of something onto something"),
])
def test_normalize_template_removes_brackets(raw, norm):
    assert normalize_template(raw) == norm


def test_bracket_and_fill_round_trip_to_real_label_style():
    t = bracket_template("Covering something with something")
    assert t == "Covering [something] with [something]"
    assert normalize_template(t) == "Covering something with something"
    assert fill_template(t, ["a cup", "a towel"]) == "covering a cup with a towel"
    assert fill_template("[Something] falling like a rock", ["A pen"]) == "a pen falling like a rock"
    with pytest.raises(ValueError, match="has 2 placeholders, got 1"):
        fill_template(t, ["a cup"])


def test_read_split_separates_malformed_rows(tmp_path):
    (tmp_path / "labels").mkdir()
    rows = [{"id": "1", "label": "x", "template": "Moving [something] up", "placeholders": ["x"]},
            {"id": 2, "label": "y", "template": "Moving [something] up"},
            {"label": "no id", "template": "t"}, "not an object",
            {"id": "5", "label": "z", "template": "t", "placeholders": [3]}]
    (tmp_path / "labels/train.json").write_text(json.dumps(rows))
    good, bad = read_split(tmp_path, "train")
    assert [e.id for e in good] == ["1", "2"] and good[1].placeholders == []
    assert [b.position for b in bad] == [2, 3, 4]
    assert "id" in bad[0].detail and "placeholders" in bad[2].detail
    assert read_split(tmp_path, "test") == ([], [])  # absent file: empty split


def test_read_classes_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="labels.json: SSv2 class list not found"):
        read_classes(tmp_path)
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels/labels.json").write_text('{"Moving something up": "x"}')
    with pytest.raises(ValueError, match="labels.json: class indices must be integers"):
        read_classes(tmp_path)
