"""Fine-tuning a Hugging Face VLM from a local folder, on a tiny random LLaVA built offline."""
from __future__ import annotations

import itertools
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may come from the Hub, ever

import pytest
import torch
from PIL import Image

from lib.io import UnsafePathError
from lib.models.hf_vlm import (
    IGNORE_INDEX,
    PARAMS_KEY,
    BaseModelNotFound,
    HFConversationCollator,
    UnsupportedBaseModel,
    build_prompt,
    default_lora_targets,
    hf_generate,
    hf_step_fn,
    load_base_model,
)
from lib.train import Trainer
from lib.train.config import TrainConfig
from tests.helpers.tiny_vlm import ANSWERS, IMAGE_TOKENS, PROMPT, save_tiny_vlm, tiny_processor, write_conversations


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A saved tiny LLaVA checkpoint folder and the model object that was saved."""
    folder = tmp_path_factory.mktemp("tiny_llava")
    model, _ = save_tiny_vlm(folder)
    return folder, model


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_conversations(tmp_path_factory.mktemp("conversations"), n=2)


def _eval_loss(model, batch) -> float:
    model.eval()
    with torch.no_grad():
        loss = float(model(**batch).loss)
    model.train()
    return loss


def _train(tmp_path, model, batch, **cfg):
    config = TrainConfig(steps=5, tracker="none", out_dir=str(tmp_path / "run"), lr=1e-3, warmup_steps=0,
                         batch_size=2, log_every=1, checkpoint_every=5, **cfg)
    trainer = Trainer(config, {"vlm": model}, hf_step_fn("vlm"), lambda start: itertools.repeat(batch))
    metrics = trainer.run(progress=False)
    return trainer, metrics


# ------------------------------------------------------------------------------------------- loading

def test_load_base_model_round_trips_the_saved_weights_and_processor(ckpt):
    folder, saved = ckpt
    model, processor = load_base_model(folder)
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    own = model.state_dict()
    for name, tensor in saved.state_dict().items():
        assert own[name].dtype == torch.float32
        assert torch.equal(own[name], tensor), name
    enc = processor(images=[Image.new("RGB", (50, 40))], text=["USER: <image>\nhi ASSISTANT:"], return_tensors="pt")
    assert enc["pixel_values"].shape == (1, 3, 32, 32)
    assert int((enc["input_ids"] == model.config.image_token_id).sum()) == IMAGE_TOKENS


def test_missing_path_names_the_params_key_and_the_fix(tmp_path):
    missing = tmp_path / "no_such_model"
    with pytest.raises(BaseModelNotFound) as err:
        load_base_model(missing)
    message = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    assert str(missing) in message and PARAMS_KEY in message
    assert "null" in message and "config.json" in message and "download" in message


def test_folder_without_config_is_not_a_checkpoint(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(BaseModelNotFound, match="has no config.json .found: model.safetensors"):
        load_base_model(tmp_path)


def test_custom_code_needs_trust_remote_code(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "tinyllava", "architectures": ["TinyLlavaForConditionalGeneration"],
        "auto_map": {"AutoConfig": "configuration_tinyllava.TinyLlavaConfig"}}))
    with pytest.raises(UnsupportedBaseModel, match="trust_remote_code"):
        load_base_model(tmp_path)  # must fail before transformers asks on a tty


def test_unknown_or_text_only_architectures_are_refused(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "config.json").write_text(json.dumps({"model_type": "tiny_llava"}))
    with pytest.raises(UnsupportedBaseModel, match="'tiny_llava'.*does not know"):
        load_base_model(tmp_path / "a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": 10}))
    with pytest.raises(UnsupportedBaseModel, match="LlamaConfig.*not an image-text-to-text model"):
        load_base_model(tmp_path / "b")


def test_config_without_weights_is_not_found(ckpt, tmp_path):
    (tmp_path / "config.json").write_text((ckpt[0] / "config.json").read_text())
    with pytest.raises(BaseModelNotFound, match="no loadable weights"):
        load_base_model(tmp_path)


# ------------------------------------------------------------------------------------------- collator

def test_collator_trains_only_the_answer_and_its_eos(ckpt, data):
    records, image_root = data
    _, processor = load_base_model(ckpt[0])
    tok = processor.tokenizer
    batch = HFConversationCollator(processor, image_root, max_length=128)(records)
    assert batch["pixel_values"].shape == (2, 3, 32, 32)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    for row, record in enumerate(records):
        ids, labels, mask = batch["input_ids"][row], batch["labels"][row], batch["attention_mask"][row]
        trained = labels != IGNORE_INDEX
        assert tok.decode(labels[trained]) == record["conversations"][1]["value"] + tok.eos_token
        assert torch.equal(labels[trained], ids[trained])
        assert int((ids == tok.convert_tokens_to_ids("<image>")).sum()) == IMAGE_TOKENS
        assert not trained[mask == 0].any()  # padding is never trained
        prompt = tok.decode(ids[(mask == 1) & ~trained]).replace("<image>", "")
        assert prompt == f"USER: \n{PROMPT} ASSISTANT:"
    assert (batch["attention_mask"].sum(1) < batch["attention_mask"].shape[1]).any()  # rows differ: padded


def test_collator_cuts_long_answers_and_refuses_escaping_images(ckpt, data):
    records, image_root = data
    _, processor = load_base_model(ckpt[0])
    full = HFConversationCollator(processor, image_root, max_length=128)(records[:1])
    prompt_len = int((full["labels"] == IGNORE_INDEX).sum())
    assert prompt_len > IMAGE_TOKENS
    collate = HFConversationCollator(processor, image_root, max_length=prompt_len + 3)
    batch = collate(records[:1])
    assert batch["input_ids"].shape[1] == prompt_len + 3
    assert torch.equal(batch["labels"][0, prompt_len:], full["labels"][0, prompt_len:prompt_len + 3])
    with pytest.raises(ValueError, match="prompt alone .* raise max_length"):
        HFConversationCollator(processor, image_root, max_length=prompt_len)(records[:1])
    with pytest.raises(UnsafePathError):
        collate([{**records[0], "image": "../train.json"}])
    with pytest.raises(FileNotFoundError, match="render stage"):
        collate([{**records[0], "image": "missing.png"}])


def test_chat_template_gives_the_prompt_when_the_processor_has_one():
    processor = tiny_processor()
    processor.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{% for c in m['content'] %}"
                               "{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}"
                               "{% endfor %}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")
    assert build_prompt(processor, "draw it") == "<|user|><image>draw it<|assistant|>"
    assert build_prompt(tiny_processor(), "draw it") == "USER: <image>\ndraw it ASSISTANT:"


# ------------------------------------------------------------------------------------------- training

def test_full_fine_tuning_through_the_trainer_lowers_the_loss(ckpt, data, tmp_path):
    records, image_root = data
    model, processor = load_base_model(ckpt[0])
    batch = HFConversationCollator(processor, image_root, max_length=128)(records)
    before = _eval_loss(model, batch)
    trainer, metrics = _train(tmp_path, model, batch)
    assert _eval_loss(trainer.unwrap("vlm"), batch) < before - 0.05
    assert "train/loss" in metrics and (tmp_path / "run" / "final" / "raw" / "vlm.safetensors").is_file()


def test_lora_through_the_trainer_trains_only_the_adapters(ckpt, data, tmp_path):
    records, image_root = data
    model, processor = load_base_model(ckpt[0])
    targets = default_lora_targets(model)
    assert targets == [f"model.language_model.*.{p}" for p in ("q_proj", "k_proj", "v_proj", "o_proj")]
    base = {k: v.clone() for k, v in model.state_dict().items()}
    batch = HFConversationCollator(processor, image_root, max_length=128)(records)
    before = _eval_loss(model, batch)
    trainer, _ = _train(tmp_path, model, batch, training_mode="lora", lora_targets=targets, lora_rank=4)
    trained = trainer.unwrap("vlm")
    assert _eval_loss(trained, batch) < before
    adapted = {n for n, p in trained.named_parameters() if p.requires_grad}
    assert adapted and all("lora_" in n and "language_model" in n for n in adapted)
    image = Image.open(image_root / records[0]["image"])
    # peft layers generate
    assert isinstance(hf_generate(trained, processor, [image], PROMPT, max_new_tokens=2)[0], str)
    after = trained.state_dict()
    for key, value in base.items():  # targeted layers keep their weight under .base_layer
        stem, _, leaf = key.rpartition(".")
        now = after.get(key, after.get(f"{stem}.base_layer.{leaf}"))
        assert now is not None and torch.equal(now, value), key


# ------------------------------------------------------------------------------------------- generation

def test_generate_returns_the_answer_after_fitting_one_conversation(ckpt, data):
    records, image_root = data
    model, processor = load_base_model(ckpt[0])
    batch = HFConversationCollator(processor, image_root, max_length=128)(records[:1])
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(30):  # enough to memorise one answer (20 is not)
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    image = image_root / records[0]["image"]
    answers = hf_generate(model, processor, [image, Image.open(image)], PROMPT, max_new_tokens=40)
    assert answers == [ANSWERS[0], ANSWERS[0]]  # same prompt format in training and generation; stops at eos
    assert model.training  # the caller's mode is restored


def test_batched_generation_left_pads_different_prompts(ckpt, data):
    records, image_root = data
    model, processor = load_base_model(ckpt[0])
    images = [Image.open(image_root / r["image"]) for r in records]
    prompts = ["Write the CAD code.", "Write the CAD code of this part."]
    batched = hf_generate(model, processor, images, prompts, max_new_tokens=4)
    single = [hf_generate(model, processor, [im], p, max_new_tokens=4)[0]
              for im, p in zip(images, prompts, strict=False)]
    assert all(isinstance(a, str) for a in batched) and batched == single
