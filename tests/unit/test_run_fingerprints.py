"""Every trainer's run fingerprint follows the *content* of its inputs (manifest rows, init_from and base-model
weights), not their paths, file bytes or mtimes: a re-ingest starts a fresh run, a copied or rewritten input
resumes."""
from __future__ import annotations

import os
import shutil

import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from lib.archive import read_bytes
from lib.train import apt, video_vae
from lib.train.fingerprint import run_fingerprint
from tests.helpers.archives import rewrite_member


def _manifest(path, short_side=240):
    rows = [{"id": str(k), "split": "train" if k < 3 else "validation", "path": f"videos/{k}.webm",
             "frames": 20 + k, "fps": 12.0, "width": short_side * 4 // 3, "height": short_side,
             "placeholders": ["a", "b"]} for k in range(4)]
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path)
    return path


def _apt_fingerprint(manifest):
    cfg = apt.from_section({"out_dir": "x"})
    return apt.run_fingerprint(cfg, apt.loader_config(cfg, str(manifest)))


def _vae_fingerprint(manifest):
    return video_vae.run_fingerprint(video_vae.from_section({"out_dir": "x"}), manifest)


@pytest.mark.parametrize("fingerprint", [_apt_fingerprint, _vae_fingerprint], ids=["train_apt", "video_vae"])
def test_video_trainers_follow_the_manifest_rows_not_its_path_or_bytes(tmp_path, fingerprint):
    manifest = _manifest(tmp_path / "a" / "manifest.parquet")
    base = fingerprint(manifest)
    # another re-ingest (short_side 120): other rows, same path -> another run
    assert fingerprint(_manifest(tmp_path / "a" / "manifest.parquet", short_side=120)) != base
    _manifest(manifest)
    assert fingerprint(manifest) == base
    # the same rows as other bytes (another compression, as another pyarrow would write) or elsewhere -> same run
    pd.read_parquet(manifest).to_parquet(manifest, compression="gzip")
    moved = tmp_path / "b" / "manifest.parquet"
    moved.parent.mkdir()
    shutil.copy(manifest, moved)
    os.utime(moved, (1, 1))
    assert fingerprint(manifest) == base and fingerprint(moved) == base


def test_init_from_counts_by_content_for_every_trainer(tmp_path):
    def weights(path, value):
        path.mkdir(parents=True, exist_ok=True)
        save_file({"w": torch.full((3,), float(value))}, str(path / "G.safetensors"))
        return str(path)

    first = weights(tmp_path / "run1" / "final" / "raw", 1.0)
    base = run_fingerprint({"lr": 1e-3, "init_from": first}, {}, "lib.train.apt")
    copied = shutil.copytree(first, tmp_path / "elsewhere")
    assert run_fingerprint({"lr": 1e-3, "init_from": str(copied)}, {}, "lib.train.apt") == base
    weights(tmp_path / "run1" / "final" / "raw", 2.0)  # same path, other weights -> another run
    assert run_fingerprint({"lr": 1e-3, "init_from": first}, {}, "lib.train.apt") != base


def test_cad_vlm_base_model_counts_by_content_not_folder_or_mtime(tmp_path):
    from lib.train.cad_vlm import from_section, load_data
    from lib.train.cad_vlm import run_fingerprint as cad_fingerprint
    from tests.helpers.cad_vlm_data import write_cad_conversations

    tiny = write_cad_conversations(tmp_path / "data", count=6)
    model = tmp_path / "models" / "tiny"
    model.mkdir(parents=True)
    (model / "config.json").write_text('{"hidden": 8}')
    (model / "model.safetensors").write_bytes(b"weights-1")

    def fingerprint(base_model):
        cfg = from_section({"out_dir": "x", "image_size": 32})
        data = load_data(cfg, tiny["conversations"], tiny["images"])
        cfg = from_section({"out_dir": "x", "image_size": 32, "base_model": str(base_model)})
        return cad_fingerprint(cfg, data)

    base = fingerprint(model)
    copied = shutil.copytree(model, tmp_path / "copy" / "tiny")
    os.utime(copied / "model.safetensors", (1, 1))
    assert fingerprint(copied) == base  # copied folder, new mtimes: the same run
    (model / "model.safetensors").write_bytes(b"weights-2")
    assert fingerprint(model) != base


def test_cad_vlm_follows_its_records_and_image_bytes(tmp_path):
    from lib.train.cad_vlm import from_section, image_path, load_data
    from lib.train.cad_vlm import run_fingerprint as cad_fingerprint
    from tests.helpers.cad_vlm_data import write_cad_conversations

    tiny = write_cad_conversations(tmp_path / "data", count=6)
    cfg = from_section({"out_dir": "x", "image_size": 32})

    def fingerprint():
        return cad_fingerprint(cfg, load_data(cfg, tiny["conversations"], tiny["images"]))

    base = fingerprint()
    assert fingerprint() == base
    data = load_data(cfg, tiny["conversations"], tiny["images"])
    image = image_path(data.image_root, data.train.records[0])
    rewrite_member(image, read_bytes(image) + b"\0")  # a re-render that changed one image: another run
    assert fingerprint() != base
