"""A parameter sweep as the README documents it: `dvc exp run --queue` of two variants, `dvc queue start -j 2`."""
import csv
import io
import json
import time

import pytest

from tests.helpers.workspace import run

pytestmark = pytest.mark.pipeline


def test_two_queued_variants_run_in_parallel_workers_and_show_side_by_side(clone):
    for digits in (1, 3):
        run(["dvc", "exp", "run", "--queue", "--single-item", "--name", f"digits-{digits}",
             "-S", f"summarize.digits={digits}", "summarize"], clone)
    assert run(["dvc", "queue", "status"], clone).stdout.count("Queued") == 2
    run(["dvc", "queue", "start", "-j", "2"], clone)
    deadline = time.monotonic() + 300
    while True:
        status = run(["dvc", "queue", "status"], clone).stdout
        if "Queued" not in status and "Running" not in status:
            break
        assert time.monotonic() < deadline, status
        time.sleep(2)
    assert status.count("Success") == 2, status

    table = run(["dvc", "exp", "show", "--no-pager", "--csv", "--drop", ".*", "--keep",
                 r"^(Experiment|summary\.apt\.gain_db)$"], clone).stdout
    shown = {r["Experiment"]: r["summary.apt.gain_db"] for r in csv.DictReader(io.StringIO(table))}
    gain = json.loads((clone / "reports/eval_apt/metrics.json").read_text())["G_ema"]["psnr_gain_db"]
    assert float(shown["digits-1"]) == round(gain, 1) and float(shown["digits-3"]) == round(gain, 3)
