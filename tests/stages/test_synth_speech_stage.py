"""`python -m stages.synth_speech` on a tiny manifest: wavs keyed by video id that the audio folder scan accepts."""
import pandas as pd
import yaml

from lib.audio.folder import AudioFolderConfig, scan_audio_folder
from tests.helpers.workspace import run_stage_module


def stage(args, cwd):
    return run_stage_module("synth_speech", args, cwd)


def test_help_describes_the_stage(tmp_path):
    out = stage(["--help"], tmp_path).stdout
    assert "espeak-ng" in out and "--params" in out


def test_tiny_manifest_is_spoken_and_scans_clean(tmp_path):
    pd.DataFrame({"id": ["3", "11", "20"], "split": ["train", "validation", "test"],
                  "label": ["Moving a cup up", "Pushing a pen from left to right", None],
                  "path": ["v/3.webm", "v/11.webm", "v/20.webm"]}).to_parquet(tmp_path / "manifest.parquet")
    params = {"synth_speech": {"out": "speech", "manifest": "manifest.parquet", "sample_rate": 16000,
                               "voices": ["en-us", "en-gb+f2"], "seed": 1}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = stage(["--no-progress"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "'items': 2, 'synthesised': 2" in proc.stderr
    scan = scan_audio_folder(AudioFolderConfig(root=str(tmp_path / "speech")))
    assert dict(zip(scan.files["id"], scan.files["split"], strict=False)) == {"3": "train", "11": "validation"}
    assert set(scan.files["sample_rate"]) == {16000} and not scan.quarantine

    proc = stage(["--no-progress"], tmp_path)  # resumable: nothing to redo
    assert proc.returncode == 0 and "'synthesised': 0, 'kept': 2" in proc.stderr


def test_bad_params_exit_1_with_the_key(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"synth_speech": {"voice": ["en-us"]}}))
    proc = stage(["--no-progress"], tmp_path)
    assert proc.returncode == 1
    assert "synth_speech.voice: unknown key; did you mean 'voices'?" in proc.stderr
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"synth_speech": {"manifest": "none.parquet"}}))
    proc = stage(["--no-progress"], tmp_path)
    assert proc.returncode == 1 and "none.parquet: SSv2 manifest not found" in proc.stderr
    assert "Traceback" not in proc.stderr
