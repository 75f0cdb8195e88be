"""Audio data: embedded speech synthesis (espeak-ng over SSv2 labels), folder scanning, log-mel features, crops."""
