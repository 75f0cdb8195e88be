"""`dvc exp show` with the README's filter shows exactly the headline names of reports/summary.json."""
import csv
import io
import json

import pytest

from lib.summary import HEADLINE
from tests.helpers.workspace import run

pytestmark = pytest.mark.pipeline
README_FILTER = ["--drop", ".*", "--keep", r"^(Experiment|Created|summary\..*)$"]  # as in README.md


def test_readme_filter_shows_the_headline_columns(clone):
    run(["dvc", "repro", "--single-item", "summarize"], clone)
    summary = json.loads((clone / "reports/summary.json").read_text())["summary"]
    table = run(["dvc", "exp", "show", "--no-pager", "--csv", *README_FILTER], clone).stdout
    rows = list(csv.DictReader(io.StringIO(table)))
    columns = list(rows[0])
    assert columns[:2] == ["Experiment", "Created"]
    assert columns[2:] == [f"summary.{name}" for name in HEADLINE] + ["summary.stages_missing"]
    workspace = rows[0]  # the first row is the workspace
    gain = summary["apt"]["gain_db"]
    assert workspace["summary.apt.gain_db"] == ("" if gain is None else str(gain))
