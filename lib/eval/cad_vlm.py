"""Evaluation of a trained image -> CAD code model on the validation conversations, against two baselines.

Every candidate answers the same validation images (the first ``max_images`` of ``val.json`` whose reference
code builds a solid) with CAD code text, scored against the reference answer:

- ``model``: the trained model. Compact :class:`~lib.models.cad_vlm.CADVLM`: grammar-constrained decoding
  (greedy, or beam search with ``beam > 1``), so every answer parses; a ``base_model`` run: greedy
  :func:`~lib.models.hf_vlm.hf_generate` of the fine-tuned transformers model (free text: may not parse).
- ``nn_retrieval``: the code of the nearest training image by raw pixels (grey, box-downsampled to
  ``nn_pixels`` a side, mean-centred, cosine similarity); independent of the trained model.
- ``nn_encoder`` (compact model only): the nearest training image by the trained encoder's pooled features
  (cosine): what the encoder alone knows.
- ``most_frequent``: one code for every image: the most frequent training answer; ties (the synthetic
  models are all distinct) go to the answer whose command skeleton (the statements without their numbers) is
  the most frequent, then to the first such answer.
- ``quantised_truth``: the reference passed through the tokenizer (``decode(encode(code))``; by default each
  sketch quantised in its own frame, see :mod:`lib.cad.tokenizer`): the ceiling any model over these tokens can
  reach (not a baseline). With the default tokenizer it rebuilds the synthetic models with mean IoU ~0.997 and
  no mesh failures (``reports/benchmarks/cad_token_fidelity.md``); the old global 8-bit layout gave ~0.88.

Scores per candidate (:func:`score_answers`): ``parse_rate``, ``command_accuracy``, ``parameter_accuracy``
(within ``param_tolerance`` quantisation levels), ``exact_match`` (:func:`~lib.eval.cad_geometry.code_accuracy`),
and geometry (:func:`~lib.eval.cad_geometry.geometry_scores`): ``invalid_rate`` (does not parse or mesh),
``mean_iou`` (exact volumetric IoU; an invalid answer counts as IoU 0), ``mean_chamfer`` / ``median_chamfer``
(of valid answers, normalised-cube units); and DeepCAD's definitions (:mod:`lib.eval.cad_metrics`): ``acc_cmd``,
``acc_param`` (3 of 256 levels), ``median_cd`` / ``median_cd_8192`` (normalised squared Chamfer, median x10^3
with 2,000 / 8,192 points), ``median_iou``.

Best of N (``best_of > 1``, compact model only): a width-N beam search gives N candidates per image and the one
with the highest IoU against the truth is scored (``metrics["model_best_of"]``), as the papers' best-of-N. The
baselines answer one code per image, so their best-of-N equals their best-of-1 and is not repeated.
"""
from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import torch.nn.functional as F
from annotated_types import Doc, Ge

from lib.cad.tokenizer import ARGS, CADTokenizer
from lib.config import Checked
from lib.eval.cad_metrics import best_of, build, finite_or_none, score_one, summarize
from lib.models.cad_vlm import CADVLM, CADVLMConfig
from lib.train.cad_vlm import to_model_input
from lib.train.checkpoint import load_trained

log = logging.getLogger(__name__)

METHODS = ("model", "nn_retrieval", "nn_encoder", "most_frequent", "quantised_truth")
DESCRIPTIONS = {
    "model": "the trained model",
    "nn_retrieval": "nearest training image by raw pixels (grey, {px}x{px}, cosine): its code",
    "nn_encoder": "nearest training image by the trained encoder's pooled features (cosine): its code",
    "most_frequent": "the most frequent training code (ties: most frequent command skeleton), for every image",
    "quantised_truth": "the reference through the tokenizer's grids (per-sketch frames; ceiling, not a baseline)",
}
SCORE_KEYS = ("parse_rate", "command_accuracy", "parameter_accuracy", "exact_match", "invalid_rate", "mean_iou",
              "mean_chamfer", "median_chamfer", "acc_cmd", "acc_param", "median_iou", "median_cd", "median_cd_8192")


@dataclass(frozen=True)
class EvalCADVLMConfig(Checked):
    """The ``eval_cad_vlm`` section."""

    report_dir: str = "reports/eval_cad_vlm"
    beam: Annotated[int, Ge(1)] = 1  # 1: greedy decoding; > 1: beam search of that width (compact model)
    # validation images scored (the first ones)
    max_images: Annotated[int, Ge(1), Doc("null: all")] | None = None
    batch_size: Annotated[int, Ge(1)] = 16  # images per generation / feature batch
    # quantisation levels a parameter may be off and still count as right
    param_tolerance: Annotated[int, Ge(0), Doc("levels")] = 1
    nn_pixels: Annotated[int, Ge(1)] = 32  # raw-pixel retrieval baseline: images box-downsampled to this size
    chamfer_points: Annotated[int, Ge(1)] = 2048  # surface samples per mesh (mean_chamfer / median_chamfer)
    cd_points: Annotated[int, Ge(1)] = 2000  # DeepCAD's Chamfer distance (median_cd): samples per surface
    # the second DeepCAD Chamfer figure (median_cd_8192)
    cd_points_hi: Annotated[int, Ge(1), Doc("null: not computed")] | None = 8192
    # best of N by IoU (compact model, width-N beam search)
    best_of: Annotated[int, Ge(1), Doc("1: not computed")] = 1
    seed: int = 0  # Chamfer sampling (and the sampled-IoU fallback)
    grid_rows: Annotated[int, Ge(1)] = 6  # rows of the input | prediction | truth PNG
    render_size: Annotated[int, Ge(1)] = 160  # px a tile in that PNG
    hf_max_new_tokens: Annotated[int, Ge(1)] = 1024  # base_model runs: generation limit in text tokens
    # torch intra-op threads for the stage
    num_threads: Annotated[int, Ge(1), Doc("null: torch's default, one per core")] | None = None


# ----------------------------------------------------------------------------- the model's answers


def load_compact_model(path: str | Path, config: CADVLMConfig, tokenizer: CADTokenizer) -> CADVLM:
    """The compact model with the weights in ``path`` (``final/raw/cad_vlm.safetensors``), in eval mode."""
    return load_trained(CADVLM(config, tokenizer.vocab_size, pad_id=tokenizer.pad_id), path, "train_cad_vlm")


def decode_or_none(ids: Sequence[int], tokenizer: CADTokenizer) -> str | None:
    """CAD code text of generated ids, or None when they do not decode (unconstrained decoding)."""
    try:
        return tokenizer.decode(ids)
    except ValueError:
        return None


@torch.no_grad()
def compact_candidates(model: CADVLM, images: torch.Tensor, tokenizer: CADTokenizer, n: int, *,
                       batch_size: int = 16, max_len: int | None = None) -> list[list[str | None]]:
    """Per image, the ``n`` answers of a width-``n`` constrained beam search, best first (best-of-N scoring)."""
    out: list[list[str | None]] = []
    for start in range(0, len(images), batch_size):
        x = to_model_input(images[start:start + batch_size])
        for seqs in model.beam_candidates(x, tokenizer, n, max_len=max_len):
            out.append([decode_or_none(s, tokenizer) for s in seqs])
    return out


@torch.no_grad()
def compact_answers(model: CADVLM, images: torch.Tensor, tokenizer: CADTokenizer, *, beam: int = 1,
                    batch_size: int = 16, max_len: int | None = None) -> list[str | None]:
    """Constrained greedy (``beam == 1``) or beam-search answers of the compact model for uint8 ``images``."""
    out: list[str | None] = []
    for start in range(0, len(images), batch_size):
        x = to_model_input(images[start:start + batch_size])
        ids = model.generate(x, tokenizer, max_len=max_len, greedy=True, beam=beam, constrained=True)
        out.extend(decode_or_none(s, tokenizer) for s in ids)
    return out


def hf_answers(base_model: str | Path, weights: str | Path, records: Sequence[Mapping[str, Any]],
               image_root: str | Path, *, trust_remote_code: bool = False, batch_size: int = 4,
               max_new_tokens: int = 1024) -> list[str]:
    """Greedy answers of a fine-tuned transformers VLM (``base_model`` + merged ``final/raw/vlm.safetensors``)."""
    from lib.models.hf_vlm import hf_generate, load_base_model, split_conversation
    from lib.train.cad_vlm import image_path
    from lib.train.lora import init_from

    if not Path(weights).is_file():
        raise FileNotFoundError(f"{weights}: trained weights not found; run `dvc repro train_cad_vlm` first")
    model, processor = load_base_model(base_model, trust_remote_code=trust_remote_code)
    init_from(model, weights)
    out: list[str] = []
    for start in range(0, len(records), batch_size):
        chunk = records[start:start + batch_size]
        out += hf_generate(model, processor, [image_path(image_root, r) for r in chunk],
                           [split_conversation(r)[0] for r in chunk], max_new_tokens=max_new_tokens)
    return out


# ----------------------------------------------------------------------------- baselines


def pixel_features(images: torch.Tensor, size: int) -> torch.Tensor:
    """``[N, size*size]`` unit vectors of uint8 ``[N, 3, H, W]``: grey, area-downsampled, mean-centred."""
    grey = images.to(torch.float32).mean(dim=1, keepdim=True) / 255.0
    small = F.adaptive_avg_pool2d(grey, size).flatten(1)
    small = small - small.mean(dim=1, keepdim=True)
    return F.normalize(small, dim=1)


@torch.no_grad()
def encoder_features(model: CADVLM, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """``[N, F]`` unit vectors: the trained encoder's pooled features of uint8 ``images``."""
    model.eval()
    feats = [model.encoder(to_model_input(images[s:s + batch_size]))[1] for s in range(0, len(images), batch_size)]
    return F.normalize(torch.cat(feats), dim=1)


def nearest(train: torch.Tensor, query: torch.Tensor) -> list[int]:
    """Index of the most cosine-similar ``train`` row for each ``query`` row (both unit vectors)."""
    return (query @ train.T).argmax(dim=1).tolist()


def skeleton(code: str, tokenizer: CADTokenizer) -> tuple[str, ...]:
    """The statements of CAD code without their numbers (``bbox extrude plane profile loop circle ...``)."""
    vocab = tokenizer.vocab
    return tuple(vocab[t] for t in tokenizer.encode(code) if vocab[t] in ARGS)


def most_frequent_code(answers: Sequence[str], tokenizer: CADTokenizer) -> str:
    """The most frequent answer; ties: the most frequent command skeleton, then the first (module docstring)."""
    if not answers:
        raise ValueError("most_frequent_code: no training answers")
    counts = Counter(answers)
    skeletons = {a: skeleton(a, tokenizer) for a in counts}
    skeleton_counts = Counter(skeletons[a] for a in answers)
    first = {a: i for i, a in reversed(list(enumerate(answers)))}
    return max(counts, key=lambda a: (counts[a], skeleton_counts[skeletons[a]], -first[a]))


def quantised(code: str, tokenizer: CADTokenizer) -> str:
    """``code`` through the tokenizer's grid (what a perfect token-level model would answer)."""
    return tokenizer.decode(tokenizer.encode(code))


# ----------------------------------------------------------------------------- scoring


def reference_builds(code: str) -> bool:
    """Whether a reference answer parses and meshes (geometry needs it; such a reference is skipped, counted)."""
    from lib.deepcad.answers import parse_answer
    from lib.deepcad.mesh import build_mesh

    try:
        build_mesh(parse_answer(code))
        return True
    except Exception:  # noqa: BLE001 - parse errors, QuarantineError and geometry-library errors alike
        return False


def score_answers(answers: Sequence[str | None], truths: Sequence[str], tokenizer: CADTokenizer, *,
                  tol: int = 1, n_points: int = 2048, seed: int = 0, cd_points: int = 2000,
                  cd_points_hi: int | None = 8192, truth_meshes: dict | None = None,
                  ) -> tuple[dict[str, float], list[dict]]:
    """Scores (:data:`SCORE_KEYS` plus ``n``, :func:`lib.eval.cad_metrics.summarize`) of ``answers`` against
    ``truths``, and one row per item (:func:`lib.eval.cad_metrics.score_one`).

    ``None`` (or text that does not parse) is an answer with no tokens: accuracies 0, invalid, IoU 0.
    ``truth_meshes`` (reference text -> mesh) caches the references' solids across calls.
    """
    if len(answers) != len(truths) or not truths:
        raise ValueError(f"score_answers: {len(answers)} answers for {len(truths)} references")
    cache = {} if truth_meshes is None else truth_meshes
    rows = []
    for answer, truth in zip(answers, truths, strict=False):
        if truth not in cache:
            try:
                cache[truth] = build(truth)
            except Exception as err:
                raise ValueError(f"score_answers: a reference does not build ({err}); fix the reference") from err
        rows.append(score_one(answer, truth, tokenizer, tol=tol, n_points=n_points, cd_points=cd_points,
                              cd_points_hi=cd_points_hi, seed=seed, true_mesh=cache[truth]))
    # no valid answer: no Chamfer distance; null rather than NaN, which is not JSON
    return finite_or_none(summarize(rows)), rows


def invalid_reasons(rows: Sequence[Mapping[str, Any]], top: int = 5) -> dict[str, int]:
    """Why answers were invalid: ``geometry_scores`` errors with numbers and names stripped, most common first."""
    import re

    counts: Counter[str] = Counter()
    for r in rows:
        if not r["valid"]:
            reason = re.sub(r"\('[^']*'[^)]*\)", "", str(r["error"]))  # the extrude's name and operation
            reason = re.sub(r"-?\d+(\.\d+)?(e-?\d+)?", "N", reason)
            counts[" ".join(reason.split())[:120]] += 1
    return dict(counts.most_common(top))


# ----------------------------------------------------------------------------- the whole evaluation


@dataclass
class EvalResult:
    """What :func:`evaluate` measured: ``metrics`` (per candidate, plus ``n``), one row per image, the grid
    items and ``info`` (what it was measured on, for the report)."""

    metrics: dict[str, Any]
    items: list[dict]
    grid_items: list[dict]
    info: dict[str, Any]


def evaluate(cfg: EvalCADVLMConfig, train_cfg: Any, conversations_dir: str | Path, image_root: str | Path,
             tokenizer: CADTokenizer | None = None) -> EvalResult:
    """Score the run of ``train_cfg`` (:class:`~lib.train.cad_vlm.CADVLMTrainConfig`) and the baselines.

    Training set of the baselines: the training conversations the model was trained on (same ``max_len``
    filter). Validation: every ``val.json`` conversation whose answer parses and builds a solid (the others are
    counted in ``info["skipped"]``), the first ``max_images`` of them.
    """
    from lib.train.cad_vlm import CONVERSATION_FILES, HF_MODEL_NAME, MODEL_NAME, load_images, read_conversations

    tok = tokenizer or CADTokenizer()
    conversations_dir = Path(conversations_dir)
    train = read_conversations(conversations_dir / CONVERSATION_FILES["train"], tok, train_cfg.max_len)
    val = read_conversations(conversations_dir / CONVERSATION_FILES["validation"], tok, 10**9)
    if not train.records or not val.records:
        from lib.io import DataError

        raise DataError(f"{conversations_dir}: no usable train or validation conversations "
                        f"(train {train.counts}, validation {val.counts}); run `dvc repro build_cad_conversations`")
    keep = [i for i, code in enumerate(val.answers) if reference_builds(code)]
    skipped = {"unparseable": val.counts.unparseable, "no_solid": len(val.records) - len(keep)}
    if cfg.max_images is not None:
        keep = keep[:cfg.max_images]
    records = [val.records[i] for i in keep]
    truths = [val.answers[i] for i in keep]
    train_answers = train.answers
    size = train_cfg.image_size
    val_images = load_images(records, image_root, size)
    train_images = load_images(train.records, image_root, size)
    log.info("eval_cad_vlm: %d validation images, %d training images (%d px)", len(records), len(train.records), size)

    final = Path(train_cfg.train.out_dir) / "final" / "raw"
    answers: dict[str, list[str | None]] = {}
    if train_cfg.base_model:
        answers["model"] = list(hf_answers(train_cfg.base_model, final / f"{HF_MODEL_NAME}.safetensors", records,
                                           image_root, trust_remote_code=train_cfg.trust_remote_code,
                                           batch_size=cfg.batch_size, max_new_tokens=cfg.hf_max_new_tokens))
        model = None
    else:
        model = load_compact_model(final / f"{MODEL_NAME}.safetensors", train_cfg.model, tok)
        answers["model"] = compact_answers(model, val_images, tok, beam=cfg.beam, batch_size=cfg.batch_size,
                                           max_len=train_cfg.max_len)
    pixel_nn = nearest(pixel_features(train_images, cfg.nn_pixels), pixel_features(val_images, cfg.nn_pixels))
    answers["nn_retrieval"] = [train_answers[j] for j in pixel_nn]
    if model is not None:
        enc_nn = nearest(encoder_features(model, train_images, cfg.batch_size),
                         encoder_features(model, val_images, cfg.batch_size))
        answers["nn_encoder"] = [train_answers[j] for j in enc_nn]
    answers["most_frequent"] = [most_frequent_code(train_answers, tok)] * len(truths)
    answers["quantised_truth"] = [quantised(t, tok) for t in truths]

    metrics: dict[str, Any] = {"n": len(truths)}
    rows: dict[str, list[dict]] = {}
    meshes: dict[str, Any] = {}
    score = {"tol": cfg.param_tolerance, "n_points": cfg.chamfer_points, "seed": cfg.seed, "cd_points": cfg.cd_points,
             "cd_points_hi": cfg.cd_points_hi, "truth_meshes": meshes}
    for name, candidate in answers.items():
        metrics[name], rows[name] = score_answers(candidate, truths, tok, **score)
        log.info("%s: %s", name, ", ".join(f"{k}={'–' if v is None else f'{v:.4g}'}" for k, v in metrics[name].items()))
    if cfg.best_of > 1 and model is not None:
        cands = compact_candidates(model, val_images, tok, cfg.best_of, batch_size=cfg.batch_size,
                                   max_len=train_cfg.max_len)
        flat = [(i, c) for i, cs in enumerate(cands) for c in cs]
        _, flat_rows = score_answers([c for _, c in flat], [truths[i] for i, _ in flat], tok, **score)
        per_image: list[list[dict]] = [[] for _ in truths]
        for (i, _), r in zip(flat, flat_rows, strict=True):
            per_image[i].append(r)
        metrics["model_best_of"] = {**finite_or_none(summarize(best_of(per_image))), "best_of": cfg.best_of,
                                    "mean_candidates": float(np.mean([len(c) for c in cands]))}
        log.info("model, best of %d: mean IoU %.4g", cfg.best_of, metrics["model_best_of"]["mean_iou"])
    reasons = {name: invalid_reasons(rows[name]) for name in answers if metrics[name]["invalid_rate"] > 0}
    items = [{"id": r.get("id"), "image": r.get("image"),
              **{name: {"answer": answers[name][i], "iou": rows[name][i]["iou"], "valid": rows[name][i]["valid"],
                        "parse": rows[name][i]["parse"], "exact_match": rows[name][i]["exact_match"],
                        "parameter_accuracy": rows[name][i]["parameter_accuracy"]}
                 for name in answers if name != "quantised_truth"}}
             for i, r in enumerate(records)]
    grid_items = [{"input": val_images[i].permute(1, 2, 0).numpy(), "view": view_of(records[i]),
                   "prediction": answers["model"][i], "truth": truths[i],
                   "label": f"IoU {rows['model'][i]['iou']:.2f}"} for i in grid_indices(len(records), cfg.grid_rows)]
    decoding = ("greedy (free text)" if train_cfg.base_model else
                "grammar-constrained " + ("greedy" if cfg.beam == 1 else f"beam search, width {cfg.beam}"))
    info = {"model": (f"{train_cfg.base_model} fine-tuned" if train_cfg.base_model else
                      f"compact CADVLM ({model.num_parameters():,} parameters, {size} px)"),
            "decoding": decoding, "val_models": len({str(r.get("id", "")).rsplit("_", 1)[0] for r in records}),
            "train": len(train.records), "skipped": skipped, "param_tolerance": cfg.param_tolerance,
            "chamfer_points": cfg.chamfer_points, "cd_points": cfg.cd_points, "cd_points_hi": cfg.cd_points_hi,
            "best_of": cfg.best_of if model is not None else 1, "invalid_reasons": reasons,
            "descriptions": {k: v.format(px=cfg.nn_pixels) for k, v in DESCRIPTIONS.items() if k in answers}}
    return EvalResult(metrics, items, grid_items, info)


# ----------------------------------------------------------------------------- report


def view_of(record: Mapping[str, Any]) -> str:
    """The rendered view of a conversation (``<model id>_<view>``), e.g. ``front``; ValueError if unknown."""
    from lib.render import VIEWS

    view = str(record.get("id", "")).rsplit("_", 1)[-1]
    if view not in VIEWS:
        raise ValueError(f"conversation {record.get('id')!r}: no known view at the end of its id "
                         f"(expected <model id>_<view>, views {sorted(VIEWS)}); rebuild the conversations")
    return view


def grid_indices(n: int, rows: int) -> list[int]:
    """``rows`` indices spread evenly over ``0..n-1`` (all of them when ``n <= rows``)."""
    if n <= rows:
        return list(range(n))
    return sorted({round(i * (n - 1) / (rows - 1)) for i in range(rows)}) if rows > 1 else [0]


def _tile(image: np.ndarray | None, size: int, label: str) -> np.ndarray:
    """A ``size`` square RGB tile of ``image`` (blank when None) with ``label`` written at its top left."""
    from PIL import Image, ImageDraw

    tile = Image.new("RGB", (size, size), (236, 236, 236)) if image is None else \
        Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB").resize((size, size), Image.Resampling.BOX)
    draw = ImageDraw.Draw(tile)
    draw.rectangle((0, 0, size, 13), fill=(255, 255, 255))
    draw.text((3, 1), label, fill=(200, 0, 0) if image is None else (0, 0, 0))
    return np.asarray(tile)


def comparison_grid(items: Sequence[Mapping[str, Any]], size: int) -> np.ndarray:
    """uint8 RGB grid, one row per item: input view | prediction rendered | ground truth rendered.

    Each item: ``{"input": uint8 HxWx3, "view", "prediction": code or None, "truth": code, "label"}``; both codes
    are rebuilt (``build_mesh(parse_answer(...))``) and rendered from the input's view with :class:`ViewRenderer`;
    an answer that does not parse or mesh is a blank tile labelled invalid.
    """
    from lib.deepcad.answers import parse_answer
    from lib.deepcad.mesh import build_mesh
    from lib.render import ViewRenderer

    views = sorted({it["view"] for it in items})
    rows = []
    with ViewRenderer(size=size, views=views) as renderer:
        def render(code: str | None, view: str) -> np.ndarray | None:
            if code is None:
                return None
            try:
                return renderer.render(build_mesh(parse_answer(code)))[view]
            except Exception:  # noqa: BLE001 - any failure to parse or mesh: an invalid answer
                return None

        for it in items:
            pred = render(it["prediction"], it["view"])
            rows.append(np.concatenate([
                _tile(it["input"], size, f"input ({it['view']}) {it.get('label', '')}".strip()),
                _tile(pred, size, "prediction" if pred is not None else "invalid"),
                _tile(render(it["truth"], it["view"]), size, "ground truth")], axis=1))
    return np.concatenate(rows, axis=0)


def _fmt(value: float | None, pct: bool = False) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{100 * value:.1f}%" if pct else f"{value:.4f}"


BASELINES = ("nn_retrieval", "nn_encoder", "most_frequent")


def verdict(metrics: Mapping[str, Any]) -> str:
    """One sentence: the model's mean IoU against the best trivial baseline's, and whether it wins or loses."""
    base = max((n for n in BASELINES if n in metrics), key=lambda n: metrics[n]["mean_iou"])
    model, best = metrics["model"]["mean_iou"], metrics[base]["mean_iou"]
    outcome = "beats" if model > best else "loses to"
    return (f"**Verdict:** the model's mean IoU {model:.4f} {outcome} the best baseline, `{base}` ({best:.4f}), "
            f"by {abs(model - best):.4f}.")


def render_report(metrics: Mapping[str, Any], info: Mapping[str, Any], grid_name: str = "grid.png") -> str:
    """report.md: what was measured on what, the table of candidates, and the grid."""
    lines = ["# eval_cad_vlm", "",
             (f"{metrics['n']} validation images ({info['val_models']} held-out models; skipped: "
             f"{info['skipped']['unparseable']} whose reference does not parse, {info['skipped']['no_solid']} whose "
             f"reference builds no solid), {info['train']} training images for the retrieval baselines. "
             f"Model: {info['model']}; decoding: {info['decoding']}. Parameters count as right within "
             f"{info['param_tolerance']} quantisation level(s); geometry is the exact volumetric IoU and the "
             f"Chamfer distance (normalised cube, {info['chamfer_points']} points) of the rebuilt solids; an answer "
             f"that does not parse or mesh is invalid and scores IoU 0 (Chamfer over valid answers only)."), "",
             ("| candidate | parse rate | command acc. | parameter acc. | exact match | invalid | mean IoU | "
             "mean Chamfer | median Chamfer |"),
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    names = [n for n in (*METHODS, "model_best_of") if n in metrics]

    def label(name: str) -> str:
        return f"`model`, best of {metrics[name]['best_of']}" if name == "model_best_of" else f"`{name}`"

    for name in names:
        m = metrics[name]
        lines.append(f"| {label(name)} | {_fmt(m['parse_rate'], True)} | {_fmt(m['command_accuracy'], True)} | "
                     f"{_fmt(m['parameter_accuracy'], True)} | {_fmt(m['exact_match'], True)} | "
                     f"{_fmt(m['invalid_rate'], True)} | {_fmt(m['mean_iou'])} | {_fmt(m['mean_chamfer'])} | "
                     f"{_fmt(m['median_chamfer'])} |")
    lines += ["", verdict(metrics)]
    hi = info.get("cd_points_hi")
    lines += ["", (f"DeepCAD's definitions (`lib/eval/cad_metrics.py`): ACC_cmd over statements (bbox aside), "
                   f"ACC_param within < 3 of 256 levels over the parameters of right commands (words exact), "
                   f"Chamfer distance of DeepCAD's normalisation (truth's largest |coordinate| 0.75), squared and "
                   f"summed both ways, median over valid answers x10^3 with {info.get('cd_points', 2000)} and "
                   f"{hi or '(not computed)'} points; best of N: the candidate of highest IoU "
                   f"(compact model only: the baselines answer once)."), "",
              "| candidate | ACC_cmd | ACC_param | invalid | mean IoU | median IoU | median CD x10^3 | "
              f"median CD x10^3 ({hi or '-'} pts) |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name in names:
        m = metrics[name]
        lines.append(f"| {label(name)} | {_fmt(m['acc_cmd'], True)} | {_fmt(m['acc_param'], True)} | "
                     f"{_fmt(m['invalid_rate'], True)} | {_fmt(m['mean_iou'])} | {_fmt(m['median_iou'])} | "
                     f"{_fmt(m['median_cd'])} | {_fmt(m['median_cd_8192'])} |")
    lines += ["", "Candidates:", ""]
    lines += [f"- `{name}`: {desc}" for name, desc in info["descriptions"].items() if name in metrics]
    reasons = info.get("invalid_reasons") or {}
    if reasons:
        lines += ["", "Why answers were invalid (most common reasons, numbers replaced by N):", ""]
        for name, counts in reasons.items():
            lines += [f"- `{name}`: " + "; ".join(f"{n}x {why}" for why, n in counts.items())]
    lines += ["", f"![input | prediction | ground truth]({grid_name})", ""]
    return "\n".join(lines)


__all__ = [
    "DESCRIPTIONS",
    "METHODS",
    "SCORE_KEYS",
    "EvalCADVLMConfig",
    "EvalResult",
    "compact_answers",
    "compact_candidates",
    "comparison_grid",
    "decode_or_none",
    "encoder_features",
    "evaluate",
    "grid_indices",
    "hf_answers",
    "invalid_reasons",
    "load_compact_model",
    "most_frequent_code",
    "nearest",
    "pixel_features",
    "quantised",
    "reference_builds",
    "render_report",
    "score_answers",
    "skeleton",
    "view_of",
]
