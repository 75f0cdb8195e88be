"""`dvc exp run -S 'train_apt=tiny'`: DVC composes params.yaml from conf/ with the preset (hydra enabled in
.dvc/config), and the experiment records the preset's values."""
import json

import pytest
import yaml

from tests.helpers.workspace import run

pytestmark = pytest.mark.pipeline


def test_dvc_exp_run_applies_a_preset_by_name(clone):
    before = yaml.safe_load((clone / "params.yaml").read_text())
    assert before["train_apt"]["steps"] != 8
    run(["dvc", "exp", "run", "--single-item", "-n", "tiny", "-S", "train_apt=tiny", "summarize"], clone)
    params = yaml.safe_load((clone / "params.yaml").read_text())  # the experiment's, left in the workspace
    assert params["train_apt"]["steps"] == 8 and params["train_apt"]["model"]["channels"] == 8
    assert {k: v for k, v in params.items() if k != "train_apt"} == \
        {k: v for k, v in before.items() if k != "train_apt"}  # the clone's tiny params elsewhere: composed too
    exps = json.loads(run(["dvc", "exp", "show", "--json"], clone).stdout)
    recorded = [rev["data"]["params"]["params.yaml"]["data"]["train_apt"]["steps"]
                for commit in exps for exp in commit.get("experiments") or [] for rev in exp.get("revs", [])
                if rev.get("name") == "tiny"]
    assert recorded == [8]
