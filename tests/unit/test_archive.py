"""Per-shard archives (lib.archive): deterministic packing, paths through an archive, clear errors."""
import os
import zipfile

import pytest

from lib import archive


def _folder(base, files):
    for rel, data in files.items():
        p = base / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return base


FILES = {"videos/10.webm": b"ten" * 1000, "videos/2.webm": b"two", "images/0000/7_front.png": b"\x89PNG..."}


def test_pack_is_sorted_stored_and_byte_identical_across_runs(tmp_path):
    a = archive.pack(_folder(tmp_path / "a", FILES), tmp_path / "a.zip")
    os.utime(tmp_path / "a/videos/2.webm", (1, 1))  # file times must not reach the archive
    b = archive.pack(_folder(tmp_path / "b", dict(reversed(FILES.items()))), tmp_path / "b.zip")
    assert a.read_bytes() == b.read_bytes()
    assert archive.members(a) == sorted(FILES)
    with zipfile.ZipFile(a) as zf:
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_STORED}
        assert zf.testzip() is None
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # the atomic write left nothing


def test_paths_through_an_archive_read_like_files(tmp_path):
    z = archive.pack(_folder(tmp_path / "src", FILES), tmp_path / "out/archives/shard-00001-00ff.zip")
    for rel, data in FILES.items():
        inside = z / rel
        assert archive.locate(inside) == (z, rel)
        assert archive.read_bytes(inside) == data and archive.size(inside) == len(data)
        assert archive.exists(inside)
        with archive.open_binary(inside) as fh:  # seekable: decoders seek in a member
            fh.seek(1)
            assert fh.read(2) == data[1:3]
    plain = tmp_path / "src/videos/2.webm"
    assert archive.locate(plain) is None and archive.read_bytes(plain) == b"two" and archive.exists(plain)
    assert not archive.exists(z / "videos/3.webm") and not archive.exists(tmp_path / "nope.webm")
    with pytest.raises(FileNotFoundError, match=r"shard-00001-00ff\.zip has no member 'videos/3\.webm'; rerun"):
        archive.read_bytes(z / "videos/3.webm")


def test_resolve_joins_out_archive_and_path(tmp_path):
    through = archive.resolve(tmp_path, "archives/s.zip", "videos/1.webm")
    assert through == str(tmp_path / "archives/s.zip/videos/1.webm")
    # no archive (e.g. SSv2 keep mode): the path is relative to out and may leave it, towards the source
    assert archive.resolve(tmp_path / "out", None, "../raw/v/1.webm") == str(tmp_path / "raw/v/1.webm")


def test_an_empty_folder_packs_to_an_empty_archive(tmp_path):
    z = archive.pack(tmp_path / "missing", tmp_path / "e.zip")
    assert archive.members(z) == []


def test_a_replaced_archive_is_read_afresh(tmp_path):
    """Handles are cached per process; a rerun that replaces the archive must not be read through the old one."""
    z = archive.pack(_folder(tmp_path / "a", {"x.bin": b"old"}), tmp_path / "s.zip")
    assert archive.read_bytes(z / "x.bin") == b"old"
    archive.pack(_folder(tmp_path / "b", {"x.bin": b"newer", "y.bin": b"y"}), z)
    assert archive.read_bytes(z / "x.bin") == b"newer" and archive.exists(z / "y.bin")
