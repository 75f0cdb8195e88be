"""conf/ (the Hydra config DVC composes params.yaml from): params.yaml is its composition, and each preset composes
to what benchmarks/gpu_params.py applies on machines without Hydra."""
import copy
import subprocess
import sys

import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from benchmarks import gpu_params
from lib.train.apt import from_section as apt_section
from lib.train.cad_vlm import from_section as cad_section
from tests.helpers.workspace import REPO

PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())


def composed(*overrides: str) -> dict:
    with initialize_config_dir(str(REPO / "conf"), version_base=None):
        cfg = compose(config_name="config", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)


def test_params_yaml_is_the_composition_of_conf():
    assert composed() == PARAMS
    check = subprocess.run([sys.executable, "scripts/compose_params.py", "--check"], cwd=REPO, capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stderr


def test_gpu_presets_compose_to_what_gpu_params_applies():
    assert composed("train_apt=gpu_h200") == gpu_params.preset("apt", copy.deepcopy(PARAMS))
    assert composed("train_curriculum=gpu_h200", "data=ssv2_1024") == gpu_params.preset("vae", copy.deepcopy(PARAMS))
    assert composed("train_cad_vlm=gpu_h200") == gpu_params.preset("cad", copy.deepcopy(PARAMS))


def test_a_preset_changes_only_its_section_and_loads():
    tiny = composed("train_apt=tiny")
    assert {k: v for k, v in tiny.items() if k != "train_apt"} == {k: v for k, v in PARAMS.items() if k != "train_apt"}
    assert tiny["train_apt"]["steps"] == 8 and tiny["train_apt"]["lr"] == PARAMS["train_apt"]["lr"]  # cpu kept
    cfg = apt_section(tiny["train_apt"], "train_apt")
    assert cfg.train.steps == 8


def test_cad_gpu_preset_loads_and_changes_only_its_section():
    gpu = composed("train_cad_vlm=gpu_h200")
    assert {k: v for k, v in gpu.items() if k != "train_cad_vlm"} == {
        k: v for k, v in PARAMS.items() if k != "train_cad_vlm"}
    cfg = cad_section(gpu["train_cad_vlm"], "train_cad_vlm")
    assert (cfg.image_size, cfg.model.image_size, cfg.model.layers, cfg.train.mixed_precision) == (128, 128, 2, "bf16")
    assert cfg.train.out_dir == PARAMS["train_cad_vlm"]["out_dir"]  # the cpu file's keys kept
