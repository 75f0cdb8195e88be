"""A tiny randomly initialised LLaVA (CLIP vision tower + Llama) with its processor, built offline.

Why: tests of the Hugging Face base-model path need a real transformers checkpoint folder, and
nothing may be downloaded. Everything here is built from configs and a byte-level BPE trained on a
few CAD strings, in well under a second; ``save_tiny_vlm`` writes it the way ``hf download`` would.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

IMAGE_SIZE, PATCH = 32, 8
IMAGE_TOKENS = (IMAGE_SIZE // PATCH) ** 2  # CLS dropped (vision_feature_select_strategy "default")
ANSWERS = [
    "sketch circle 0 0 39 ; extrude 5",
    "sketch line 0 0 10 0 line 10 0 10 10 ; extrude 20",
]
PROMPT = "Write the CAD code of this part."


def tiny_tokenizer():
    """A byte-level BPE (exact decode) with <pad>, <s>, </s> and an atomic <image> token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<pad>", "<s>", "</s>", "<image>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([*ANSWERS, PROMPT, "USER: ASSISTANT:"], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def tiny_processor(tokenizer=None):
    """LlavaProcessor: 32x32 CLIP preprocessing; <image> expands to IMAGE_TOKENS tokens."""
    from transformers import CLIPImageProcessorPil, LlavaProcessor

    image_processor = CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE},
                                            crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    return LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer or tiny_tokenizer(),
                          patch_size=PATCH, vision_feature_select_strategy="default",
                          num_additional_image_tokens=1)  # + CLS, - CLS: IMAGE_TOKENS in all


def tiny_llava(tokenizer, seed: int = 0):
    """LlavaForConditionalGeneration, hidden 32, 2 vision + 2 text layers (~70k parameters)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(image_size=IMAGE_SIZE, patch_size=PATCH, hidden_size=32, intermediate_size=64,
                              num_hidden_layers=2, num_attention_heads=4, projection_dim=32)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id)
    config = LlavaConfig(vision_config=vision, text_config=text,
                         image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
                         vision_feature_select_strategy="default", vision_feature_layer=-1)
    torch.manual_seed(seed)
    return LlavaForConditionalGeneration(config)


def save_tiny_vlm(folder: Path, seed: int = 0):
    """Write a tiny LLaVA checkpoint (model + processor) to ``folder``; return ``(model, processor)``."""
    processor = tiny_processor()
    model = tiny_llava(processor.tokenizer, seed)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return model, processor


def write_conversations(root: Path, n: int = 2) -> tuple[list[dict], Path]:
    """``n`` LLaVA-format records and their PNGs (distinct colours) under ``root/images``."""
    from PIL import Image

    image_root = root / "images"
    image_root.mkdir(parents=True, exist_ok=True)
    records = []
    rng = np.random.default_rng(0)
    for i in range(n):
        name = f"part_{i:03d}.png"
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(image_root / name)
        records.append({"id": f"part_{i:03d}", "image": name, "conversations": [
            {"from": "human", "value": f"<image>\n{PROMPT}"},
            {"from": "gpt", "value": ANSWERS[i % len(ANSWERS)]}]})
    (root / "train.json").write_text(json.dumps(records))
    return records, image_root
