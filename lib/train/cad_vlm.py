"""Training the image -> CAD code model on the DeepCAD conversations: config, data, step, validation, convergence.

Everything plugs into the one loop (:class:`lib.train.loop.Trainer`):

- :class:`CADVLMTrainConfig` is the ``train_cad_vlm`` section of ``params.yaml``: *flat* for the trainer's
  knobs (every :class:`TrainConfig` field: ``batch_size``, ``lr``, ``out_dir``, ...), *nested* for the model
  (``model: {channels, embed_dim, hidden, ...}``: :class:`CADVLMConfig`) and early stopping. The run length is
  ``epochs`` (``steps`` is then derived from the data and must not be set) or, with ``epochs: null``, ``steps``.
- Data: the LLaVA-format conversations (``train.json`` / ``val.json``); answers are CAD code, turned into token
  ids by :class:`CADTokenizer`. Answers that do not parse, or whose ids are longer than ``max_len``, are
  skipped and counted (:class:`DataCounts`). For the compact model every image is opened once, resized to
  ``image_size`` (box filter: renders are 512 px) and kept in memory as uint8 (:class:`ImageCodeSet`).
- :class:`EpochSchedule`: micro-batch ``j`` belongs to epoch ``j // micro_per_epoch`` and takes the next
  ``batch_size`` positions of that epoch's permutation (seeded by ``(seed, epoch)``; positions wrap around so
  every micro-batch is full). Data is a pure function of the step, so a resumed run sees what the
  uninterrupted one saw.
- Step: teacher forcing (``ids[:, :-1]`` in, ``ids[:, 1:]`` scored), token-mean cross-entropy
  (:func:`lib.models.cad_vlm.cad_loss`). Validation: token-weighted cross-entropy over all validation
  conversations (eval mode: no dropout), every ``val_every`` epochs, logged as ``val/loss``; early stopping
  watches it.
- ``base_model: <folder>``: a Hugging Face vision-language checkpoint instead (:mod:`lib.models.hf_vlm`):
  :class:`HFConversationCollator` batches, :func:`hf_step_fn`, the same schedule and validation; with
  ``training_mode: lora`` and no ``lora_targets``, :func:`default_lora_targets` of the loaded model.
- :class:`LossHistory` keeps every micro-batch's train loss and every validation loss in
  ``<out_dir>/history.jsonl`` (truncated to the resumed checkpoint's step on resume), from which
  :func:`convergence_rows` builds the per-epoch table (train loss, val loss, gap, per-batch variance,
  improvement) that :func:`write_convergence` writes as markdown, JSON and a PNG.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import torch.nn.functional as F
from annotated_types import Doc, Ge, Interval
from torch import nn

from lib.archive import exists, open_binary, read_bytes
from lib.cad.tokenizer import CADTokenizer
from lib.config import Checked, ConfigError, from_dict
from lib.io import DataError, atomic_write_json, atomic_write_text, read_json, safe_join
from lib.models.cad_vlm import CADVLM, CADVLMConfig, cad_loss
from lib.train.config import TrainConfig, flatten_section, section_parts
from lib.train.curriculum import EarlyStopping, MinDelta, Patience
from lib.train.fingerprint import path_content
from lib.train.fingerprint import run_fingerprint as fingerprint_of
from lib.train.loop import DataFn, StepFn, Trainer, ValidateFn, process_state

log = logging.getLogger(__name__)

MODEL_NAME = "cad_vlm"  # the compact model's name in the Trainer (final/raw/cad_vlm.safetensors)
HF_MODEL_NAME = "vlm"  # a base_model's name (final/raw/vlm.safetensors)
HISTORY_FILE = "history.jsonl"
DEFAULT_LORA = "<default_lora_targets>"  # stands for default_lora_targets(model) until the model is loaded
CONVERSATION_FILES = {"train": "train.json", "validation": "val.json"}
_SEED_STRIDE = 1_000_003  # permutation seed = seed * _SEED_STRIDE + epoch
_UNRESOLVED_STEPS = 10**9  # TrainConfig.steps until resolve_steps knows the epoch length


# ----------------------------------------------------------------------------- config


@dataclass(frozen=True)
class EarlyStoppingConfig(Checked):
    """``early_stopping``: stop when ``val/loss`` has not improved by more than ``min_delta`` for ``patience``
    validations in a row."""

    patience: Patience = 3
    min_delta: MinDelta = 0.0


@dataclass(frozen=True)
class AugmentConfig(Checked):
    """``augment``: a random zoom and shift of each training image (never validation or test images), seeded by
    ``(seed, micro-batch, rank)`` so a resumed run sees the same images; both 0 leave the images untouched."""

    shift: Annotated[float, Interval(ge=0, le=0.25), Doc("largest translation, a fraction of the image side")] = 0.0
    scale: Annotated[float, Interval(ge=0, le=0.4), Doc("largest zoom in or out, a fraction")] = 0.0

    @property
    def enabled(self) -> bool:
        return self.shift > 0 or self.scale > 0


@dataclass(frozen=True)
class CADVLMTrainConfig(Checked):
    """The ``train_cad_vlm`` section (module docstring). ``image_size`` and ``max_len`` are the model's too."""

    train: TrainConfig = field(default_factory=TrainConfig)
    model: CADVLMConfig = field(default_factory=CADVLMConfig)
    # px a side the renders are resized to
    image_size: Annotated[int, Ge(16), Doc("the encoder has four stride-2 blocks")] = 128
    # token ids per answer, <bos>/<eos> included; longer answers are skipped (counted)
    max_len: Annotated[int, Ge(1)] = 320
    epochs: Annotated[int, Ge(1), Doc("null: run for steps")] | None = 20  # run length
    val_every: Annotated[int, Ge(1)] = 1  # epochs between validations (and the last step)
    early_stopping: EarlyStoppingConfig | None = field(default_factory=EarlyStoppingConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # compact model only
    base_model: str | None = None  # a local transformers VLM folder instead of the compact model
    trust_remote_code: bool = False  # base_model: allow the folder's own Python code
    # base_model: text tokens per conversation (prompt + image tokens + answer)
    hf_max_length: Annotated[int, Ge(1)] = 2048
    report_dir: str = "reports/train_cad_vlm"  # convergence.md / .json / .png
    # torch intra-op threads for the stage
    num_threads: Annotated[int, Ge(1), Doc("null: torch's default, one per core")] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        from lib.cad.constrained import MIN_LENGTH

        if self.max_len < MIN_LENGTH:
            raise ValueError(f"max_len: {self.max_len} is below the shortest CAD model ({MIN_LENGTH} ids); raise it")
        if (self.model.image_size, self.model.max_len) != (self.image_size, self.max_len):
            raise ValueError(f"model.image_size/max_len ({self.model.image_size}, {self.model.max_len}) differ from "
                             f"image_size/max_len ({self.image_size}, {self.max_len}); set them at the top level only")
        if self.augment.enabled and self.base_model:
            raise ValueError("augment: the compact model's in-memory images only; set shift and scale to 0 with "
                             "base_model (its processor opens the image files)")
        if self.train.training_mode == "lora" and DEFAULT_LORA in self.train.lora_targets and not self.base_model:
            raise ValueError("lora_targets: empty with training_mode lora needs base_model (the default targets are "
                             "a transformers model's attention projections); list patterns for the compact model")


def from_section(section: Mapping[str, Any] | None, where: str = "train_cad_vlm") -> CADVLMTrainConfig:
    """Return the :class:`CADVLMTrainConfig` of a flat ``train_cad_vlm`` mapping; ConfigError names a bad key.

    TrainConfig keys fill ``train``; ``model`` takes ``image_size``/``max_len`` from the top level.
    ``training_mode: lora`` with no ``lora_targets`` keeps a placeholder that :func:`make_trainer` replaces by
    :func:`default_lora_targets` of the loaded base model.
    """
    section = dict(section or {})
    train_section, own = section_parts(section, CADVLMTrainConfig, where, "CAD VLM")
    if section.get("epochs", CADVLMTrainConfig.epochs) is not None and "steps" in section:
        raise ConfigError(f"{where}.steps: set together with epochs={section.get('epochs', CADVLMTrainConfig.epochs)}; "
                          f"the run length is epochs x steps per epoch; remove steps or set epochs: null")
    if train_section.get("training_mode") == "lora" and not train_section.get("lora_targets"):
        train_section["lora_targets"] = [DEFAULT_LORA]
    if section.get("epochs", CADVLMTrainConfig.epochs) is not None:
        train_section["steps"] = _UNRESOLVED_STEPS  # resolve_steps sets epochs x steps per epoch
    train = from_dict(TrainConfig, train_section, where)
    model = own.pop("model", None) or {}
    if not isinstance(model, dict):
        raise ConfigError(f"{where}.model: expected a mapping of CADVLMConfig keys, got {model!r}")
    for key in ("image_size", "max_len"):
        if key in model and key in own and model[key] != own[key]:
            raise ConfigError(f"{where}.model.{key}: {model[key]} differs from {where}.{key}: {own[key]}; "
                              f"set it at the top level only")
    size = own.get("image_size", CADVLMTrainConfig.image_size)
    max_len = own.get("max_len", CADVLMTrainConfig.max_len)
    own["model"] = {**model, "image_size": size, "max_len": max_len}
    cfg = from_dict(CADVLMTrainConfig, own, where)
    try:
        return dataclasses.replace(cfg, train=train)
    except ValueError as err:  # checks across the trainer and the CAD VLM keys
        raise ConfigError(f"{where}: {err}") from err


def to_section(cfg: CADVLMTrainConfig) -> dict[str, Any]:
    """Inverse of :func:`from_section`: the flat mapping (for logs and fingerprints)."""
    return flatten_section(cfg)


def resolve_steps(cfg: CADVLMTrainConfig, steps_per_epoch: int) -> TrainConfig:
    """Return ``cfg.train`` with ``steps = epochs * steps_per_epoch`` (when ``epochs`` is set)."""
    if cfg.epochs is None:
        return cfg.train
    steps = cfg.epochs * steps_per_epoch
    if cfg.train.warmup_steps > steps:
        raise ConfigError(f"train_cad_vlm.warmup_steps: {cfg.train.warmup_steps} > the run's {steps} steps "
                          f"({cfg.epochs} epochs x {steps_per_epoch}); lower warmup_steps or raise epochs")
    return dataclasses.replace(cfg.train, steps=steps)


# ----------------------------------------------------------------------------- data


@dataclass
class DataCounts:
    """Conversations read, kept and skipped (answer does not parse / longer than ``max_len`` ids), per split."""

    read: int = 0
    kept: int = 0
    unparseable: int = 0
    too_long: int = 0


@dataclass
class Conversations:
    """The usable conversations of one split: records, their answers' token ids, and what was skipped."""

    records: list[dict]
    ids: list[list[int]]
    counts: DataCounts

    def __len__(self) -> int:
        return len(self.records)

    @property
    def answers(self) -> list[str]:
        return [answer_of(r) for r in self.records]


def answer_of(record: Mapping[str, Any]) -> str:
    """The gpt turn (the CAD code) of a LLaVA-format record."""
    from lib.models.hf_vlm import split_conversation

    return split_conversation(record)[1]


def read_conversations(path: str | Path, tokenizer: CADTokenizer, max_len: int) -> Conversations:
    """Read a LLaVA-format conversations file; keep records whose answer encodes to at most ``max_len`` ids."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: conversations file not found; run `dvc repro build_cad_conversations`")
    records = read_json(path)
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a list of LLaVA-format conversations, got {type(records).__name__}")
    counts, kept, ids = DataCounts(read=len(records)), [], []
    for record in records:
        try:
            seq = tokenizer.encode(answer_of(record))
        except ValueError:  # a truncated answer (build_cad_conversations.on_too_long: truncate) or a bad turn
            counts.unparseable += 1
            continue
        if len(seq) > max_len:
            counts.too_long += 1
            continue
        kept.append(record)
        ids.append(seq)
    counts.kept = len(kept)
    return Conversations(kept, ids, counts)


def load_image(path: Path, size: int) -> np.ndarray:
    """uint8 ``[3, size, size]`` of an image file, RGB, resized with a box filter (exact area average)."""
    from PIL import Image

    with open_binary(path) as fh, Image.open(fh) as image:  # a file, or a member of a shard archive
        image = image.convert("RGB")
        if image.size != (size, size):
            image = image.resize((size, size), Image.Resampling.BOX)
        return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).copy()


def image_path(image_root: str | Path, record: Mapping[str, Any]) -> Path:
    """The image file of ``record`` under ``image_root`` (UnsafePathError for escaping paths)."""
    path = safe_join(image_root, str(record.get("image", "")))
    if not exists(path):
        raise FileNotFoundError(f"conversation {record.get('id')!r}: image {path} not found; run "
                                f"`dvc repro render_deepcad` or fix the image folder ({image_root})")
    return path


def load_images(records: Sequence[Mapping[str, Any]], image_root: str | Path, size: int) -> torch.Tensor:
    """uint8 ``[N, 3, size, size]`` of every record's image (each file read once)."""
    if not records:
        return torch.zeros((0, 3, size, size), dtype=torch.uint8)
    return torch.from_numpy(np.stack([load_image(image_path(image_root, r), size) for r in records]))


def augment_images(images: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """``images`` (float ``[B, 3, S, S]`` in [-1, 1], white background = 1) zoomed by a factor in
    ``1 +- cfg.scale`` about the centre and shifted by up to ``cfg.shift`` of the side on each axis (bilinear);
    what moves in from outside the frame is background."""
    b = images.shape[0]
    zoom = 1 + (torch.rand(b, generator=generator, dtype=torch.float64) * 2 - 1) * cfg.scale
    shift = (torch.rand(b, 2, generator=generator, dtype=torch.float64) * 2 - 1) * cfg.shift
    return zoom_shift(images, zoom, shift)


def zoom_shift(images: torch.Tensor, zoom: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``images`` ``[B, 3, S, S]`` (white = 1) zoomed by ``zoom[b]`` about the centre, then shifted so output
    pixel ``(y, x)`` shows input ``(y, x) + shift[b] * S`` (``shift[b]``: (x, y) in fractions of the side);
    outside the input is white."""
    b = images.shape[0]
    theta = torch.zeros(b, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / zoom.to(torch.float64)
    theta[:, :, 2] = shift.to(torch.float64) * 2  # grid coordinates span 2 per side
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    # sampled as (x - 1) with zeros outside, so outside reads as 1: the renders' white background
    return F.grid_sample(images - 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 1


def augment_generator(seed: int, micro: int, rank: int = 0) -> torch.Generator:
    """The generator of micro-batch ``micro`` on ``rank``: a pure function of the step, so resumes are exact."""
    return torch.Generator().manual_seed((seed * _SEED_STRIDE + micro) * 1024 + rank)


def to_model_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, 3, H, W]`` -> float32 in ``[-1, 1]`` (what :class:`CADVLM` is trained on)."""
    return images.to(torch.float32) / 127.5 - 1.0


@dataclass
class ImageCodeSet:
    """One split in memory for the compact model: uint8 images ``[N, 3, S, S]`` and token ids."""

    conversations: Conversations
    images: torch.Tensor

    def __len__(self) -> int:
        return len(self.conversations)

    def batch(self, indices: Sequence[int], tokenizer: CADTokenizer) -> dict[str, torch.Tensor]:
        """``{"images": float [B, 3, S, S] in [-1, 1], "tokens": int64 [B, L]}`` (right-padded with <pad>)."""
        idx = [int(i) for i in indices]
        tokens = tokenizer.pad_batch([self.conversations.ids[i] for i in idx])
        return {"images": to_model_input(self.images[idx]), "tokens": torch.from_numpy(tokens)}


@dataclass
class CADVLMData:
    """Both splits, where their images live, and the epoch schedule of the training split."""

    train: Conversations
    val: Conversations
    image_root: Path
    train_images: torch.Tensor | None = None  # compact model only (the HF collator opens the files itself)
    val_images: torch.Tensor | None = None

    def summary(self) -> dict[str, Any]:
        return {"train": dataclasses.asdict(self.train.counts), "validation": dataclasses.asdict(self.val.counts)}

    def describe_skipped(self, max_len: int) -> str:
        """e.g. ``"train 0 of 480, validation 0 of 60 (answers that do not parse / longer than 320 ids)"``."""
        parts = [f"{name} {c.unparseable + c.too_long} of {c.read} ({c.unparseable} / {c.too_long})"
                 for name, c in (("train", self.train.counts), ("validation", self.val.counts))]
        return ", ".join(parts) + f" (answers that do not parse / longer than max_len={max_len} ids)"


def load_data(cfg: CADVLMTrainConfig, conversations_dir: str | Path, image_root: str | Path,
              tokenizer: CADTokenizer | None = None) -> CADVLMData:
    """Read both splits (and, for the compact model, their images at ``image_size``); DataError if either is empty."""
    tok = tokenizer or CADTokenizer()
    splits = {s: read_conversations(Path(conversations_dir) / f, tok, cfg.max_len)
              for s, f in CONVERSATION_FILES.items()}
    for split, conv in splits.items():
        c = conv.counts
        if c.unparseable or c.too_long:
            log.warning("%s: skipped %d of %d conversations (%d answers do not parse, %d longer than max_len=%d ids)",
                        split, c.unparseable + c.too_long, c.read, c.unparseable, c.too_long, cfg.max_len)
        if not conv.records:
            raise DataError(f"{Path(conversations_dir) / CONVERSATION_FILES[split]}: no usable {split} conversations "
                            f"({c.read} read, {c.unparseable} unparseable, {c.too_long} longer than "
                            f"train_cad_vlm.max_len={cfg.max_len}); raise max_len or rebuild the conversations")
    data = CADVLMData(splits["train"], splits["validation"], Path(image_root))
    if cfg.base_model is None:
        data.train_images = load_images(data.train.records, image_root, cfg.image_size)
        data.val_images = load_images(data.val.records, image_root, cfg.image_size)
    return data


@dataclass(frozen=True)
class EpochSchedule:
    """Which samples micro-batch ``j`` holds (module docstring). ``world`` processes share each optimiser step."""

    n: int
    batch_size: int
    grad_accum: int = 1
    world: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError("EpochSchedule: no samples")

    @property
    def steps_per_epoch(self) -> int:
        """Optimiser steps per epoch: every sample at least once (the last micro-batches wrap around)."""
        return max(1, math.ceil(self.n / (self.batch_size * self.grad_accum * self.world)))

    @property
    def micro_per_epoch(self) -> int:
        """Micro-batches per epoch on each process."""
        return self.steps_per_epoch * self.grad_accum

    def permutation(self, epoch: int) -> torch.Tensor:
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * _SEED_STRIDE + epoch))

    def indices(self, micro: int, rank: int = 0) -> list[int]:
        """Sample indices of this process's micro-batch ``micro`` (0-based, counted over the whole run)."""
        epoch, k = divmod(micro, self.micro_per_epoch)
        start = (k * self.world + rank) * self.batch_size
        positions = [(start + i) % self.n for i in range(self.batch_size)]
        perm = self.permutation(epoch)
        return [int(perm[p]) for p in positions]

    def epoch_of_step(self, step: int) -> int:
        """Epoch (0-based) of optimiser step ``step`` (0-based)."""
        return step // self.steps_per_epoch


def schedule_for(cfg: CADVLMTrainConfig, n: int) -> EpochSchedule:
    """The :class:`EpochSchedule` of ``n`` training samples for this process group."""
    return EpochSchedule(n, cfg.train.batch_size, cfg.train.grad_accum, process_state().num_processes, cfg.train.seed)


def make_data_fn(schedule: EpochSchedule, total_steps: int,
                 make_batch: Callable[[list[int], int, int], Any]) -> DataFn:
    """``data(start_step)``: ``make_batch(indices, micro, rank)`` of every micro-batch from ``start_step`` to
    ``total_steps`` (``micro`` counts micro-batches over the whole run: what per-batch randomness is seeded by)."""
    rank = process_state().process_index

    def data(start_step: int) -> Iterator[Any]:
        for micro in range(start_step * schedule.grad_accum, total_steps * schedule.grad_accum):
            yield make_batch(schedule.indices(micro, rank), micro, rank)

    return data


# ----------------------------------------------------------------------------- history of losses


class LossHistory:
    """Every micro-batch's train loss and every validation, one JSON line each, in ``<out_dir>/history.jsonl``.

    Train rows: ``{"kind": "train", "step", "micro", "loss"}`` (``step`` 0-based, as passed to step_fn);
    validation rows: ``{"kind": "val", "step", "loss"}`` (``step`` = optimiser steps done). Only the main
    process writes. :meth:`truncate` drops what a resumed run will redo.
    """

    def __init__(self, path: str | Path, enabled: bool = True):
        self.path, self.enabled = Path(path), enabled

    def truncate(self, step: int) -> int:
        """Keep train rows of steps < ``step`` and validations at steps <= ``step``; return rows dropped.

        A line cut short by a kill is dropped too.
        """
        if not self.enabled or not self.path.is_file():
            return 0
        rows = read_history(self.path, strict=False)
        kept = [r for r in rows if (r["step"] < step if r["kind"] == "train" else r["step"] <= step)]
        total = len(self.path.read_text().splitlines())
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        return total - len(kept)

    def append(self, row: Mapping[str, Any]) -> None:
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write(json.dumps(dict(row)) + "\n")

    def rows(self) -> list[dict]:
        return read_history(self.path) if self.path.is_file() else []


def read_history(path: str | Path, strict: bool = True) -> list[dict]:
    """Rows of a history file; a malformed line raises (``strict``) or is skipped (a write cut by a kill)."""
    rows = []
    for i, line in enumerate(Path(path).read_text().splitlines(), 1):
        try:
            row = json.loads(line)
            if row["kind"] not in ("train", "val") or not isinstance(row["step"], int):
                raise ValueError(row)
            float(row["loss"])
        except (ValueError, KeyError, TypeError):
            if strict:
                raise DataError(f"{path}:{i}: not a loss-history row ({line[:80]!r}); delete the file to rebuild "
                                f"it with a fresh run") from None
            continue
        rows.append(row)
    return rows


def recorded(step_fn: StepFn, history: LossHistory) -> StepFn:
    """``step_fn`` that also appends its ``train/loss`` to ``history``."""

    def step(trainer: Trainer, batch: Any, index: int) -> Mapping[str, Any]:
        metrics = step_fn(trainer, batch, index)
        history.append({"kind": "train", "step": index, "micro": trainer.state.data_position,
                        "loss": float(metrics["train/loss"])})
        return metrics

    return step


def recorded_validation(validate_fn: ValidateFn, history: LossHistory) -> ValidateFn:
    """``validate_fn`` that also appends its ``loss`` to ``history``."""

    def validate(trainer: Trainer, step: int) -> Mapping[str, Any]:
        metrics = validate_fn(trainer, step)
        history.append({"kind": "val", "step": step, "loss": float(metrics["loss"])})
        return metrics

    return validate


# ----------------------------------------------------------------------------- models, steps, validation


def build_model(cfg: CADVLMTrainConfig, tokenizer: CADTokenizer) -> CADVLM:
    """The compact :class:`CADVLM` of ``cfg.model`` (seeded by ``train.seed``)."""
    torch.manual_seed(cfg.train.seed)
    return CADVLM(cfg.model, tokenizer.vocab_size, pad_id=tokenizer.pad_id)


def token_accuracy(logits: torch.Tensor, targets: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Fraction of non-pad targets whose argmax logit is right (teacher forcing)."""
    mask = targets != pad_id
    return ((logits.argmax(-1) == targets) & mask).sum() / mask.sum().clamp(min=1)


def make_step_fn(pad_id: int) -> StepFn:
    """Teacher-forced cross-entropy step of the compact model: ``{"train/loss", "train/token_accuracy"}``."""

    def step_fn(trainer: Trainer, batch: Mapping[str, torch.Tensor], step: int) -> dict[str, Any]:
        tokens = batch["tokens"]
        logits = trainer.models[MODEL_NAME](batch["images"], tokens[:, :-1])
        loss = cad_loss(logits, tokens[:, 1:], pad_id)
        trainer.backward(loss)
        trainer.optimizer_step(MODEL_NAME)
        return {"train/loss": loss.detach(), "train/token_accuracy": token_accuracy(logits.detach(), tokens[:, 1:],
                                                                                      pad_id)}

    return step_fn


def validation_loss(model: nn.Module, val: ImageCodeSet, tokenizer: CADTokenizer, batch_size: int,
                    device: torch.device | str = "cpu") -> dict[str, float]:
    """Token-weighted cross-entropy and token accuracy of ``model`` over the whole set (teacher forcing)."""
    total, correct, count = 0.0, 0.0, 0
    for start in range(0, len(val), batch_size):
        batch = val.batch(range(start, min(start + batch_size, len(val))), tokenizer)
        images, tokens = batch["images"].to(device), batch["tokens"].to(device)
        logits = model(images, tokens[:, :-1])
        targets = tokens[:, 1:]
        n = int((targets != tokenizer.pad_id).sum())
        total += float(cad_loss(logits, targets, tokenizer.pad_id)) * n
        correct += float(token_accuracy(logits, targets, tokenizer.pad_id)) * n
        count += n
    return {"loss": total / count, "token_accuracy": correct / count}


def make_validate_fn(val: ImageCodeSet, tokenizer: CADTokenizer, batch_size: int) -> ValidateFn:
    """Trainer ``validate_fn``: :func:`validation_loss` of the compact model (logged as ``val/loss``)."""

    def validate(trainer: Trainer, step: int) -> dict[str, float]:
        return validation_loss(trainer.models[MODEL_NAME], val, tokenizer, batch_size, trainer.accelerator.device)

    return validate


def hf_validation_loss(model: nn.Module, collator: Any, records: Sequence[Mapping[str, Any]], batch_size: int,
                       device: torch.device | str = "cpu") -> dict[str, float]:
    """Answer-token-weighted LM loss of a transformers VLM over ``records`` (labels from the collator)."""
    from lib.models.hf_vlm import IGNORE_INDEX

    total, count = 0.0, 0
    for start in range(0, len(records), batch_size):
        batch = collator(list(records[start:start + batch_size]))
        batch = {k: v.to(device) for k, v in batch.items()}
        n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())  # the model shifts labels by one
        total += float(model(**batch).loss) * n
        count += n
    return {"loss": total / max(count, 1)}


# ----------------------------------------------------------------------------- fingerprint and trainer

# Keys that change how a run is watched or stored, not what it computes: a rerun may change them and resume.
_BOOKKEEPING = ("report_dir", "num_threads")  # beside lib.train.fingerprint.BOOKKEEPING


def data_digest(data: CADVLMData) -> str:
    """sha256 over both splits' records and the bytes of every image they reference."""
    h = hashlib.sha256()
    for split in (data.train, data.val):
        for record in split.records:
            h.update(json.dumps(record, sort_keys=True).encode())
            h.update(read_bytes(image_path(data.image_root, record)))
    return h.hexdigest()[:16]


def run_fingerprint(cfg: CADVLMTrainConfig, data: CADVLMData, train: TrainConfig | None = None) -> str:
    """Digest of everything that decides the run's trajectory: params (bookkeeping aside), the data's records and
    image bytes, the base model's files (content, not the folder's path or mtimes) and the code (this module's
    import closure)."""
    params = to_section(cfg)
    if train is not None:
        params.update(steps=train.steps, lora_targets=list(train.lora_targets))
    inputs: dict[str, Any] = {"data": data_digest(data)}
    if cfg.base_model:
        inputs["base_model"] = path_content(cfg.base_model)
    return fingerprint_of(params, inputs, __name__, skip=(*_BOOKKEEPING, "base_model"))


def _early_stopping(cfg: CADVLMTrainConfig) -> EarlyStopping | None:
    es = cfg.early_stopping
    return None if es is None else EarlyStopping("val/loss", es.patience, es.min_delta, "min")


def make_trainer(cfg: CADVLMTrainConfig, data: CADVLMData, *, tokenizer: CADTokenizer | None = None,
                 **trainer_kwargs: Any) -> Trainer:
    """The :class:`Trainer` of ``cfg`` on ``data``: compact model, or ``base_model`` (module docstring).

    Resumes from the latest checkpoint under ``out_dir`` made with the same :func:`run_fingerprint`; the loss
    history is cut back to that checkpoint. ``trainer.schedule`` and ``trainer.history`` are attached.
    """
    tok = tokenizer or CADTokenizer()
    schedule = schedule_for(cfg, len(data.train))
    train = resolve_steps(cfg, schedule.steps_per_epoch)
    if cfg.base_model:
        models, step_fn, validate_fn, make_batch, train = _hf_parts(cfg, data, train)
    else:
        if data.train_images is None or data.val_images is None:
            raise ValueError("make_trainer: data has no images; load it with load_data(cfg, ...) and base_model: null")
        train_set = ImageCodeSet(data.train, data.train_images)
        val_set = ImageCodeSet(data.val, data.val_images)
        models = {MODEL_NAME: build_model(cfg, tok)}
        step_fn, validate_fn = make_step_fn(tok.pad_id), make_validate_fn(val_set, tok, cfg.train.batch_size)

        def make_batch(idx, micro, rank):
            batch = train_set.batch(idx, tok)
            if cfg.augment.enabled:
                gen = augment_generator(cfg.train.seed, micro, rank)
                batch["images"] = augment_images(batch["images"], cfg.augment, gen)
            return batch

    history = LossHistory(history_path(cfg))
    trainer_kwargs.setdefault("fingerprint", run_fingerprint(cfg, data, train))
    trainer = Trainer(train, models, recorded(step_fn, history), make_data_fn(schedule, train.steps, make_batch),
                      validate_fn=recorded_validation(validate_fn, history),
                      val_every=cfg.val_every * schedule.steps_per_epoch,
                      early_stopping=_early_stopping(cfg), **trainer_kwargs)
    history.enabled = trainer.accelerator.is_main_process
    dropped = history.truncate(trainer.step)
    if dropped:
        log.info("loss history: dropped %d rows logged after the checkpoint at step %d", dropped, trainer.step)
    return trainer


def history_path(cfg: CADVLMTrainConfig) -> Path:
    """``<out_dir>/history.jsonl``: the run's :class:`LossHistory`."""
    return Path(cfg.train.out_dir) / HISTORY_FILE


def _hf_parts(cfg: CADVLMTrainConfig, data: CADVLMData, train: TrainConfig):
    """Models, step/validate functions, batch maker and TrainConfig (LoRA targets resolved) for ``base_model``."""
    from lib.models.hf_vlm import (
        HFConversationCollator,
        UnsupportedBaseModel,
        default_lora_targets,
        hf_step_fn,
        load_base_model,
    )

    try:  # BaseModelNotFound (a FileNotFoundError) passes through: the stage reports it and exits 1
        model, processor = load_base_model(cfg.base_model, trust_remote_code=cfg.trust_remote_code)
    except UnsupportedBaseModel as err:
        raise ConfigError(str(err)) from err
    if train.training_mode == "lora" and DEFAULT_LORA in train.lora_targets:
        targets = default_lora_targets(model)
        log.info("lora_targets: none given; the language model's attention projections %s", targets)
        train = dataclasses.replace(train, lora_targets=targets)
    collator = HFConversationCollator(processor, data.image_root, cfg.hf_max_length)
    records, val_records = data.train.records, data.val.records

    def validate(trainer: Trainer, step: int) -> dict[str, float]:
        return hf_validation_loss(trainer.models[HF_MODEL_NAME], collator, val_records, cfg.train.batch_size,
                                  trainer.accelerator.device)

    return ({HF_MODEL_NAME: model}, hf_step_fn(HF_MODEL_NAME), validate,
            lambda idx, micro, rank: collator([records[i] for i in idx]), train)


# ----------------------------------------------------------------------------- convergence table


def convergence_rows(history: Sequence[Mapping[str, Any]], steps_per_epoch: int) -> list[dict[str, Any]]:
    """Per epoch (1-based) from a loss history: ``train_loss`` (mean of its micro-batch losses),
    ``batch_loss_var`` (their population variance), ``val_loss`` (validation at the epoch's end, or None),
    ``gap`` (val - train), ``train_improvement`` / ``val_improvement`` (previous epoch's value minus this
    one's: positive = better; None for the first), ``batches`` and ``complete`` (all its steps ran)."""
    train: dict[int, list[float]] = {}
    steps: dict[int, set[int]] = {}
    for r in history:
        if r["kind"] == "train":
            e = r["step"] // steps_per_epoch
            train.setdefault(e, []).append(float(r["loss"]))
            steps.setdefault(e, set()).add(r["step"])
    val = {r["step"] // steps_per_epoch - 1: float(r["loss"]) for r in history
           if r["kind"] == "val" and r["step"] % steps_per_epoch == 0}
    rows: list[dict[str, Any]] = []
    prev_train = prev_val = None
    for e in sorted(train):
        losses = np.asarray(train[e], dtype=float)
        t, v = float(losses.mean()), val.get(e)
        rows.append({"epoch": e + 1, "batches": int(losses.size), "complete": len(steps[e]) == steps_per_epoch,
                     "train_loss": t, "val_loss": v, "gap": None if v is None else v - t,
                     "batch_loss_var": float(losses.var()),
                     "train_improvement": None if prev_train is None else prev_train - t,
                     "val_improvement": None if v is None or prev_val is None else prev_val - v})
        prev_train = t
        prev_val = v if v is not None else prev_val
    return rows


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def convergence_markdown(rows: Sequence[Mapping[str, Any]], info: Mapping[str, Any]) -> str:
    """The convergence table (and what it was measured on) as markdown."""
    lines = ["# train_cad_vlm: convergence", "",
             f"Model: {info.get('model', '?')}. Data: {info.get('train', '?')} train / {info.get('val', '?')} "
             f"validation conversations, {info.get('steps_per_epoch', '?')} optimiser steps per epoch "
             f"(batch {info.get('batch_size', '?')}). Stopped: {info.get('stop_reason', '?')} at step "
             f"{info.get('step', '?')}." + (f" Skipped conversations: {info['skipped']}." if "skipped" in info else ""),
             "",
             ("Train loss: mean of the epoch's per-batch token-mean cross-entropies (train mode: dropout on); "
             "per-batch variance: their population variance. Val loss: token-weighted cross-entropy over all "
             "validation conversations at the epoch's end (eval mode). Gap = val - train. Improvement: previous "
             "epoch minus this one (positive = lower loss)."), "",
             ("| epoch | batches | train loss | val loss | gap (val - train) | per-batch loss variance | "
             "train improvement | val improvement |"),
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        mark = "" if r["complete"] else " (partial)"
        lines.append(f"| {r['epoch']}{mark} | {r['batches']} | {_fmt(r['train_loss'])} | {_fmt(r['val_loss'])} | "
                     f"{_fmt(r['gap'], True)} | {_fmt(r['batch_loss_var'])} | {_fmt(r['train_improvement'], True)} | "
                     f"{_fmt(r['val_improvement'], True)} |")
    lines += ["", "![train and validation loss per epoch](convergence.png)", ""]
    return "\n".join(lines)


def convergence_plot(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """PNG of train and validation loss per epoch (train with a +-1 std band of its per-batch losses)."""
    from lib.report import new_figure, no_data, save_figure

    fig = new_figure(7, 4)
    ax = fig.add_subplot()
    ax.set_title("train_cad_vlm: loss per epoch")
    if not rows:
        no_data(ax, "no epochs logged")
        return save_figure(fig, path)
    epochs = np.array([r["epoch"] for r in rows])
    train = np.array([r["train_loss"] for r in rows])
    std = np.sqrt([r["batch_loss_var"] for r in rows])
    ax.plot(epochs, train, "o-", color="tab:blue", label="train (mean of batches)")
    ax.fill_between(epochs, train - std, train + std, color="tab:blue", alpha=0.15, label="train ± 1 std of batches")
    val = [(r["epoch"], r["val_loss"]) for r in rows if r["val_loss"] is not None]
    if val:
        ax.plot(*zip(*val, strict=False), "s-", color="tab:orange", label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy (nats / token)")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def convergence_summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The last epoch's values (the last validated one for val loss and gap), for the metrics file."""
    if not rows:
        return {"epochs": 0}
    last = rows[-1]
    validated = [r for r in rows if r["val_loss"] is not None]
    out = {"epochs": len(rows), "train_loss": last["train_loss"], "batch_loss_var": last["batch_loss_var"],
           "train_improvement": last["train_improvement"]}
    if validated:
        v = validated[-1]
        out.update(val_loss=v["val_loss"], gap=v["gap"], val_improvement=v["val_improvement"],
                   best_val_loss=min(r["val_loss"] for r in validated))
    return out


def write_convergence(report_dir: str | Path, rows: Sequence[Mapping[str, Any]], info: Mapping[str, Any]) -> dict:
    """Write under ``report_dir``: ``convergence.md`` (the table), ``convergence.png``, ``convergence.json`` (the
    last epoch's values: :func:`convergence_summary`, a DVC metrics file) and ``convergence_epochs.json`` (one row
    per epoch, a DVC plots file); return the summary."""
    out = Path(report_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = convergence_summary(rows)
    convergence_plot(rows, out / "convergence.png")
    atomic_write_text(out / "convergence.md", convergence_markdown(rows, info))
    atomic_write_json(out / "convergence.json", summary)
    atomic_write_json(out / "convergence_epochs.json", list(rows))
    return summary


__all__ = [
    "AugmentConfig",
    "CONVERSATION_FILES",
    "DEFAULT_LORA",
    "HF_MODEL_NAME",
    "HISTORY_FILE",
    "MODEL_NAME",
    "CADVLMData",
    "CADVLMTrainConfig",
    "Conversations",
    "DataCounts",
    "EarlyStoppingConfig",
    "EpochSchedule",
    "ImageCodeSet",
    "LossHistory",
    "answer_of",
    "augment_generator",
    "augment_images",
    "build_model",
    "convergence_rows",
    "convergence_summary",
    "from_section",
    "history_path",
    "image_path",
    "load_data",
    "load_image",
    "load_images",
    "make_data_fn",
    "make_step_fn",
    "make_trainer",
    "make_validate_fn",
    "read_conversations",
    "read_history",
    "resolve_steps",
    "run_fingerprint",
    "schedule_for",
    "to_model_input",
    "to_section",
    "validation_loss",
    "write_convergence",
    "zoom_shift",
]
