"""lib.cli._run_shard_processes (``<stage> run --jobs N``): every shard once with its digest, the jobs' logs relayed,
llvmpipe held to the cores a job gets (as the Snakemake rule does), failures named."""
import os

import pytest

from lib.cli import _run_shard_processes

FAKE = '''
import os, sys
args = sys.argv[1:]
index, digest = args[args.index("--index") + 1], args[args.index("--digest") + 1]
print(f"shard {index} digest {digest} LP_NUM_THREADS={os.environ.get('LP_NUM_THREADS')}", file=sys.stderr)
sys.exit(1 if index == os.environ.get("FAIL_SHARD") else 0)
'''


@pytest.fixture
def fake_entry(tmp_path, monkeypatch):
    (tmp_path / "fake_stage.py").write_text(FAKE)
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    monkeypatch.delenv("LP_NUM_THREADS", raising=False)
    monkeypatch.delenv("FAIL_SHARD", raising=False)
    return "fake_stage"


def test_each_shard_runs_once_with_its_digest_and_a_share_of_the_cores(fake_entry, capfd, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    _run_shard_processes(fake_entry, "params.yaml", ("d0", "d1", "d2"), jobs=2)
    err = capfd.readouterr().err
    for i in range(3):
        assert err.count(f"shard {i} digest d{i} LP_NUM_THREADS=4") == 1, err


def test_a_users_llvmpipe_setting_wins(fake_entry, capfd, monkeypatch):
    monkeypatch.setenv("LP_NUM_THREADS", "3")
    _run_shard_processes(fake_entry, "params.yaml", ("d0",), jobs=2)
    assert "LP_NUM_THREADS=3" in capfd.readouterr().err


def test_a_failed_shard_is_named(fake_entry, monkeypatch):
    monkeypatch.setenv("FAIL_SHARD", "1")
    with pytest.raises(RuntimeError, match=r"1 of 2 shards failed \(shard 1: shard 1 digest d1"):
        _run_shard_processes(fake_entry, "params.yaml", ("d0", "d1"), jobs=2)
