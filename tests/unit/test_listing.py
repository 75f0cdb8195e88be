"""Listings DVC depends on instead of big roots and external inputs: what changes them and what does not."""
from __future__ import annotations

import os

import yaml

from lib.listing import path_listing_text, write_listing, write_path_listing
from lib.summary import dig
from stages.list_external import EXTERNAL
from tests.helpers.workspace import run_stage_module


def test_a_root_listing_changes_with_a_touch_an_edit_or_a_new_file(tmp_path):
    root, dst = tmp_path / "root", tmp_path / "listing.tsv"
    (root / "a").mkdir(parents=True)
    (root / "a" / "x.bin").write_bytes(b"12345")
    assert write_listing(root, dst) == {"files": 1, "bytes": 5, "changed": True}
    assert write_listing(root, dst)["changed"] is False  # unchanged: not rewritten
    assert dst.read_text().splitlines()[1].split("\t")[:2] == ["a/x.bin", "5"]
    st = (root / "a" / "x.bin").stat()
    os.utime(root / "a" / "x.bin", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert write_listing(root, dst)["changed"] is True
    (root / "b.bin").write_bytes(b"")
    assert write_listing(root, dst)["files"] == 2


def test_an_external_path_listing_covers_null_missing_file_and_folder(tmp_path):
    assert path_listing_text(None) == path_listing_text("") == "# path: null (not set)\n"
    assert path_listing_text(tmp_path / "nope").endswith("# missing\n")
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"abc")
    assert path_listing_text(weights).splitlines()[-1].split("\t")[:2] == ["w.safetensors", "3"]
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "sub" / "w.bin").write_bytes(b"1234")
    rows = [line.split("\t")[:2] for line in path_listing_text(folder).splitlines()[2:]]
    assert rows == [["config.json", "2"], ["sub/w.bin", "4"]]

    dst = tmp_path / "listing.tsv"
    assert write_path_listing(folder, dst) and not write_path_listing(folder, dst)
    (folder / "sub" / "w.bin").write_bytes(b"12345")  # rewritten at the same path: the listing changes
    assert write_path_listing(folder, dst)


def test_list_external_writes_one_listing_per_key(tmp_path):
    assert dig({"a": {"b": {"c": 1}}}, "a.b.c") == 1 and dig({"a": {}}, "a.b.c") is None
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "tokenizer.json").write_text("{}")
    params = {"build_cad_conversations": {"tokenizer": "tok"},
              "train_video_vae": {"loss": {"perceptual_weights": None}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = run_stage_module("list_external", [], tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "data/interim/listings/external"
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{k}.tsv" for k in EXTERNAL)
    assert "tokenizer.json\t2\t" in (out / "build_cad_conversations.tokenizer.tsv").read_text()
    assert (out / "train_cad_vlm.base_model.tsv").read_text() == "# path: null (not set)\n"  # key absent: null


def test_every_external_key_is_a_dependency_of_the_stage_it_belongs_to():
    from tests.helpers.workspace import REPO

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for key in EXTERNAL:
        section, leaf = key.rsplit(".", 1)  # a real key (init_from: every trainer's, unset by default)
        assert isinstance(dig(params, section), dict) and (leaf in dig(params, section) or leaf == "init_from")
        listing = f"data/interim/listings/external/{key}.tsv"
        assert listing in stages[key.split(".")[0]]["deps"], key
        assert {listing: {"persist": True}} in stages["list_external"]["outs"], key
