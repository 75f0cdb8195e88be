"""`snakemake --profile profiles/slurm` on a real one-node SLURM cluster (scripts/slurm_local.sh starts Debian's
slurmctld, slurmd and munge on this machine): every shard and merge runs as a SLURM job, and the outputs are
byte-identical to a local run's. The daemons need root and the packages (`bash scripts/slurm_local.sh install`,
which .ci/run does); when they cannot start, the test fails with the reason. Deselect with ``-m "not slurm"``."""
import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers.workspace import REPO, run, venv_env

pytestmark = [pytest.mark.pipeline, pytest.mark.slurm]
SCRIPT = REPO / "scripts/slurm_local.sh"
# Fast polling for a test; the profile's defaults suit a real cluster. No accounting storage here, so job states
# come from squeue (the cluster keeps finished jobs for MinJobAge).
FAST = ["--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "1",
        "--seconds-between-status-checks", "1", "--latency-wait", "5"]


@pytest.fixture
def slurm_conf(tmp_path):
    state = tmp_path / "slurm"
    proc = subprocess.run(["bash", str(SCRIPT), "start", str(state)], capture_output=True, text=True, timeout=120)
    try:
        if proc.returncode != 0:
            pytest.fail(f"the SLURM daemons did not start: {proc.stderr.strip() or proc.stdout.strip()}")
        yield state / "slurm.conf"
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", str(state)], capture_output=True, timeout=60)
    # slurmd's cached config is gone with the daemons: left behind, every later snakemake call (its slurm plugin runs
    # `scontrol show config` at import) waited ~9 s for the stopped controller
    cached = Path("/run/slurm/conf/slurm.conf")
    assert not (cached.is_file() and cached.read_bytes() == (state / "slurm.conf").read_bytes())


def tree_digests(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under ``folder``."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def run_on_slurm(clone: Path, targets: list[str], slurm_conf: Path) -> list[str]:
    """Run ``targets`` through the SLURM profile; return the rules of the jobs it submitted to SLURM."""
    env = {**venv_env(), "SLURM_CONF": str(slurm_conf)}
    proc = subprocess.run(["snakemake", "--profile", "profiles/slurm", *targets, *FAST], cwd=clone, env=env,
                          capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    return re.findall(r"slurm_logs/rule_(\w+?)/", " ".join(re.findall(r"submitted with SLURM jobid \d+ \(log: \S+",
                                                                       log)))


FAN_OUTS = {"render_deepcad": ("data/processed/deepcad_render", 2, "deepcad"),
            "ingest_ssv2": ("data/interim/ssv2", 3, "ssv2")}


def test_fan_outs_on_slurm_equal_a_local_run(clone, slurm_conf):
    run(["python", "-m", "stages.synth_deepcad", "--no-progress"], clone)
    run(["python", "-m", "stages.synth_ssv2", "--no-progress"], clone)
    jobs = run_on_slurm(clone, list(FAN_OUTS), slurm_conf)  # both fan-outs in one run: the node runs 2 jobs at once
    expected = [rule for _, shards, prefix in FAN_OUTS.values()
                for rule in [f"{prefix}_shard"] * shards + [f"{prefix}_merge"]]
    assert sorted(jobs) == sorted(expected), jobs
    on_slurm = {target: tree_digests(clone / out) for target, (out, _, _) in FAN_OUTS.items()}
    for target, (out, shards, _) in FAN_OUTS.items():
        assert len([p for p in on_slurm[target] if p.startswith("shards/shard-")]) == shards
        shutil.rmtree(clone / out)
    run(["snakemake", *FAN_OUTS, "--cores", "2"], clone)
    for target, (out, _, _) in FAN_OUTS.items():
        assert tree_digests(clone / out) == on_slurm[target], f"{target}: SLURM and local outputs differ"


def test_slurm_script_refuses_to_start_without_a_directory():
    proc = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True)
    assert proc.returncode != 0 and "usage" in proc.stderr
