"""The top-level `plots:` of dvc.yaml: `dvc plots show` renders every curve, `dvc plots diff` overlays two revisions."""
import json
import shutil

import pytest
import yaml

from tests.helpers.workspace import REPO, run, set_params

pytestmark = pytest.mark.pipeline
PLOTS = [next(iter(p)) for p in yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]]


def plot_data(stdout: str) -> dict:
    return {k: v for k, v in json.loads(stdout)["data"].items() if k in PLOTS}


def test_every_top_level_plot_renders_and_two_revisions_overlay(clone):
    shown = plot_data(run(["dvc", "plots", "show", "--json"], clone).stdout)
    assert sorted(shown) == sorted(PLOTS)
    for name, entries in shown.items():
        values = entries[0]["content"]["data"]["values"]
        assert len(values) >= 2 and all("step" in v for v in values), name  # a curve, not a point

    # another run's curve: the workspace against the committed one, in one plot
    loss = clone / "reports/train_apt/dvclive/plots/metrics/g/loss.tsv"
    lines = loss.read_text().splitlines()
    loss.write_text("\n".join([lines[0], *(f"{s}\t{float(v) / 2}" for s, v in (x.split("\t") for x in lines[1:]))])
                    + "\n")
    diff = plot_data(run(["dvc", "plots", "diff", "HEAD", "--json"], clone).stdout)["apt_generator_loss"]
    revs = {v["rev"] for v in diff[0]["content"]["data"]["values"]}
    assert revs == {"HEAD", "workspace"}

    # the curves follow a trainer's tracker_dir (the plots interpolate it from params.yaml, not a literal path)
    shutil.move(clone / "reports/train_apt/dvclive", clone / "reports/apt_elsewhere")
    set_params(clone, {"train_apt": {"tracker_dir": "reports/apt_elsewhere"}})
    moved = plot_data(run(["dvc", "plots", "show", "--json"], clone).stdout)["apt_generator_loss"]
    assert len(moved[0]["content"]["data"]["values"]) >= 2
