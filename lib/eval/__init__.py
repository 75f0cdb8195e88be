"""Evaluation metrics and reports of trained models (one module per trainer)."""

# eval_vae's audio section when train_audio_vae is null; here, not in lib.eval.audio_vae, so that a video-only
# install (no librosa) can say so without importing the audio evaluator
AUDIO_NOT_EVALUATED = ({"skipped": "train_audio_vae is null"},
                       "## Audio VAE\n\nNot evaluated: `train_audio_vae` is null.")
