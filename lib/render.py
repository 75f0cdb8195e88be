"""Headless multi-view renders of CAD meshes: fixed views, fixed framing, fixed lighting.

Coordinate convention (world frame of the mesh, **Z up**, right-handed). Each view is named by where
the camera stands; "horizontal" and "vertical" are the image's left-to-right and bottom-to-top axes:

=============  ========================================  ==============  ============
view           camera looks                               image right     image up
=============  ========================================  ==============  ============
``front``      from -Y toward +Y (sees the XZ plane)     +X              +Z
``back``       from +Y toward -Y                          -X              +Z
``top``        from +Z down along -Z (sees the XY plane)  +X              +Y
``bottom``     from -Z up along +Z                        +X              -Y
``right``      from +X toward -X (sees the YZ plane)     +Y              +Z
``left``       from -X toward +X                          -Y              +Z
``isometric``  from the (+1, -1, +1) direction            (+1, +1, 0)/√2  Z projected
=============  ========================================  ==============  ============

So a box of size (2, 1, 0.5) is 2 wide and 0.5 high in ``front``, 2 wide and 1 high in ``top``, and
1 wide and 0.5 high in ``right``; in ``isometric`` its +X, -Y and +Z faces are visible.

Framing (the same for every view and every model, so images are comparable across a data set): the
mesh is centred at its bounding-box centre and divided by the radius of the smallest sphere around
that centre containing every vertex; an orthographic camera then shows that sphere's diameter as
:data:`FILL` (85 %) of the image width and height. Silhouettes therefore match projected extents
exactly (see :func:`projected_extent`), and a model scaled by any factor renders the same image.

Lighting is fixed relative to the camera: a key directional light from the camera's upper left, a
weaker fill light from its lower right, and ambient light, so faces of different orientation get
different shades (edges stay readable) and no face facing the camera is ever black. Facets are flat
shaded (``smooth=False``) and double sided (CAD exports often have inconsistent winding).

Rendering is headless through EGL (Mesa's llvmpipe on a CPU machine, the NVIDIA driver on a GPU one;
``EGL_DEVICE_ID`` picks the GPU). ``PYOPENGL_PLATFORM`` is set to ``egl`` when this module is imported
unless already set, so import this module before anything that imports ``OpenGL`` or ``pyrender``.
OSMesa does not work with the pinned PyOpenGL.
"""
from __future__ import annotations

import contextlib
import os
import struct
import zlib

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Self

import deflate
import numpy as np

from lib.io import atomic_path

if TYPE_CHECKING:  # trimesh costs ~0.8 s to import: plan and merge processes validate view names without it
    import trimesh

#: Fraction of the image width (and height) spanned by the bounding sphere's diameter.
FILL = 0.85

#: Named views: ``(direction from the model toward the camera, world up hint)``. See the module docstring.
VIEWS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "front": ((0.0, -1.0, 0.0), (0.0, 0.0, 1.0)),
    "back": ((0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
    "top": ((0.0, 0.0, 1.0), (0.0, 1.0, 0.0)),
    "bottom": ((0.0, 0.0, -1.0), (0.0, -1.0, 0.0)),
    "right": ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
    "left": ((-1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
    "isometric": ((1.0, -1.0, 1.0), (0.0, 0.0, 1.0)),
}

# Camera distance from the origin in normalised units (the model fits in the unit sphere).
_CAM_DIST = 3.0
_ZNEAR, _ZFAR = 0.5, 6.0

# Lights in camera coordinates (x right, y up, z toward the viewer): direction *toward* the light.
_KEY_DIR = (-0.45, 0.6, 1.0)
_KEY_INTENSITY = 2.6
_FILL_DIR = (0.6, -0.35, 1.0)
_FILL_INTENSITY = 0.9
_AMBIENT = 0.28


def _view_rotation(view: str) -> np.ndarray:
    """3×3 rotation whose columns are the camera's right, up and backward (toward viewer) axes."""
    try:
        direction, up = VIEWS[view]
    except KeyError:
        raise ValueError(f"unknown view {view!r}; known views: {sorted(VIEWS)}") from None
    z = np.asarray(direction, dtype=float)
    z /= np.linalg.norm(z)
    x = np.cross(np.asarray(up, dtype=float), z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return np.stack([x, y, z], axis=1)


def _used_vertices(mesh: trimesh.Trimesh) -> np.ndarray:
    """Vertices referenced by a face (stray vertices neither render nor count for framing)."""
    faces = np.asarray(mesh.faces)
    if len(faces) == 0:
        raise ValueError("mesh has no faces")
    verts = np.asarray(mesh.vertices, dtype=float)[np.unique(faces)]
    if not np.isfinite(verts).all():
        raise ValueError("mesh has non-finite vertices")
    return verts


def _framing(verts: np.ndarray) -> tuple[np.ndarray, float]:
    """Bounding-box centre and bounding-sphere radius (about that centre) of ``verts``."""
    center = (verts.min(axis=0) + verts.max(axis=0)) / 2.0
    radius = float(np.sqrt(((verts - center) ** 2).sum(axis=1).max()))
    if not radius > 0.0:
        raise ValueError("mesh is degenerate (all vertices coincide)")
    return center, radius


def project_points(mesh: trimesh.Trimesh, points, view: str, size: int) -> np.ndarray:
    """Pixel coordinates ``[N, 2]`` (x right, y down, continuous: pixel ``i`` covers ``[i, i+1)``) of
    world-space ``points`` in ``view`` of a ``size``×``size`` render of ``mesh`` (framing depends on
    the mesh)."""
    center, radius = _framing(_used_vertices(mesh))
    uv = ((np.atleast_2d(np.asarray(points, dtype=float)) - center) / radius) @ _view_rotation(view)[:, :2]
    uv *= FILL  # normalised units -> [-1, 1] across the image
    return np.stack([(uv[:, 0] + 1.0) * size / 2.0, (1.0 - uv[:, 1]) * size / 2.0], axis=1)


def projected_extent(mesh: trimesh.Trimesh, view: str) -> tuple[float, float]:
    """Fraction ``(w, h)`` of the image width and height the mesh's silhouette spans in ``view``.

    Purely geometric (vertices projected onto the view plane under the module's framing), so it is
    what a render's silhouette bounding box should measure, divided by the image size.
    """
    xy = project_points(mesh, _used_vertices(mesh), view, 1)
    w, h = xy.max(axis=0) - xy.min(axis=0)
    return float(w), float(h)


EDGE_COLOR = (40, 44, 52)
# Depth jump (in units of the model's bounding-sphere radius) that counts as an edge: faces facing the
# camera shade alike in axis views, so steps in depth (a boss on a plate, a pocket floor) would vanish.
EDGE_DEPTH_STEP = 0.02


def depth_edges(depth: np.ndarray, step: float = EDGE_DEPTH_STEP, fg: np.ndarray | None = None) -> np.ndarray:
    """Return a bool mask of foreground pixels next to a depth jump larger than ``step`` or to background.
    ``fg``: ``depth > 0`` when the caller has it already."""
    fg = depth > 0 if fg is None else fg
    edges = np.zeros_like(fg)
    for axis in (0, 1):
        d = np.diff(depth, axis=axis)
        jump = (np.abs(d) > step) | (np.diff(fg.astype(np.int8), axis=axis) != 0)
        lo = [slice(None)] * 2
        hi = [slice(None)] * 2
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        edges[tuple(lo)] |= jump
        edges[tuple(hi)] |= jump
    return edges & fg


def silhouette(image: np.ndarray, background: Iterable[int] = (255, 255, 255), tol: int = 0) -> np.ndarray:
    """Boolean ``[H, W]`` mask of pixels whose colour differs from ``background`` by more than ``tol``
    in any channel."""
    img = np.asarray(image)
    bg = [int(b) for b in tuple(background)[: img.shape[-1]]]
    # one channel at a time: ~3x faster than a reduction over the short last axis (it runs once per rendered view)
    mask = np.zeros(img.shape[:-1], dtype=bool)
    for c, b in enumerate(bg):
        ch = img[..., c]
        mask |= (ch != b) if tol == 0 else (np.abs(ch.astype(np.int16) - b) > tol)
    return mask


PNG_COLOUR_TYPES = {1: 0, 3: 2, 4: 6}  # channels -> PNG colour type: grey, RGB, RGBA


def encode_png(image: np.ndarray, compress_level: int = 6) -> bytes:
    """Return ``image`` (uint8, ``[H, W]`` grey or ``[H, W, C]`` with C in 1, 3, 4) as PNG bytes: the first row with
    PNG filter 0 (none), every other row with filter 2 ("Up": the byte minus the one above it, mod 256), then a zlib
    stream at ``compress_level`` (0-9) from libdeflate (the ``deflate`` package).

    Why not Pillow: its adaptive per-row filters cost twice the encode time, and a shard writes three images a
    model. On renders (flat background, flat-shaded faces) "Up" alone turns each face's interior into zero runs:
    files as small as Pillow's (mean 2.5 KiB a 512 px view on the default data; 3.1 unfiltered) for one vectorised
    subtraction. libdeflate gives zlib's size at the same level in half its time (1.1 against 2.3 ms a view on
    the development machine). Any PNG reader decodes it."""
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in PNG_COLOUR_TYPES):
        raise ValueError(f"encode_png: expected uint8 [H, W] or [H, W, 1|3|4], got {img.dtype} {list(img.shape)}")
    if not 0 <= compress_level <= 9:
        raise ValueError(f"encode_png: compress_level {compress_level} is not a zlib level 0-9")
    h, w = img.shape[:2]
    channels = 1 if img.ndim == 2 else img.shape[2]
    flat = img.reshape(h, w * channels)
    rows = np.empty((h, 1 + w * channels), np.uint8)  # column 0: each row's filter type
    rows[0, 0], rows[0, 1:] = 0, flat[0]
    rows[1:, 0] = 2
    np.subtract(flat[1:], flat[:-1], out=rows[1:, 1:])  # uint8 wraps mod 256, as the filter is defined

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", w, h, 8, PNG_COLOUR_TYPES[channels], 0, 0, 0)  # 8 bit, no interlace
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", bytes(deflate.zlib_compress(rows, compress_level))) + chunk(b"IEND", b""))


def save_png(path: str | Path, image: np.ndarray, compress_level: int = 6) -> Path:
    """Write ``image`` (uint8 RGB, RGBA or grey) to ``path`` as PNG (:func:`encode_png`), atomically; return
    ``path``."""
    path = Path(path)
    data = encode_png(image, compress_level)
    # not lib.io.atomic_write_bytes: its fsync per file would cost a shard three syncs a model; the shard's own
    # file, written last, is what says its images are complete
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)
    return path


class ViewRenderer:
    """Render meshes from fixed named views with one reusable offscreen GL context.

    Create it once per worker/shard (context start-up is the expensive part) and call :meth:`render`
    for every mesh; only the scene's mesh node is replaced between models. Not thread-safe: use one
    renderer per thread/process. Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        size: int = 512,
        views: Iterable[str] = ("front", "top", "right"),
        background: tuple[int, int, int] = (255, 255, 255),
        color: tuple[float, float, float] = (0.55, 0.6, 0.7),
    ):
        import pyrender  # deferred: needs PYOPENGL_PLATFORM set above and a working EGL

        self._pyrender = pyrender
        self.size = int(size)
        self.views = tuple(views)
        if not self.views:
            raise ValueError("no views requested")
        self._rotations = {v: _view_rotation(v) for v in self.views}
        self.background = tuple(int(c) for c in background)
        self.color = tuple(float(c) for c in color)
        self.material = pyrender.MetallicRoughnessMaterial(
            baseColorFactor=(*self.color, 1.0), metallicFactor=0.0, roughnessFactor=0.9, doubleSided=True
        )

        half = 1.0 / FILL
        self._scene = pyrender.Scene(
            bg_color=(*(c / 255.0 for c in self.background), 1.0), ambient_light=(_AMBIENT,) * 3
        )
        self._cam_node = self._scene.add(pyrender.OrthographicCamera(xmag=half, ymag=half, znear=_ZNEAR, zfar=_ZFAR))
        self._key_node = self._scene.add(pyrender.DirectionalLight(color=np.ones(3), intensity=_KEY_INTENSITY))
        self._fill_node = self._scene.add(pyrender.DirectionalLight(color=np.ones(3), intensity=_FILL_INTENSITY))
        self._key_local = self._light_rotation(_KEY_DIR)
        self._fill_local = self._light_rotation(_FILL_DIR)
        self._mesh_node = None
        self._renderer = pyrender.OffscreenRenderer(self.size, self.size)
        self.foreground: dict[str, float] = {}  # the last render's share of mesh pixels per view (see render)

    @staticmethod
    def _light_rotation(toward_light) -> np.ndarray:
        """Rotation (camera frame) whose -z axis is the light's travel direction."""
        z = np.asarray(toward_light, dtype=float)
        z /= np.linalg.norm(z)
        helper = np.array([0.0, 1.0, 0.0]) if abs(z[1]) < 0.9 else np.array([1.0, 0.0, 0.0])
        x = np.cross(helper, z)
        x /= np.linalg.norm(x)
        return np.stack([x, np.cross(z, x), z], axis=1)

    def _set_view(self, view: str) -> None:
        rot = self._rotations[view]
        cam = np.eye(4)
        cam[:3, :3] = rot
        cam[:3, 3] = rot[:, 2] * _CAM_DIST
        self._scene.set_pose(self._cam_node, cam)
        for node, local in ((self._key_node, self._key_local), (self._fill_node, self._fill_local)):
            pose = np.eye(4)
            pose[:3, :3] = rot @ local
            self._scene.set_pose(node, pose)

    def _set_mesh(self, mesh: trimesh.Trimesh) -> None:
        verts = _used_vertices(mesh)
        center, radius = _framing(verts)
        import trimesh

        normalised = trimesh.Trimesh(
            vertices=(np.asarray(mesh.vertices, dtype=float) - center) / radius,
            faces=np.asarray(mesh.faces),
            process=False,
        )
        pm = self._pyrender.Mesh.from_trimesh(normalised, material=self.material, smooth=False)
        if self._mesh_node is not None:
            self._scene.remove_node(self._mesh_node)
            self._mesh_node = None
        self._mesh_node = self._scene.add(pm)

    def render(self, mesh: trimesh.Trimesh) -> dict[str, np.ndarray]:
        """Return ``{view: uint8 RGB [size, size, 3]}`` for ``mesh`` (any scale, any position).

        Also sets :attr:`foreground`, ``{view: share of pixels the mesh covers}``, from the depth buffer, without
        another pass over the image: a colour :func:`silhouette` finds these pixels and the antialiased rim.
        """
        if self._renderer is None:
            raise RuntimeError("renderer is closed")
        self._set_mesh(mesh)
        out: dict[str, np.ndarray] = {}
        self.foreground = {}
        for view in self.views:
            self._set_view(view)
            color, depth = self._renderer.render(self._scene, flags=self._pyrender.RenderFlags.SKIP_CULL_FACES)
            image = np.array(color[..., :3], dtype=np.uint8)
            fg = depth > 0
            image[depth_edges(depth, fg=fg)] = EDGE_COLOR
            out[view] = image
            self.foreground[view] = float(np.count_nonzero(fg)) / fg.size
        return out

    def close(self) -> None:
        """Release the GL context (idempotent).

        pyrender's own ``OffscreenRenderer.delete`` (also run by its ``__del__``) calls
        ``eglTerminate`` on the process-wide EGL display, which breaks every other live renderer in the
        process; on EGL this destroys only this renderer's context and leaves the display initialised.
        A renderer dropped without closing is closed the same way by :meth:`__del__`.
        """
        if self._mesh_node is not None:
            self._scene.remove_node(self._mesh_node)
            self._mesh_node = None
        offscreen, self._renderer = self._renderer, None
        if offscreen is None:
            return
        platform = getattr(offscreen, "_platform", None)
        if type(platform).__name__ != "EGLPlatform" or getattr(platform, "_egl_context", None) is None:
            offscreen.delete()
            return
        from OpenGL.EGL import EGL_NO_CONTEXT, EGL_NO_SURFACE, eglDestroyContext, eglMakeCurrent

        platform.make_current()
        offscreen._renderer.delete()  # frees this context's buffers, shaders and framebuffers
        eglMakeCurrent(platform._egl_display, EGL_NO_SURFACE, EGL_NO_SURFACE, EGL_NO_CONTEXT)
        eglDestroyContext(platform._egl_display, platform._egl_context)
        platform._egl_context = None
        platform._egl_display = None  # else Platform.__del__ would still eglTerminate it
        offscreen._renderer = None
        offscreen._platform = None

    def __del__(self):
        with contextlib.suppress(Exception):
            self.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
