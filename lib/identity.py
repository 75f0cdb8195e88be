"""What a result was computed from, as digests: code (an import closure), files and tables (their content).

Code identity: :func:`import_closure` follows every ``import`` of a module inside this repository (module level,
inside functions, and ``[python, "-m", "<module>"]`` subprocess entry points), reading source with ``ast`` so
nothing is imported; :func:`code_digest` hashes that closure with comments, docstrings and layout removed, so a
cosmetic edit keeps the digest and any change of what runs does not. Data identity: :func:`file_digest`,
:func:`tree_digest` and :func:`frame_digest` hash content, never paths, sizes or mtimes.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
_CHUNK = 1 << 20


def module_file(name: str, root: str | Path = REPO_ROOT) -> Path | None:
    """Return the source file of module ``name`` under ``root`` (``a/b.py`` or ``a/b/__init__.py``), or None
    when it is not this repository's (a third-party or standard-library module, or an attribute)."""
    base = Path(root).joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def import_closure(*modules: str, root: str | Path = REPO_ROOT) -> list[str]:
    """Return the names of every module of this repository that importing (or running) ``modules`` executes:
    the modules themselves, their parent packages' ``__init__``, and recursively what they import. Sorted.

    Raises ModuleNotFoundError when one of ``modules`` is not under ``root``.
    """
    root = Path(root).resolve()
    seen: set[str] = set()
    todo = list(modules)
    for name in modules:
        if module_file(name, root) is None:
            raise ModuleNotFoundError(f"import_closure: no module {name!r} under {root}")
    while todo:
        name = todo.pop()
        for parent in _with_parents(name):
            path = module_file(parent, root)
            if path is None or parent in seen:
                continue
            seen.add(parent)
            todo.extend(_imported_names(path, parent, root))
    return sorted(seen)


def closure_files(*modules: str, root: str | Path = REPO_ROOT) -> list[Path]:
    """Return the source files of :func:`import_closure`, relative to ``root``, sorted."""
    root = Path(root).resolve()
    return sorted(module_file(m, root).relative_to(root) for m in import_closure(*modules, root=root))


def code_digest(*modules: str, root: str | Path = REPO_ROOT) -> str:
    """Return a short sha256 of the import closure of ``modules``: each file's syntax tree without docstrings,
    comments or layout, keyed by its path. Editing a comment or docstring keeps it; editing code changes it."""
    root = Path(root).resolve()
    h = hashlib.sha256()
    for rel in closure_files(*modules, root=root):
        h.update(rel.as_posix().encode() + b"\0" + _normalised_source(root / rel).encode() + b"\0")
    return h.hexdigest()[:16]


def file_digest(path: str | Path) -> str:
    """Return the sha256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def tree_digest(path: str | Path) -> str:
    """Return a sha256 of a file, or of a directory's files (relative names and contents; not mtimes, not the
    directory's own location). Hidden files (``.git``, editor and lock files) are left out."""
    path = Path(path)
    if path.is_file():
        return file_digest(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or directory")
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(n for n in filenames if not n.startswith(".")):
            f = Path(dirpath) / name
            h.update(f.relative_to(path).as_posix().encode() + b"\0" + file_digest(f).encode() + b"\n")
    return h.hexdigest()


def frame_digest(frame: Any, columns: Iterable[str] | None = None) -> str:
    """Return a sha256 of a pandas DataFrame's rows (values of ``columns``, default all, in order): the same table
    written by another pyarrow version, or as another file, has the same digest."""
    cols = sorted(frame.columns) if columns is None else list(columns)
    h = hashlib.sha256(json.dumps(cols).encode())
    for row in frame[cols].itertuples(index=False, name=None):
        h.update(json.dumps(row, default=_jsonable).encode() + b"\n")
    return h.hexdigest()


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy scalars and arrays (list columns come back as arrays)
        return value.tolist()
    return str(value)


# ----------------------------------------------------------------------------- parsing


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


@functools.lru_cache(maxsize=4096)
def _parsed(path: Path, mtime_ns: int) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _tree(path: Path) -> ast.Module:
    return _parsed(path, path.stat().st_mtime_ns)


def _imported_names(path: Path, module: str, root: Path) -> list[str]:
    """Repository modules named by the imports of ``path`` (the file of ``module``)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: list[str] = []
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_relative(node, package)
            names.append(base)
            names.extend(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
        elif isinstance(node, (ast.List, ast.Tuple)):  # [sys.executable, "-m", "lib.bench.loader_child", ...]
            values = [e.value if isinstance(e, ast.Constant) else None for e in node.elts]
            names.extend(values[i + 1] for i, v in enumerate(values[:-1])
                         if v == "-m" and isinstance(values[i + 1], str))
    return [n for n in names if n and module_file(n, root) is not None]


def _resolve_relative(node: ast.ImportFrom, package: str) -> str:
    if not node.level:
        return node.module or ""
    parts = package.split(".") if package else []
    base = parts[:len(parts) - (node.level - 1)] if node.level > 1 else parts
    return ".".join([*base, *([node.module] if node.module else [])])


def _normalised_source(path: Path) -> str:
    """The file's syntax tree without docstrings, dumped without positions (so comments and layout vanish)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and \
                    isinstance(first.value.value, str):
                node.body = node.body[1:]
    return ast.dump(tree, include_attributes=False)


__all__ = ["REPO_ROOT", "closure_files", "code_digest", "file_digest", "frame_digest", "import_closure",
           "module_file", "tree_digest"]
