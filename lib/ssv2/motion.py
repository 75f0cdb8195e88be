"""Procedural renderer of short RGB clips that depict Something-Something-v2 templates.

The real SSv2 videos cannot be downloaded here, so the pipelines train on
synthetic stand-ins.  Every clip shows one SSv2 action template truthfully
(the object, hand and camera motion that the template names) in a textured
table-top scene whose palette, object shapes and textures, lighting, sizes,
positions and speeds are random.  Appearance is drawn independently of the
template, so a classifier can only succeed by learning the motion pattern, and
everything moves smoothly and coherently from frame to frame, so a video
super-resolution model sees real temporal structure rather than noise.

Rendering model
---------------
The scene lives on a *world* canvas: the background is painted once per clip,
larger than the frame when the camera pans and at ``k`` world pixels per frame
pixel when the camera zooms in (so zoomed frames stay sharp).  Objects, their
shadows and the hands/arms that move them are RGBA sprites rendered once per
clip; each frame places them with one affine warp (translation, scale,
rotation, foreshortening) and an alpha paste.  The camera then resamples a
window of the world canvas into the output frame (camera pans add a matching
motion blur), and a per-clip exposure LUT and vignette are applied.  Positions
are subpixel throughout, so motion is smooth instead of jumping in whole pixels;
a small handheld shake keeps every frame distinct even when nothing else moves.

Coordinates: *frame units* are output pixels at zoom 1 with the camera at its
rest position; x grows to the right, y downwards, angles are degrees
counter-clockwise as seen on screen.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Callable, Collection
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

__all__ = ["HIDEABLE_ROLES", "SUPPORTED_TEMPLATES", "render_clip", "render_clip_with_truth"]

#: Template (exactly as in SSv2's labels.json) -> number of "something" placeholders.
SUPPORTED_TEMPLATES: dict[str, int] = {
    "Pushing something from left to right": 1,
    "Pushing something from right to left": 1,
    "Pulling something from left to right": 1,
    "Pulling something from right to left": 1,
    "Moving something up": 1,
    "Moving something down": 1,
    "Moving something towards the camera": 1,
    "Moving something away from the camera": 1,
    "Turning the camera left while filming something": 1,
    "Turning the camera right while filming something": 1,
    "Turning the camera upwards while filming something": 1,
    "Turning the camera downwards while filming something": 1,
    "Approaching something with your camera": 1,
    "Moving away from something with your camera": 1,
    "Something falling like a rock": 1,
    "Spinning something so it continues spinning": 1,
    "Spinning something that quickly stops spinning": 1,
    "Covering something with something": 2,
    "Uncovering something": 1,
    "Moving something and something closer to each other": 2,
    "Moving something and something away from each other": 2,
    "Throwing something in the air and catching it": 1,
    "Tearing something into two pieces": 1,
    "Rolling something on a flat surface": 1,
}

#: Scene parts that ``render_clip_with_truth(..., hide=...)`` can leave out.
#: "object" is the main object (both halves when torn) with its shadow,
#: "second" the other object (the cover, or the second of two objects),
#: "hands" the arms, "shadows" all cast shadows.  Hiding never changes anything
#: else in the clip, so rendering with and without a part isolates its pixels.
HIDEABLE_ROLES = frozenset({"object", "second", "hands", "shadows"})

_AFFINE = Image.Transform.AFFINE
_BILINEAR = Image.Resampling.BILINEAR
_BICUBIC = Image.Resampling.BICUBIC
_BOX = Image.Resampling.BOX


# ----------------------------------------------------------------------------------------------
# small numeric helpers


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    """Uniform draw that tolerates an empty range (tiny frames), returning its midpoint."""
    if hi <= lo:
        return 0.5 * (lo + hi)
    return float(rng.uniform(lo, hi))


def _pick(rng: np.random.Generator, options: tuple):
    return options[int(rng.integers(len(options)))]


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return np.array([r, g, b], np.float32) * 255.0


def _min_jerk(u: np.ndarray) -> np.ndarray:
    u = np.clip(u, 0.0, 1.0)
    return u * u * u * (10.0 + u * (-15.0 + 6.0 * u))


def _ease(s: np.ndarray, s0: float, s1: float, linear_mix: float = 0.0) -> np.ndarray:
    """Monotone 0->1 profile over [s0, s1]: minimum-jerk (how hands move) blended with linear.

    A linear share keeps some velocity at the ends, so motion that is meant to run
    through the whole clip (camera pans) does not stall in the first frames.
    """
    u = np.clip((s - s0) / max(s1 - s0, 1e-6), 0.0, 1.0)
    return (1.0 - linear_mix) * _min_jerk(u) + linear_mix * u


def _freeze_after(xy: np.ndarray, s: np.ndarray, s_from: float) -> np.ndarray:
    """Copy of per-frame points [T,2] that stop moving at normalised time s_from."""
    out = xy.copy()
    later = s > s_from
    if later.any():
        out[later, 0] = np.interp(s_from, s, xy[:, 0])
        out[later, 1] = np.interp(s_from, s, xy[:, 1])
    return out


def _withdraw(xy: np.ndarray, s: np.ndarray, shoulder: np.ndarray, s0: float, s1: float) -> np.ndarray:
    """Hand path that lets go at s0 and retracts to the (off-frame) shoulder by s1."""
    out = _freeze_after(xy, s, s0)
    e = _ease(s, s0, s1)[:, None]
    return out + e * (np.asarray(shoulder)[None, :] - out)


def _wobble(rng: np.random.Generator, n: int, amp: float, period_lo: float, period_hi: float) -> np.ndarray:
    """Smooth, zero-mean handheld-style jitter of about `amp` pixels over frame indices."""
    t = np.arange(n, dtype=np.float64)
    out = np.zeros(n)
    for weight in (1.0, 0.5):
        period = _u(rng, period_lo, period_hi)
        out += weight * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
    return out * (amp / 1.5)


def _value_noise(rng: np.random.Generator, h: int, w: int, cell: float, octaves: int = 3) -> np.ndarray:
    """Smooth fractal noise in [0, 1] of shape [h, w]; `cell` is the coarsest feature size in pixels."""
    h, w = max(int(h), 1), max(int(w), 1)
    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    for _ in range(octaves):
        gh = max(2, math.ceil(h / max(cell, 1.0)) + 1)
        gw = max(2, math.ceil(w / max(cell, 1.0)) + 1)
        grid = rng.random((gh, gw), dtype=np.float32)
        out += amp * np.asarray(Image.fromarray(grid).resize((w, h), _BICUBIC))
        total += amp
        amp *= 0.5
        cell = max(1.0, cell / 2.0)
    out /= total
    lo, hi = float(out.min()), float(out.max())
    return (out - lo) / (hi - lo) if hi > lo else np.full_like(out, 0.5)


# ----------------------------------------------------------------------------------------------
# sprites and per-frame placement


@dataclass
class _Sprite:
    image: Image.Image  # "RGBA" texture (RGB filled everywhere, alpha = silhouette) or "L" shadow mask
    anchor: tuple[float, float]  # sprite pixel that lands on the track position
    res: float  # sprite pixels per world pixel at scale 1
    alpha_sum: float  # silhouette area in sprite pixels (for the visibility ground truth)


@dataclass
class _Track:
    """Per-frame placement of one sprite in frame units (arrays of length T)."""

    sprite: _Sprite
    role: str  # "object" | "second" | "hands" | "clutter"
    cx: np.ndarray
    cy: np.ndarray
    scale: np.ndarray
    angle: np.ndarray
    squash: float = 1.0  # vertical foreshortening applied after rotation (objects lying on the table)
    visible: np.ndarray | None = None
    opacity: np.ndarray | None = None  # shadows only
    shadow: bool = False

    def reversed(self) -> _Track:
        """The same track played backwards (covering <-> uncovering, towards <-> away)."""
        def rev(a):
            return None if a is None else a[::-1].copy()

        return _Track(self.sprite, self.role, rev(self.cx), rev(self.cy), rev(self.scale), rev(self.angle),
                      self.squash, rev(self.visible), rev(self.opacity), self.shadow)

    def is_static(self) -> bool:
        arrays = [self.cx, self.cy, self.scale, self.angle]
        if self.opacity is not None:
            arrays.append(self.opacity)
        moving = any(float(np.ptp(a)) > 0 for a in arrays)
        return not moving and (self.visible is None or bool(self.visible.all()))


def _track(T: int, sprite: _Sprite, role: str, cx, cy, scale=1.0, angle=0.0, **kw) -> _Track:
    def full(v):
        return np.broadcast_to(np.asarray(v, np.float64), (T,)).copy()

    return _Track(sprite, role, full(cx), full(cy), full(scale), full(angle), **kw)


def _attach(tr: _Track, lx, ly) -> np.ndarray:
    """World positions [T,2] of a point given in the track's unrotated, unscaled local frame."""
    a = np.radians(tr.angle)
    ca, sa = np.cos(a), np.sin(a)
    x = tr.cx + tr.scale * (ca * lx + sa * ly)
    y = tr.cy + tr.scale * tr.squash * (-sa * lx + ca * ly)
    return np.stack([x, y], axis=1)


def _warp(sprite: _Sprite, wx: float, wy: float, g: float, angle: float, squash: float,
          clip_w: int, clip_h: int):
    """Resample `sprite` so its anchor lands on world pixel (wx, wy).

    g is world pixels per sprite pixel.  Returns (image, x0, y0) of the covered
    world region clipped to the canvas, or None when nothing lands on it.
    Forward map: out = c + g * Q * R(angle) * (p - anchor), Q = diag(1, squash).
    """
    img = sprite.image
    iw, ih = img.size
    ax, ay = sprite.anchor
    a = math.radians(angle)
    ca, sa = math.cos(a), math.sin(a)
    px = np.array([-ax, iw - ax, iw - ax, -ax])
    py = np.array([-ay, -ay, ih - ay, ih - ay])
    fx = wx + g * (ca * px + sa * py)
    fy = wy + squash * g * (-sa * px + ca * py)
    x0 = max(math.floor(fx.min()), 0)
    y0 = max(math.floor(fy.min()), 0)
    x1 = min(math.ceil(fx.max()), clip_w)
    y1 = min(math.ceil(fy.max()), clip_h)
    if x1 <= x0 or y1 <= y0:
        return None
    inv = 1.0 / g
    A, B = inv * ca, -inv * sa / squash
    D, E = inv * sa, inv * ca / squash
    C = ax + A * (x0 - wx) + B * (y0 - wy)
    F = ay + D * (x0 - wx) + E * (y0 - wy)
    out = img.transform((x1 - x0, y1 - y0), _AFFINE, (A, B, C, D, E, F), resample=_BILINEAR)
    return out, x0, y0


def _alt_colour(rng: np.random.Generator, c: np.ndarray) -> np.ndarray:
    """A second colour for an object's pattern: darker, lighter, or hue-shifted."""
    h, s, v = colorsys.rgb_to_hsv(*(c / 255.0))
    kind = int(rng.integers(3))
    if kind == 0:
        return c * _u(rng, 0.35, 0.6)
    if kind == 1:
        return c + (255.0 - c) * _u(rng, 0.45, 0.75)
    return _hsv(h + _u(rng, 0.25, 0.6), max(s, 0.4), max(v, 0.5))


def _pattern(rng: np.random.Generator, kind: str | None, xx: np.ndarray, yy: np.ndarray,
             w: float, h: float) -> np.ndarray:
    """Surface pattern in [0, 1] over sprite coordinates (frame px relative to the centre)."""
    if kind is None:
        kind = _pick(rng, ("stripes", "dots", "checker", "camo", "band", "rings"))
    m = min(w, h)
    th = rng.uniform(0, np.pi)
    u = xx * math.cos(th) + yy * math.sin(th)
    v = -xx * math.sin(th) + yy * math.cos(th)
    if kind == "stripes":
        period = max(2.5, _u(rng, 0.12, 0.3) * m)
        p = 0.5 + 0.5 * np.sin(2 * np.pi * u / period)
        return np.clip((p - 0.5) * 4.0 + 0.5, 0, 1)
    if kind == "dots":
        sp = max(3.0, _u(rng, 0.2, 0.35) * m)
        rad = sp * _u(rng, 0.2, 0.33)
        du, dv = u / sp - np.round(u / sp), v / sp - np.round(v / sp)
        return np.clip(rad - np.hypot(du, dv) * sp + 0.5, 0, 1)
    if kind == "checker":
        cell = max(2.5, _u(rng, 0.15, 0.3) * m)
        return ((np.floor(u / cell) + np.floor(v / cell)) % 2).astype(np.float32)
    if kind == "camo":
        acc = np.zeros_like(xx)
        for _ in range(4):
            d = rng.uniform(0, np.pi)
            lam = max(3.0, _u(rng, 0.25, 0.6) * m)
            acc += np.sin(2 * np.pi * (xx * math.cos(d) + yy * math.sin(d)) / lam + rng.uniform(0, 2 * np.pi))
        return np.clip(0.5 + 0.6 * acc, 0, 1)
    if kind == "band":
        off, bw = _u(rng, -0.2, 0.2) * m, _u(rng, 0.12, 0.25) * m
        return (np.abs(yy - off) < bw).astype(np.float32)
    if kind == "text":  # printed lines on paper
        period = max(2.0, _u(rng, 0.06, 0.1) * h)
        line = (yy / period) % 1.0 < 0.4
        words = np.sin(xx * _u(rng, 0.4, 0.9) + np.floor(yy / period) * 1.7) > -0.4
        margin = (np.abs(xx) < 0.38 * w) & (np.abs(yy) < 0.4 * h)
        return (line & words & margin).astype(np.float32) * 0.8
    # rings: concentric, off-centre so rotation stays visible
    ox, oy = _u(rng, -0.2, 0.2) * w, _u(rng, -0.2, 0.2) * h
    period = max(3.0, _u(rng, 0.15, 0.3) * m)
    return 0.5 + 0.5 * np.sign(np.sin(2 * np.pi * np.hypot(xx - ox, yy - oy) / period))


_ASPECTS: dict[str, tuple[float, float]] = {
    "box": (0.7, 1.5), "ball": (0.92, 1.08), "rounded": (0.55, 1.3), "cup": (0.7, 0.95),
    "can": (0.45, 0.7), "cloth": (0.9, 1.6), "sheet": (0.75, 1.4),
}


def _object_sprite(rng: np.random.Generator, shape: str, w: float, h: float, colour: np.ndarray,
                   r: float, smax: float, light: np.ndarray, *, mark: bool = False,
                   pattern: str | None = None) -> tuple[_Sprite, np.ndarray]:
    """Textured, shaded RGBA sprite of a w x h (frame px) object at r sprite px per frame px.

    Returns the sprite and its float RGB texture (the tearing template re-uses it).
    """
    pad = 2
    iw, ih = max(2, round(w * r)), max(2, round(h * r))
    WI, HI = iw + 2 * pad, ih + 2 * pad
    ss = 4  # supersampled silhouette -> antialiased edges
    mask = Image.new("L", (WI * ss, HI * ss), 0)
    dr = ImageDraw.Draw(mask)
    x0, y0, x1, y1 = pad * ss, pad * ss, (pad + iw) * ss - 1, (pad + ih) * ss - 1
    if shape == "ball":
        dr.ellipse((x0, y0, x1, y1), fill=255)
    elif shape == "rounded":
        dr.rounded_rectangle((x0, y0, x1, y1), radius=int(0.25 * min(iw, ih) * ss), fill=255)
    elif shape == "cup":
        e, inset = 0.08 * ih * ss, 0.16 * iw * ss
        dr.polygon([(x0, y0 + e), (x1, y0 + e), (x1 - inset, y1), (x0 + inset, y1)], fill=255)
        dr.ellipse((x0, y0, x1, y0 + 2 * e), fill=255)
    elif shape == "can":
        e = 0.07 * ih * ss
        dr.rectangle((x0, y0 + e, x1, y1 - e), fill=255)
        dr.ellipse((x0, y0, x1, y0 + 2 * e), fill=255)
        dr.ellipse((x0, y1 - 2 * e, x1, y1), fill=255)
    else:  # box, cloth, sheet
        dr.rectangle((x0, y0, x1, y1), fill=255)
    alpha = mask.resize((WI, HI), _BOX)

    yy, xx = np.mgrid[0:HI, 0:WI].astype(np.float32)
    xx = (xx + 0.5 - WI / 2) / r
    yy = (yy + 0.5 - HI / 2) / r
    nx, ny = xx / (w / 2), yy / (h / 2)
    alt = _alt_colour(rng, colour)
    p = _pattern(rng, pattern, xx, yy, w, h)
    rgb = colour + (alt - colour) * p[..., None]
    grain = _value_noise(rng, HI, WI, cell=max(2.0, 0.15 * min(w, h) * r), octaves=2)
    rgb = rgb * (0.93 + 0.14 * grain)[..., None]
    lx, ly, lz = light
    if shape == "ball":  # Lambert + specular sphere shading
        nz = np.sqrt(np.clip(1.0 - nx * nx - ny * ny, 0.0, 1.0))
        lam = np.clip(lx * nx + ly * ny + lz * nz, 0.0, 1.0)
        rgb = rgb * (0.35 + 0.75 * lam)[..., None] + (255.0 * 0.45 * lam ** 24)[..., None]
    elif shape == "can":  # vertical cylinder
        nz = np.sqrt(np.clip(1.0 - nx * nx, 0.0, 1.0))
        lam = np.clip(lx * nx + lz * nz, 0.0, 1.0)
        rgb = rgb * (0.45 + 0.65 * lam)[..., None]
    else:  # flat faces: gentle gradient towards the light
        rgb = rgb * (1.0 + 0.12 * (lx * nx + ly * ny))[..., None]
        if shape == "box":  # lighter top face suggests a 3-D box seen from above
            rgb = rgb * np.where(ny < -0.64, 1.15, 1.0)[..., None]
        elif shape == "cup":  # dark opening at the rim
            e = 0.08 * h
            inside = nx ** 2 * 1.2 + ((yy + h / 2 - e) / max(e, 0.5)) ** 2 < 0.85
            rgb = rgb * np.where(inside, 0.5, 1.0)[..., None]
    if mark:  # off-centre spot so in-plane rotation of symmetric shapes stays visible
        ang = rng.uniform(0, 2 * np.pi)
        mx, my = 0.28 * w * math.cos(ang), 0.28 * h * math.sin(ang)
        rad = max(1.2, 0.13 * min(w, h))
        spot = np.clip(rad - np.hypot(xx - mx, yy - my) + 0.5, 0, 1)
        mc = np.full(3, 245.0 if colour.mean() < 128 else 20.0, np.float32)
        rgb = rgb + (mc - rgb) * spot[..., None]
    a = np.asarray(alpha).astype(np.float32)
    edge = (a - np.asarray(alpha.filter(ImageFilter.MinFilter(3))).astype(np.float32)) / 255.0
    rgb = rgb * (1.0 - 0.3 * edge)[..., None]
    rgba = np.dstack([np.clip(rgb, 0, 255).astype(np.uint8), np.asarray(alpha)])
    sprite = _Sprite(Image.fromarray(rgba), (WI / 2, HI / 2), smax, float(a.sum() / 255.0))
    return sprite, rgb


def _shadow_sprite(ws: float, hs: float, blur: float, r: float, smax: float) -> _Sprite:
    """Soft elliptical contact shadow (an "L" mask) of ws x hs frame px."""
    sig = float(max(blur * r, 0.5))
    pad = math.ceil(3 * sig) + 2
    iw, ih = max(1, round(ws * r)), max(1, round(hs * r))
    m = Image.new("L", (iw + 2 * pad, ih + 2 * pad), 0)
    ImageDraw.Draw(m).ellipse((pad, pad, pad + iw - 1, pad + ih - 1), fill=255)
    m = m.filter(ImageFilter.GaussianBlur(sig))
    return _Sprite(m, (m.size[0] / 2, m.size[1] / 2), smax, 0.0)


def _arm_sprite(rng: np.random.Generator, hand_w: float, length: float, r: float, smax: float,
                skin: np.ndarray, sleeve: np.ndarray, sleeve_at: float, light: np.ndarray,
                flip: bool) -> _Sprite:
    """Hand + forearm + sleeve pointing along +x from the hand (anchor = hand centre)."""
    hw, L, pad = hand_w * r, length * r, 2
    HI = math.ceil(hw * 1.3) + 2 * pad
    WI = math.ceil(L) + 2 * pad
    yc = HI / 2
    ss = 2
    arm = Image.new("L", (WI * ss, HI * ss), 0)
    dr = ImageDraw.Draw(arm)

    def S(*v):
        return tuple(float(x) * ss for x in v)

    dr.ellipse(S(pad, yc - 0.5 * hw, pad + 1.25 * hw, yc + 0.5 * hw), fill=255)  # palm / fist
    dr.ellipse(S(pad + 0.45 * hw, yc - 0.62 * hw, pad + 1.0 * hw, yc - 0.2 * hw), fill=255)  # thumb
    dr.rectangle(S(pad + 0.8 * hw, yc - 0.4 * hw, WI, yc + 0.4 * hw), fill=255)  # forearm
    slv = Image.new("L", (WI * ss, HI * ss), 0)
    ImageDraw.Draw(slv).rectangle(S(pad + sleeve_at * r, yc - 0.52 * hw, WI, yc + 0.52 * hw), fill=255)
    alpha = ImageChops.lighter(arm, slv).resize((WI, HI), _BOX)
    sl = np.asarray(slv.resize((WI, HI), _BOX)).astype(np.float32)[..., None] / 255.0

    yy, xx = np.mgrid[0:HI, 0:WI].astype(np.float32)
    ny = (yy + 0.5 - yc) / (0.5 * hw)
    # cylinder shading across the arm, lit from the side the light comes from
    side = light[1] if not flip else -light[1]
    shade = 0.7 + 0.35 * np.sqrt(np.clip(1 - ny ** 2, 0, 1)) - 0.1 * side * np.clip(ny, -1, 1)
    noise = _value_noise(rng, HI, WI, cell=max(2.0, 0.4 * hw), octaves=2)
    skin_rgb = skin * (0.96 + 0.08 * noise)[..., None]
    creases = (xx < pad + 0.5 * hw) & (np.min(np.abs(ny[..., None] - np.array([-0.33, 0.0, 0.33])), -1) < 0.07)
    skin_rgb = skin_rgb * np.where(creases, 0.8, 1.0)[..., None]
    fabric = sleeve * (0.9 + 0.2 * noise)[..., None]
    rgb = (skin_rgb * (1 - sl) + fabric * sl) * shade[..., None]
    rgba = np.dstack([np.clip(rgb, 0, 255).astype(np.uint8), np.asarray(alpha)])
    img = Image.fromarray(rgba)
    if flip:  # mirror the thumb side for the other hand
        img = img.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    return _Sprite(img, (pad + 0.62 * hw, HI / 2), smax, float(np.asarray(alpha).sum() / 255.0))


# ----------------------------------------------------------------------------------------------
# per-clip context: layout, palette, lighting, camera shake, sprite factories


class _Ctx:
    def __init__(self, rng: np.random.Generator, H: int, W: int, T: int):
        self.rng, self.H, self.W, self.T = rng, H, W, T
        self.s = np.linspace(0.0, 1.0, T) if T > 1 else np.zeros(1)
        self.k = 1.0  # world px per frame px; zoom templates raise it before making sprites
        if rng.random() < 0.15:  # top-down view of a table: no wall, hardly any perspective
            self.table_y, self.gap = -5.0 * H, _u(rng, 1.0, 3.0) * H
        else:
            self.table_y, self.gap = _u(rng, 0.2, 0.45) * H, _u(rng, 0.25, 0.8) * H
        self.wall = _hsv(rng.random(), _u(rng, 0.03, 0.35), _u(rng, 0.45, 0.92))
        self.table_style = int(rng.integers(5))
        if self.table_style <= 1:  # wood
            base = _hsv(_u(rng, 0.04, 0.11), _u(rng, 0.35, 0.75), _u(rng, 0.3, 0.8))
            self.table_dark, self.table_light = base * 0.62, np.minimum(base * 1.2, 255)
        elif self.table_style <= 3:  # table cloth
            self.table_dark = _hsv(rng.random(), _u(rng, 0.3, 0.8), _u(rng, 0.35, 0.85))
            self.table_light = _hsv(rng.random(), _u(rng, 0.0, 0.1), _u(rng, 0.85, 0.97))
        else:  # laminate / stone
            base = _hsv(rng.random(), _u(rng, 0.0, 0.3), _u(rng, 0.3, 0.9))
            self.table_dark, self.table_light = base * 0.85, np.minimum(base * 1.12, 255)
        la = rng.uniform(-np.pi, 0.0)  # light from somewhere above
        self.light = np.array([math.cos(la) * 0.7, math.sin(la) * 0.7, 0.7])
        self.light /= np.linalg.norm(self.light)
        self.shadow_alpha = _u(rng, 0.25, 0.5)
        self.shadow_dx = _u(rng, -0.08, 0.08)
        self.skin = _hsv(_u(rng, 0.03, 0.09), _u(rng, 0.25, 0.6), _u(rng, 0.35, 0.95))
        self.sleeve = _hsv(rng.random(), _u(rng, 0.0, 0.8), _u(rng, 0.15, 0.9))
        self.hand_w = max(3.0, _u(rng, 0.09, 0.13) * H)
        self.sleeve_at = _u(rng, 1.8, 3.5) * self.hand_w
        amp = _u(rng, 0.25, 1.0)  # handheld shake in pixels, keeps every frame distinct
        self.shake = np.stack([_wobble(rng, T, amp, 10, 40), _wobble(rng, T, amp, 10, 40)], 1)
        self.exposure = (_u(rng, 0.8, 1.15), _u(rng, 0.85, 1.15), _u(rng, 0.85, 1.15),
                         rng.uniform(0.94, 1.06, 3), _u(rng, 0.0, 0.3))
        self._arms: dict[tuple, _Sprite] = {}

    # -- sprites ---------------------------------------------------------------------------

    def object_colour(self, avoid: tuple[np.ndarray, ...] = ()) -> np.ndarray:
        """A saturated colour that stands out against the table, the wall, the hands and `avoid`."""
        refs = (0.5 * (self.table_dark + self.table_light), self.wall, self.skin) + tuple(avoid)
        c = _hsv(self.rng.random(), _u(self.rng, 0.45, 0.95), _u(self.rng, 0.45, 0.95))
        for _ in range(20):
            if all(np.linalg.norm(c - ref) > 80 for ref in refs):
                break
            c = _hsv(self.rng.random(), _u(self.rng, 0.45, 0.95), _u(self.rng, 0.45, 0.95))
        return c

    def object_sprite(self, shape: str, h: float, *, aspect: float | None = None, smax: float = 1.0,
                      colour: np.ndarray | None = None, mark: bool = False, pattern: str | None = None,
                      max_w: float | None = None):
        """(sprite, w, h) for an object of height h frame px, sharp up to scale `smax`."""
        if aspect is None:
            aspect = _u(self.rng, *_ASPECTS[shape])
        h = max(3.0, h)
        w = max(3.0, min(h * aspect, 0.45 * self.W if max_w is None else max_w))
        if colour is None:
            colour = self.object_colour()
        sprite, _ = _object_sprite(self.rng, shape, w, h, colour, self.k * smax, smax, self.light,
                                   mark=mark, pattern=pattern)
        return sprite, w, h

    def contact_shadow(self, obj: _Track, w: float, h: float, smax: float = 1.0) -> _Track:
        """Soft shadow under an object standing on the table, moving and scaling with it."""
        spr = _shadow_sprite(1.05 * w, max(0.2 * h, 1.5), 0.04 * h + 0.6, self.k * smax, smax)
        return _Track(spr, obj.role, obj.cx + self.shadow_dx * w * obj.scale, obj.cy + 0.42 * h * obj.scale,
                      obj.scale.copy(), np.zeros(self.T), opacity=np.full(self.T, self.shadow_alpha),
                      shadow=True)

    def ground_shadow(self, obj: _Track, w: float, h: float, ground_y: float) -> _Track:
        """Shadow on the table below an airborne object; fades as the object rises."""
        spr = _shadow_sprite(1.05 * w, max(0.2 * h, 1.5), 0.06 * h + 0.6, self.k, 1.0)
        lift = np.clip((ground_y - 0.5 * h - obj.cy) / (0.6 * self.H), 0.0, 1.0)
        return _Track(spr, obj.role, obj.cx + self.shadow_dx * w, np.full(self.T, ground_y - 0.08 * h),
                      1.0 + 0.3 * lift, np.zeros(self.T), opacity=self.shadow_alpha * (1.0 - 0.8 * lift),
                      shadow=True)

    def shoulder(self, hand: np.ndarray, phi: float) -> np.ndarray:
        """Pivot of an arm that leaves hand position `hand` in direction phi: just outside the frame."""
        dx, dy = math.cos(phi), math.sin(phi)
        ts = [(self.W - hand[0]) / dx if dx > 1e-9 else math.inf, -hand[0] / dx if dx < -1e-9 else math.inf,
              (self.H - hand[1]) / dy if dy > 1e-9 else math.inf, -hand[1] / dy if dy < -1e-9 else math.inf]
        reach = max(0.0, min(ts)) + 0.35 * self.H + 2 * self.hand_w
        return np.array([hand[0] + reach * dx, hand[1] + reach * dy])

    def arm(self, hand_xy: np.ndarray, phi: float, *, shoulder: np.ndarray | None = None, scale=1.0,
            smax: float = 1.0, flip: bool = False) -> _Track:
        """Arm track whose hand centre follows hand_xy [T,2] and whose forearm points at the shoulder.

        The shoulder defaults to the pivot that the first-frame hand position and direction
        phi (hand -> shoulder) give; the arm swings about it as the hand moves.
        """
        key = (smax, flip)
        if key not in self._arms:
            length = 2.2 * math.hypot(self.W, self.H) + 4 * self.hand_w
            self._arms[key] = _arm_sprite(self.rng, self.hand_w, length, self.k * smax, smax, self.skin,
                                          self.sleeve, self.sleeve_at, self.light, flip)
        if shoulder is None:
            shoulder = self.shoulder(hand_xy[0], phi)
        vx, vy = shoulder[0] - hand_xy[:, 0], shoulder[1] - hand_xy[:, 1]
        # once the hand has retracted onto the shoulder, keep the last direction (it is off-frame)
        ang = np.where(np.hypot(vx, vy) > 1e-3 * self.H, np.arctan2(vy, vx), phi)
        return _track(self.T, self._arms[key], "hands", hand_xy[:, 0], hand_xy[:, 1], scale, -np.degrees(ang))

    # -- layout ------------------------------------------------------------------------------

    def side_view(self) -> None:
        """Swap a top-down table view for a side view: vertical motion needs a visible up and down."""
        if self.table_y < 0:
            self.table_y, self.gap = _u(self.rng, 0.25, 0.45) * self.H, _u(self.rng, 0.25, 0.8) * self.H

    def rest_y(self, h: float) -> float:
        """Centre y of an object of height h standing on the table, fully inside the frame."""
        top = max(self.table_y, 0.0)
        lo = max(top + 0.3 * (self.H - top), h + 1.0)
        hi = self.H - max(1.0, 0.04 * self.H)
        return _u(self.rng, lo, max(lo, hi)) - h / 2

    def camera_rest(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.W / 2 + self.shake[:, 0], self.H / 2 + self.shake[:, 1], np.ones(self.T)


@dataclass
class _Plan:
    """What a template director decided: tracks in draw order plus truth in frame units."""

    tracks: list[_Track]
    main: _Track
    size: tuple[float, float]
    camera: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # (cx, cy, zoom)
    center: np.ndarray | None = None  # overrides the main track's centre (torn sheet)
    second: np.ndarray | None = None  # [T,2]
    halves: np.ndarray | None = None  # [T,2,2]
    ground_y: float = float("nan")
    n_objects: int = 1
    shutter: float = 0.0  # exposure as a fraction of the frame interval, for camera-pan motion blur


# ----------------------------------------------------------------------------------------------
# template directors


def _dir_push(c: _Ctx, d: int, pull: bool) -> _Plan:
    rng, H, W, s = c.rng, c.H, c.W, c.s
    spr, w, h = c.object_sprite(_pick(rng, ("box", "rounded", "cup", "can", "box")), _u(rng, 0.15, 0.33) * H)
    dist = min(_u(rng, 0.3, 0.7) * W, W - w - 4)
    xa = _u(rng, w / 2 + 2, W - w / 2 - 2 - dist)
    x_start, x_end = (xa, xa + dist) if d > 0 else (W - xa, W - xa - dist)
    cy0 = c.rest_y(h)
    e = _ease(s, _u(rng, 0, 0.15), _u(rng, 0.8, 1.0), _u(rng, 0, 0.4))
    cx = x_start + (x_end - x_start) * e
    cy = cy0 + _u(rng, -0.03, 0.03) * H * e
    obj = _track(c.T, spr, "object", cx, cy, 1.0, _u(rng, -8, 8) + _u(rng, -6, 6) * e)
    sh = c.contact_shadow(obj, w, h)
    hw = c.hand_w
    if pull:  # hand grips the leading side, arm reaches back towards the body along the motion
        hand = _attach(obj, d * (w / 2 - 0.15 * hw), -_u(rng, 0.05, 0.3) * h)
        phi = math.atan2(_u(rng, 0.35, 1.0), d)
        sho = c.shoulder(hand[-1], phi)  # pivot placed from the end pose: the hand pulls towards the body
        tracks = [sh, obj, c.arm(hand, phi, shoulder=sho, flip=d < 0)]
    else:  # hand presses the trailing side, arm trails behind the object
        hand = _attach(obj, -d * (w / 2 + 0.25 * hw), _u(rng, -0.1, 0.25) * h)
        tracks = [sh, c.arm(hand, math.atan2(_u(rng, 0.25, 0.9), -d), flip=d > 0), obj]
    return _Plan(tracks, obj, (w, h))


def _dir_vertical(c: _Ctx, up: bool) -> _Plan:
    c.side_view()
    rng, H, W, s = c.rng, c.H, c.W, c.s
    spr, w, h = c.object_sprite(_pick(rng, ("box", "rounded", "cup", "can", "ball")), _u(rng, 0.15, 0.3) * H)
    x = _u(rng, max(w / 2 + 2, 0.2 * W), min(W - w / 2 - 2, 0.8 * W))
    y_rest = c.rest_y(h)
    y_top = max(y_rest - _u(rng, 0.25, 0.5) * H, h / 2 + 2)
    y_from, y_to = (y_rest, y_top) if up else (y_top, y_rest)
    e = _ease(s, _u(rng, 0, 0.15), _u(rng, 0.8, 1.0), _u(rng, 0, 0.3))
    obj = _track(c.T, spr, "object", x + _u(rng, -0.04, 0.04) * W * e, y_from + (y_to - y_from) * e,
                 1.0, _u(rng, -6, 6) + _u(rng, -5, 5) * e)
    sh = c.ground_shadow(obj, w, h, y_rest + 0.5 * h)
    side = 1 if rng.random() < 0.5 else -1
    hand = _attach(obj, side * (w / 2 - 0.1 * c.hand_w), _u(rng, -0.15, 0.15) * h)
    arm = c.arm(hand, math.atan2(_u(rng, 0.5, 1.2), side), flip=side < 0)
    return _Plan([sh, obj, arm], obj, (w, h), ground_y=y_rest + 0.5 * h)


def _dir_depth(c: _Ctx, towards: bool) -> _Plan:
    rng, H, W, s = c.rng, c.H, c.W, c.s
    S = _u(rng, 1.6, 2.3)
    spr, w, h = c.object_sprite(_pick(rng, ("box", "rounded", "cup", "can", "ball")), _u(rng, 0.13, 0.2) * H,
                                smax=S, max_w=0.4 * W / S)
    x0 = _u(rng, max(w / 2 + 2, 0.3 * W), min(W - w / 2 - 2, 0.7 * W))
    y0 = min(c.rest_y(h), 0.62 * H)
    x1 = float(np.clip(x0 + (W / 2 - x0) * _u(rng, 0.2, 0.6), S * w / 2 + 2, W - S * w / 2 - 2))
    y1 = float(np.clip(y0 + _u(rng, 0.05, 0.15) * H, S * h / 2 + 2, H - S * h / 2 - 2))
    e = _ease(s, _u(rng, 0, 0.15), _u(rng, 0.8, 1.0), _u(rng, 0, 0.3))
    obj = _track(c.T, spr, "object", x0 + (x1 - x0) * e, y0 + (y1 - y0) * e, 1.0 + (S - 1.0) * e,
                 _u(rng, -6, 6) + _u(rng, -6, 6) * e)
    hand = _attach(obj, _u(rng, -0.2, 0.2) * w, h / 2 + 0.1 * c.hand_w)
    arm = c.arm(hand, math.atan2(1.0, _u(rng, -0.5, 0.5)), scale=obj.scale, smax=S, flip=rng.random() < 0.5)
    tracks = [obj, arm]
    if not towards:  # the same movement played backwards: starts near the camera, recedes
        tracks = [t.reversed() for t in tracks]
    return _Plan(tracks, tracks[0], (w, h))


def _dir_pan(c: _Ctx, sx: int, sy: int) -> _Plan:
    """Camera turns; scene content moves by (sx, sy) in the frame (+1 = right / down)."""
    rng, H, W, s = c.rng, c.H, c.W, c.s
    pan = _u(rng, 0.12, 0.3) * (W if sx else H)
    e = _ease(s, _u(rng, 0, 0.1), _u(rng, 0.9, 1.0), _u(rng, 0.3, 0.7))
    wob = _wobble(rng, c.T, _u(rng, 0.5, 2.5), 15, 60)
    cam_x = W / 2 - sx * pan * e + (wob if sy else 0) + c.shake[:, 0]
    cam_y = H / 2 - sy * pan * e + (wob if sx else 0) + c.shake[:, 1]
    spr, w, h = c.object_sprite(_pick(rng, ("box", "rounded", "cup", "can", "ball")), _u(rng, 0.15, 0.33) * H)
    lo_x, hi_x = cam_x.max() - W / 2 + w / 2 + 2, cam_x.min() + W / 2 - w / 2 - 2
    lo_y, hi_y = cam_y.max() - H / 2 + h / 2 + 2, cam_y.min() + H / 2 - h / 2 - 2
    cx = _u(rng, lo_x, hi_x)
    cy = float(np.clip(c.rest_y(h), min(lo_y, hi_y), max(lo_y, hi_y)))
    obj = _track(c.T, spr, "object", cx, cy, 1.0, _u(rng, -8, 8))
    return _Plan([c.contact_shadow(obj, w, h), obj], obj, (w, h), camera=(cam_x, cam_y, np.ones(c.T)),
                 shutter=_u(rng, 0.3, 0.8))


def _dir_zoom(c: _Ctx, approach: bool) -> _Plan:
    rng, H, W, s = c.rng, c.H, c.W, c.s
    Z = _u(rng, 1.3, 1.75)
    c.k = min(Z, 1.75)  # world resolution so the zoomed-in end of the clip stays sharp
    spr, w, h = c.object_sprite(_pick(rng, ("box", "rounded", "cup", "can", "ball")), _u(rng, 0.15, 0.3) * H)
    cx = _u(rng, max(0.3 * W, w / 2 + 2), min(0.7 * W, W - w / 2 - 2))
    cy = c.rest_y(h)
    frac = _u(rng, 0.4, 0.9)  # how far the camera re-centres on the object while approaching
    ex = float(np.clip(W / 2 + frac * (cx - W / 2), W / (2 * Z), W - W / (2 * Z)))
    ey = float(np.clip(H / 2 + frac * (cy - H / 2), H / (2 * Z), H - H / (2 * Z)))
    e = _ease(s, _u(rng, 0, 0.1), _u(rng, 0.85, 1.0), _u(rng, 0.5, 0.9))
    zoom = Z ** e  # geometric: constant apparent approach speed
    cam_x, cam_y = W / 2 + (ex - W / 2) * e, H / 2 + (ey - H / 2) * e
    if not approach:
        zoom, cam_x, cam_y = zoom[::-1], cam_x[::-1], cam_y[::-1]
    obj = _track(c.T, spr, "object", cx, cy, 1.0, _u(rng, -8, 8))
    camera = (cam_x + c.shake[:, 0] / zoom, cam_y + c.shake[:, 1] / zoom, zoom.copy())
    return _Plan([c.contact_shadow(obj, w, h), obj], obj, (w, h), camera=camera)


def _dir_fall(c: _Ctx) -> _Plan:
    c.side_view()
    rng, H, W, s = c.rng, c.H, c.W, c.s
    spr, w, h = c.object_sprite(_pick(rng, ("box", "rounded", "cup", "can", "ball")), _u(rng, 0.12, 0.26) * H)
    top = max(c.table_y, 0.0)
    lo = max(top + 0.3 * (H - top), 0.6 * H, h + 1)
    base = _u(rng, lo, max(lo, H - max(1.0, 0.04 * H)))
    y_g = base - h / 2
    y_top = _u(rng, h / 2 + 1, h / 2 + 1 + 0.1 * H)
    s_i = _u(rng, 0.5, 0.72)  # moment of impact
    g = 2 * (y_g - y_top) / s_i ** 2  # constant acceleration that lands exactly at s_i
    # small rebound that settles before the clip ends (it lasts 2 * restitution * s_i)
    v_b = min(_u(rng, 0.1, 0.25), 0.8 * (1 - s_i) / (2 * s_i)) * g * s_i
    tau = s - s_i
    bounce = np.where(tau < 2 * v_b / g, y_g - v_b * tau + 0.5 * g * tau ** 2, y_g)
    y = np.where(s < s_i, y_top + 0.5 * g * s ** 2, bounce)
    x = _u(rng, max(w / 2 + 2, 0.15 * W), min(W - w / 2 - 2, 0.85 * W))
    tumble = _u(rng, -90, 90)
    obj = _track(c.T, spr, "object", x, y, 1.0, _u(rng, -10, 10) + tumble * np.clip(s / s_i, 0, 1))
    sh = c.ground_shadow(obj, w, h, base)
    phi = math.atan2(-1.0, _u(rng, -0.7, 0.7))  # the releasing hand reaches in from above
    hand = np.tile([x + _u(rng, -0.15, 0.15) * w, y_top - h / 2 + 0.1 * c.hand_w], (c.T, 1))
    sho = c.shoulder(hand[0], phi)
    hand = _withdraw(hand, s, sho, _u(rng, 0.05, 0.2), _u(rng, 0.5, 0.8))
    return _Plan([sh, obj, c.arm(hand, phi, shoulder=sho, flip=rng.random() < 0.5)], obj, (w, h), ground_y=base)


def _dir_spin(c: _Ctx, stops: bool) -> _Plan:
    rng, H, W, s = c.rng, c.H, c.W, c.s
    q = _u(rng, 0.55, 0.9)  # the object lies on the table, seen obliquely
    spr, w, h = c.object_sprite(_pick(rng, ("box", "rounded", "ball", "box")), _u(rng, 0.15, 0.3) * H,
                                mark=True)
    R = math.hypot(w, h) / 2
    cx = _u(rng, max(R + 2, 0.2 * W), min(W - R - 2, 0.8 * W))
    cy = c.rest_y(2 * R * q)
    sign = 1 if rng.random() < 0.5 else -1
    a0 = rng.uniform(0, 360)
    if stops:
        w0, s_stop = _u(rng, 500, 900), _u(rng, 0.25, 0.5)  # deg per clip-time; stops by mid-clip
        ss = np.minimum(s, s_stop)
        angle = a0 + sign * w0 * (ss - ss ** 2 / (2 * s_stop))
    else:
        om, dec = _u(rng, 360, 800), _u(rng, 0.0, 0.3)
        angle = a0 + sign * om * (s - dec * s ** 2 / 2)
    obj = _track(c.T, spr, "object", cx, cy, 1.0, angle, squash=q)
    # the shadow is the blurred silhouette, so it turns with the object
    blur = 0.04 * h * c.k + 0.6
    pad = math.ceil(3 * blur) + 1
    sil = Image.new("L", (spr.image.size[0] + 2 * pad, spr.image.size[1] + 2 * pad), 0)
    sil.paste(spr.image.getchannel("A"), (pad, pad))
    sil = sil.filter(ImageFilter.GaussianBlur(float(blur)))
    sh_spr = _Sprite(sil, (spr.anchor[0] + pad, spr.anchor[1] + pad), spr.res, 0.0)
    sh = _track(c.T, sh_spr, "object", cx + c.shadow_dx * w, cy + 0.06 * h, 1.0, angle, squash=q,
                opacity=np.full(c.T, c.shadow_alpha), shadow=True)
    side = 1 if rng.random() < 0.5 else -1
    phi = math.atan2(_u(rng, 0.3, 1.0), side)
    hand = np.tile([cx + side * (R * 0.9 + 0.25 * c.hand_w), cy + _u(rng, -0.3, 0.3) * R * q], (c.T, 1))
    sho = c.shoulder(hand[0], phi)
    hand = _withdraw(hand, s, sho, _u(rng, 0.02, 0.08), _u(rng, 0.3, 0.45))
    return _Plan([sh, obj, c.arm(hand, phi, shoulder=sho, flip=side < 0)], obj, (w, h))


def _dir_cover(c: _Ctx, uncover: bool) -> _Plan:
    rng, H, W, s = c.rng, c.H, c.W, c.s
    shape = _pick(rng, ("box", "rounded", "cup", "can", "ball"))
    spr, w, h = c.object_sprite(shape, _u(rng, 0.13, 0.24) * H, aspect=min(_u(rng, *_ASPECTS[shape]), 1.3))
    cx = _u(rng, max(0.25 * W, w / 2 + 2), min(0.75 * W, W - w / 2 - 2))
    cy = c.rest_y(h)
    obj = _track(c.T, spr, "object", cx, cy)
    sh = c.contact_shadow(obj, w, h)
    # union of the object's and its shadow's footprints: the cover must hide both entirely
    sa = np.asarray(sh.sprite.image)
    ys, xs = np.nonzero(sa > 0)
    r = c.k
    sx0 = (xs.min() - sh.sprite.anchor[0]) / r + c.shadow_dx * w
    sx1 = (xs.max() + 1 - sh.sprite.anchor[0]) / r + c.shadow_dx * w
    sy0 = (ys.min() - sh.sprite.anchor[1]) / r + 0.42 * h
    sy1 = (ys.max() + 1 - sh.sprite.anchor[1]) / r + 0.42 * h
    ux0, ux1 = min(-w / 2, sx0), max(w / 2, sx1)
    uy0, uy1 = min(-h / 2, sy0), max(h / 2, sy1)
    ccx, ccy = cx + (ux0 + ux1) / 2, cy + (uy0 + uy1) / 2
    cw = (ux1 - ux0) * _u(rng, 1.15, 1.4) + 6  # +3 px each side for antialiasing and warp blur
    ch = (uy1 - uy0) * _u(rng, 1.15, 1.4) + 6
    ccol = c.object_colour(avoid=(np.asarray(spr.image)[..., :3].reshape(-1, 3).mean(0),))
    cspr, _, _ = c.object_sprite(_pick(rng, ("cloth", "box")), ch, aspect=cw / ch, colour=ccol, max_w=1e9,
                                 pattern=_pick(rng, ("stripes", "checker", "camo", "band", "dots")))
    # start clear of the object but with the cover's centre inside the frame, so it is seen coming
    need_x, need_y = cw / 2 + (ux1 - ux0) / 2 + 4, ch / 2 + (uy1 - uy0) / 2 + 4
    room = {1: 0.97 * W - ccx, -1: ccx - 0.03 * W}
    sides = [sd for sd in (1, -1) if room[sd] >= need_x] or [max(room, key=room.get)]
    side = sides[int(rng.integers(len(sides)))]
    if rng.random() < 0.8 or H - ccy < need_y:  # slides in from a side
        dist = _u(rng, need_x, max(need_x, room[side]))
        start = (ccx + side * dist, ccy + _u(rng, -0.05, 0.05) * H)
        local = (side * (cw / 2 - 0.35 * c.hand_w), _u(rng, -0.25, 0.25) * ch)
        phi = math.atan2(_u(rng, 0.3, 1.0), side)
    else:  # brought in from the front (bottom of the frame)
        start = (ccx + _u(rng, -0.1, 0.1) * W, ccy + _u(rng, need_y, max(need_y, H - ccy)))
        local = (_u(rng, -0.2, 0.2) * cw, ch / 2 - 0.35 * c.hand_w)
        phi = math.atan2(1.0, _u(rng, -0.4, 0.4))
    s_a = _u(rng, 0.55, 0.8)
    e = _ease(s, _u(rng, 0, 0.1), s_a, _u(rng, 0, 0.3))
    cover = _track(c.T, cspr, "second", start[0] + (ccx - start[0]) * e, start[1] + (ccy - start[1]) * e,
                   1.0, _u(rng, -10, 10) * (1 - e))
    csh = c.contact_shadow(cover, cw, 0.3 * ch)
    csh.opacity *= 0.6
    hand = _attach(cover, *local)
    sho = c.shoulder(_freeze_after(hand, s, s_a)[-1], phi)
    hand = _withdraw(hand, s, sho, s_a, min(1.0, s_a + _u(rng, 0.2, 0.35)))
    tracks = [sh, obj, csh, cover, c.arm(hand, phi, shoulder=sho, flip=side < 0)]
    if uncover:  # covering played backwards: hand comes in, lifts the cover away
        tracks = [t.reversed() for t in tracks]
    cov = tracks[3]
    return _Plan(tracks, tracks[1], (w, h), second=np.stack([cov.cx, cov.cy], 1), n_objects=2)


def _dir_pair(c: _Ctx, closer: bool) -> _Plan:
    rng, H, W, s = c.rng, c.H, c.W, c.s
    sa, wa, ha = c.object_sprite(_pick(rng, ("box", "rounded", "cup", "can", "ball")), _u(rng, 0.14, 0.28) * H,
                                 max_w=0.25 * W)
    sb, wb, hb = c.object_sprite(_pick(rng, ("box", "rounded", "cup", "can", "ball")), _u(rng, 0.14, 0.28) * H,
                                 max_w=0.25 * W)
    touch = (wa + wb) / 2
    d_far = max(min(_u(rng, 0.5, 0.75) * W, W - touch - 4), touch + 2)
    d_near = min(touch + _u(rng, 0.0, 0.1) * W, d_far - 0.15 * W)
    d_near = max(d_near, touch + 1)
    mid = _u(rng, d_far / 2 + wa / 2 + 2, W - d_far / 2 - wb / 2 - 2)
    f = _u(rng, 0.3, 0.7)  # share of the approach done by the left object
    e = _ease(s, _u(rng, 0, 0.15), _u(rng, 0.8, 1.0), _u(rng, 0, 0.3))
    gap = d_far - (d_far - d_near) * e
    ya = c.rest_y(ha)
    # both stand on about the same line of the table, so "closer" / "apart" reads as side by side
    yb = float(np.clip(ya + (ha - hb) / 2 + _u(rng, -0.05, 0.05) * H, hb / 2 + 1, H - hb / 2 - 1))
    A = _track(c.T, sa, "object", mid - d_far / 2 + f * (d_far - gap), ya, 1.0, _u(rng, -6, 6))
    B = _track(c.T, sb, "second", mid + d_far / 2 - (1 - f) * (d_far - gap), yb, 1.0, _u(rng, -6, 6))
    ha_xy = _attach(A, -(wa / 2 + 0.1 * c.hand_w), _u(rng, -0.15, 0.15) * ha)
    hb_xy = _attach(B, wb / 2 + 0.1 * c.hand_w, _u(rng, -0.15, 0.15) * hb)
    tracks = [c.contact_shadow(A, wa, ha), c.contact_shadow(B, wb, hb), A, B,
              c.arm(ha_xy, math.atan2(_u(rng, 0.3, 0.9), -1.0), flip=False),
              c.arm(hb_xy, math.atan2(_u(rng, 0.3, 0.9), 1.0), flip=True)]
    if not closer:
        tracks = [t.reversed() for t in tracks]
    A, B = tracks[2], tracks[3]
    return _Plan(tracks, A, (wa, ha), second=np.stack([B.cx, B.cy], 1), n_objects=2)


def _dir_throw(c: _Ctx) -> _Plan:
    c.side_view()
    rng, H, W, s = c.rng, c.H, c.W, c.s
    spr, w, h = c.object_sprite(_pick(rng, ("ball", "ball", "box", "can", "rounded")), _u(rng, 0.12, 0.22) * H,
                                mark=True)
    s_r, s_c = _u(rng, 0.1, 0.2), _u(rng, 0.78, 0.92)  # release, catch
    fl, m = s_c - s_r, max(s_r, 1 - s_c)
    y_max = H - h / 2 - 1
    peak = min(_u(rng, 0.3, 0.55) * H, (y_max - h / 2 - 1) / (1 + 2 * m / fl))
    v = 4 * peak / fl  # launch speed that peaks `peak` px higher and returns at s_c
    g = 2 * v / fl
    y_r = _u(rng, h / 2 + 1 + peak, y_max - 0.5 * v * m)
    y = np.where(s < s_r, y_r + 0.5 * v * s_r - 0.5 * (v / s_r) * s ** 2,  # accelerating throw
                 np.where(s <= s_c, y_r - v * (s - s_r) + 0.5 * g * (s - s_r) ** 2,  # ballistic flight
                          y_r + v * (s - s_c) - 0.5 * (v / (1 - s_c)) * (s - s_c) ** 2))  # cushioned catch
    drift = _u(rng, -0.12, 0.12) * W
    x_r = _u(rng, w / 2 + 2 + max(0, -drift) + 0.1 * W, W - w / 2 - 2 - max(0, drift) - 0.1 * W)
    fly = np.clip((s - s_r) / fl, 0, 1)
    obj = _track(c.T, spr, "object", x_r + drift * fly, y, 1.0, _u(rng, -10, 10) + _u(rng, -360, 360) * fly)
    in_air = (s > s_r) & (s < s_c)
    palm = h / 2 + 0.1 * c.hand_w
    hand = np.stack([obj.cx, np.where(in_air, y_r + palm, y + palm)], 1)
    arm = c.arm(hand, math.atan2(1.0, _u(rng, -0.5, 0.5)), flip=rng.random() < 0.5)
    return _Plan([obj, arm], obj, (w, h))


def _dir_tear(c: _Ctx) -> _Plan:
    rng, H, W, s = c.rng, c.H, c.W, c.s
    kind = int(rng.integers(3))
    colour = (_hsv(rng.random(), _u(rng, 0, 0.08), _u(rng, 0.85, 0.97)) if kind == 0 else
              _hsv(rng.random(), _u(rng, 0, 0.05), _u(rng, 0.6, 0.8)) if kind == 1 else
              c.object_colour())
    h = max(4.0, _u(rng, 0.2, 0.32) * H)
    w = max(4.0, min(h * _u(rng, *_ASPECTS["sheet"]), 0.4 * W))
    r = c.k
    whole, rgb = _object_sprite(rng, "sheet", w, h, colour, r, 1.0, c.light,
                                pattern=_pick(rng, ("text", "text", "stripes", "camo")))
    img = np.asarray(whole.image)
    HI, WI = img.shape[:2]
    # jagged tear line x(y) in sprite pixels around the middle
    steps = rng.normal(0, 0.6 * r, HI).cumsum()
    tear = np.clip(WI / 2 + _u(rng, -0.08, 0.08) * w * r + steps - steps.mean(), 0.35 * WI, 0.65 * WI)
    xs = np.arange(WI, dtype=np.float32)[None, :] + 0.5
    left = np.clip(tear[:, None] - xs + 0.5, 0, 1)
    a = img[..., 3].astype(np.float32)
    aL = np.round(a * left)
    aR = a - aL  # exact partition: the halves add up to the sheet
    fibre = np.clip(1.5 - np.abs(xs - tear[:, None]), 0, 1)[..., None]  # white paper fibres on the torn edge
    rgb_t = np.clip(rgb + (255.0 - rgb) * 0.5 * fibre, 0, 255).astype(np.uint8)

    def half(alpha: np.ndarray) -> _Sprite:
        tot = alpha.sum()
        yy, xx = np.mgrid[0:HI, 0:WI]
        anchor = (float((alpha * (xx + 0.5)).sum() / tot), float((alpha * (yy + 0.5)).sum() / tot))
        return _Sprite(Image.fromarray(np.dstack([rgb_t, alpha.astype(np.uint8)])), anchor, 1.0, float(tot / 255))

    sL, sR = half(aL), half(aR)
    cx = _u(rng, max(0.3 * W, w / 2 + 2), min(0.7 * W, W - w / 2 - 2))
    cy = _u(rng, max(0.35 * H, h / 2 + 2), min(0.6 * H, H - h / 2 - 2))
    a0 = _u(rng, -5, 5)
    s_t = _u(rng, 0.25, 0.45)
    e = _ease(s, s_t, _u(rng, 0.85, 1.0), _u(rng, 0, 0.3))
    sep, fL = min(_u(rng, 0.25, 0.45) * W, max(W - w, 0.1 * W)), _u(rng, 0.4, 0.6)
    tracks_h = []
    for spr_h, dx, rot in ((sL, -sep * fL, _u(rng, 5, 25)), (sR, sep * (1 - fL), -_u(rng, 5, 25))):
        off = ((spr_h.anchor[0] - whole.anchor[0]) / r, (spr_h.anchor[1] - whole.anchor[1]) / r)
        ca, sa = math.cos(math.radians(a0)), math.sin(math.radians(a0))
        px = cx + ca * off[0] + sa * off[1]
        py = cy - sa * off[0] + ca * off[1]
        tracks_h.append(_track(c.T, spr_h, "object", px + dx * e, py + _u(rng, -0.06, 0.06) * H * e, 1.0,
                               a0 + rot * e, visible=s >= s_t))
    L, R = tracks_h
    sheet = _track(c.T, whole, "object", cx, cy, 1.0, a0, visible=s < s_t)
    # hands hold the top corners, given in each half's local frame
    arms = []
    for tr, spr_h, corner, sgn in ((L, sL, (-0.38 * w, -0.36 * h), -1), (R, sR, (0.38 * w, -0.36 * h), 1)):
        lx = corner[0] - (spr_h.anchor[0] - whole.anchor[0]) / r
        ly = corner[1] - (spr_h.anchor[1] - whole.anchor[1]) / r
        phi = math.atan2(_u(rng, 0.6, 1.2), sgn * _u(rng, 0.2, 0.8))
        arms.append(c.arm(_attach(tr, lx, ly), phi, flip=sgn > 0))
    halves = np.stack([np.stack([L.cx, L.cy], 1), np.stack([R.cx, R.cy], 1)], 1)
    center = np.stack([cx + (L.cx - L.cx[0] + R.cx - R.cx[0]) / 2, cy + (L.cy - L.cy[0] + R.cy - R.cy[0]) / 2], 1)
    return _Plan([sheet, L, R] + arms, sheet, (w, h), center=center, halves=halves)


def _dir_roll(c: _Ctx) -> _Plan:
    rng, H, W, s = c.rng, c.H, c.W, c.s
    spr, w, h = c.object_sprite("ball", _u(rng, 0.14, 0.28) * H, aspect=1.0, mark=True,
                                pattern=_pick(rng, ("stripes", "checker", "dots", "rings", "band")))
    rad = w / 2
    d = 1 if rng.random() < 0.5 else -1
    dist = min(_u(rng, 0.35, 0.7) * W, W - w - 4)
    xa = _u(rng, w / 2 + 2, W - w / 2 - 2 - dist)
    x_start = xa if d > 0 else W - xa
    s_p, beta = _u(rng, 0.1, 0.25), _u(rng, 0.2, 0.8)  # push phase, then rolling friction

    def travelled(t):
        return np.where(t <= s_p, t ** 2 / (2 * s_p),
                        s_p / 2 + (t - s_p) - beta * (t - s_p) ** 2 / (2 * (1 - s_p)))

    cx = x_start + d * dist * travelled(s) / travelled(np.array(1.0))
    cy = c.rest_y(h)
    a0 = rng.uniform(0, 360)
    # rolling without slipping: moving right turns the ball clockwise (negative angle)
    obj = _track(c.T, spr, "object", cx, cy, 1.0, a0 - np.degrees((cx - x_start) / rad))
    sh = c.contact_shadow(obj, w, h)
    phi = math.atan2(_u(rng, 0.2, 0.8), -d)
    hand = np.stack([cx - d * (rad + 0.25 * c.hand_w), np.full(c.T, cy + _u(rng, -0.2, 0.2) * rad)], 1)
    sho = c.shoulder(_freeze_after(hand, s, s_p)[-1], phi)
    hand = _withdraw(hand, s, sho, s_p, min(1.0, s_p + _u(rng, 0.4, 0.7)))
    return _Plan([sh, c.arm(hand, phi, shoulder=sho, flip=d > 0), obj], obj, (w, h))


_DIRECTORS: dict[str, Callable[[_Ctx], _Plan]] = {
    "Pushing something from left to right": lambda c: _dir_push(c, 1, pull=False),
    "Pushing something from right to left": lambda c: _dir_push(c, -1, pull=False),
    "Pulling something from left to right": lambda c: _dir_push(c, 1, pull=True),
    "Pulling something from right to left": lambda c: _dir_push(c, -1, pull=True),
    "Moving something up": lambda c: _dir_vertical(c, up=True),
    "Moving something down": lambda c: _dir_vertical(c, up=False),
    "Moving something towards the camera": lambda c: _dir_depth(c, towards=True),
    "Moving something away from the camera": lambda c: _dir_depth(c, towards=False),
    # turning the camera one way moves the filmed content the opposite way in the frame
    "Turning the camera left while filming something": lambda c: _dir_pan(c, 1, 0),
    "Turning the camera right while filming something": lambda c: _dir_pan(c, -1, 0),
    "Turning the camera upwards while filming something": lambda c: _dir_pan(c, 0, 1),
    "Turning the camera downwards while filming something": lambda c: _dir_pan(c, 0, -1),
    "Approaching something with your camera": lambda c: _dir_zoom(c, approach=True),
    "Moving away from something with your camera": lambda c: _dir_zoom(c, approach=False),
    "Something falling like a rock": _dir_fall,
    "Spinning something so it continues spinning": lambda c: _dir_spin(c, stops=False),
    "Spinning something that quickly stops spinning": lambda c: _dir_spin(c, stops=True),
    "Covering something with something": lambda c: _dir_cover(c, uncover=False),
    "Uncovering something": lambda c: _dir_cover(c, uncover=True),
    "Moving something and something closer to each other": lambda c: _dir_pair(c, closer=True),
    "Moving something and something away from each other": lambda c: _dir_pair(c, closer=False),
    "Throwing something in the air and catching it": _dir_throw,
    "Tearing something into two pieces": _dir_tear,
    "Rolling something on a flat surface": _dir_roll,
}


# ----------------------------------------------------------------------------------------------
# background


def _paint_background(c: _Ctx, wc: int, hc: int, X0: float, Y0: float) -> Image.Image:
    """Wall + perspective table top on a wc x hc world canvas whose origin is frame point (X0, Y0)."""
    rng, k, H = c.rng, c.k, c.H
    img = np.empty((hc, wc, 3), np.float32)
    ty = (c.table_y - Y0) * k
    ty_i = int(np.clip(math.ceil(ty), 0, hc))
    if ty_i > 0:  # wall: plaster noise, maybe wallpaper stripes, a few fixtures
        n = _value_noise(rng, ty_i, wc, cell=_u(rng, 0.08, 0.25) * H * k, octaves=4)
        wall = c.wall[None, None, :] * (0.9 + 0.2 * n)[..., None]
        if rng.random() < 0.4:
            period = _u(rng, 0.04, 0.12) * H * k
            stripe = np.sin(2 * np.pi * (np.arange(wc) + 0.5) / period) > 0
            wall *= (1.0 - 0.07 * stripe)[None, :, None]
        for _ in range(int(rng.integers(0, 4))):
            fw, fh = int(_u(rng, 0.12, 0.35) * H * k), int(_u(rng, 0.1, 0.3) * H * k)
            fx, fy = int(rng.integers(0, max(1, wc - fw))), int(rng.integers(0, max(1, ty_i - fh // 2)))
            kind = int(rng.integers(3))
            region = wall[fy:fy + fh, fx:fx + fw]
            if region.size == 0:
                continue
            if kind == 0:  # framed picture
                border = max(1, int(0.1 * min(fw, fh)))
                region[:] = _hsv(rng.random(), _u(rng, 0, 0.5), _u(rng, 0.1, 0.6))
                inner = region[border:-border or None, border:-border or None]
                if inner.size:
                    pn = _value_noise(rng, inner.shape[0], inner.shape[1], cell=max(2.0, 0.3 * fh), octaves=3)
                    ca, cb = _hsv(rng.random(), 0.6, 0.8), _hsv(rng.random(), 0.5, 0.4)
                    inner[:] = ca + (cb - ca) * pn[..., None]
            elif kind == 1:  # window with bars
                region[:] = _hsv(_u(rng, 0.5, 0.62), _u(rng, 0.1, 0.4), _u(rng, 0.8, 1.0))
                bar = max(1, int(0.06 * min(fw, fh)))
                region[:, fw // 2 - bar // 2: fw // 2 + bar - bar // 2] = 235
                region[fh // 2 - bar // 2: fh // 2 + bar - bar // 2, :] = 235
                region[:bar], region[-bar:], region[:, :bar], region[:, -bar:] = 235, 235, 235, 235
            else:  # poster
                pc = _hsv(rng.random(), _u(rng, 0.3, 0.9), _u(rng, 0.4, 0.95))
                region[:] = pc
                for j in range(0, region.shape[0], max(2, fh // 6)):
                    region[j:j + max(1, fh // 14), int(0.1 * fw):int(_u(rng, 0.4, 0.9) * fw)] = pc * 0.4
        img[:ty_i] = wall
        # soft shadow where the wall meets the table
        band = max(1, int(0.04 * H * k))
        lo = max(0, ty_i - band)
        img[lo:ty_i] *= np.linspace(1.0, 0.8, ty_i - lo, dtype=np.float32)[:, None, None]
    if ty_i < hc:  # table top in perspective: (u, z) are lateral / depth coordinates on its plane
        rows = np.arange(ty_i, hc, dtype=np.float32) + 0.5
        vy = ty - c.gap * k  # horizon
        d = rows - vy
        d_ref = float(hc - vy)
        zc = d_ref / d
        z = d_ref * zc
        xs = np.arange(wc, dtype=np.float32) + 0.5 - (c.W / 2 - X0) * k
        u = xs[None, :] * zc[:, None]
        sz, su = (d / d_ref) ** 2, d / d_ref  # screen px per plane unit (depth, lateral)
        nh = hc - ty_i
        noise = _value_noise(rng, nh, wc, cell=0.15 * H * k, octaves=3)
        style = c.table_style
        if style <= 1:  # wood boards, across or along the view direction
            period, board = _u(rng, 8, 18) * k, _u(rng, 0.12, 0.3) * H * k
            along, scr = (z[:, None] + 0 * u, sz) if style == 0 else (u, su)
            across = u if style == 0 else z[:, None] + 0 * u
            idx = np.floor(along / board)
            shade = 1.0 + 0.15 * (np.sin(idx * 12.9898) * 43758.5453 % 1.0 - 0.5)
            # growth rings: a coarse wavy line pattern plus a fainter finer one, with varying contrast
            phase = 2 * np.pi * (along + noise * _u(rng, 4, 14) * k + 0.02 * across) / period + 3 * noise
            grain = (0.7 * np.sin(phase) + 0.3 * np.sin(2.3 * phase + 1.0)) * (0.5 + noise)
            fade = np.clip((period / 2.3 * scr - 1.2) / 2.0, 0, 1)[:, None]
            p = 0.5 + 0.35 * grain * fade
            seam = (along / board) % 1.0 < np.maximum(0.6, 0.02 * board) / board
            p = p * shade - 0.35 * seam * fade
        elif style == 2:  # gingham cloth
            cell = _u(rng, 0.06, 0.15) * H * k
            a = np.floor(u / cell) % 2
            b = np.floor(z / cell)[:, None] % 2
            fade = np.clip((cell * np.minimum(sz, su) - 1.5) / 3.0, 0, 1)[:, None]
            p = 0.5 + ((a + b) / 2 - 0.5) * fade + 0.08 * (noise - 0.5)
        elif style == 3:  # striped cloth
            cell = _u(rng, 0.04, 0.12) * H * k
            p = 0.5 + ((np.floor(u / cell) % 2) - 0.5) * np.clip((cell * su - 1.5) / 3.0, 0, 1)[:, None]
            p = p + 0.1 * (noise - 0.5)
        else:  # laminate / stone: mottled with speckles
            speck = rng.random((nh, wc), dtype=np.float32) < 0.01
            p = 0.3 + 0.5 * noise + 0.3 * speck
        p = np.clip(p, 0, 1.2)[..., None]
        img[ty_i:] = c.table_dark + (c.table_light - c.table_dark) * p
        if ty_i > 0:  # the table's far edge
            edge = max(1, int(0.012 * H * k))
            img[ty_i:ty_i + edge] *= 0.75
    # world-fixed directional light, and a little static grain
    amp = _u(rng, 0.05, 0.25)
    lx, ly = c.light[0], c.light[1]
    gx = (np.arange(wc, dtype=np.float32) / wc - 0.5) * (-lx)
    gy = (np.arange(hc, dtype=np.float32) / hc - 0.5) * (-ly)
    img *= (1.0 + 2 * amp * (gx[None, :] + gy[:, None]))[..., None]
    img += rng.normal(0, 2.0, (hc, wc, 1)).astype(np.float32)
    bg = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    _add_clutter(c, bg, X0, Y0)
    return bg


def _add_clutter(c: _Ctx, bg: Image.Image, X0: float, Y0: float) -> None:
    """A few small static objects at the far side of the table, for realism and texture."""
    rng, k, H = c.rng, c.k, c.H
    top = max(c.table_y, Y0)
    for _ in range(int(rng.integers(0, 3))):
        spr, _w, h = c.object_sprite(_pick(rng, ("box", "cup", "can", "rounded", "ball")), _u(rng, 0.06, 0.13) * H)
        x = _u(rng, X0, X0 + bg.size[0] / k)
        y = top + _u(rng, 0.0, 0.15) * (H - max(c.table_y, 0.0)) - h / 2
        out = _warp(spr, (x - X0) * k, (y - Y0) * k, 1.0 / spr.res, 0.0, 1.0, *bg.size)
        if out is not None:
            bg.paste(out[0], (out[1], out[2]), out[0])


# ----------------------------------------------------------------------------------------------
# rendering


def _render(c: _Ctx, plan: _Plan, hide: frozenset, template: str) -> tuple[np.ndarray, dict]:
    H, W, T, k = c.H, c.W, c.T, c.k
    cam_x, cam_y, zoom = plan.camera if plan.camera is not None else c.camera_rest()
    tracks = plan.tracks
    static = all(tr.is_static() for tr in tracks)
    # Moving objects under a fixed-zoom camera: draw them (at exact subpixel positions) straight
    # into frame-sized crops of the background, which is pre-shifted to quarter-pixel camera
    # phases and cached, instead of resampling a full composited stage every frame.  The
    # background may thus sit up to 1/8 px off the exact (shaking) camera; objects do not.
    direct = not static and k == 1.0 and bool(np.all(zoom == 1.0))
    half_w, half_h = W / (2 * zoom), H / (2 * zoom)
    # world canvas = union of all camera windows plus a margin for resampling
    X0 = math.floor(float((cam_x - half_w).min())) - 2
    Y0 = math.floor(float((cam_y - half_h).min())) - 2
    X1 = math.ceil(float((cam_x + half_w).max())) + 2
    Y1 = math.ceil(float((cam_y + half_h).max())) + 2
    wc, hc = math.ceil((X1 - X0) * k), math.ceil((Y1 - Y0) * k)
    background = _paint_background(c, wc, hc, X0, Y0)

    bright, contrast, gamma, tint, vig = c.exposure
    v = np.arange(256, dtype=np.float64) / 255.0
    lut = np.concatenate([np.clip(255 * (((v ** gamma) - 0.5) * contrast + 0.5) * bright * tc, 0, 255)
                          for tc in tint]).round().astype(np.uint8).tolist()
    vignette = None
    if vig > 0.02:
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
        rr = ((xx + 0.5) / W - 0.5) ** 2 * 2 + ((yy + 0.5) / H - 0.5) ** 2 * 2
        vignette = Image.fromarray(np.repeat((255 * (1 - vig * rr))[..., None], 3, 2).astype(np.uint8))

    shadow_luts: dict[int, list[int]] = {}
    phases: dict[tuple[float, float], Image.Image] = {}

    def warp_all(t: int, ox: float = 0.0, oy: float = 0.0, cw: int = wc, ch: int = hc):
        """Warped sprites for frame t on a canvas whose origin is world pixel (ox, oy)."""
        out = []
        for tr in tracks:
            if tr.visible is not None and not tr.visible[t]:
                out.append(None)
                continue
            out.append(_warp(tr.sprite, (tr.cx[t] - X0) * k - ox, (tr.cy[t] - Y0) * k - oy,
                             tr.scale[t] / tr.sprite.res, tr.angle[t], tr.squash, cw, ch))
        return out

    def background_crop(bx0: float, by0: float) -> Image.Image:
        """Frame-sized background whose pixel (0, 0) is at world pixel (bx0, by0), to 1/4 px."""
        bx0, by0 = round(bx0 * 4) / 4, round(by0 * 4) / 4
        ix, iy = math.floor(bx0), math.floor(by0)
        key = (bx0 - ix, by0 - iy)
        if key not in phases:
            fx, fy = key
            phases[key] = background if key == (0.0, 0.0) else background.resize(
                (wc - 1, hc - 1), _BICUBIC, box=(fx, fy, fx + wc - 1, fy + hc - 1))
        return phases[key].crop((ix, iy, ix + W, iy + H))

    def draw(stage: Image.Image, warps, t: int) -> None:
        for tr, wp in zip(tracks, warps, strict=False):
            if wp is None or tr.role in hide or (tr.shadow and "shadows" in hide):
                continue
            im, x0, y0 = wp
            if tr.shadow:
                q = round(255 * float(tr.opacity[t]))
                if q not in shadow_luts:
                    shadow_luts[q] = [(i * q + 127) // 255 for i in range(256)]
                mask = im.point(shadow_luts[q])
                stage.paste((0, 0, 0), (x0, y0, x0 + im.size[0], y0 + im.size[1]), mask)
            else:
                stage.paste(im, (x0, y0), im)

    frames = np.empty((T, H, W, 3), np.uint8)
    visible_fraction = np.full(T, np.nan)
    # camera velocity in output px per frame (central differences), for motion blur
    vel = np.zeros((T, 2))
    if T > 1:
        vel[:, 0] = np.gradient(cam_x) * zoom
        vel[:, 1] = np.gradient(cam_y) * zoom
    if static:
        warps0 = warp_all(0)
        stage0 = background.copy()
        draw(stage0, warps0, 0)
    for t in range(T):
        bx0, by0 = (cam_x[t] - half_w[t] - X0) * k, (cam_y[t] - half_h[t] - Y0) * k
        bw, bh = 2 * half_w[t] * k, 2 * half_h[t] * k
        if direct:
            img, warps = background_crop(bx0, by0), warp_all(t, bx0, by0, W, H)
            draw(img, warps, t)
            visible_fraction[t] = _visible_fraction(tracks, warps, t, (0, 0, W, H))
        else:
            if static:
                stage, warps = stage0, warps0
            else:
                stage, warps = background.copy(), warp_all(t)
                draw(stage, warps, t)
            if abs(bw - W) < 1e-9 and abs(bh - H) < 1e-9 and bx0 == int(bx0) and by0 == int(by0):
                img = stage.crop((int(bx0), int(by0), int(bx0) + W, int(by0) + H))
            else:
                img = stage.resize((W, H), _BICUBIC, box=(bx0, by0, bx0 + bw, by0 + bh))
            visible_fraction[t] = _visible_fraction(tracks, warps, t, (bx0, by0, bx0 + bw, by0 + bh))
        if plan.shutter > 0:  # a fast pan smears the image along the motion, as a real shutter does
            img = _pan_blur(img, plan.shutter * vel[t, 0], plan.shutter * vel[t, 1])
        img = img.point(lut)
        if vignette is not None:
            img = ImageChops.multiply(img, vignette)
        frames[t] = np.asarray(img)

    # truth, mapped from frame units through the camera into output pixels
    def to_frame(xy: np.ndarray) -> np.ndarray:
        return np.stack([(xy[:, 0] - cam_x) * zoom + W / 2, (xy[:, 1] - cam_y) * zoom + H / 2], 1)

    main = plan.main
    center = plan.center if plan.center is not None else np.stack([main.cx, main.cy], 1)
    nan2 = np.full((T, 2), np.nan)
    halves = np.full((T, 2, 2), np.nan)
    if plan.halves is not None:
        halves = np.stack([to_frame(plan.halves[:, 0]), to_frame(plan.halves[:, 1])], 1)
    truth = {
        "template": template,
        "center": to_frame(center),
        "scale": main.scale * zoom,
        "angle": main.angle.copy(),
        "camera_offset": np.stack([cam_x - cam_x[0], cam_y - cam_y[0]], 1),
        "zoom": zoom.copy(),
        "size": np.array(plan.size, np.float64),
        "visible_fraction": visible_fraction,
        "second_center": to_frame(plan.second) if plan.second is not None else nan2,
        "halves": halves,
        "ground_y": (plan.ground_y - cam_y) * zoom + H / 2,
        "n_objects": plan.n_objects,
    }
    return frames, truth


def _pan_blur(img: Image.Image, lx: float, ly: float) -> Image.Image:
    """Motion blur: a box of |lx| x |ly| pixels along the image axes (sub-pixel lengths skipped)."""
    rx, ry = (abs(lx) - 1) / 2, (abs(ly) - 1) / 2  # BoxBlur radius r spans 2r + 1 pixels
    rx, ry = (rx if rx >= 0.25 else 0.0), (ry if ry >= 0.25 else 0.0)
    if rx == 0 and ry == 0:
        return img
    return img.filter(ImageFilter.BoxBlur((rx, ry)))


def _visible_fraction(tracks: list[_Track], warps: list, t: int, box: tuple) -> float:
    """Share of the main object's silhouette that is inside the frame and not occluded.

    Computed from sprite alphas (so it ignores `hide`): occluders are everything drawn
    later that is not part of the main object and not a shadow.
    """
    num = den = 0.0
    bx0, by0, bx1, by1 = (math.floor(box[0]), math.floor(box[1]),
                          math.ceil(box[2]), math.ceil(box[3]))
    for i, tr in enumerate(tracks):
        if tr.role != "object" or tr.shadow or (tr.visible is not None and not tr.visible[t]):
            continue
        g = tr.scale[t] / tr.sprite.res
        den += tr.sprite.alpha_sum * g * g * tr.squash
        if warps[i] is None:
            continue
        im, x0, y0 = warps[i]
        vis = np.asarray(im.getchannel("A")).astype(np.float32) / 255.0
        for j in range(i + 1, len(tracks)):
            oc = tracks[j]
            if oc.role == "object" or oc.shadow or warps[j] is None:
                continue
            oim, ox, oy = warps[j]
            ix0, iy0 = max(x0, ox), max(y0, oy)
            ix1, iy1 = min(x0 + im.size[0], ox + oim.size[0]), min(y0 + im.size[1], oy + oim.size[1])
            if ix1 <= ix0 or iy1 <= iy0:
                continue
            oa = np.asarray(oim.getchannel("A"))[iy0 - oy:iy1 - oy, ix0 - ox:ix1 - ox].astype(np.float32)
            vis[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] *= 1.0 - oa / 255.0
        cx0, cy0 = max(bx0 - x0, 0), max(by0 - y0, 0)
        cx1, cy1 = max(min(bx1 - x0, vis.shape[1]), 0), max(min(by1 - y0, vis.shape[0]), 0)
        num += float(vis[cy0:cy1, cx0:cx1].sum())
    return num / den if den > 0 else float("nan")


# ----------------------------------------------------------------------------------------------
# public API


def render_clip_with_truth(template: str, rng: np.random.Generator, *, height: int, width: int,
                           n_frames: int, hide: Collection[str] = ()) -> tuple[np.ndarray, dict]:
    """Render a synthetic clip of an SSv2 `template` together with per-frame ground truth.

    Returns ``(frames, truth)``: frames is a uint8 array [n_frames, height, width, 3];
    truth is a dict (T = n_frames, positions in output pixels, x right / y down):

    - ``"center"`` float [T,2] (x, y) of the main object (for a torn sheet: where its
      middle would be, i.e. the mean displacement of the two halves);
    - ``"scale"`` [T] apparent size relative to ``"size"`` (object scale times camera zoom);
    - ``"angle"`` [T] in-plane rotation in degrees, counter-clockwise on screen;
    - ``"camera_offset"`` [T,2] camera window centre minus its first-frame position
      (frame px at zoom 1; the scene content moves the opposite way);
    - ``"zoom"`` [T] camera zoom (1 = rest);
    - ``"size"`` [2] (w, h) of the main object in frame px at scale 1;
    - ``"visible_fraction"`` [T] share of the main object's silhouette inside the
      frame and not hidden behind later-drawn things (cover, other object, hands);
    - ``"second_center"`` [T,2] the second object (cover / other object), NaN if none;
    - ``"halves"`` [T,2,2] centres of the left and right torn halves, NaN unless tearing;
    - ``"ground_y"`` [T] y of the table line an object falls onto / is lifted from, else NaN;
    - ``"template"``, ``"n_objects"`` (placeholders shown as separate objects).

    `hide` names parts of the scene to leave out (see HIDEABLE_ROLES) while keeping
    everything else, including all random draws, identical, so the difference to the
    full render isolates those parts' pixels.  Deterministic given the rng state.
    Raises ValueError for an unknown template (listing supported ones) or bad sizes.
    """
    if template not in SUPPORTED_TEMPLATES:
        raise ValueError(f"unsupported SSv2 template {template!r}; supported templates: "
                         + "; ".join(sorted(SUPPORTED_TEMPLATES)))
    height, width, n_frames = int(height), int(width), int(n_frames)
    if height < 8 or width < 8 or n_frames < 1:
        raise ValueError(f"need height, width >= 8 and n_frames >= 1, got {height}x{width}x{n_frames}")
    hide = frozenset(hide)
    if not hide <= HIDEABLE_ROLES:
        raise ValueError(f"hide may only contain {sorted(HIDEABLE_ROLES)}, got {sorted(hide)}")
    ctx = _Ctx(rng, height, width, n_frames)
    plan = _DIRECTORS[template](ctx)
    return _render(ctx, plan, hide, template)


def render_clip(template: str, rng: np.random.Generator, *, height: int, width: int, n_frames: int) -> np.ndarray:
    """Render a synthetic clip showing the SSv2 `template`.

    Returns a uint8 array [n_frames, height, width, 3]; deterministic given the rng
    state.  Raises ValueError naming the template and listing the supported ones
    when it is not in SUPPORTED_TEMPLATES.
    """
    frames, _ = render_clip_with_truth(template, rng, height=height, width=width, n_frames=n_frames)
    return frames
