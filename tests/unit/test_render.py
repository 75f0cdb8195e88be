import numpy as np
import pytest
import trimesh

from lib.render import VIEWS, ViewRenderer, encode_png, project_points, projected_extent, save_png, silhouette

SIZE = 512
AXIS_VIEWS = ("front", "top", "right")
BG = (255, 255, 255)


@pytest.fixture(scope="module")
def renderer():
    try:
        r = ViewRenderer(size=SIZE, views=(*AXIS_VIEWS, "isometric"), background=BG)
    except Exception as exc:  # no libEGL / no usable EGL device on this machine
        pytest.skip(f"headless EGL rendering unavailable: {exc!r}")
    yield r
    r.close()


def box():
    return trimesh.creation.box(extents=(2.0, 1.0, 0.5))


def cylinder():
    # axis along Z, deliberately off-centre to exercise the framing
    m = trimesh.creation.cylinder(radius=0.4, height=1.5, sections=64)
    m.apply_translation((3.0, -2.0, 1.0))
    return m


def bbox_px(mask):
    ys, xs = np.nonzero(mask)
    return xs.min(), xs.max() + 1, ys.min(), ys.max() + 1


def test_views_are_documented_and_z_up():
    assert {"front", "top", "right", "isometric"} <= set(VIEWS)


@pytest.mark.parametrize("make", [box, cylinder], ids=["box", "cylinder"])
def test_images_shape_and_framing_match_projected_extent(renderer, make):
    mesh = make()
    images = renderer.render(mesh)
    assert set(images) == {*AXIS_VIEWS, "isometric"}
    for view in AXIS_VIEWS:
        img = images[view]
        assert img.shape == (SIZE, SIZE, 3) and img.dtype == np.uint8
        mask = silhouette(img, BG)
        assert mask.any() and not mask.all(), view
        x0, x1, y0, y1 = bbox_px(mask)
        w, h = projected_extent(mesh, view)
        assert abs((x1 - x0) - w * SIZE) <= 2, (view, x1 - x0, w * SIZE)
        assert abs((y1 - y0) - h * SIZE) <= 2, (view, y1 - y0, h * SIZE)
        # centred: the bounding-box centre lands at the image centre
        assert abs((x0 + x1) / 2 - SIZE / 2) <= 1.5 and abs((y0 + y1) / 2 - SIZE / 2) <= 1.5, view


@pytest.mark.parametrize("make", [box, cylinder], ids=["box", "cylinder"])
def test_foreground_from_depth_equals_the_colour_silhouette(renderer, make):
    images = renderer.render(make())
    assert set(renderer.foreground) == set(images)
    for view, img in images.items():
        mask = silhouette(img, BG)
        inner = mask.copy()  # the silhouette less its one-pixel rim, where antialiasing blends colour into background
        inner[1:] &= mask[:-1]
        inner[:-1] &= mask[1:]
        inner[:, 1:] &= mask[:, :-1]
        inner[:, :-1] &= mask[:, 1:]
        assert inner.mean() <= renderer.foreground[view] <= mask.mean(), view
        assert renderer.foreground[view] == pytest.approx(mask.mean(), rel=0.05), view


def test_box_orientation_per_view():
    # (2, 1, 0.5) box: long side horizontal in front and top; right view shows the 1.0 side by 0.5
    m = box()
    fw, fh = projected_extent(m, "front")
    tw, th = projected_extent(m, "top")
    rw, rh = projected_extent(m, "right")
    assert fw == pytest.approx(4 * fh) and tw == pytest.approx(2 * th) and rw == pytest.approx(2 * rh)
    assert fw == pytest.approx(tw) == pytest.approx(2 * rw)
    assert fh == pytest.approx(rh)
    # bounding sphere diameter spans 85 %: the box diagonal is the sphere diameter
    diag = np.linalg.norm((2.0, 1.0, 0.5))
    assert fw == pytest.approx(0.85 * 2.0 / diag)


def test_scale_and_translation_invariance(renderer):
    a = renderer.render(box())
    small = box()
    small.apply_scale(0.01)
    small.apply_translation((5.0, 7.0, -3.0))
    b = renderer.render(small)
    for view in AXIS_VIEWS:
        ma, mb = silhouette(a[view], BG), silhouette(b[view], BG)
        assert np.abs(np.subtract(bbox_px(ma), bbox_px(mb))).max() <= 1, view
        assert (ma ^ mb).sum() <= 4 * SIZE  # at most a one-pixel rim differs


def test_reuse_is_deterministic_and_changes_with_mesh(renderer):
    first = renderer.render(box())
    second = renderer.render(cylinder())
    again = renderer.render(box())
    for view in first:
        assert not np.array_equal(first[view], second[view]), view
        assert np.array_equal(first[view], again[view]), view


def test_isometric_shades_three_box_faces_differently(renderer):
    m = box()
    img = renderer.render(m)["isometric"].astype(float).mean(axis=-1)
    # centres of the three visible faces (+X, -Y, +Z) projected into the image
    centres = np.array([[1.0, 0.0, 0.0], [0.0, -0.5, 0.0], [0.0, 0.0, 0.25]])
    means = []
    for x, y in project_points(m, centres, "isometric", SIZE):
        xi, yi = int(x), int(y)
        patch = img[yi - 5 : yi + 6, xi - 5 : xi + 6]
        assert patch.std() < 1.0  # flat-shaded facet: uniform colour
        means.append(patch.mean())
    assert all(m < 250 for m in means)  # not background
    a, b, c = sorted(means)
    assert b - a > 8 and c - b > 8, means


def test_silhouette_and_save_png(tmp_path):
    img = np.full((4, 5, 3), 255, np.uint8)
    img[1, 2] = (255, 254, 255)
    mask = silhouette(img, (255, 255, 255))
    assert mask.sum() == 1 and mask[1, 2]
    assert silhouette(img, (255, 255, 255), tol=1).sum() == 0
    from PIL import Image

    path = save_png(tmp_path / "sub" / "v.png", img)
    assert np.array_equal(np.asarray(Image.open(path)), img)
    assert [p.name for p in path.parent.iterdir()] == ["v.png"]


@pytest.mark.parametrize("shape", [(7, 5), (7, 5, 1), (7, 5, 3), (7, 5, 4), (1, 1, 3)])
@pytest.mark.parametrize("level", [0, 1, 6, 9])
def test_encode_png_round_trips_through_pillow(shape, level):
    import io

    from PIL import Image

    img = np.random.default_rng(sum(shape) + level).integers(0, 256, shape, dtype=np.uint8)
    decoded = Image.open(io.BytesIO(encode_png(img, level)))
    decoded.load()  # checks every chunk's CRC and the zlib stream
    expected_mode = {1: "L", 3: "RGB", 4: "RGBA"}[1 if img.ndim == 2 else shape[2]]
    assert decoded.mode == expected_mode and decoded.size == (shape[1], shape[0])
    assert np.array_equal(np.asarray(decoded).reshape(shape), img)


def test_encode_png_filters_each_row_after_the_first_against_the_row_above():
    import zlib

    row = np.random.default_rng(0).integers(0, 256, (1, 64, 3), dtype=np.uint8)
    img = np.repeat(row, 40, axis=0)  # every row the same noise: "Up" leaves only zeros after the first row
    png = encode_png(img, 6)
    idat = png[png.index(b"IDAT") + 4:png.index(b"IEND") - 8]
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(40, 1 + 64 * 3)
    assert raw[0, 0] == 0 and np.array_equal(raw[0, 1:], row.reshape(-1))
    assert (raw[1:, 0] == 2).all() and not raw[1:, 1:].any()
    assert len(png) < 64 * 3 + 200  # the noise once, not 40 times


def test_encode_png_compresses_flat_renders_and_rejects_what_it_cannot_write():
    img = np.full((512, 512, 3), 255, np.uint8)
    img[100:300, 150:400] = (90, 120, 200)
    assert len(encode_png(img, 6)) < 5_000 < len(encode_png(img, 0))  # 786 kB raw
    with pytest.raises(ValueError, match=r"expected uint8 \[H, W\] or \[H, W, 1\|3\|4\], got float32 \[4, 4, 3\]"):
        encode_png(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="got uint8 \\[4, 4, 2\\]"):
        encode_png(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ValueError, match="compress_level 10 is not a zlib level 0-9"):
        encode_png(img, 10)


@pytest.mark.parametrize("tol", [0, 3])
def test_silhouette_equals_a_per_pixel_reference(tol):
    rng = np.random.default_rng(0)
    img = rng.integers(245, 256, size=(16, 20, 3), dtype=np.uint8)
    bg = (250, 251, 252)
    want = [[any(abs(int(img[y, x, c]) - bg[c]) > tol for c in range(3)) for x in range(20)] for y in range(16)]
    assert np.array_equal(silhouette(img, bg, tol=tol), np.array(want))


def test_bad_input_raises(renderer):
    with pytest.raises(ValueError):
        projected_extent(box(), "diagonal")
    with pytest.raises(ValueError):
        renderer.render(trimesh.Trimesh(vertices=np.zeros((3, 3)), faces=[[0, 1, 2]]))


def test_closed_renderer_refuses():
    try:
        r = ViewRenderer(size=32)
    except Exception as exc:
        pytest.skip(f"headless EGL rendering unavailable: {exc!r}")
    with r:
        assert r.render(box())["front"].shape == (32, 32, 3)
    r.close()  # idempotent
    with pytest.raises(RuntimeError):
        r.render(box())


def test_depth_edges_mark_steps_and_outline_but_not_smooth_slopes():
    from lib.render import depth_edges

    depth = np.zeros((20, 20))
    depth[5:15, 5:15] = 1.0          # an object
    depth[8:12, 8:12] = 0.9          # a boss standing 0.1 nearer
    depth[5:15, 2:5] = np.linspace(1.0, 1.01, 3)  # a gentle slope attached to its side
    edges = depth_edges(depth, step=0.02)
    assert edges[8, 10] and edges[11, 10] and edges[10, 8]  # around the boss
    assert edges[5, 10] and edges[14, 10]  # outline against the background
    assert not edges[10, 6] and not edges[10, 3]  # flat face and slope interior
    assert not edges[0, 0]  # background is never an edge


def test_a_step_facing_the_camera_is_visible_in_an_axis_view():
    import trimesh

    from lib.render import EDGE_COLOR, ViewRenderer

    plate = trimesh.creation.box((2.0, 2.0, 0.2))
    boss = trimesh.creation.box((0.6, 0.6, 0.4))
    boss.apply_translation((0, 0, 0.3))
    with ViewRenderer(size=128, views=("top",)) as r:
        top = r.render(trimesh.util.concatenate([plate, boss]))["top"]
    centre = top[40:88, 40:88]  # well inside the plate's outline
    assert (centre == np.array(EDGE_COLOR, np.uint8)).all(axis=-1).sum() > 20  # the boss's outline is drawn
