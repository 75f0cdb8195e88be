"""SSv2 label files: templates, class index, split entries; plus the real class frequencies."""
from __future__ import annotations

import csv
import functools
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from lib.io import DataError, read_json
from lib.ssv2.layout import CLASSES_FILE, SPLIT_FILES, label_path

_BRACKETS = re.compile(r"\[([^\]]*)\]")
_SOMETHING = re.compile(r"\b([Ss]omething)\b")


@functools.lru_cache(maxsize=4096)  # 174 templates, 220k label entries
def normalize_template(template: str) -> str:
    """Return a template without its placeholder brackets: ``"Pushing [something] ..." -> "Pushing something ..."``."""
    return _BRACKETS.sub(r"\1", template).strip()


def bracket_template(template: str) -> str:
    """Return the entry form of a labels.json template: every ``something`` becomes ``[something]``."""
    return _SOMETHING.sub(r"[\1]", template)


def fill_template(template: str, placeholders: list[str]) -> str:
    """Return the natural-language label: the bracketed template with each ``[...]`` replaced in order.

    Real SSv2 labels start lower-case ("pushing a red cup from left to right").
    """
    slots = _BRACKETS.findall(template)
    if len(slots) != len(placeholders):
        raise ValueError(f"template {template!r} has {len(slots)} placeholders, got {len(placeholders)}")
    names = iter(placeholders)
    text = _BRACKETS.sub(lambda _m: next(names), template)
    return text[:1].lower() + text[1:]


@dataclass(frozen=True)
class ReferenceClass:
    """One of the 174 real SSv2 classes with its published video count (all splits)."""

    template: str
    index: int
    videos: int


def reference_classes() -> list[ReferenceClass]:
    """Return the real 174 SSv2 classes (index by sorted template, as labels.json) with their counts."""
    ref = resources.files("lib.ssv2") / "reference" / "templates.tsv"
    with ref.open() as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    templates = sorted(r["template"] for r in rows)
    counts = {r["template"]: int(r["videos_all_splits"]) for r in rows}
    return [ReferenceClass(t, i, counts[t]) for i, t in enumerate(templates)]


@dataclass
class LabelEntry:
    """One row of train/validation/test.json; test rows have only an id."""

    id: str
    split: str
    label: str | None = None
    template: str | None = None
    placeholders: list[str] = field(default_factory=list)


@dataclass
class BadEntry:
    """A label-file row that could not be read, with why."""

    split: str
    position: int
    id: str
    detail: str


def read_classes(root: str | Path) -> dict[str, int]:
    """Return ``{template: class index}`` from ``<root>/labels/labels.json``; a clear error if malformed."""
    path = label_path(root, CLASSES_FILE)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: SSv2 class list not found; is ssv2.root pointing at an SSv2 download?")
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected {{template: index}}, got {type(raw).__name__}")
    try:
        return {normalize_template(k): int(v) for k, v in raw.items()}
    except (TypeError, ValueError) as err:
        raise DataError(f"{path}: class indices must be integers (as strings): {err}") from err


def read_split(root: str | Path, split: str) -> tuple[list[LabelEntry], list[BadEntry]]:
    """Return the entries of one split file and the rows that are malformed.

    A missing split file is an empty split (test.json is often absent); a file that is not a JSON
    list is an error naming it.
    """
    path = label_path(root, SPLIT_FILES[split])
    if not path.is_file():
        return [], []
    raw = read_json(path)
    if not isinstance(raw, list):
        raise DataError(f"{path}: expected a JSON list of entries, got {type(raw).__name__}")
    good: list[LabelEntry] = []
    bad: list[BadEntry] = []
    for pos, row in enumerate(raw):
        problem = _entry_problem(row, split)
        if problem:
            rid = str(row.get("id", "")) if isinstance(row, dict) else ""
            bad.append(BadEntry(split, pos, rid, problem))
            continue
        good.append(LabelEntry(id=str(row["id"]), split=split, label=row.get("label"),
                               template=row.get("template"), placeholders=list(row.get("placeholders", []))))
    return good, bad


def _entry_problem(row: object, split: str) -> str:
    if not isinstance(row, dict):
        return f"entry is {type(row).__name__}, not an object"
    if not isinstance(row.get("id"), (str, int)) or isinstance(row.get("id"), bool) or str(row.get("id")) == "":
        return "missing or non-string 'id'"
    if split == "test":
        return ""
    for key in ("label", "template"):
        if not isinstance(row.get(key), str):
            return f"missing or non-string {key!r}"
    ph = row.get("placeholders", [])
    if not isinstance(ph, list) or not all(isinstance(p, str) for p in ph):
        return "'placeholders' must be a list of strings"
    return ""
