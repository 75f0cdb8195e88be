"""DeepCAD models to CAD code, meshes and multi-view PNGs, in shards (the ``render_deepcad`` fan-out).

Plan (split file + listing, cheap, recomputed by every job) -> per shard: parse, normalise, CAD code,
watertight mesh, one renderer reused for the whole shard -> merge to ``models.parquet``,
``quarantine.json`` and ``summary.json``. This module holds only what is DeepCAD's; :data:`FANOUT` hands it
to the shared fan-out skeleton (``lib.shards``: shard loop, digest-named shard files, verified merge). Every
file is written atomically; a bad model is quarantined with its reason and the rest goes on.
"""
from __future__ import annotations

from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import pandas as pd
from annotated_types import Ge, Interval

from lib.config import Checked
from lib.deepcad.layout import CAD_JSON_DIR, SPLIT_FILE, SPLITS, ModelPaths
from lib.deepcad.layout import DeepCADSource as DeepCADSource  # re-exported: the fan-out names its source here
from lib.io import DataError, UnsafePathError, atomic_path, read_json, remove_unlisted
from lib.quarantine import QuarantineEntry, QuarantineError
from lib.shards import ARCHIVE_COLUMN, FanOut, ShardPlan, natural_key, result_counts, shard_of
from lib.shards import QUARANTINE as QUARANTINE  # re-exported: readers of the outputs name them from here
from lib.shards import SUMMARY as SUMMARY

MODELS = "models.parquet"
IMAGE_DIR = "images"
MESH_DIR = "meshes"


@dataclass(frozen=True)
class RenderDeepCADConfig(Checked):
    """``render_deepcad`` params: shards, views, image size, CAD code precision, blank-render limit."""

    out: str = "data/processed/deepcad_render"
    shards: Annotated[int, Ge(1)] = 4
    cores: int = 2  # snakemake --cores used by the DVC stage
    views: list[str] = field(default_factory=lambda: ["front", "top", "right"])  # from lib.render.VIEWS
    image_size: Annotated[int, Ge(16)] = 512
    code_decimals: int = 4
    normalize_size: float = 0.75  # DeepCAD's NORM_FACTOR: max |coordinate| after normalisation
    min_foreground: float = 0.002  # a view with fewer non-background pixels than this fraction is blank
    save_meshes: bool = True
    png_compress_level: Annotated[int, Interval(ge=0, le=9)] = 6  # libdeflate level; 3-6 encode alike on renders

    def __post_init__(self) -> None:
        super().__post_init__()
        from lib.render import VIEWS  # not at the top: importing lib.render sets PYOPENGL_PLATFORM, loads trimesh

        unknown = [v for v in self.views if v not in VIEWS]
        if unknown or not self.views:
            raise ValueError(f"views must be a non-empty list from {sorted(VIEWS)}, got {self.views}")


@dataclass(frozen=True)
class PlannedModel:
    """A model listed in the split file whose JSON exists inside the root."""

    id: str  # "folder/id" as in the split file
    split: str
    source: str  # relative to the root
    bytes: int
    mtime_ns: int
    shard: int


RenderPlan = ShardPlan[PlannedModel]


def plan_render(root: str | Path, shards: int) -> RenderPlan:
    """Read the split file and list ``cad_json``; return the models to render and what to quarantine.

    Quarantined here: split ids that escape the root, are listed twice, or have no JSON file; JSON
    files the split file does not list.
    """
    root = Path(root)
    split_path = root / SPLIT_FILE
    if not split_path.is_file():
        raise FileNotFoundError(
            f"{split_path}: no DeepCAD split file. Point deepcad.root in params.yaml at a DeepCAD download "
            f"(with {CAD_JSON_DIR}/ and {SPLIT_FILE}) or run `dvc repro synth_deepcad` for the embedded data.")
    splits = read_json(split_path)
    if not isinstance(splits, dict) or not all(isinstance(v, list) for v in splits.values()):
        raise DataError(f"{split_path}: expected {{split: [\"folder/id\", ...]}}")
    listed = Counter(str(i) for ids in splits.values() for i in ids)
    quarantine: list[QuarantineEntry] = []
    items: list[PlannedModel] = []
    path_of = ModelPaths(root)
    for split in SPLITS:
        for model_id in map(str, splits.get(split, [])):
            rel = f"{CAD_JSON_DIR}/{model_id}.json"
            if listed[model_id] > 1:
                quarantine.append(QuarantineEntry(model_id, rel, "duplicate_id",
                                                  f"listed {listed[model_id]} times in {SPLIT_FILE}", split))
                continue
            try:
                path = path_of(model_id)
            except UnsafePathError as err:
                quarantine.append(QuarantineEntry(model_id, rel, "path_escape", str(err), split))
                continue
            if not path.is_file():
                quarantine.append(QuarantineEntry(model_id, rel, "missing_model", f"{rel} does not exist", split))
                continue
            st = path.stat()
            items.append(PlannedModel(model_id, split, rel, st.st_size, st.st_mtime_ns, shard_of(model_id, shards)))
    json_dir = root / CAD_JSON_DIR
    on_disk = {p.relative_to(json_dir).with_suffix("").as_posix() for p in json_dir.glob("*/*.json")} \
        if json_dir.is_dir() else set()
    for model_id in sorted(on_disk - set(listed), key=natural_key):
        quarantine.append(QuarantineEntry(model_id, f"{CAD_JSON_DIR}/{model_id}.json", "not_in_split",
                                          f"not listed in {SPLIT_FILE}"))
    items.sort(key=lambda m: natural_key(m.id))
    return ShardPlan(items, quarantine)


def image_name(model_id: str, view: str) -> str:
    """Return a model view's PNG path relative to the image folder: ``<folder>/<id>_<view>.png``."""
    return f"{model_id}_{view}.png"


class ModelRenderer:
    """Turns one model JSON into its CAD code, mesh and view images; holds one GL renderer for a shard."""

    MAX_PENDING = 4  # models whose writes may still be in flight

    def __init__(self, cfg: RenderDeepCADConfig):
        from lib.render import ViewRenderer

        self.cfg = cfg
        self.out = Path(cfg.out)
        self.renderer = ViewRenderer(size=cfg.image_size, views=tuple(cfg.views))
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="render-writes")
        self._pending: deque[Future] = deque()
        self._paths: ModelPaths | None = None

    def close(self) -> None:
        """Finish every pending write (raising the first error: the shard is then not written), release the GL
        context."""
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            for f in self._pending:
                f.cancel()
            self._writer.shutdown(wait=True)
            self.renderer.close()

    def __call__(self, root: Path, item: PlannedModel) -> dict:
        """Return the model's row; raises QuarantineError for a malformed model or a blank render."""
        from lib.deepcad.cadcode import to_code
        from lib.deepcad.mesh import build_mesh
        from lib.deepcad.normalize import normalize
        from lib.deepcad.parse import load_model
        from lib.render import save_png

        if self._paths is None or self._paths.root != Path(root):
            self._paths = ModelPaths(root)
        seq = load_model(self._paths(item.id))
        norm = normalize(seq, size=self.cfg.normalize_size)
        code = to_code(norm, decimals=self.cfg.code_decimals)
        mesh = build_mesh(norm)
        images = self.renderer.render(mesh)
        fg = self.renderer.foreground
        blank = [v for v, f in fg.items() if f < self.cfg.min_foreground]
        if blank:
            raise QuarantineError("blank_render", ", ".join(f"{v}: {fg[v]:.4%} foreground" for v in blank)
                                  + f" < render_deepcad.min_foreground={self.cfg.min_foreground}")
        row = {"id": item.id, "split": item.split, "source_path": item.source, "code": code,
               "extrudes": len(norm.extrudes),
               "operations": ",".join(e.operation for e in norm.extrudes),
               "volume": float(mesh.volume), "faces": int(len(mesh.faces)),
               "watertight": bool(mesh.is_watertight)}
        writes = []
        for view, img in images.items():
            rel = image_name(item.id, view)
            writes.append((save_png, self.out / IMAGE_DIR / rel, img, self.cfg.png_compress_level))
            row[f"image_{view}"] = rel
            row[f"foreground_{view}"] = fg[view]
        if self.cfg.save_meshes:
            mesh_rel = f"{item.id}.ply"
            writes.append((_write_ply, self.out / MESH_DIR / mesh_rel, mesh))
            row["mesh"] = mesh_rel
        self._submit(writes)
        return row

    def _submit(self, writes: list[tuple]) -> None:
        """Write in the background while the next model renders (the render waits in GL calls, which run without
        the GIL, so a free core encodes meanwhile; libdeflate itself holds the GIL); at most a few models' writes
        wait, so memory stays flat. :meth:`close` waits for all and re-raises."""
        while len(self._pending) >= self.MAX_PENDING:
            self._pending.popleft().result()
        self._pending.append(self._writer.submit(_run_all, writes))


def _write_ply(path: Path, mesh) -> None:
    with atomic_path(path) as tmp:
        mesh.export(tmp, file_type="ply")


def _run_all(writes: list[tuple]) -> None:
    for fn, *args in writes:
        fn(*args)


def _columns(cfg: RenderDeepCADConfig) -> list[str]:
    cols = ["id", "split", "source_path", "code", "extrudes", "operations", "volume", "faces", "watertight"]
    for v in cfg.views:
        cols += [f"image_{v}", f"foreground_{v}"]
    return cols + ["mesh", "reason", "detail"]


def _quarantine_row(item: PlannedModel) -> dict:
    return {"id": item.id, "split": item.split, "source_path": item.source}


def _finish(root: Path, cfg: RenderDeepCADConfig, good: pd.DataFrame, quarantine: list[dict]) -> dict:
    """Delete loose images and meshes (the layout before per-shard archives: they are in the archives now, which
    the skeleton keeps exactly the plan's of); return the summary."""
    out = Path(cfg.out)
    remove_unlisted(out / IMAGE_DIR, set())
    remove_unlisted(out / MESH_DIR, set())
    return {"root": str(root), "models": int(len(good)), "images": int(len(good) * len(cfg.views)),
            "views": list(cfg.views), **result_counts(good, quarantine)}


FANOUT = FanOut(
    name="render_deepcad", rule_prefix="deepcad", entry="stages.render_deepcad",
    source=("deepcad", DeepCADSource), config=("render_deepcad", RenderDeepCADConfig),
    plan=plan_render, worker=ModelRenderer, quarantine_row=_quarantine_row, columns=_columns,
    table=MODELS, finish=_finish, int_columns=("extrudes", "faces"), item=PlannedModel, unit="model", mem_mb=2000,
    archive=lambda cfg: True)  # 3 PNGs and a PLY a model: 713k files at DeepCAD's size, 512 archives packed
run_shard = FANOUT.run_shard  # (root, cfg, index, *, progress=True): one shard's parquet
merge_shards = FANOUT.merge  # (root, cfg): models.parquet, quarantine and summary; returns the summary


def read_models(out: str | Path) -> pd.DataFrame:
    """Return ``models.parquet`` of a render output folder, its ``image_<view>`` and ``mesh`` columns made paths
    relative to ``out`` through each model's shard archive (``archives/shard-00003-<digest>.zip/images/<id>_front.png``;
    ``lib.archive.open_binary`` opens them)."""
    df = pd.read_parquet(Path(out) / MODELS)
    archives = df[ARCHIVE_COLUMN] if ARCHIVE_COLUMN in df.columns else [None] * len(df)
    views = [c for c in df.columns if c.startswith("image_")]
    for col, folder in [*((c, IMAGE_DIR) for c in views), ("mesh", MESH_DIR)]:
        df[col] = [None if pd.isna(name)
                   else f"{a}/{folder}/{name}" if isinstance(a, str) else f"{folder}/{name}"
                   for a, name in zip(archives, df[col], strict=True)]
    return df

