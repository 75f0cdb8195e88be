"""Typed DeepCAD construction sequence: sketches of lines, arcs and circles, extruded with booleans.

Mirrors the DeepCAD JSON (Fusion 360 export) closely, so parsing loses nothing the mesh, the CAD code
or the quantiser needs. Conventions (as in DeepCAD's cadlib):

- Curve points are 2D, in the sketch plane's local frame; ``plane.to_global(p)`` is
  ``origin + p.x * x_axis + p.y * y_axis``.
- An extrude sweeps each of its profiles along ``plane.normal`` by ``extent_one`` (may be negative);
  ``symmetric`` also sweeps ``extent_one`` the other way; ``two_sides`` sweeps ``extent_two`` the other way.
- Operations apply in sequence order to the body so far: ``new_body`` and ``join`` unite, ``cut``
  subtracts, ``intersect`` keeps the common part.
- Lengths are in the JSON's units (metres in DeepCAD) until :mod:`lib.deepcad.normalize` rescales them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Point2 = tuple[float, float]
Vec3 = tuple[float, float, float]

OPERATIONS = {  # DeepCAD JSON name -> short name used in code and CAD text
    "NewBodyFeatureOperation": "new_body",
    "JoinFeatureOperation": "join",
    "CutFeatureOperation": "cut",
    "IntersectFeatureOperation": "intersect",
}
EXTENT_TYPES = {
    "OneSideFeatureExtentType": "one_side",
    "SymmetricFeatureExtentType": "symmetric",
    "TwoSidesFeatureExtentType": "two_sides",
}
CURVE_TYPES = ("Line3D", "Arc3D", "Circle3D")

Operation = Literal["new_body", "join", "cut", "intersect"]
ExtentType = Literal["one_side", "symmetric", "two_sides"]


@dataclass(frozen=True)
class Line:
    """A straight segment from ``start`` to ``end``."""

    start: Point2
    end: Point2


@dataclass(frozen=True)
class Arc:
    """A circular arc from ``start`` to ``end`` around ``center``.

    As in the JSON: the arc sweeps from ``start_angle`` to ``end_angle`` (radians), measured from
    ``reference_vector`` (unit, local 2D), counter-clockwise about ``normal_z`` = +1 (clockwise
    when -1, i.e. the arc's normal points against the sketch normal).
    """

    start: Point2
    end: Point2
    center: Point2
    radius: float
    start_angle: float
    end_angle: float
    reference_vector: Point2
    normal_z: float = 1.0

    def point_at(self, angle: float) -> Point2:
        """Return the arc's point at ``angle`` (radians from the reference vector, along the sweep)."""
        a = self.normal_z * angle
        rx, ry = self.reference_vector
        c, s = np.cos(a), np.sin(a)
        return (self.center[0] + self.radius * (c * rx - s * ry), self.center[1] + self.radius * (s * rx + c * ry))

    def mid_point(self) -> Point2:
        """Return the point halfway along the sweep."""
        return self.point_at((self.start_angle + self.end_angle) / 2)


@dataclass(frozen=True)
class Circle:
    """A full circle."""

    center: Point2
    radius: float


Curve = Line | Arc | Circle


@dataclass(frozen=True)
class Loop:
    """A closed chain of curves; ``is_outer`` marks the profile's boundary, the others are holes."""

    curves: tuple[Curve, ...]
    is_outer: bool


@dataclass(frozen=True)
class Profile:
    """A region of a sketch: one outer loop and any inner loops (holes)."""

    loops: tuple[Loop, ...]


@dataclass(frozen=True)
class SketchPlane:
    """A sketch's frame in 3D: origin and orthonormal axes (``normal`` is the JSON's ``z_axis``)."""

    origin: Vec3
    x_axis: Vec3
    y_axis: Vec3
    normal: Vec3

    def to_global(self, points: np.ndarray) -> np.ndarray:
        """Map local 2D points ``[N, 2]`` to global 3D ``[N, 3]``."""
        p = np.asarray(points, dtype=float).reshape(-1, 2)
        return np.asarray(self.origin) + p[:, :1] * np.asarray(self.x_axis) + p[:, 1:2] * np.asarray(self.y_axis)


@dataclass(frozen=True)
class Extrude:
    """One ExtrudeFeature: its profiles (all on one sketch plane), the sweep and the boolean."""

    name: str
    plane: SketchPlane
    profiles: tuple[Profile, ...]
    operation: Operation
    extent_type: ExtentType
    extent_one: float
    extent_two: float = 0.0


@dataclass(frozen=True)
class CADSequence:
    """A whole model: extrudes in order, and the bounding box the JSON declares (min, max)."""

    extrudes: tuple[Extrude, ...]
    bbox_min: Vec3 = (0.0, 0.0, 0.0)
    bbox_max: Vec3 = (0.0, 0.0, 0.0)
