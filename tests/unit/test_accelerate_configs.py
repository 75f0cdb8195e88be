"""The accelerate config files of profiles/accelerate/ parse with accelerate's own launcher and say what the README
says: DDP on one node's GPUs; FSDP2 for the VAE curriculum with every ResBlock of the video VAE its own unit."""
from pathlib import Path

import pytest
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils.launch import prepare_multi_gpu_env

from lib.models.video_vae import GPU_PRESET, VideoVAE

CONFIGS = Path(__file__).resolve().parents[2] / "profiles/accelerate"


def launch_env(name: str, *extra: str) -> tuple[object, dict[str, str]]:
    """What `accelerate launch --config_file profiles/accelerate/<name> ... -m stages.train_curriculum` would set."""
    parser = launch_command_parser()
    args = parser.parse_args(["--config_file", str(CONFIGS / name), *extra, "-m", "stages.train_curriculum"])
    args, _, _ = _validate_launch_command(args)
    return args, prepare_multi_gpu_env(args)


def test_ddp_config_is_multi_gpu_data_parallel():
    args, env = launch_env("ddp.yaml", "--num_processes", "8")
    assert args.multi_gpu and not args.use_fsdp and args.num_processes == 8
    assert env.get("ACCELERATE_USE_FSDP", "false") == "false"
    assert env["ACCELERATE_MIXED_PRECISION"] == "no"  # the stage's params decide (train_*.mixed_precision)


def test_fsdp_config_shards_every_resblock_of_the_video_vae_with_fsdp2():
    args, env = launch_env("fsdp_curriculum.yaml")
    assert args.use_fsdp and env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_VERSION"] == "2"
    assert env["FSDP_AUTO_WRAP_POLICY"] == "TRANSFORMER_BASED_WRAP"
    assert env["FSDP_STATE_DICT_TYPE"] == "SHARDED_STATE_DICT" and env["FSDP_RESHARD_AFTER_FORWARD"] == "true"
    wrapped = env["FSDP_TRANSFORMER_CLS_TO_WRAP"].split(",")
    # accelerate matches these names against the model's module classes: they must exist in the GPU preset
    names = [type(m).__name__ for m in VideoVAE(GPU_PRESET).modules()]
    for cls in wrapped:
        assert names.count(cls) >= 8, (cls, sorted(set(names)))


@pytest.mark.parametrize("name", ["ddp.yaml", "fsdp_curriculum.yaml"])
def test_configs_name_no_keys_accelerate_does_not_know(name):
    from accelerate.commands.config.config_args import ClusterConfig

    ClusterConfig.from_yaml_file(CONFIGS / name)  # raises on unknown top-level keys
