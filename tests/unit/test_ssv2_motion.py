"""Behaviour of the procedural SSv2 clip renderer (lib/ssv2/motion.py).

Motion is measured from pixels wherever possible: a part's pixels are isolated by
rendering the same clip with and without it (``hide=``), camera motion by phase
correlation of whole frames.  The ground-truth dict is checked against those
measurements, not trusted on its own.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from lib.ssv2.motion import (
    HIDEABLE_ROLES,
    SUPPORTED_TEMPLATES,
    render_clip,
    render_clip_with_truth,
)

H, W = 120, 214  # small but 16:9-ish, keeps the suite fast
LABELS = Path(__file__).resolve().parents[2] / "lib" / "ssv2" / "reference" / "labels.json"


def _render(name, seed, T=16, hide=(), height=H, width=W):
    return render_clip_with_truth(name, np.random.default_rng(seed), height=height, width=width,
                                  n_frames=T, hide=hide)


def _part_mask(name, seed, part="object", T=16, keep_out=("shadows", "hands"), **size):
    """Per-frame boolean mask [T,H,W] of the pixels that `part` changes, plus truth and frames."""
    full, truth = _render(name, seed, T, hide=keep_out, **size)
    plate, _ = _render(name, seed, T, hide=set(keep_out) | {part}, **size)
    mask = np.abs(full.astype(np.int16) - plate.astype(np.int16)).max(-1) > 12
    return mask, truth, full


def _centroids(mask):
    """(x, y) centroid per frame of a [T,H,W] mask; NaN where empty."""
    out = np.full((mask.shape[0], 2), np.nan)
    for t, m in enumerate(mask):
        ys, xs = np.nonzero(m)
        if len(xs):
            out[t] = xs.mean() + 0.5, ys.mean() + 0.5
    return out


def _phase_shift(a, b):
    """(dx, dy) such that frame b ~ frame a with its content moved by (dx, dy) pixels."""
    ga, gb = a.astype(np.float64).mean(-1), b.astype(np.float64).mean(-1)
    win = np.outer(np.hanning(ga.shape[0]), np.hanning(ga.shape[1]))
    fa, fb = np.fft.fft2((ga - ga.mean()) * win), np.fft.fft2((gb - gb.mean()) * win)
    r = fb * np.conj(fa)
    corr = np.fft.ifft2(r / (np.abs(r) + 1e-9)).real
    dy, dx = np.unravel_index(np.argmax(corr), corr.shape)
    if dy > ga.shape[0] // 2:
        dy -= ga.shape[0]
    if dx > ga.shape[1] // 2:
        dx -= ga.shape[1]
    return dx, dy


# ------------------------------------------------------------------------------------------ API


def test_templates_are_real_ssv2_labels_with_placeholder_counts():
    labels = json.loads(LABELS.read_text())
    assert len(SUPPORTED_TEMPLATES) >= 24
    for name, n in SUPPORTED_TEMPLATES.items():
        assert name in labels, name
        assert n == name.lower().split().count("something"), name


def test_shape_dtype_and_determinism():
    name = "Pushing something from left to right"
    a = render_clip(name, np.random.default_rng(7), height=H, width=W, n_frames=9)
    b = render_clip(name, np.random.default_rng(7), height=H, width=W, n_frames=9)
    c = render_clip(name, np.random.default_rng(8), height=H, width=W, n_frames=9)
    frames, truth = _render(name, 7, T=9)
    assert a.shape == (9, H, W, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, frames)  # render_clip is render_clip_with_truth minus truth
    assert np.abs(a.astype(int) - c).mean() > 5
    assert truth["center"].shape == (9, 2) and truth["scale"].shape == (9,)
    assert truth["camera_offset"].shape == (9, 2) and truth["zoom"].shape == (9,)


def test_unknown_template_raises_with_name_and_supported_list():
    with pytest.raises(ValueError, match=re.escape("Juggling something")) as err:
        render_clip("Juggling something", np.random.default_rng(0), height=H, width=W, n_frames=4)
    assert "Moving something up" in str(err.value)
    with pytest.raises(ValueError, match="hide"):
        _render("Moving something up", 0, hide={"table"})
    assert {"object", "second", "hands", "shadows"} <= HIDEABLE_ROLES


@pytest.mark.parametrize("height,width,T", [(32, 48, 2), (32, 48, 200), (240, 320, 3), (33, 47, 5)])
def test_arbitrary_sizes_and_lengths(height, width, T):
    for i, name in enumerate(SUPPORTED_TEMPLATES):
        if T == 200 and i % 4:  # long clips: a sample of templates is enough
            continue
        frames = render_clip(name, np.random.default_rng(i), height=height, width=width, n_frames=T)
        assert frames.shape == (T, height, width, 3), name


def _predict_next(frame, truth, t):
    """Frame t warped by the camera motion that truth reports between t and t + 1."""
    from PIL import Image

    h, w = frame.shape[:2]
    z0, z1 = truth["zoom"][t], truth["zoom"][t + 1]
    d = truth["camera_offset"][t + 1] - truth["camera_offset"][t]
    a = z0 / z1  # output pixel of frame t+1 -> source pixel of frame t
    data = (a, 0, (d[0] - w / (2 * z1)) * z0 + w / 2, 0, a, (d[1] - h / (2 * z1)) * z0 + h / 2)
    return np.asarray(Image.fromarray(frame).transform((w, h), Image.Transform.AFFINE, data,
                                                       resample=Image.Resampling.BICUBIC))


def test_every_template_renders_with_coherent_temporal_structure():
    inner = (slice(30, -30), slice(50, -50))  # away from the borders where new content enters
    for i, name in enumerate(SUPPORTED_TEMPLATES):
        f, truth = render_clip_with_truth(name, np.random.default_rng(100 + i), height=240, width=427, n_frames=30)
        other = render_clip(name, np.random.default_rng(200 + i), height=240, width=427, n_frames=3)
        raw = np.abs(np.diff(f.astype(np.int16), axis=0)).mean(axis=(1, 2, 3))
        assert raw.min() > 0, f"{name}: identical consecutive frames"
        fi = f[:, inner[0], inner[1]].astype(np.int16)
        raw_in = np.abs(np.diff(fi, axis=0)).mean(axis=(1, 2, 3))
        comp = np.array([np.abs(_predict_next(f[t], truth, t)[inner] - fi[t + 1]).mean() for t in range(len(f) - 1)])
        # each frame is well predicted by its predecessor (moved by the camera): coherent motion, not noise;
        # "small" is relative to how different two clips of the same template are
        residual = np.minimum(raw_in, comp)
        between_clips = np.abs(fi[::10] - other[:, inner[0], inner[1]]).mean()
        assert residual.mean() < 0.25 * between_clips, name
        assert residual.max() < 0.4 * between_clips, name
        if "camera" in name and not name.startswith("Moving something"):  # the camera itself moves
            # camera templates: the reported camera motion explains most of the change
            assert comp.mean() < 0.65 * raw_in.mean(), name


def test_hide_isolates_the_part_and_changes_nothing_else():
    name = "Pushing something from left to right"
    mask, truth, _ = _part_mask(name, 3, keep_out=())
    w, h = truth["size"]
    for t in range(mask.shape[0]):
        ys, xs = np.nonzero(mask[t])
        cx, cy = truth["center"][t]
        assert len(xs) > 0.3 * w * h
        assert np.all(np.abs(xs + 0.5 - cx) < 0.8 * w + 3)  # object (+ shadow) only, nothing else moved
        assert np.all(np.abs(ys + 0.5 - cy) < 0.8 * h + 3)


# ------------------------------------------------------------------------------ object motion


@pytest.mark.parametrize("name,direction", [
    ("Pushing something from left to right", 1), ("Pushing something from right to left", -1),
    ("Pulling something from left to right", 1), ("Pulling something from right to left", -1),
])
@pytest.mark.parametrize("seed", [0, 1])
def test_horizontal_push_and_pull_directions(name, direction, seed):
    mask, truth, _ = _part_mask(name, seed)
    c = _centroids(mask)
    assert direction * (c[-1, 0] - c[0, 0]) > 0.25 * W  # clearly visible distance
    assert abs(c[-1, 1] - c[0, 1]) < 0.1 * H
    np.testing.assert_allclose(c, truth["center"], atol=0.06 * W)
    scene_x = truth["center"][:, 0] + truth["camera_offset"][:, 0]  # undo the small handheld shake
    assert np.all(direction * np.diff(scene_x) >= -1e-9)  # monotone, no back and forth
    # pushing: the arm trails the object; pulling: it reaches from the side it moves towards
    hands, _, _ = _part_mask(name, seed, part="hands", keep_out=("shadows",))
    arm_x = _centroids(hands)[len(c) // 2, 0]
    side = np.sign(arm_x - c[len(c) // 2, 0])
    assert side == (direction if name.startswith("Pulling") else -direction)


@pytest.mark.parametrize("name,direction", [("Moving something up", -1), ("Moving something down", 1)])
@pytest.mark.parametrize("seed", [0, 1])
def test_vertical_moves(name, direction, seed):
    mask, truth, _ = _part_mask(name, seed)
    c = _centroids(mask)
    assert direction * (c[-1, 1] - c[0, 1]) > 0.15 * H
    assert abs(c[-1, 0] - c[0, 0]) < 0.1 * W
    np.testing.assert_allclose(c, truth["center"], atol=0.06 * W)


@pytest.mark.parametrize("name,grows", [("Moving something towards the camera", True),
                                        ("Moving something away from the camera", False)])
@pytest.mark.parametrize("seed", [0, 1])
def test_object_towards_and_away_changes_its_pixel_area(name, grows, seed):
    mask, truth, _ = _part_mask(name, seed)
    area = mask.sum(axis=(1, 2)).astype(float)
    ratio = area[-1] / area[0] if grows else area[0] / area[-1]
    assert ratio > 1.8
    assert (truth["scale"][-1] > truth["scale"][0]) == grows
    np.testing.assert_allclose(truth["zoom"], 1.0)  # the camera does not zoom, the object moves


def test_falling_accelerates_then_rests_on_the_ground():
    for seed in range(3):
        T = 24
        mask, truth, _ = _part_mask("Something falling like a rock", seed, T=T)
        y = _centroids(mask)[:, 1]
        ty = truth["center"][:, 1] + truth["camera_offset"][:, 1]  # scene coordinates, shake removed
        impact = int(np.argmax(ty >= ty.max() - 0.02 * H))  # first frame on the ground
        assert impact >= 0.45 * (T - 1)
        steps = np.diff(y[:impact:4])  # pixel displacement over successive 4-frame windows
        assert np.all(steps > 0) and np.all(np.diff(steps) > 0), steps
        assert np.all(np.diff(ty[: impact], n=2) > 0)  # constant acceleration
        assert y[-1] - y[0] > 0.25 * H
        # ends resting on (bouncing slightly above) the ground line
        assert abs(truth["center"][-1, 1] + truth["size"][1] / 2 - truth["ground_y"][-1]) < 1e-6
        assert np.all(ty[impact:] > ty.max() - 0.08 * H)  # at most a slight bounce


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_throwing_goes_up_and_comes_back(seed):
    T = 24
    mask, truth, _ = _part_mask("Throwing something in the air and catching it", seed, T=T)
    y = _centroids(mask)[:, 1]
    top = int(np.nanargmin(y))
    assert 0.25 * T < top < 0.75 * T
    assert y[0] - y[top] > 0.2 * H and y[-1] - y[top] > 0.2 * H
    ty = truth["center"][:, 1]
    flight = slice(int(0.25 * T), int(0.75 * T))
    assert np.all(np.diff(ty[flight], n=2) > 0)  # parabolic: constant downward acceleration


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spinning(seed):
    T = 20
    for name, stops in (("Spinning something so it continues spinning", False),
                        ("Spinning something that quickly stops spinning", True)):
        mask, truth, frames = _part_mask(name, seed, T=T)
        ang = truth["angle"]
        d = np.diff(ang)
        assert np.all(d >= 0) or np.all(d <= 0)  # monotonic
        region = mask.any(axis=0)
        change = np.abs(np.diff(frames.astype(np.int16), axis=0)).max(-1)[:, region].mean(1)
        early, late = change[: T // 5].mean(), change[-(T * 2) // 5:].mean()
        if stops:
            assert np.ptp(ang[T // 2:]) < 1e-9 and abs(ang[T // 2] - ang[0]) > 45
            assert late < 0.35 * early
        else:
            assert np.all(np.abs(d) > 5)
            assert late > 0.35 * early


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_covering_and_uncovering(seed):
    for name, covered_at_end in (("Covering something with something", True), ("Uncovering something", False)):
        mask, truth, _ = _part_mask(name, seed, keep_out=())
        area = mask.sum(axis=(1, 2))
        vis = truth["visible_fraction"]
        hidden, shown = (-1, 0) if covered_at_end else (0, -1)
        assert area[hidden] <= 2 and vis[hidden] < 0.01  # nothing of the object (or its shadow) shows
        assert area[shown] > 0.3 * np.prod(truth["size"]) and vis[shown] > 0.9
        # the cover ends (starts) centred on the object and comes from (leaves to) somewhere else
        cover = _centroids(_part_mask(name, seed, part="second")[0])
        np.testing.assert_allclose(cover[hidden], truth["second_center"][hidden], atol=0.04 * W)
        obj = truth["center"][hidden]
        assert np.hypot(*(cover[shown] - obj)) > np.hypot(*(cover[hidden] - obj)) + 0.1 * W


@pytest.mark.parametrize("seed", [0, 1])
def test_two_objects_closer_and_apart(seed):
    for name, closer in (("Moving something and something closer to each other", True),
                         ("Moving something and something away from each other", False)):
        a = _centroids(_part_mask(name, seed, part="object")[0])
        b = _centroids(_part_mask(name, seed, part="second")[0])
        dist = np.abs(a[:, 0] - b[:, 0])
        change = dist[0] - dist[-1] if closer else dist[-1] - dist[0]
        assert change > 0.12 * W


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tearing_splits_into_two_separating_halves(seed):
    mask, truth, _ = _part_mask("Tearing something into two pieces", seed, T=16)
    halves = truth["halves"]

    def longest_empty_run(m, lo, hi):
        cols = m[:, int(lo):int(hi)].any(axis=0)
        best = run = 0
        for c in cols:
            run = 0 if c else run + 1
            best = max(best, run)
        return best

    first = longest_empty_run(mask[0], halves[0, 0, 0], halves[0, 1, 0])
    last = longest_empty_run(mask[-1], halves[-1, 0, 0], halves[-1, 1, 0])
    assert first == 0  # one whole sheet at the start
    assert last > 0.04 * W  # a clear gap between the halves at the end
    gap = halves[:, 1, 0] - halves[:, 0, 0]
    assert gap[-1] - gap[0] > 0.2 * W and np.all(np.diff(gap) >= -1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rolling_rotation_matches_travel(seed):
    mask, truth, _ = _part_mask("Rolling something on a flat surface", seed)
    c = _centroids(mask)
    assert abs(c[-1, 0] - c[0, 0]) > 0.25 * W and abs(c[-1, 1] - c[0, 1]) < 0.05 * H
    radius = truth["size"][0] / 2
    dx = np.diff(truth["center"][:, 0] + truth["camera_offset"][:, 0])  # on the table, shake removed
    dang = np.radians(np.diff(truth["angle"]))
    np.testing.assert_allclose(dang * radius, -dx, atol=0.05)  # rolls without slipping (x right -> clockwise)


# ------------------------------------------------------------------------------ camera motion


@pytest.mark.parametrize("name,sx,sy", [
    ("Turning the camera left while filming something", 1, 0),
    ("Turning the camera right while filming something", -1, 0),
    ("Turning the camera upwards while filming something", 0, 1),
    ("Turning the camera downwards while filming something", 0, -1),
])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_camera_turns_shift_the_whole_scene(name, sx, sy, seed):
    frames, truth = _render(name, seed, T=12, height=144, width=256)
    dx, dy = _phase_shift(frames[0], frames[-1])
    moved = dx if sx else dy
    expected = -truth["camera_offset"][-1, 0 if sx else 1]
    assert np.sign(moved) == (sx or sy)
    assert abs(moved) > 0.1 * (256 if sx else 144)
    assert abs(moved - expected) <= 3
    # the filmed object moves with the scene
    obj = _centroids(_part_mask(name, seed, T=12, height=144, width=256)[0])
    assert abs((obj[-1] - obj[0])[0 if sx else 1] - moved) <= 4


@pytest.mark.parametrize("name,zoom_in", [("Approaching something with your camera", True),
                                          ("Moving away from something with your camera", False)])
@pytest.mark.parametrize("seed", [0, 1])
def test_camera_approach_and_retreat_zoom_the_scene(name, zoom_in, seed):
    mask, truth, frames = _part_mask(name, seed)
    z = truth["zoom"]
    assert np.all(np.diff(z) >= 0) if zoom_in else np.all(np.diff(z) <= 0)
    assert max(z[0], z[-1]) / min(z[0], z[-1]) > 1.25
    area = mask.sum(axis=(1, 2)).astype(float)
    ratio = area[-1] / area[0] if zoom_in else area[0] / area[-1]
    assert ratio > 1.4
    # the background scales too: the zoomed-in frame's centre matches an enlarged crop of the other
    near, far = (frames[-1], frames[0]) if zoom_in else (frames[0], frames[-1])
    zr = max(z) / min(z)
    cam = truth["camera_offset"][-1 if zoom_in else 0] - truth["camera_offset"][0 if zoom_in else -1]
    from PIL import Image

    cx, cy = W / 2 + cam[0] * min(z), H / 2 + cam[1] * min(z)
    hw, hh = W / (2 * zr), H / (2 * zr)
    cx, cy = float(np.clip(cx, hw, W - hw)), float(np.clip(cy, hh, H - hh))  # guard against shake rounding
    box = (cx - hw, cy - hh, cx + hw, cy + hh)
    enlarged = np.asarray(Image.fromarray(far).resize((W, H), Image.Resampling.BICUBIC, box=box)).astype(int)
    inner = (slice(H // 6, -H // 6), slice(W // 6, -W // 6))
    err_scaled = np.abs(enlarged[inner] - near[inner]).mean()
    err_plain = np.abs(far.astype(int)[inner] - near[inner]).mean()
    assert err_scaled < 0.6 * err_plain
