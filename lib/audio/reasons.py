"""Quarantine reason codes the audio modules add (registered in :data:`lib.quarantine.REASONS`)."""
from __future__ import annotations

from lib.quarantine import REASONS

AUDIO_REASONS: dict[str, str] = {k: REASONS[k] for k in (
    "not_audio", "unreadable_audio", "too_long", "silent", "missing_audio", "no_text", "empty_speech")}


def describe(reason: str) -> str:
    """Return the meaning of a reason code registered in lib.quarantine.REASONS."""
    if reason not in REASONS:
        raise KeyError(f"unknown quarantine reason {reason!r}; add it to lib.quarantine.REASONS")
    return REASONS[reason]
