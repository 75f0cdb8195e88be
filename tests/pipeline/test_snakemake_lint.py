"""`snakemake --lint` on the workflow as checked out: every rule has a log, a conda env, no outside variables in
shell commands, and no functions mixed into rule files."""
import pytest

from tests.helpers.workspace import REPO, run

pytestmark = pytest.mark.pipeline


def test_snakemake_lint_is_clean():
    proc = run(["snakemake", "--lint"], REPO, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Congratulations" in proc.stdout + proc.stderr
