"""The one training loop and its parts: config, LR schedule, EMA, checkpoints, LoRA, guards, curricula.

``from lib.train import Trainer, TrainConfig`` is all a trainer needs; see ``lib/train/loop.py``.
"""
from lib.train.checkpoint import TrainState, latest_checkpoint, load_checkpoint, save_checkpoint
from lib.train.config import TrainConfig
from lib.train.curriculum import (
    CPU_DEFAULT,
    GPU_PRESET,
    CurriculumConfig,
    CurriculumScheduler,
    EarlyStopping,
    PhaseConfig,
)
from lib.train.ema import EMA, ema_beta
from lib.train.guards import CollapseMonitor, NanGuard, TrainingCollapsed, TrainingDiverged
from lib.train.loop import Trainer
from lib.train.lora import InitFromError, apply_lora, init_from, merge_lora
from lib.train.schedule import make_scheduler, refresh_lr, warmup_cosine

__all__ = [
    "CPU_DEFAULT",
    "EMA",
    "GPU_PRESET",
    "CollapseMonitor",
    "CurriculumConfig",
    "CurriculumScheduler",
    "EarlyStopping",
    "InitFromError",
    "NanGuard",
    "PhaseConfig",
    "TrainConfig",
    "TrainState",
    "Trainer",
    "TrainingCollapsed",
    "TrainingDiverged",
    "apply_lora",
    "ema_beta",
    "init_from",
    "latest_checkpoint",
    "load_checkpoint",
    "make_scheduler",
    "merge_lora",
    "refresh_lr",
    "save_checkpoint",
    "warmup_cosine",
]
