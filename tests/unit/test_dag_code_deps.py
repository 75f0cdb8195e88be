"""Code identity: import closures, a digest blind to comments and docstrings, and dvc.yaml deps held to them."""
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lib.dag import code_deps_problems, read_stages, stage_code, sync_code_deps
from lib.identity import REPO_ROOT, closure_files, code_digest, import_closure

MODULES = {
    "pkg/__init__.py": "",
    "pkg/a.py": '''
        """Module a."""
        import json

        from pkg import b
        from .sub import c


        def run():
            """Runs things."""
            from pkg.sub.lazy import go  # imported only when called: still code that runs
            return b.x + c.y + go()
    ''',
    "pkg/b.py": "x = 1\n",
    "pkg/sub/__init__.py": "",
    "pkg/sub/c.py": "y = 2\n",
    "pkg/sub/lazy.py": '''
        import subprocess
        import sys


        def go():
            return subprocess.run([sys.executable, "-m", "pkg.child"]).returncode
    ''',
    "pkg/child.py": "print('child')\n",
    "pkg/unused.py": "z = 3\n",
}


def _write_tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(text).lstrip())
    return root


def test_import_closure_follows_every_kind_of_import_and_nothing_else(tmp_path):
    root = _write_tree(tmp_path, MODULES)
    assert import_closure("pkg.a", root=root) == ["pkg", "pkg.a", "pkg.b", "pkg.child", "pkg.sub", "pkg.sub.c",
                                                 "pkg.sub.lazy"]
    assert [p.as_posix() for p in closure_files("pkg.b", root=root)] == ["pkg/__init__.py", "pkg/b.py"]
    with pytest.raises(ModuleNotFoundError, match="pkg.nope"):
        import_closure("pkg.nope", root=root)


def test_code_digest_ignores_comments_docstrings_and_layout_but_not_code(tmp_path):
    root = _write_tree(tmp_path, MODULES)
    base = code_digest("pkg.a", root=root)
    a = root / "pkg" / "a.py"
    original = a.read_text()
    a.write_text(original.replace('"""Module a."""', '"""Module a, reworded\n\nat length."""')
                 .replace('"""Runs things."""', "# a comment\n    \"\"\"Other words.\"\"\"")
                 .replace("return b.x + c.y + go()", "return (b.x +\n            c.y + go())  # wrapped"))
    assert code_digest("pkg.a", root=root) == base
    a.write_text(original.replace("b.x + c.y", "b.x - c.y"))
    assert code_digest("pkg.a", root=root) != base
    a.write_text(original)
    (root / "pkg" / "sub" / "lazy.py").write_text((root / "pkg" / "sub" / "lazy.py").read_text() + "\nW = 1\n")
    assert code_digest("pkg.a", root=root) != base  # code in an imported module is part of the identity
    (root / "pkg" / "unused.py").write_text("z = 4\n")
    assert code_digest("pkg.b", root=root) == code_digest("pkg.b", root=root)


def test_every_stage_deps_cover_exactly_its_import_closure():
    problems = code_deps_problems()
    assert not problems, ("dvc.yaml code deps disagree with what the stages import; run "
                          "`python scripts/sync_code_deps.py`:\n" + "\n".join(problems))
    # and the check sees real stages: every python -m stages.X command, and both fan-outs through Snakemake
    stages = read_stages()
    codes = {name: stage_code(name, stage) for name, stage in stages.items()}
    assert codes["train_apt"] is not None and "lib/train/loop.py" in codes["train_apt"].files
    assert {"stages.ingest_ssv2", "lib.fanout_rules"} <= set(codes["ingest_ssv2"].entries)
    assert {"Snakefile", "rules/fanout.smk"} <= set(codes["ingest_ssv2"].workflow_files)
    assert all(c is not None for c in codes.values())


def test_the_check_names_missing_stale_and_directory_deps_and_sync_repairs_them(tmp_path):
    root = _write_tree(tmp_path, {**MODULES, "stages/__init__.py": "", "stages/go.py": "from pkg import a\n"})
    (root / "dvc.yaml").write_text(textwrap.dedent("""\
        stages:
          go:
            cmd: python -m stages.go
            deps:
              - data/input.csv        # data: kept as it is
              - pkg/unused.py
              - stages
            outs:
              - out.txt
        """))
    problems = code_deps_problems(root / "dvc.yaml", root)
    assert any("stages: a directory" in p for p in problems)
    assert any("pkg/unused.py: stale" in p for p in problems)
    assert any("pkg/sub/lazy.py: run by the stage" in p for p in problems)
    assert any("pkg/child.py: run by the stage" in p for p in problems)
    assert sync_code_deps(root / "dvc.yaml", root) == ["go"]
    assert code_deps_problems(root / "dvc.yaml", root) == []
    text = (root / "dvc.yaml").read_text()
    assert "- data/input.csv        # data: kept as it is" in text
    assert "pkg/unused.py" not in text and "      - stages/go.py\n" in text


def test_a_fanout_stage_covers_its_workflow_files_and_what_they_import_and_drops_removed_ones(tmp_path):
    root = _write_tree(tmp_path, {**MODULES, "stages/__init__.py": "", "stages/fan.py": "from pkg import b\n",
                                  "Snakefile": 'include: "rules/all.smk"\n',
                                  "rules/all.smk": "from pkg.sub.c import y\n\nrule fan:\n    output: 'o'\n"})
    (root / "dvc.yaml").write_text(textwrap.dedent("""\
        stages:
          fan:
            cmd: snakemake fan --cores 1
            deps:
              - Snakefile
              - rules/old.smk
              - pkg/b.py
              - stages/fan.py
        """))
    problems = code_deps_problems(root / "dvc.yaml", root)
    assert "fan: rules/old.smk: stale, not a workflow file the Snakefile includes" in problems
    assert any(p.startswith("fan: rules/all.smk: workflow file") for p in problems)
    assert any(p.startswith("fan: pkg/sub/c.py: run by the stage") for p in problems)  # imported by rules/all.smk
    assert sync_code_deps(root / "dvc.yaml", root) == ["fan"]
    assert code_deps_problems(root / "dvc.yaml", root) == []
    deps = read_stages(root / "dvc.yaml")["fan"]["deps"]
    assert "rules/old.smk" not in deps and {"Snakefile", "rules/all.smk", "pkg/sub/c.py"} <= set(deps)


def _trainer_fingerprint(repo: Path) -> str:
    """The video VAE trainer's fingerprint computed by the code in ``repo`` (a copy of this repository)."""
    script = ("from lib.train.video_vae import from_section, run_fingerprint\n"
              "print(run_fingerprint(from_section({'out_dir': 'x'}), 'missing.parquet'))\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=repo, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_a_docstring_edit_in_a_trainer_module_keeps_its_fingerprint_and_a_code_edit_does_not(tmp_path):
    repo = tmp_path / "repo"
    for part in ("lib", "stages"):
        shutil.copytree(REPO_ROOT / part, repo / part, ignore=shutil.ignore_patterns("__pycache__"))
    base = _trainer_fingerprint(repo)
    module = repo / "lib" / "train" / "video_vae.py"
    source = module.read_text()
    assert source.startswith('"""')
    module.write_text('"""A reworded docstring.\n\n# not a comment: text\n"""\n' + source.split('"""', 2)[2]
                      + "\n# a trailing comment\n")
    assert _trainer_fingerprint(repo) == base  # resumes
    module.write_text(source.replace("MODEL = \"vae\"", "MODEL = \"vae\"\n_UNUSED = 1"))
    assert _trainer_fingerprint(repo) != base  # starts fresh
