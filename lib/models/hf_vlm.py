"""Fine-tune a Hugging Face vision-language checkpoint (``train_cad_vlm.base_model``) with the shared Trainer.

Why this module: the compact CAD VLM is trained from scratch; a pretrained VLM (TinyLLaVA, OpenECAD,
any LLaVA-style checkpoint transformers can load) starts from real vision and language knowledge.
Everything here is plain transformers, loaded from a local folder only (``local_files_only=True``):
training machines have no network, so a missing folder must fail at once with the fix, not hang on
the Hub.

- :func:`load_base_model` -> ``(model, processor)``: ``AutoModelForImageTextToText`` (the class
  transformers 5 maps LLaVA-style configs to, e.g. ``LlavaForConditionalGeneration``) and
  ``AutoProcessor`` (tokenizer + image processor, and the image-token expansion).
- :class:`HFConversationCollator`: LLaVA-format records -> ``pixel_values, input_ids,
  attention_mask, labels``; the labels train only the answer (the CAD code) and its eos.
- :func:`hf_step_fn`: the Trainer ``step_fn`` (the model computes its own shifted LM loss).
- :func:`hf_generate`: greedy answers for images + prompt, the same prompt format as training.
- :func:`default_lora_targets`: LoRA globs for the language model's attention projections only.

Prompt format: the processor's chat template when it has one (a user turn holding the image and the
prompt, then the generation prompt), else :data:`PLAIN_TEMPLATE` (``"USER: <image>\\n{prompt}
ASSISTANT:"``, LLaVA-1.5's format). The answer is tokenised on its own and appended with eos, so the
prompt tokens seen in training are exactly the ones :func:`hf_generate` feeds.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lib.archive import exists, open_binary
from lib.io import safe_join

if TYPE_CHECKING:
    from PIL import Image

    from lib.train.loop import Trainer

log = logging.getLogger(__name__)

PARAMS_KEY = "train_cad_vlm.base_model"
TRUST_KEY = "train_cad_vlm.trust_remote_code"
EXAMPLE_REPO = "bczhou/tiny-llava-v1-hf"  # TinyLLaVA converted to transformers' LlavaForConditionalGeneration
PLAIN_TEMPLATE = "USER: {image}\n{prompt} ASSISTANT:"
IGNORE_INDEX = -100  # labels with this value add nothing to the loss (torch cross-entropy's ignore_index)
IMAGE_MARKER = "<image>"  # where the LLaVA-format human turn puts the image
ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")


class BaseModelNotFound(FileNotFoundError):
    """``base_model`` points at no folder, or at a folder without a config or weights."""


class UnsupportedBaseModel(ValueError):
    """A checkpoint folder transformers cannot turn into an image-text-to-text model plus processor."""


def _fix_hint(path: Path) -> str:
    return (f"Put a transformers checkpoint folder there (config.json, *.safetensors, tokenizer and "
            f"processor files), e.g. run `hf download {EXAMPLE_REPO} --local-dir {path}` on a machine with "
            f"network access and copy the folder over; or set {PARAMS_KEY}: null to train the compact model.")


# ---------------------------------------------------------------------------------------------- loading

def _read_config(path: Path) -> dict[str, Any]:
    """Check the folder and its config.json before transformers sees them (it would ask the Hub or a tty)."""
    if not path.is_dir():
        raise BaseModelNotFound(f"{PARAMS_KEY}: {path} does not exist or is not a folder. {_fix_hint(path)}")
    config_file = path / "config.json"
    if not config_file.is_file():
        found = ", ".join(sorted(p.name for p in path.iterdir())[:10]) or "nothing"
        raise BaseModelNotFound(f"{PARAMS_KEY}: {path} has no config.json (found: {found}); it is not a "
                                f"transformers checkpoint. {_fix_hint(path)}")
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UnsupportedBaseModel(f"{PARAMS_KEY}: {config_file} is not valid JSON ({e}); "
                                   f"download the checkpoint again") from None
    if not isinstance(config, dict):
        raise UnsupportedBaseModel(f"{PARAMS_KEY}: {config_file} holds no JSON object; download the checkpoint again")
    return config


def _check_architecture(path: Path, config: Mapping[str, Any], trust_remote_code: bool) -> None:
    """Refuse configs transformers has no class for, and custom code nobody agreed to run."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    model_type = config.get("model_type")
    if model_type in CONFIG_MAPPING:
        return
    if "auto_map" in config:
        if not trust_remote_code:
            raise UnsupportedBaseModel(
                f"{PARAMS_KEY}: {path} (model_type {model_type!r}) needs the custom code shipped in the folder "
                f"(auto_map: {config['auto_map']}). Read its .py files, then set {TRUST_KEY}: true "
                f"(load_base_model(..., trust_remote_code=True)); or use a transformers-native conversion "
                f"such as {EXAMPLE_REPO}.")
        return
    import transformers

    raise UnsupportedBaseModel(
        f"{PARAMS_KEY}: {path} has model_type {model_type!r}, which transformers {transformers.__version__} does "
        f"not know, and no custom code (auto_map). Original TinyLLaVA checkpoints (model_type 'tiny_llava') "
        f"need the TinyLLaVA repository; use a transformers-format conversion such as {EXAMPLE_REPO}.")


def _model_class(path: Path, config: Any, raw: Mapping[str, Any], trust_remote_code: bool) -> Any:
    """The Auto class that builds this config: image-text-to-text, or the custom code's own class."""
    import transformers
    from transformers import AutoModelForImageTextToText
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    if getattr(config, "model_type", None) in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        return AutoModelForImageTextToText
    auto_map = raw.get("auto_map") or {}
    if trust_remote_code:
        for name in ("AutoModelForImageTextToText", "AutoModelForVision2Seq", "AutoModelForCausalLM"):
            if name in auto_map and hasattr(transformers, name):
                return getattr(transformers, name)
    raise UnsupportedBaseModel(
        f"{PARAMS_KEY}: {path} is a {type(config).__name__} (architectures {raw.get('architectures')}), not an "
        f"image-text-to-text model transformers {transformers.__version__} can load; point base_model at a "
        f"vision-language checkpoint such as {EXAMPLE_REPO}, or set {PARAMS_KEY}: null.")


def load_base_model(path: str | Path, dtype: torch.dtype | str | None = None, *,
                    trust_remote_code: bool = False) -> tuple[nn.Module, Any]:
    """Load a local vision-language checkpoint; return ``(model, processor)``.

    ``processor`` is the checkpoint's transformers processor: ``processor.tokenizer``,
    ``processor.image_processor``, and ``processor(images=..., text=...)`` which expands the image token
    to the number of vision tokens the model expects.

    Args:
        path: the checkpoint folder (``train_cad_vlm.base_model``). Never fetched from the Hub.
        dtype: weight dtype. None loads float32 (transformers 5 would otherwise use the checkpoint's
            dtype, often fp16/bf16, and AdamW on half-precision weights loses updates; the Trainer's
            ``mixed_precision`` handles fast compute). ``"auto"`` keeps the checkpoint's dtype.
        trust_remote_code: allow the folder's own Python code (configs with ``auto_map``). Off by default:
            it runs arbitrary code from the download.

    Raises:
        BaseModelNotFound: no folder, no config.json, or no weights.
        UnsupportedBaseModel: an architecture transformers cannot map, custom code without
            ``trust_remote_code``, or no image processor in the folder.
    """
    from transformers import AutoConfig, AutoProcessor

    path = Path(path).expanduser()
    raw = _read_config(path)
    _check_architecture(path, raw, trust_remote_code)
    config = AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
    model_cls = _model_class(path, config, raw, trust_remote_code)
    try:
        model = model_cls.from_pretrained(path, config=config, local_files_only=True,
                                          dtype=torch.float32 if dtype is None else dtype,
                                          trust_remote_code=trust_remote_code)
    except OSError as e:  # transformers reports missing weight files as OSError
        raise BaseModelNotFound(f"{PARAMS_KEY}: {path} has a config.json but no loadable weights ({e}). "
                                f"{_fix_hint(path)}") from None
    try:
        processor = AutoProcessor.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise UnsupportedBaseModel(f"{PARAMS_KEY}: {path} has no usable processor ({e}); the folder needs the "
                                   f"tokenizer and image-processor files saved with the model") from None
    if getattr(processor, "image_processor", None) is None or getattr(processor, "tokenizer", None) is None:
        raise UnsupportedBaseModel(f"{PARAMS_KEY}: {path} loads a {type(processor).__name__}, not a processor with "
                                   f"a tokenizer and an image processor (preprocessor_config.json or "
                                   f"processor_config.json missing); save the checkpoint's processor with it")
    log.info("base_model: %s from %s (%.1fM parameters)", type(model).__name__, path,
             sum(p.numel() for p in model.parameters()) / 1e6)
    return model, processor


# ---------------------------------------------------------------------------------------------- prompts

def build_prompt(processor: Any, prompt: str) -> str:
    """The text before the answer: the chat template's user turn + generation prompt, else PLAIN_TEMPLATE."""
    if getattr(processor, "chat_template", None):
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return PLAIN_TEMPLATE.format(image=getattr(processor, "image_token", IMAGE_MARKER), prompt=prompt)


def split_conversation(record: Mapping[str, Any]) -> tuple[str, str]:
    """``(prompt, answer)`` of a LLaVA-format record: the human turn without ``<image>``, the gpt turn."""
    turns = record.get("conversations")
    if (not isinstance(turns, list) or len(turns) != 2 or turns[0].get("from") != "human"
            or turns[1].get("from") != "gpt"):
        raise ValueError(f"conversation {record.get('id')!r}: expected one human turn then one gpt turn, got "
                         f"{[t.get('from') for t in turns] if isinstance(turns, list) else turns!r}; "
                         f"rebuild the conversations stage output")
    prompt = str(turns[0].get("value", "")).replace(IMAGE_MARKER, "").strip()
    return prompt, str(turns[1].get("value", ""))


def _open_image(image_root: Path, relative: str, record_id: Any) -> Image.Image:
    path = safe_join(image_root, relative)  # UnsafePathError for ../ escapes and absolute paths
    if not exists(path):
        raise FileNotFoundError(f"conversation {record_id!r}: image {path} not found; run the render stage "
                                f"or fix image_root ({image_root})")
    return _rgb(path)


def _rgb(path: str | Path) -> Image.Image:
    """An image file, or a member of a shard archive (lib.archive), as RGB."""
    from PIL import Image

    with open_binary(path) as fh, Image.open(fh) as image:
        return image.convert("RGB")


# ---------------------------------------------------------------------------------------------- collator

class HFConversationCollator:
    """LLaVA-format conversation records -> one padded batch for a transformers VLM.

    Each record becomes ``prompt tokens (with the expanded image tokens) + answer tokens + eos``;
    ``labels`` copy the answer tokens and eos and are ``-100`` on the prompt, the image tokens and the
    right padding, so the loss trains only the CAD code and where it stops. A too-long answer is cut at
    ``max_length`` (a prompt that alone exceeds it is an error: cutting image tokens breaks the model).
    """

    def __init__(self, processor: Any, image_root: str | Path, max_length: int = 2048):
        if max_length < 2:
            raise ValueError(f"max_length: must be >= 2, got {max_length}")
        tokenizer = processor.tokenizer
        if tokenizer.eos_token_id is None:
            raise ValueError(f"{type(tokenizer).__name__} has no eos token; the answer needs one to learn to stop")
        self.processor, self.image_root, self.max_length = processor, Path(image_root), max_length
        self.eos_id = int(tokenizer.eos_token_id)
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id)

    def encode(self, record: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """One record -> unpadded ``input_ids``, ``labels`` (1-d) and the processor's image tensors."""
        prompt, answer = split_conversation(record)
        image = _open_image(self.image_root, str(record.get("image", "")), record.get("id"))
        enc = self.processor(images=[image], text=[build_prompt(self.processor, prompt)], return_tensors="pt")
        prompt_ids = enc["input_ids"][0]
        if len(prompt_ids) >= self.max_length:
            raise ValueError(f"conversation {record.get('id')!r}: the prompt alone is {len(prompt_ids)} tokens "
                             f"(image tokens included), max_length is {self.max_length}; raise max_length")
        answer_ids = self.processor.tokenizer(answer, add_special_tokens=False)["input_ids"] + [self.eos_id]
        answer_ids = torch.tensor(answer_ids[: self.max_length - len(prompt_ids)], dtype=prompt_ids.dtype)
        out = {k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask") and torch.is_tensor(v)}
        out["input_ids"] = torch.cat([prompt_ids, answer_ids])
        out["labels"] = torch.cat([torch.full_like(prompt_ids, IGNORE_INDEX), answer_ids])
        return out

    def __call__(self, records: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not records:
            raise ValueError("HFConversationCollator: empty list of records")
        items = [self.encode(r) for r in records]
        length = max(len(it["input_ids"]) for it in items)
        batch = {
            "input_ids": torch.full((len(items), length), self.pad_id, dtype=torch.long),
            "attention_mask": torch.zeros((len(items), length), dtype=torch.long),
            "labels": torch.full((len(items), length), IGNORE_INDEX, dtype=torch.long),
        }
        for row, it in enumerate(items):
            n = len(it["input_ids"])
            batch["input_ids"][row, :n] = it["input_ids"]
            batch["attention_mask"][row, :n] = 1
            batch["labels"][row, :n] = it["labels"]
        for key in items[0].keys() - batch.keys():  # pixel_values (and e.g. image_sizes for other processors)
            batch[key] = torch.cat([it[key] for it in items])
        return batch


# ---------------------------------------------------------------------------------------------- training

def hf_step_fn(model_name: str = "vlm") -> Callable[[Trainer, Mapping[str, torch.Tensor], int], dict[str, Any]]:
    """A Trainer ``step_fn``: forward the batch (the model shifts ``labels`` itself), backward, step."""
    def step_fn(trainer: Trainer, batch: Mapping[str, torch.Tensor], step: int) -> dict[str, Any]:
        out = trainer.models[model_name](**batch)
        trainer.backward(out.loss)
        trainer.optimizer_step(model_name)
        return {"train/loss": out.loss.detach()}
    return step_fn


def default_lora_targets(model: nn.Module, projections: Sequence[str] = ATTENTION_PROJECTIONS) -> list[str]:
    """Glob patterns for the language model's attention projections, e.g. ``model.language_model.*.q_proj``.

    Scoped to the language model because the vision tower (CLIP/SigLIP) uses the same layer names and
    LLaVA-style fine-tuning leaves it frozen. Raises ValueError when no projection is found.
    """
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    prefix = next((name for name, m in model.named_modules() if decoder is not None and m is decoder), None)
    if prefix is None:
        prefix = next((name for name, _ in model.named_modules() if name.rsplit(".", 1)[-1] == "language_model"), "")
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.startswith(prefix)]
    patterns = [f"{prefix}.*.{p}" if prefix else f"*.{p}" for p in projections
                if any(n.endswith("." + p) for n in names)]
    if not patterns:
        raise ValueError(f"default_lora_targets: no {'/'.join(projections)} Linear layers under "
                         f"{prefix or type(model).__name__!r}; set lora_targets explicitly")
    return patterns


# ---------------------------------------------------------------------------------------------- inference

@torch.no_grad()
def hf_generate(model: nn.Module, processor: Any, images: Sequence[Image.Image | str | Path],
                prompt: str | Sequence[str], max_new_tokens: int = 512) -> list[str]:
    """Greedy answers (the text after the prompt, special tokens dropped), one per image.

    ``prompt`` is one prompt for every image or one per image, without ``<image>`` (it is placed by the
    prompt format). Prompts are left-padded so every row's answer starts right after its own prompt.
    """
    pil = [_rgb(im) if isinstance(im, (str, Path)) else im.convert("RGB") for im in images]
    prompts = [prompt] * len(pil) if isinstance(prompt, str) else list(prompt)
    if len(prompts) != len(pil):
        raise ValueError(f"hf_generate: {len(pil)} images but {len(prompts)} prompts")
    tokenizer = processor.tokenizer
    texts = [build_prompt(processor, p.replace(IMAGE_MARKER, "").strip()) for p in prompts]
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        inputs = processor(images=pil, text=texts, padding=True, return_tensors="pt")
    finally:
        tokenizer.padding_side = side
    device = next(model.parameters()).device
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    inputs = {k: v.to(device, dtype=dtype) if v.is_floating_point() else v.to(device) for k, v in inputs.items()}
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    was_training = model.training
    model.eval()
    try:
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=pad_id, eos_token_id=tokenizer.eos_token_id)
    finally:
        model.train(was_training)
    new_tokens = out[:, inputs["input_ids"].shape[1]:]
    return [t.strip() for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


__all__ = [
    "ATTENTION_PROJECTIONS",
    "IGNORE_INDEX",
    "PARAMS_KEY",
    "PLAIN_TEMPLATE",
    "BaseModelNotFound",
    "HFConversationCollator",
    "UnsupportedBaseModel",
    "build_prompt",
    "default_lora_targets",
    "hf_generate",
    "hf_step_fn",
    "load_base_model",
    "split_conversation",
]
