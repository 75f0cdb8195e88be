"""Scale a CAD sequence into DeepCAD's normalised cube and quantise it to DeepCAD's 256-level grid.

- :func:`normalize` scales uniformly about the origin (no translation, as DeepCAD's ``CADSequence.normalize``)
  so the largest absolute bounding-box coordinate becomes ``size`` (DeepCAD's NORM_FACTOR, 0.75).
- :func:`quantize` / :func:`dequantize` are DeepCAD's ``numericalize`` mapping for values in [-1, 1]:
  ``q = clip(round((v + 1) / 2 * n), 0, n - 1)`` and back ``v = q / n * 2 - 1``; the grid step is 2/n, so the
  error is at most 1/n for values in [-1, 1 - 1/n] (values outside are clipped).
- :func:`quantize_sequence` snaps every length and coordinate (curve points, centres, radii, plane origins,
  extents, bbox) of a normalised sequence to that grid. Angles, reference vectors, axes and ``normal_z`` are
  left as they are. Unlike DeepCAD (which quantises sketches in a per-profile frame) the grid is global, so
  features smaller than 1/n (about 0.004 of the normalised cube) collapse: a radius below 1/n becomes 0.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from lib.deepcad.schema import CADSequence, Circle, Curve, Line, Loop, Profile

NORM_FACTOR = 0.75


def _map_curve(c: Curve, pt: Callable, ln: Callable) -> Curve:
    if isinstance(c, Line):
        return Line(start=pt(c.start), end=pt(c.end))
    if isinstance(c, Circle):
        return Circle(center=pt(c.center), radius=ln(c.radius))
    return replace(c, start=pt(c.start), end=pt(c.end), center=pt(c.center), radius=ln(c.radius))


def map_lengths(seq: CADSequence, pt: Callable, ln: Callable, v3: Callable) -> CADSequence:
    """Return a copy of ``seq`` with ``pt`` applied to 2D points, ``ln`` to radii and extents, ``v3`` to plane
    origins and the bbox corners. Axes, angles, reference vectors and ``normal_z`` are kept."""
    extrudes = []
    for ex in seq.extrudes:
        profiles = tuple(Profile(loops=tuple(Loop(curves=tuple(_map_curve(c, pt, ln) for c in lp.curves),
                                                  is_outer=lp.is_outer) for lp in pr.loops)) for pr in ex.profiles)
        extrudes.append(replace(ex, plane=replace(ex.plane, origin=v3(ex.plane.origin)), profiles=profiles,
                                extent_one=ln(ex.extent_one), extent_two=ln(ex.extent_two)))
    return CADSequence(extrudes=tuple(extrudes), bbox_min=v3(seq.bbox_min), bbox_max=v3(seq.bbox_max))


def normalize(seq: CADSequence, size: float = NORM_FACTOR) -> CADSequence:
    """Return ``seq`` scaled uniformly about the origin so that max |bbox coordinate| == ``size``.

    Scales points, radii, plane origins, extents and the bbox; angles and axes are unchanged.
    Raises ValueError when the bbox is all zeros or not finite.
    """
    m = float(np.max(np.abs(np.asarray([seq.bbox_min, seq.bbox_max], dtype=float))))
    if not np.isfinite(m) or m <= 0:
        raise ValueError(f"cannot normalise: max |bbox coordinate| is {m}")
    s = size / m

    def pt(p):
        return (float(p[0]) * s, float(p[1]) * s)

    def ln(v):
        return float(v) * s

    def v3(p):
        return tuple(float(x) * s for x in p)

    return map_lengths(seq, pt, ln, v3)


def quantize(values, n: int = 256) -> np.ndarray:
    """Return DeepCAD's integer codes (0..n-1) for ``values`` in [-1, 1]: ``clip(round((v+1)/2*n), 0, n-1)``."""
    v = np.asarray(values, dtype=float)
    return np.clip(np.round((v + 1.0) / 2.0 * n), 0, n - 1).astype(np.int64)


def dequantize(codes, n: int = 256) -> np.ndarray:
    """Return the float values (``q / n * 2 - 1``) of DeepCAD integer codes ``codes``."""
    return np.asarray(codes, dtype=float) / n * 2.0 - 1.0


def snap(values, n: int = 256) -> np.ndarray:
    """Return ``values`` snapped to the n-level grid on [-1, 1] (``dequantize(quantize(values))``)."""
    return dequantize(quantize(values, n), n)


def quantize_sequence(seq: CADSequence, n: int = 256) -> CADSequence:
    """Return a normalised ``seq`` with every length/coordinate snapped to the n-level grid (as floats).

    Error per value is at most 1/n for values in [-1, 1 - 1/n]; values outside are clipped to the grid ends.
    """
    def sv(v):
        return float(snap(v, n))

    def pt(p):
        a = snap(p, n)
        return (float(a[0]), float(a[1]))

    def v3(p):
        return tuple(float(x) for x in snap(p, n))

    return map_lengths(seq, pt, sv, v3)

