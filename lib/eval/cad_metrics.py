"""DeepCAD's reconstruction metrics (Wu et al. 2021, ``evaluation/evaluate_ae_acc.py`` / ``evaluate_ae_cd.py``)
for CAD code answers, beside the exact IoU and the older token scores of :mod:`lib.eval.cad_geometry`.

Per answer (:func:`score_one`, one mesh build per answer) and per method (:func:`summarize`):

- ``acc_cmd`` (ACC_cmd): statements aligned by position, ``bbox`` left out (a header DeepCAD does not have, which
  no answer can get wrong), hits over ``max(len(pred), len(true))``; DeepCAD compares its 60 padded commands, the
  ``EOS`` padding included, so its figure also credits the padding. Text that does not parse scores 0. Method
  value: mean over answers (DeepCAD: mean of per-model means).
- ``acc_param`` (ACC_param): over the parameters of every true statement whose aligned predicted statement has
  the same command (bbox left out), a value is right when ``|pred - true| < 3`` in units of DeepCAD's 256-level
  grid (:data:`TOLERANCE`; DeepCAD's code tests ``np.abs(out - gt) < TOLERANCE``, i.e. up to 2 levels, which is
  what "η = 3" means there); words (boolean operation, extent type, outer/inner, the arc's turning direction
  ``nz``) must be equal. Units compared, per value kind of the tokenizer (multi-token values are joined first):

  ==================  ==========================================================================================
  kind                one DeepCAD level (1/256 of the kind's range in DeepCAD)
  ==================  ==========================================================================================
  length, origin,     ``2/256`` of the normalised cube (DeepCAD quantises extents, plane origins and the sketch
  size, coord         size on [-1, 1], resp. [0, 2], with 256 levels; our models live in the same ±0.75 cube)
  local (sketch)      ``size/256``: the value as a fraction of its sketch's box (``q / top``, with ``top`` from
                      that statement's own ``plane`` size, :meth:`CADTokenizer.local_top`) times 256 -- DeepCAD
                      quantises sketch points and radii on 256 levels of the sketch box
  angle, sweep        ``2π/256`` (plane Euler angles, arc sweep: already one 256-level token)
  global layout       each value token's level times ``256 / n_levels``
  ==================  ==========================================================================================

  A one-level parameter error counts as right, a three-level one as wrong. Answers with no correctly predicted
  statement have no parameters to score and are left out of the method's mean (mean of per-answer means).
- ``cd``: DeepCAD's Chamfer distance, :func:`deepcad_chamfer`: both meshes scaled (about the origin) by
  ``0.75 / max|truth bbox coordinate|`` (DeepCAD's ``CADSequence.normalize``: the truth is normalised, the
  prediction lives in the same frame), independent samples for the two (so a perfect answer scores the sampling
  floor, about ``2 area / (π n)``), a prediction with ``max|p| > 2`` rescaled to ``max|p| = 1`` (DeepCAD's
  out-of-bound fix), ``n_points`` seeded area-weighted samples on each surface, ``mean d² (true->pred) +
  mean d² (pred->true)`` (squared, summed, not halved). Method value: ``median_cd`` = median over valid answers
  times 10³ with 2,000 points (DeepCAD's default); ``median_cd_8192`` the same with 8,192 points.
- ``invalid_rate``: the answer does not parse or does not build a solid (IoU 0, no Chamfer distance).
- ``mean_iou`` / ``median_iou``: exact volumetric IoU (:func:`~lib.eval.cad_geometry.volumetric_iou`), invalid = 0.
- Best of N (:func:`best_of`): of N candidates per image, the one with the highest IoU against the truth (as the
  papers' best-of-N), ties to the earlier (higher-ranked) candidate; all metrics are then those of the chosen one.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import trimesh
from scipy.spatial import cKDTree

from lib.cad.tokenizer import WORD_GROUPS, CADTokenizer
from lib.eval.cad_geometry import _as_ids, _statements, chamfer_distance, code_accuracy, volumetric_iou

TOLERANCE = 3  # DeepCAD's evaluate_ae_acc.py: right when |pred - true| < TOLERANCE levels of 256
NORM_FACTOR = 0.75  # DeepCAD's cadlib.macro.NORM_FACTOR: the largest |bbox coordinate| after normalize()
DEEPCAD_LEVELS = 256
CUBE_UNIT = 2.0 / DEEPCAD_LEVELS  # one DeepCAD level of extents / origins / sizes in the normalised cube
CD_POINTS = 2000  # evaluate_ae_cd.py --n_points default
CD_POINTS_HI = 8192
SKIPPED = ("bbox",)  # statements left out of acc_cmd / acc_param


# -- DeepCAD accuracies ---------------------------------------------------------------------------------------

def _deepcad_values(cmd: str, args: list[int], tok: CADTokenizer, top: list[int]) -> list:
    """The statement's values in DeepCAD levels (floats) and words (str); lenient about missing tokens.

    ``top`` is a one-item list holding the current sketch's ``local_top`` (updated when ``cmd`` is ``plane``).
    """
    out: list = []
    i = 0
    n = tok.n_levels
    for kind in tok.fields.get(cmd, ()):
        if kind in WORD_GROUPS:
            if i >= len(args):
                break
            out.append(tok.vocab[args[i]] if 0 <= args[i] < tok.vocab_size else "?")
            i += 1
            continue
        d = tok.digits(kind)
        chunk = args[i:i + d]
        i += d
        if len(chunk) < d or not all(tok.is_value(t) for t in chunk):
            out.append(None)  # not a value where one belongs: never right
            continue
        k = 0
        for t in chunk:
            k = k * n + tok.level_of(t)
        if tok.layout == "global":
            out.append(k * DEEPCAD_LEVELS / n)
        elif kind in ("length", "origin", "size", "coord"):
            value = tok.grids[kind].value(k)
            if kind == "size":
                top[0] = tok.local_top(value)
            out.append(value / CUBE_UNIT)
        elif kind == "local":
            out.append(k / top[0] * DEEPCAD_LEVELS)
        else:  # angle, sweep: one 256-level token
            out.append(k * DEEPCAD_LEVELS / n)
    return out


def _deepcad_statements(ids: list[int], tok: CADTokenizer) -> list[tuple[str, list]]:
    out, top = [], [tok.local_top(1.0)]
    for cmd, args in _statements(ids, tok):
        values = _deepcad_values(cmd, args, tok, top)
        if cmd not in SKIPPED:
            out.append((cmd, values))
    return out


def value_right(p, t, tol: float = TOLERANCE) -> bool:
    """DeepCAD's test of one parameter: words equal, numbers (DeepCAD levels) within ``< tol``."""
    if isinstance(t, str):
        return p == t
    return p is not None and not isinstance(p, str) and abs(p - t) < tol - 1e-9


def deepcad_accuracy(pred, true, tokenizer: CADTokenizer | None = None, tol: float = TOLERANCE) -> dict:
    """``{"acc_cmd", "acc_param"}`` of ``pred`` against ``true`` (CAD code text or ids), see the module docstring.

    ``acc_param`` is None when no statement's command is right (nothing to score). Raises ValueError when ``true``
    is not a valid model.
    """
    tok = tokenizer or CADTokenizer()
    true_ids, ok = _as_ids(true, tok)
    if not ok:
        raise ValueError("deepcad_accuracy: the reference `true` is not valid CAD code / token ids")
    pred_ids, _ = _as_ids(pred, tok)
    ts = _deepcad_statements(true_ids, tok)
    ps = _deepcad_statements(pred_ids, tok) if pred_ids is not None else []
    hits, right, total = 0, 0, 0
    for (pc, pv), (tc, tv) in zip(ps, ts, strict=False):
        if pc != tc:
            continue
        hits += 1
        total += len(tv)
        right += sum(value_right(p, t, tol) for p, t in zip(pv + [None] * len(tv), tv, strict=False))
    return {"acc_cmd": hits / max(len(ps), len(ts), 1), "acc_param": right / total if total else None}


# -- DeepCAD Chamfer distance -----------------------------------------------------------------------------------

def deepcad_normalise(pred: trimesh.Trimesh, true: trimesh.Trimesh) -> tuple[trimesh.Trimesh, trimesh.Trimesh]:
    """Copies of both meshes scaled about the origin so the truth's largest |bbox coordinate| is 0.75."""
    extent = float(np.max(np.abs(true.bounds)))
    if not extent > 0.0:
        raise ValueError("deepcad_normalise: the reference mesh has an empty bounding box")
    s = NORM_FACTOR / extent
    return pred.copy().apply_scale(s), true.copy().apply_scale(s)


def chamfer_sq(points_a: np.ndarray, points_b: np.ndarray) -> float:
    """DeepCAD's ``chamfer_dist``: ``mean min |a - b|² + mean min |b - a|²`` (summed, squared)."""
    dab, _ = cKDTree(points_b).query(points_a)
    dba, _ = cKDTree(points_a).query(points_b)
    return float(np.mean(dab**2) + np.mean(dba**2))


def deepcad_chamfers(pred: trimesh.Trimesh, true: trimesh.Trimesh, n_points: Sequence[int], seed: int = 0,
                     normalise: bool = True, independent: bool = True) -> list[float]:
    """DeepCAD's Chamfer distance for each of ``n_points``: ``max(n_points)`` samples per surface are drawn once
    and each figure uses their first ``n`` (a prefix of i.i.d. samples is itself such a sample, as DeepCAD draws
    its 2,000 truth points out of 8,096). ``independent`` (DeepCAD: the truth's points are sampled apart from the
    prediction's) draws the truth's samples with ``seed + 1``, so even a perfect answer scores the sampling floor,
    about ``2 * area / (π n)``; ``independent=False`` uses one seed for both (a mesh against itself scores 0)."""
    if normalise:
        pred, true = deepcad_normalise(pred, true)
    top = max(int(n) for n in n_points)
    pp, _ = trimesh.sample.sample_surface(pred, top, seed=seed)
    pt, _ = trimesh.sample.sample_surface(true, top, seed=seed + 1 if independent else seed)
    out = []
    for n in n_points:
        p = pp[:int(n)]
        if normalise and np.max(np.abs(p)) > 2:  # evaluate_ae_cd.py: normalise out-of-bound predictions
            p = p / np.max(np.abs(p))
        out.append(chamfer_sq(pt[:int(n)], p))
    return out


def deepcad_chamfer(pred: trimesh.Trimesh, true: trimesh.Trimesh, n_points: int = CD_POINTS, seed: int = 0,
                    normalise: bool = True, independent: bool = True) -> float:
    """DeepCAD's Chamfer distance of two meshes (:func:`deepcad_chamfers`); ``normalise=False`` skips the scaling."""
    return deepcad_chamfers(pred, true, (n_points,), seed=seed, normalise=normalise, independent=independent)[0]


# -- one answer, one method -----------------------------------------------------------------------------------

def build(text: str) -> trimesh.Trimesh:
    """The solid of CAD code text (any parse or mesh error propagates)."""
    from lib.deepcad.answers import parse_answer
    from lib.deepcad.mesh import build_mesh

    return build_mesh(parse_answer(text))


def score_one(pred: str | None, true: str, tokenizer: CADTokenizer, *, tol: int = 1, n_points: int = 2048,
              cd_points: int = CD_POINTS, cd_points_hi: int | None = CD_POINTS_HI, seed: int = 0,
              true_mesh: trimesh.Trimesh | None = None) -> dict:
    """Every score of one answer: ``code_accuracy`` keys (``tol`` levels), :func:`deepcad_accuracy`, ``valid``,
    ``iou``, ``chamfer`` (Euclidean, ``n_points``), ``cd`` / ``cd_hi`` (DeepCAD, ``cd_points`` /
    ``cd_points_hi``; None skips the second) and ``error``. ``None`` is an answer with no tokens (invalid)."""
    text = pred if pred is not None else ""
    row = {**code_accuracy(text, true, tokenizer, tol=tol), **deepcad_accuracy(text, true, tokenizer)}
    if true_mesh is None:
        try:
            true_mesh = build(true)
        except Exception as err:
            raise ValueError(f"score_one: the reference CAD code does not build ({err}); fix the reference") from err
    nan = float("nan")
    try:
        mesh = build(text)
    except Exception as err:  # noqa: BLE001 - any failure to parse or mesh makes the answer invalid
        return {**row, "valid": False, "iou": 0.0, "chamfer": nan, "cd": nan, "cd_hi": nan,
                "error": f"{type(err).__name__}: {err}"}
    cds = deepcad_chamfers(mesh, true_mesh, (cd_points, cd_points_hi) if cd_points_hi else (cd_points,), seed=seed)
    return {**row, "valid": True, "iou": volumetric_iou(mesh, true_mesh, seed=seed),
            "chamfer": chamfer_distance(mesh, true_mesh, n_points=n_points, seed=seed),
            "cd": cds[0], "cd_hi": cds[1] if cd_points_hi else nan, "error": None}


def _finite(values) -> np.ndarray:
    a = np.array([np.nan if v is None else v for v in values], dtype=float)
    return a[np.isfinite(a)]


def summarize(rows: Sequence[Mapping]) -> dict:
    """Method scores of :func:`score_one` rows (None where nothing could be measured, e.g. no valid answer)."""
    if not rows:
        raise ValueError("summarize: no rows")

    def stat(fn, values, scale=1.0):
        a = _finite(values)
        return float(fn(a)) * scale if len(a) else None

    valid = [r for r in rows if r["valid"]]
    iou = [r["iou"] for r in rows]
    return {"n": len(rows),
            "parse_rate": float(np.mean([r["parse"] for r in rows])),
            "command_accuracy": float(np.mean([r["command_accuracy"] for r in rows])),
            "parameter_accuracy": float(np.mean([r["parameter_accuracy"] for r in rows])),
            "exact_match": float(np.mean([r["exact_match"] for r in rows])),
            "acc_cmd": float(np.mean([r["acc_cmd"] for r in rows])),
            "acc_param": stat(np.mean, [r["acc_param"] for r in rows]),
            "invalid_rate": 1.0 - len(valid) / len(rows),
            "mean_iou": float(np.mean(iou)), "median_iou": float(np.median(iou)),
            "mean_chamfer": stat(np.mean, [r["chamfer"] for r in valid]),
            "median_chamfer": stat(np.median, [r["chamfer"] for r in valid]),
            "median_cd": stat(np.median, [r["cd"] for r in valid], 1e3),
            "median_cd_8192": stat(np.median, [r["cd_hi"] for r in valid], 1e3)}


def best_of(candidate_rows: Sequence[Sequence[Mapping]]) -> list[Mapping]:
    """Per image, the row of the candidate with the highest IoU (ties: the first), from ``[image][candidate]``."""
    out = []
    for rows in candidate_rows:
        if not rows:
            raise ValueError("best_of: an image without candidates")
        out.append(rows[max(range(len(rows)), key=lambda i: (rows[i]["iou"], -i))])
    return out


def finite_or_none(d: Mapping) -> dict:
    """``d`` with non-finite floats as None (JSON has no NaN)."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in d.items()}


__all__ = ["CD_POINTS", "CD_POINTS_HI", "NORM_FACTOR", "TOLERANCE", "best_of", "build", "chamfer_sq",
           "deepcad_accuracy", "deepcad_chamfer", "deepcad_chamfers", "deepcad_normalise", "finite_or_none",
           "score_one", "summarize",
           "value_right"]
