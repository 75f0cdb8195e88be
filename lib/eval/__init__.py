"""Evaluation metrics and reports of trained models (one module per trainer)."""


def audio_not_evaluated() -> tuple[dict, str]:
    """eval_vae's audio ``(metrics, markdown)`` when train_audio_vae is null. Here, not in lib.eval.audio_vae, so
    that a video-only install (no librosa) can say so without importing the audio evaluator."""
    return {"skipped": "train_audio_vae is null"}, "## Audio VAE\n\nNot evaluated: `train_audio_vae` is null."
