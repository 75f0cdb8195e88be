"""`snakemake render_deepcad` in a temporary clone: dry run, then a real run on three models."""
import json

import pandas as pd
import pytest

from tests.helpers.archives import members
from tests.helpers.deepcad_data import real_model, square_model, write_root
from tests.helpers.workspace import run, set_params

pytestmark = pytest.mark.pipeline


@pytest.fixture
def deepcad_clone(clone):
    ids = ["0000/00000001", "0000/00000002", "0001/00001003"]
    models = [real_model(), square_model([(0, 0), (0.03, 0), (0.03, 0.02), (0, 0.02)]),
              square_model([(0, 0), (0.02, 0), (0.01, 0.03)])]
    write_root(clone / "data/raw/deepcad_synth", dict(zip(ids, models, strict=False)),
               {"train": ids[:2], "validation": ids[2:], "test": []})
    set_params(clone, {"render_deepcad": {"shards": 2, "image_size": 96}})
    return clone, ids


def test_dry_run_then_real_run_on_three_models(deepcad_clone):
    clone, ids = deepcad_clone
    dry = run(["snakemake", "render_deepcad", "--cores", "2", "-n"], clone).stdout
    counts = {p[0]: p[1] for p in (line.split() for line in dry.splitlines()) if len(p) == 2}
    assert counts.get("deepcad_shard") == "2" and counts.get("deepcad_merge") == "1"
    assert not (clone / "data/processed/deepcad_render").exists()

    run(["snakemake", "render_deepcad", "--cores", "2"], clone)
    out = clone / "data/processed/deepcad_render"
    logs = [p.read_text() for p in sorted((clone / "logs/render_deepcad").glob("shard-*.log"))]
    assert len(logs) == 2 and all("item(s) from the run's plan" in t for t in logs)  # planned once, not per job
    benches = [pd.read_csv(p, sep="\t") for p in sorted((clone / "logs/render_deepcad").glob("shard-*.benchmark.tsv"))]
    assert len(benches) == 2 and all(len(b) == 1 and b["s"].iloc[0] > 0 and b["max_rss"].iloc[0] > 0 for b in benches)
    assert not [p for p in (out / "shards").rglob(".slices/*")]  # the merge removed the slices
    models = pd.read_parquet(out / "models.parquet")
    assert sorted(models["id"]) == ids
    assert len(members(out, ".png")) == 3 * 3 and len(list((out / "archives").iterdir())) == 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 9 and summary["quarantined"] == 0
    again = run(["snakemake", "render_deepcad", "--cores", "2", "-n"], clone)
    assert "Nothing to be done" in again.stdout + again.stderr
