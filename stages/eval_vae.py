"""Stage eval_vae: the trained video and audio VAEs on held-out data, each against its trivial baseline.

    python -m stages.eval_vae [--params params.yaml] [--no-progress]

Video (lib.eval.video_vae.evaluate_video_vae): final weights of train_video_vae and train_curriculum,
reconstruction PSNR / SSIM / KL per latent element on `clips` validation clips (chosen by `seed`) at every
curriculum resolution and at train_video_vae's, against bicubic down/up at the same number of stored values.
Audio (lib.eval.audio_vae.evaluate_audio_vae): final weights of train_audio_vae; see that module. A trainer
whose section is null (e.g. `train_audio_vae: null` in a GPU run's params file) is not evaluated.

Params: section eval_vae (report_dir, seed, clips, clip_stride, strip_clips, batch_size), the audio evaluator's
eval_audio_vae, and the trainers' sections.

Writes:
    <report_dir>/metrics.json   {video: {...}, audio: {...}}
    <report_dir>/report.md      both sections
    <report_dir>/strip_<stage>_<res>px_<T>f.png   input | VAE | bicubic, middle frames
"""
from __future__ import annotations

import logging
from pathlib import Path

from lib.bench.loader_bench import stable_loader
from lib.cli import run_stage, stage_parser
from lib.config import from_dict, read_params
from lib.eval import audio_not_evaluated
from lib.eval.video_vae import EvalVAEConfig, evaluate_video_vae
from lib.io import atomic_write_json, atomic_write_text

log = logging.getLogger("eval_vae")


def main() -> None:
    args = stage_parser("eval_vae", __doc__).parse_args()
    cfg = from_dict(EvalVAEConfig, read_params(args.params).get("eval_vae") or {}, f"{args.params}: eval_vae")
    report_dir = Path(cfg.report_dir)
    stable, _ = stable_loader(args.params)  # decode with the backend the loader benchmark picked
    video, video_md = evaluate_video_vae(args.params, report_dir, stable.get("backend", "decord"))
    audio, audio_md = evaluate_audio(args.params, report_dir)
    atomic_write_json(report_dir / "metrics.json", {"video": video, "audio": audio})
    atomic_write_text(report_dir / "report.md", "# eval_vae: video and audio VAEs on held-out data\n\n"
                      + video_md.rstrip() + "\n\n" + audio_md.rstrip() + "\n")
    for stage in (k for k in video if isinstance(video[k], dict) and "model" in video[k]):
        log.info("%s: %s", stage, "; ".join(
            f"{p} VAE {video[stage][p]['vae']['psnr']:.2f} dB "
            f"vs bicubic {video[stage][p]['bicubic_values']['psnr']:.2f}"
            for p in video["points"]))
    log.info("report in %s", report_dir / "report.md")


def evaluate_audio(params_path: str, report_dir: Path) -> tuple[dict, str]:
    """The audio section. Its evaluator is imported only when ``train_audio_vae`` is set: it needs librosa,
    soundfile and soxr, which a video-only install (the GPU machine's image) does not have."""
    if read_params(params_path).get("train_audio_vae") is None:
        return audio_not_evaluated()
    from lib.eval.audio_vae import evaluate_audio_vae
    return evaluate_audio_vae(params_path, report_dir)


if __name__ == "__main__":
    run_stage(main)
