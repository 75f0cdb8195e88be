"""``dvc.yaml`` held to the code: each stage's code deps are exactly the import closure of what it runs.

A stage's entry modules are derived from its command: ``python -m stages.X`` runs ``stages.X``; a fan-out stage
(``snakemake <target> ...``) runs ``stages.<stage name>`` in its jobs, through the workflow files (``Snakefile``
and what it includes), which are deps too. Code deps are listed file by file
(``lib/.../x.py``), so a stage reruns exactly when code it runs changed; :func:`code_deps_problems` says what is
missing or stale and :func:`sync_code_deps` rewrites the lists (comments elsewhere in the file are kept).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lib.config import safe_load
from lib.identity import REPO_ROOT, closure_files, import_closure, module_file

_MODULE_FLAG = re.compile(r"(?:^|\s)-m\s+([A-Za-z_][\w.]*)")
_SMK_INCLUDE = re.compile(r"^\s*include:\s*[\"']([^\"']+)[\"']", re.MULTILINE)
# Workflow files are not Python (Snakemake's grammar), so their imports are read by pattern, not by AST
_SMK_IMPORT = re.compile(r"^\s*(?:from\s+([A-Za-z_][\w.]*)\s+import\b|import\s+([A-Za-z_][\w.]*))"
                         r"|__import__\(\s*[\"']([A-Za-z_][\w.]*)[\"']", re.MULTILINE)


@dataclass
class StageCode:
    """What one stage runs: its entry modules, the workflow files it runs through, and the closure's files."""

    name: str
    entries: list[str]
    workflow_files: list[str] = field(default_factory=list)  # Snakefile and included .smk (fan-out stages)
    files: list[str] = field(default_factory=list)  # posix paths relative to the repo root, sorted


def read_stages(dvc_yaml: str | Path = REPO_ROOT / "dvc.yaml") -> dict[str, dict[str, Any]]:
    """Return the ``stages`` mapping of a dvc.yaml (``${...}`` left as text)."""
    return (safe_load(Path(dvc_yaml).read_text()) or {}).get("stages", {})


def workflow_files(root: str | Path = REPO_ROOT) -> list[str]:
    """Return ``Snakefile`` and every file it includes (recursively), relative to ``root``."""
    root = Path(root)
    found, todo = [], ["Snakefile"]
    while todo:
        rel = todo.pop()
        if rel in found or not (root / rel).is_file():
            continue
        found.append(rel)
        base = Path(rel).parent
        todo.extend((base / inc).as_posix() for inc in _SMK_INCLUDE.findall((root / rel).read_text()))
    return sorted(found)


def workflow_imports(files: list[str], root: str | Path = REPO_ROOT) -> list[str]:
    """Return the modules of this repository that the workflow files import when Snakemake parses them."""
    found = set()
    for rel in files:
        for groups in _SMK_IMPORT.findall((Path(root) / rel).read_text()):
            found.update(m for m in groups if m and module_file(m, root) is not None)
    return sorted(found)


def is_workflow_file(dep: str) -> bool:
    """True for a dep that is a Snakemake workflow file (``Snakefile`` or a ``.smk``)."""
    return "${" not in dep and (Path(dep).name == "Snakefile" or dep.endswith(".smk"))


def stage_code(name: str, stage: dict[str, Any], root: str | Path = REPO_ROOT) -> StageCode | None:
    """Return what stage ``name`` runs, or None when its command runs no code of this repository."""
    root = Path(root)
    cmd = stage.get("cmd", "")
    cmd = " ".join(cmd) if isinstance(cmd, list) else str(cmd)
    entries = [m for m in _MODULE_FLAG.findall(cmd) if module_file(m, root) is not None]
    workflow: list[str] = []
    if cmd.split()[:1] == ["snakemake"]:
        if module_file(f"stages.{name}", root) is None:
            raise ValueError(f"dvc.yaml: stage {name!r} runs snakemake but there is no stages/{name}.py for its jobs")
        entries.append(f"stages.{name}")  # what its jobs run; the plan and digests the rules use are in there
        workflow = workflow_files(root)
        # what Snakemake imports to parse the workflow; over-inclusion is cheap: shards carry their own digest
        entries.extend(workflow_imports(workflow, root))
    if not entries:
        return None
    entries = sorted(set(entries))
    files = [p.as_posix() for p in closure_files(*entries, root=root)]
    return StageCode(name, entries, workflow, files)


def in_package(dep: str, root: str | Path = REPO_ROOT) -> bool:
    """True when ``dep`` lies in one of the repository's top-level packages (``lib/``, ``stages/``)."""
    return "${" not in dep and (Path(root) / dep.split("/")[0] / "__init__.py").is_file()


def is_code_dep(dep: str, root: str | Path = REPO_ROOT) -> bool:
    """True for a dep that is code this check owns: a ``.py`` file, or a directory holding ``.py`` files, in a
    top-level package. Data (``lib/ssv2/reference``), params-templated paths and workflow files are not."""
    if not in_package(dep, root):
        return False
    path = Path(root) / dep
    return dep.endswith(".py") or (path.is_dir() and any(path.rglob("*.py")))


def code_deps_problems(dvc_yaml: str | Path = REPO_ROOT / "dvc.yaml", root: str | Path = REPO_ROOT) -> list[str]:
    """Return one line per disagreement between dvc.yaml's deps and what each stage runs: a closure file no dep
    covers, a code dep outside the closure (stale), a code dep that is a directory (files only), a workflow file
    missing from a fan-out stage's deps. Empty when they agree."""
    problems = []
    for name, stage in read_stages(dvc_yaml).items():
        code = stage_code(name, stage, root)
        if code is None:
            continue
        deps = [d for d in stage.get("deps", []) if isinstance(d, str)]
        listed = {d for d in deps if is_code_dep(d, root)}
        for d in sorted(listed):
            if not d.endswith(".py"):
                problems.append(f"{name}: {d}: a directory; list its files that the stage runs instead")
            elif d not in code.files:
                problems.append(f"{name}: {d}: stale, not imported by {', '.join(code.entries)}")
        for f in code.files:
            if f not in listed:
                problems.append(f"{name}: {f}: run by the stage (import closure of {', '.join(code.entries)}) "
                                f"but not in its deps")
        for f in code.workflow_files:
            if f not in deps:
                problems.append(f"{name}: {f}: workflow file of the fan-out but not in its deps")
        for d in deps:
            if is_workflow_file(d) and d not in code.workflow_files:
                problems.append(f"{name}: {d}: stale, not a workflow file the Snakefile includes")
    return problems


def sync_code_deps(dvc_yaml: str | Path = REPO_ROOT / "dvc.yaml", root: str | Path = REPO_ROOT) -> list[str]:
    """Rewrite each stage's code deps in ``dvc_yaml`` to its import closure (and workflow files), keeping every
    other dep, its order and the file's comments; return the names of the stages changed."""
    from ruamel.yaml import YAML

    ry = YAML()
    ry.preserve_quotes = True
    ry.width = 4096
    ry.indent(mapping=2, sequence=4, offset=2)
    path = Path(dvc_yaml)
    doc = ry.load(path.read_text())
    changed = []
    for name, stage in doc["stages"].items():
        code = stage_code(name, dict(stage), root)
        if code is None:
            continue
        deps = stage.get("deps")
        old = [str(d) for d in deps]
        generated = [d for d in old if is_code_dep(d, root) or is_workflow_file(d)]
        wanted = code.workflow_files + code.files
        if generated == wanted:
            continue
        # the generated entries go where the first of them was; the others keep their place and comments
        at = next((i for i, d in enumerate(old) if d in generated), len(old))
        for i in range(len(old) - 1, -1, -1):
            if old[i] in generated:
                del deps[i]
        at -= sum(1 for d in old[:at] if d in generated)
        for offset, dep in enumerate(wanted):
            deps.insert(at + offset, dep)
        changed.append(name)
    if changed:
        from lib.io import atomic_path

        with atomic_path(path) as tmp, open(tmp, "w") as fh:
            ry.dump(doc, fh)
    return changed


__all__ = ["StageCode", "code_deps_problems", "import_closure", "in_package", "is_code_dep", "is_workflow_file",
           "read_stages", "stage_code", "sync_code_deps", "workflow_files", "workflow_imports"]
