"""Scores of generated CAD code against the truth: solid IoU, Chamfer distance and token-level accuracy.

- :func:`volumetric_iou`: exact, from manifold3d booleans (the library :mod:`lib.deepcad.mesh` builds solids
  with); only a mesh manifold3d rejects (open, non-manifold) falls back to :func:`sampled_iou`, a seeded
  Monte Carlo estimate with a generalised winding number inside test (no ray library is installed, and
  winding numbers stay right for meshes with holes).
- :func:`chamfer_distance`: symmetric mean nearest-neighbour **Euclidean** (not squared, unless asked)
  distance between seeded surface samples, in the meshes' units (the normalised cube for CAD code).
- :func:`code_accuracy`: parse rate, command / parameter accuracy and exact match on quantised tokens.
- :func:`geometry_scores` / :func:`summarize_geometry`: both of the above from CAD code text, where a
  prediction that does not parse or mesh is *invalid*: IoU 0, Chamfer NaN (reported as the invalid rate and
  left out of the Chamfer statistics rather than given an arbitrary penalty).
"""
from __future__ import annotations

import math

import manifold3d
import numpy as np
import trimesh
from scipy.spatial import cKDTree

from lib.cad.tokenizer import ARGS, CADTokenizer
from lib.deepcad.answers import parse_answer
from lib.deepcad.mesh import build_mesh


def to_manifold(mesh: trimesh.Trimesh) -> manifold3d.Manifold:
    """manifold3d solid of a closed triangle mesh; ValueError if manifold3d rejects it even after merging vertices."""
    status = None
    for m in (mesh, None):
        if m is None:  # second try: vertices shared by position (e.g. a triangle soup from STL)
            m = mesh.copy()
            m.merge_vertices()
        # Fresh writable copies: nanobind refuses trimesh's read-only cached arrays.
        solid = manifold3d.Manifold(manifold3d.Mesh64(vert_properties=np.array(m.vertices, dtype=np.float64),
                                                      tri_verts=np.array(m.faces, dtype=np.uint64)))
        status = solid.status()
        if status == manifold3d.Error.NoError:
            return solid
    raise ValueError(f"mesh with {len(mesh.faces)} faces is not a closed manifold ({status.name}); "
                     "volumetric_iou falls back to sampled_iou for such meshes")


def volumetric_iou(mesh_a: trimesh.Trimesh, mesh_b: trimesh.Trimesh, n_samples: int = 20_000,
                   seed: int = 0) -> float:
    """Volume of the intersection over volume of the union, exact via manifold3d booleans.

    ``union = vol(a) + vol(b) - vol(a & b)`` (one boolean, no second one to go wrong). If either mesh is not a
    closed manifold, returns :func:`sampled_iou` with ``n_samples`` and ``seed`` instead.
    Raises ValueError when both solids are empty.
    """
    try:
        a, b = to_manifold(mesh_a), to_manifold(mesh_b)
    except ValueError:
        return sampled_iou(mesh_a, mesh_b, n_samples=n_samples, seed=seed)
    va, vb = a.volume(), b.volume()
    inter = (a ^ b).volume()
    union = va + vb - inter
    if not union > 0.0:
        raise ValueError("volumetric_iou: both meshes have zero volume; IoU is undefined")
    return float(min(max(inter / union, 0.0), 1.0))


def winding_number(mesh: trimesh.Trimesh, points: np.ndarray, chunk: int = 32_768) -> np.ndarray:
    """Generalised winding number of ``mesh`` at ``points [P, 3]`` (1 inside a closed outward mesh, 0 outside).

    Sum over triangles of the signed solid angle (Van Oosterom & Strackee) over 4π, written per coordinate
    (numpy's cross/einsum on ``[P, F, 3]`` are several times slower); ``chunk`` bounds ``points x faces``.
    """
    tri = np.asarray(mesh.triangles, dtype=float)  # [F, 3, 3]
    points = np.asarray(points, dtype=float).reshape(-1, 3)
    out = np.zeros(len(points))
    step = max(1, chunk // max(1, len(tri)))
    for s in range(0, len(points), step):
        p = points[s:s + step]
        (ax, ay, az), (bx, by, bz), (cx, cy, cz) = (
            [tri[None, :, k, i] - p[:, i, None] for i in range(3)] for k in range(3))  # each [p, F]
        la = np.sqrt(ax * ax + ay * ay + az * az)
        lb = np.sqrt(bx * bx + by * by + bz * bz)
        lc = np.sqrt(cx * cx + cy * cy + cz * cz)
        det = ax * (by * cz - bz * cy) + ay * (bz * cx - bx * cz) + az * (bx * cy - by * cx)
        den = (la * lb * lc + (ax * bx + ay * by + az * bz) * lc + (bx * cx + by * cy + bz * cz) * la
               + (cx * ax + cy * ay + cz * az) * lb)
        out[s:s + step] = np.arctan2(det, den).sum(axis=1) / (2.0 * math.pi)
    return out


def sampled_iou(mesh_a: trimesh.Trimesh, mesh_b: trimesh.Trimesh, n_samples: int = 20_000, seed: int = 0) -> float:
    """Monte Carlo IoU: ``n_samples`` uniform points in the union's bounding box, inside = |winding number| > 1/2.

    Standard error about ``sqrt(iou (1 - iou) / n_inside_union)``. Raises ValueError when no sample is inside
    either mesh (empty or degenerate meshes; raise ``n_samples`` for very thin ones).
    """
    lo = np.minimum(mesh_a.bounds[0], mesh_b.bounds[0])
    hi = np.maximum(mesh_a.bounds[1], mesh_b.bounds[1])
    pts = np.random.default_rng(seed).uniform(lo, hi, size=(int(n_samples), 3))
    ina = np.abs(winding_number(mesh_a, pts)) > 0.5
    inb = np.abs(winding_number(mesh_b, pts)) > 0.5
    union = int(np.count_nonzero(ina | inb))
    if union == 0:
        raise ValueError(f"sampled_iou: none of {n_samples} samples is inside either mesh; raise n_samples")
    return float(np.count_nonzero(ina & inb) / union)


def chamfer_distance(mesh_a: trimesh.Trimesh, mesh_b: trimesh.Trimesh, n_points: int = 2048, seed: int = 0,
                     squared: bool = False) -> float:
    """Symmetric Chamfer distance: ``(mean_a min_b |a - b| + mean_b min_a |b - a|) / 2`` over surface samples.

    ``n_points`` area-weighted samples per mesh with ``seed`` (the same seed on both, so a mesh against a
    translated copy of itself pairs every sample with its translate: the result is then at most the shift).
    Euclidean distances; ``squared=True`` averages squared distances instead (DeepCAD-style CD).
    """
    pa, _ = trimesh.sample.sample_surface(mesh_a, int(n_points), seed=seed)
    pb, _ = trimesh.sample.sample_surface(mesh_b, int(n_points), seed=seed)
    dab, _ = cKDTree(pb).query(pa)
    dba, _ = cKDTree(pa).query(pb)
    if squared:
        dab, dba = dab**2, dba**2
    return float((dab.mean() + dba.mean()) / 2.0)


# -- token-level accuracy -------------------------------------------------------------------------------------

def _as_ids(x, tok: CADTokenizer) -> tuple[list[int] | None, bool]:
    """Token ids of CAD code text or ids, and whether they form a valid model."""
    if isinstance(x, str):
        try:
            return tok.encode(x), True
        except ValueError:
            return None, False
    ids = [int(i) for i in x]
    try:
        tok.decode_sequence(ids)
        return ids, True
    except ValueError:
        return ids, False


def _statements(ids: list[int], tok: CADTokenizer) -> list[tuple[str, list[int]]]:
    """Lenient split into (command, following non-command ids) up to ``<eos>``; works on invalid ids too."""
    out: list[tuple[str, list[int]]] = []
    for t in ids:
        if t == tok.eos_id:
            break
        name = tok.vocab[t] if 0 <= t < tok.vocab_size else None
        if name in ARGS:
            out.append((name, []))
        elif out and t not in (tok.bos_id, tok.pad_id):
            out[-1][1].append(t)
    return out


def _arg_ok(p: int, t: int, tok: CADTokenizer, tol: int) -> bool:
    if tok.is_value(t):
        return tok.is_value(p) and abs(tok.level_of(p) - tok.level_of(t)) <= tol
    return p == t


def code_accuracy(pred, true, tokenizer: CADTokenizer | None = None, tol: int = 1) -> dict:
    """Token-level scores of ``pred`` against ``true`` (each CAD code text or token ids).

    - ``parse``: ``pred`` is a valid model (text: ``parse_answer`` parses; ids: decode succeeds).
    - ``command_accuracy``: statements (``bbox extrude plane profile loop line arc circle``) aligned by position,
      matches over ``max(len(pred), len(true))`` (extra and missing statements count as errors).
    - ``parameter_accuracy``: over the arguments of all ``true`` statements, the fraction whose aligned ``pred``
      statement has the same command and the argument within ``tol`` levels (values) or equal (words: op, extent
      type, outer/inner, nz).
    - ``exact_match``: same quantised ids (``<bos>``, ``<eos>``, ``<pad>`` aside).

    Text that does not parse has no tokens: its accuracies are 0. Ids that do not decode are still scored
    statement by statement. Raises ValueError when ``true`` is not a valid model.
    """
    tok = tokenizer or CADTokenizer()
    true_ids, ok = _as_ids(true, tok)
    if not ok:
        raise ValueError("code_accuracy: the reference `true` is not valid CAD code / token ids; fix the reference")
    pred_ids, parsed = _as_ids(pred, tok)
    ts = _statements(true_ids, tok)
    ps = _statements(pred_ids, tok) if pred_ids is not None else []
    cmd_hits = sum(p[0] == t[0] for p, t in zip(ps, ts, strict=False))
    n_args = sum(len(a) for _, a in ts)
    arg_hits = 0
    for (pc, pa), (tc, ta) in zip(ps, ts, strict=False):
        if pc == tc:
            arg_hits += sum(_arg_ok(p, t, tok, tol) for p, t in zip(pa, ta, strict=False))
    strip = {tok.bos_id, tok.eos_id, tok.pad_id}
    exact = pred_ids is not None and [i for i in pred_ids if i not in strip] == [i for i in true_ids if i not in strip]
    return {"parse": bool(parsed),
            "command_accuracy": cmd_hits / max(len(ps), len(ts)),
            "parameter_accuracy": arg_hits / n_args,  # a valid reference has bbox: n_args >= 6
            "exact_match": bool(exact and parsed)}


# -- geometry from CAD code -----------------------------------------------------------------------------------

def geometry_scores(pred_text: str, true_text: str, n_points: int = 2048, seed: int = 0) -> dict:
    """``{"valid", "iou", "chamfer", "error"}`` of predicted CAD code against the true code (both rebuilt).

    An invalid prediction (``parse_answer`` or ``build_mesh`` fails) scores ``iou = 0.0`` and ``chamfer = NaN``
    with ``error`` saying why; :func:`summarize_geometry` counts it in the invalid rate. Raises ValueError when
    ``true_text`` itself does not build (a broken reference, not a model error).
    """
    try:
        true_mesh = build_mesh(parse_answer(true_text))
    except Exception as err:  # parse errors, QuarantineError and geometry-library errors alike
        raise ValueError(f"geometry_scores: the reference CAD code does not build ({err}); fix the reference") from err
    try:
        pred_mesh = build_mesh(parse_answer(pred_text))
    except Exception as err:  # noqa: BLE001 - any failure to parse or mesh makes the prediction invalid
        return {"valid": False, "iou": 0.0, "chamfer": float("nan"), "error": f"{type(err).__name__}: {err}"}
    return {"valid": True, "iou": volumetric_iou(pred_mesh, true_mesh, seed=seed),
            "chamfer": chamfer_distance(pred_mesh, true_mesh, n_points=n_points, seed=seed), "error": None}


def summarize_geometry(scores: list[dict]) -> dict:
    """Aggregate :func:`geometry_scores` rows: invalid rate, mean IoU (invalid = 0), mean/median Chamfer of valid."""
    if not scores:
        raise ValueError("summarize_geometry: no scores to summarise")
    valid = [s for s in scores if s["valid"]]
    cd = np.array([s["chamfer"] for s in valid], dtype=float)
    return {"n": len(scores), "invalid_rate": 1.0 - len(valid) / len(scores),
            "mean_iou": float(np.mean([s["iou"] for s in scores])),
            "mean_chamfer": float(cd.mean()) if len(cd) else float("nan"),
            "median_chamfer": float(np.median(cd)) if len(cd) else float("nan")}
