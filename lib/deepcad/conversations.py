"""Image -> CAD code conversations in TinyLLaVA / LLaVA format, one per (model, view).

    [{"id": "00000007_front", "image": "archives/shard-00003-<digest>.zip/images/0000/00000007_front.png",
      "conversations": [{"from": "human", "value": "<image>\\nWhat is the CAD code for this 3D model?"},
                        {"from": "gpt", "value": "<CAD code>"}]}]

Image paths are relative to ``render_deepcad.out`` and run through the shard archives
(``lib.archive.open_binary`` opens them). The prompt of each conversation is drawn from the prompt list by a
seeded RNG keyed on the conversation id, so adding models changes no other row.

The answer is written in ``answer_format`` (:mod:`lib.deepcad.answers`): ``cadcode``, or ``openecad`` (OpenECAD's
Python API code, so the set can fine-tune an OpenECAD checkpoint). A model with no OpenECAD form (a multi-profile
intersect) is dropped and counted under ``unrepresentable``. With ``max_answer_tokens`` and a ``tokenizer`` folder
(the base model's, e.g. OpenECAD's), an answer of more tokens than that is dropped and counted, as OpenECAD does.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import pandas as pd
from annotated_types import Ge, MinLen

from lib.config import Checked
from lib.deepcad.answers import AnswerFormat, write_answer
from lib.deepcad.cadcode import from_code
from lib.deepcad.openecad import NotRepresentable
from lib.io import UnsafePathError, safe_join
from lib.quarantine import QuarantineEntry

OUTPUT_FILES = {"train": "train.json", "validation": "val.json", "test": "test.json"}


@dataclass(frozen=True)
class CADConversationsConfig(Checked):
    """``build_cad_conversations`` params."""

    out: str = "data/processed/deepcad_conversations"
    prompts: Annotated[list[str], MinLen(1)] = field(
        default_factory=lambda: ["What is the CAD code for this 3D model?"])
    max_answer_chars: Annotated[int, Ge(1)] = 4000  # answers longer than this are dropped or truncated
    on_too_long: Literal["drop", "truncate"] = "drop"
    splits: list[Literal["train", "validation", "test"]] = field(default_factory=lambda: ["train", "validation"])
    seed: int = 0
    answer_format: AnswerFormat = "cadcode"
    decimals: Annotated[int, Ge(1)] = 4  # digits of an openecad answer (cadcode answers are render_deepcad's code)
    max_answer_tokens: Annotated[int, Ge(1)] | None = None  # answers of more tokens (by `tokenizer`) are dropped
    tokenizer: str | None = None  # a local transformers tokenizer folder (the base model's); needs max_answer_tokens

    def __post_init__(self) -> None:
        super().__post_init__()
        if not all(p.strip() for p in self.prompts):
            raise ValueError("prompts must be a non-empty list of non-empty strings")
        if (self.max_answer_tokens is None) != (self.tokenizer is None):
            raise ValueError("max_answer_tokens and tokenizer go together: a token limit needs the tokenizer that "
                             "counts the tokens (a local folder, e.g. the base model's), and a tokenizer needs a limit")


@dataclass
class ConversationSet:
    """Conversations per split, plus what was truncated, dropped or quarantined."""

    by_split: dict[str, list[dict]]
    truncated: int = 0
    dropped: int = 0  # conversations over max_answer_chars (on_too_long: drop)
    dropped_tokens: int = 0  # conversations over max_answer_tokens
    unrepresentable: int = 0  # conversations of models with no form in answer_format
    quarantine: list[QuarantineEntry] = field(default_factory=list)


def conversation_id(model_id: str, view: str) -> str:
    """Return the conversation id: the model's file id and the view (``00000007_front``)."""
    return f"{model_id.rsplit('/', 1)[-1]}_{view}"


def pick_prompt(prompts: list[str], key: str, seed: int) -> str:
    """Return the prompt for conversation ``key``: stable under adding or removing other rows."""
    return prompts[zlib.crc32(f"{seed}:{key}".encode()) % len(prompts)]


def load_token_counter(path: str | Path):
    """A function text -> token count of the transformers tokenizer in folder ``path`` (no special tokens)."""
    if not Path(path).is_dir():
        raise FileNotFoundError(f"build_cad_conversations.tokenizer: {path} is not a folder; give the base model's "
                                "local folder (the one train_cad_vlm.base_model names), or set tokenizer and "
                                "max_answer_tokens to null")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    return lambda text: len(tok(text, add_special_tokens=False)["input_ids"])


def build_conversations(models: pd.DataFrame, views: list[str], image_dir: str | Path,
                        cfg: CADConversationsConfig, count_tokens=None) -> ConversationSet:
    """Return the conversations of every rendered (model, view) in ``cfg.splits``.

    A view whose image path would leave ``image_dir`` is quarantined (``path_escape``) and the rest
    goes on; answers over ``max_answer_chars`` are dropped or truncated as configured, answers over
    ``max_answer_tokens`` (counted by ``count_tokens``, loaded from ``cfg.tokenizer`` when not given) and models
    with no form in ``answer_format`` are dropped; all are counted.
    """
    if cfg.max_answer_tokens is not None and count_tokens is None:
        count_tokens = load_token_counter(cfg.tokenizer)
    result = ConversationSet(by_split={s: [] for s in cfg.splits})
    for row in models.itertuples(index=False):
        if row.split not in result.by_split:
            continue
        answer = row.code
        if cfg.answer_format != "cadcode":
            try:
                answer = write_answer(from_code(row.code), cfg.answer_format, decimals=cfg.decimals)
            except NotRepresentable:
                result.unrepresentable += len(views)
                continue
        if cfg.max_answer_tokens is not None and count_tokens(answer) > cfg.max_answer_tokens:
            result.dropped_tokens += len(views)
            continue
        if len(answer) > cfg.max_answer_chars:
            if cfg.on_too_long == "drop":
                result.dropped += len(views)
                continue
            answer = answer[: cfg.max_answer_chars]
            result.truncated += len(views)
        for view in views:
            image = getattr(row, f"image_{view}")
            try:
                safe_join(image_dir, image, resolve_links=False)
            except UnsafePathError as err:
                result.quarantine.append(QuarantineEntry(row.id, str(image), "path_escape", str(err), row.split))
                continue
            cid = conversation_id(row.id, view)
            prompt = pick_prompt(cfg.prompts, cid, cfg.seed)
            result.by_split[row.split].append({
                "id": cid,
                "image": image,
                "conversations": [{"from": "human", "value": f"<image>\n{prompt}"},
                                  {"from": "gpt", "value": answer}],
            })
    return result


def length_stats(conversations: list[dict]) -> dict[str, dict[str, float]]:
    """Return min/mean/max characters of prompts and responses over ``conversations``."""
    out = {}
    for role, idx in (("prompt", 0), ("response", 1)):
        lengths = [len(c["conversations"][idx]["value"]) for c in conversations]
        out[role] = ({"min": min(lengths), "mean": sum(lengths) / len(lengths), "max": max(lengths)}
                     if lengths else {"min": 0, "mean": 0.0, "max": 0})
    return out


def count_by(conversations: dict[str, list[dict]]) -> dict[str, int]:
    """Return the number of conversations per split."""
    return {s: len(v) for s, v in conversations.items()}
