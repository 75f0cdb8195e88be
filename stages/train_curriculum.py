"""Stage train_curriculum: the video VAE of train_video_vae through a resolution curriculum.

    python -m stages.train_curriculum [--params params.yaml] [--no-progress]

The same model, loss and data as stages.train_video_vae, but the clips grow phase by phase
(lib.train.curriculum): the CPU default is 32 px / 4 frames -> 64 px / 8 frames -> 128 px / 16 frames, a few
dozen steps each. Each phase sets resolution, frames, batch_size, lr (its own warm-up + cosine) and steps; a
phase ends on steps, epochs or a plateau of a logged metric (transition: step | epoch | plateau). At a phase
change the data is rebuilt at the new size, the LR warm-up restarts and early stopping resets. Validation runs
at the current phase's size. A run killed mid-phase resumes in that phase, exactly.

Params: section train_curriculum: the keys of train_video_vae, except that `curriculum: {phases: [...],
gradient_checkpointing}` replaces batch_size / resolution / clip_frames / warmup_steps, and steps defaults to
the sum of the phases' steps. GPU preset (lib.train.curriculum.GPU_PRESET: 256 px/8 f -> 512/16 -> 1024/49 with
lib.models.video_vae.GPU_PRESET) as an experiment, see README "Video VAE and the resolution curriculum".

Writes under <out_dir>: checkpoints/, final/raw/vae.safetensors, final/metrics.json (stop_reason),
final/curriculum.json (phases run: start, end, reason), config.json; DVCLive metrics and plots under
<tracker_dir> (curriculum/phase, curriculum/resolution, ... beside the losses).
"""
from __future__ import annotations

from lib.cli import run_stage
from stages.train_video_vae import train


def main() -> None:
    train("train_curriculum", __doc__)


if __name__ == "__main__":
    run_stage(main)
