"""Quarantine: items set aside with a machine-readable reason, so bad input never stops a stage."""
from __future__ import annotations

from dataclasses import asdict, dataclass

# reason code -> what it means (shown in validation reports)
REASONS: dict[str, str] = {
    "zero_bytes": "file is empty (0 bytes)",
    "not_video": "file cannot be opened as a video container or has no video stream",
    "undecodable": "container opens but no frame decodes",
    "truncated": "decoding stops early: fewer frames than the container declares, or a decode error mid-stream",
    "wrong_size": "frame size outside the configured limits",
    "too_short": "fewer frames or seconds than the configured minimum",
    "missing_label": "video file whose id is in none of the label files",
    "missing_video": "label entry whose video file does not exist",
    "unknown_template": "template not in labels.json (after removing the [ ] brackets)",
    "duplicate_id": "id listed more than once across the label files",
    "path_escape": "id or path would resolve outside the dataset root",
    "bad_label_entry": "label entry missing a required field or with a field of the wrong type",
    # DeepCAD models
    "json_syntax": "file is not valid JSON",
    "missing_field": "a required field of the DeepCAD JSON is absent or of the wrong type",
    "empty_sequence": "the model's sequence has no extrude",
    "unknown_curve": "curve type other than Line3D, Arc3D, Circle3D",
    "unknown_extent": "extent_type other than OneSide, Symmetric, TwoSides",
    "unknown_operation": "operation other than NewBody, Join, Cut, Intersect",
    "dangling_profile": "extrude refers to a sketch or profile that does not exist",
    "open_loop": "a sketch loop's curves do not close",
    "self_intersecting_loop": "a sketch loop crosses itself",
    "bad_extent": "extrude distance is zero, NaN or infinite",
    "mesh_failed": "the solid could not be built (empty, not watertight, or a boolean failed)",
    "blank_render": "a rendered view is blank or nearly blank",
    "missing_model": "split file lists a model whose JSON file does not exist",
    "not_in_split": "model JSON that the split file does not list",
    # audio (lib/audio)
    "not_audio": "file cannot be opened as wav/flac audio",
    "unreadable_audio": "header opens but the samples cannot be decoded",
    "too_long": "longer than the configured maximum seconds",
    "silent": "peak amplitude below the configured silence threshold",
    "missing_audio": "split file lists an id whose audio file does not exist",
    "no_text": "manifest row has no label to speak (SSv2's test split is unlabelled)",
    "empty_speech": "espeak-ng produced no audible samples for the text",
}


class QuarantineError(Exception):
    """Raised by per-item code to send the item to quarantine; carries a code from REASONS."""

    def __init__(self, reason: str, detail: str = ""):
        if reason not in REASONS:
            raise ValueError(f"unknown quarantine reason {reason!r}; add it to lib.quarantine.REASONS")
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class QuarantineEntry:
    """One quarantined item: its id, the path concerned (relative to its root), reason code, detail."""

    id: str
    path: str
    reason: str
    detail: str = ""
    split: str = ""

    def to_dict(self) -> dict[str, str]:
        """Return the entry as a plain dict (for JSON)."""
        return asdict(self)
