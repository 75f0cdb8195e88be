"""The answer formats of the image -> CAD conversations, and one reader for both.

``cadcode`` is this project's CAD code (:mod:`lib.deepcad.cadcode`), ``openecad`` OpenECAD's Python API code
(:mod:`lib.deepcad.openecad`). Everything that reads an answer (the token model's tokenizer, the metric harness,
the eval renders) goes through :func:`parse_answer`, so a conversation set of either format trains and scores.
"""
from __future__ import annotations

from typing import Literal

from lib.deepcad.cadcode import from_code, to_code
from lib.deepcad.openecad import MARKER, from_openecad, to_openecad
from lib.deepcad.schema import CADSequence

AnswerFormat = Literal["cadcode", "openecad"]
ANSWER_FORMATS: tuple[str, ...] = ("cadcode", "openecad")


def answer_format_of(text: str) -> AnswerFormat:
    """``openecad`` when ``text`` calls ``add_sketchplane`` (no CAD code statement starts with it), else ``cadcode``."""
    return "openecad" if MARKER in text else "cadcode"


def parse_answer(text: str) -> CADSequence:
    """The model written in ``text``, in either answer format; ValueError naming the line when it does not parse."""
    return from_openecad(text) if answer_format_of(text) == "openecad" else from_code(text)


def write_answer(seq: CADSequence, fmt: AnswerFormat, decimals: int = 4) -> str:
    """``seq`` as answer text of format ``fmt`` (openecad raises NotRepresentable for a multi-profile intersect)."""
    if fmt == "openecad":
        return to_openecad(seq, decimals=decimals)
    if fmt == "cadcode":
        return to_code(seq, decimals=decimals)
    raise ValueError(f"unknown answer format {fmt!r} (one of {', '.join(ANSWER_FORMATS)})")
