import glob
import os

import pytest

from lib.io import (
    SafeRoot,
    UnsafePathError,
    atomic_path,
    atomic_write_json,
    read_json,
    remove_stale_temps,
    safe_join,
)


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out.json"
    atomic_write_json(target, {"a": 1})
    atomic_write_json(target, {"a": 2})
    assert read_json(target) == {"a": 2}
    assert os.listdir(tmp_path) == ["out.json"]


def test_failed_write_keeps_old_file_and_removes_temp(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_temp_name_is_hidden_and_keeps_suffix(tmp_path):
    with atomic_path(tmp_path / "clip.webm") as tmp:
        assert tmp.name.startswith(".clip.webm.tmp-") and tmp.suffix == ".webm"
        assert glob.glob(str(tmp_path / "*.webm")) == []  # shell-style globs for finished files skip it
        tmp.write_bytes(b"x")
        assert remove_stale_temps(tmp_path) == 1  # what a crash would leave is found by the sweeper
        tmp.write_bytes(b"x")


def test_read_json_error_names_the_file(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text("{oops")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        read_json(p)


def test_safe_join_accepts_inside_paths(tmp_path):
    assert safe_join(tmp_path, "a/b.webm") == tmp_path / "a" / "b.webm"
    assert safe_join(tmp_path, "a/../b.webm") == tmp_path / "a/../b.webm"


@pytest.mark.parametrize("rel", ["../x", "a/../../x", "/etc/passwd", "", "a\x00b"])
def test_safe_join_rejects_escapes(tmp_path, rel):
    with pytest.raises(UnsafePathError):
        safe_join(tmp_path / "root", rel)


def test_safe_join_rejects_symlink_out_of_root(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret").write_text("s")
    os.symlink(tmp_path / "secret", root / "link")
    with pytest.raises(UnsafePathError, match="outside the root"):
        safe_join(root, "link")
    assert safe_join(root, "link", resolve_links=False) == root / "link"


def test_safe_root_agrees_with_a_full_realpath_check(tmp_path):
    """SafeRoot resolves parents once; every verdict must equal resolving the whole path (the old check)."""
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (root / "d" / "f.webm").write_text("x")
    (root / "in.webm").write_text("x")
    (root / "link_in").symlink_to(root / "in.webm")
    (root / "link_out").symlink_to(tmp_path / "outside")
    (root / "d" / "dir_out").symlink_to(tmp_path / "outside")
    rels = ["d/f.webm", "in.webm", "link_in", "link_out", "link_out/x.webm", "d/dir_out/x.webm",
            "d/dir_out/../f.webm", "link_out/../in.webm", "d/../in.webm", "missing/x.webm", ".", "../root/in.webm"]

    def full_check(rel):
        real = os.path.realpath(root / rel)
        return os.path.commonpath([os.path.realpath(root), real]) == os.path.realpath(root) and \
            os.path.commonpath([os.path.abspath(root), os.path.abspath(root / rel)]) == os.path.abspath(root)

    guard = SafeRoot(root)
    for rel in rels * 2:  # twice: the second pass runs on cached parents
        try:
            assert guard.join(rel) == root / rel
            accepted = True
        except UnsafePathError:
            accepted = False
        assert accepted == full_check(rel), rel
