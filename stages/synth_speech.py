"""Stage synth_speech: speak every labelled SSv2 video's label with espeak-ng into synth_speech.out.

Writes wavs/<video id>.wav (16-bit PCM at sample_rate, peak-normalised), metadata.csv (id, split, text,
voice, speed, pitch, seconds, sample_rate, path, digest) and quarantine.json (ids without audio and why;
SSv2's test split has no labels). Voice, speed and pitch are drawn per id from (seed, id), so the same
params give the same files. Params (section synth_speech): out, manifest, sample_rate, voices, speeds,
pitches, seed, max_items, workers. A rerun keeps wavs whose text and voice settings are unchanged and
deletes those no longer wanted. Needs the Debian package espeak-ng.
"""
from __future__ import annotations

import logging

from lib.audio.speech import SynthSpeechConfig, write_speech
from lib.cli import run_stage, stage_parser
from lib.config import load_section

log = logging.getLogger("synth_speech")


def main() -> None:
    args = stage_parser("synth_speech", __doc__).parse_args()
    cfg = load_section(args.params, "synth_speech", SynthSpeechConfig)
    log.info("speaking the labels of %s with %d voices at %d Hz into %s", cfg.manifest, len(cfg.voices),
             cfg.sample_rate, cfg.out)
    summary = write_speech(cfg, progress=not args.no_progress)
    log.info("done: %s", summary)


if __name__ == "__main__":
    run_stage(main)
