from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lib.config import ConfigError, from_dict, load_section, read_params, to_dict
from lib.ssv2.ingest import IngestSSv2Config, SSv2Source
from lib.ssv2.synth import SynthSSv2Config

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Inner:
    rate: float = 0.5


@dataclass(frozen=True)
class Outer:
    name: str
    count: int = 3
    sizes: list[int] = field(default_factory=lambda: [1, 2])
    inner: Inner = field(default_factory=Inner)
    maybe: int | None = None
    table: dict[str, float] = field(default_factory=dict)


def test_builds_nested_dataclass_and_coerces_int_to_float():
    cfg = from_dict(Outer, {"name": "x", "inner": {"rate": 2}, "table": {"a": 1}, "maybe": None})
    assert cfg == Outer(name="x", inner=Inner(rate=2.0), table={"a": 1.0})
    assert isinstance(cfg.inner.rate, float)
    assert to_dict(cfg)["inner"] == {"rate": 2.0}


def test_unknown_key_names_file_key_and_suggestion():
    with pytest.raises(ConfigError) as err:
        from_dict(Outer, {"name": "x", "cuont": 3}, where="params.yaml: demo")
    msg = str(err.value)
    assert "params.yaml: demo.cuont" in msg and "did you mean 'count'" in msg


def test_nested_unknown_key_has_dotted_path():
    with pytest.raises(ConfigError, match=r"demo\.inner\.speed: unknown key"):
        from_dict(Outer, {"name": "x", "inner": {"speed": 1}}, where="demo")


@pytest.mark.parametrize("data, fragment", [
    ({"name": 3}, "demo.name: expected a string"),
    ({"name": "x", "count": "3"}, "demo.count: expected an integer"),
    ({"name": "x", "count": True}, "demo.count: expected an integer"),
    ({"name": "x", "sizes": [1, "two"]}, r"demo.sizes\[1\]: expected an integer"),
    ({"name": "x", "sizes": 5}, "demo.sizes: expected a list"),
    ({"name": "x", "maybe": "no"}, "demo.maybe: expected an integer"),
    ({}, "demo.name: required key is missing"),
])
def test_ill_typed_values_are_rejected(data, fragment):
    with pytest.raises(ConfigError, match=fragment):
        from_dict(Outer, data, where="demo")


def test_post_init_validation_is_reported_with_section(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("ingest_ssv2:\n  mode: transcode\n")
    with pytest.raises(ConfigError, match=r"params.yaml: ingest_ssv2: mode must be 'reencode' or 'keep'"):
        load_section(p, "ingest_ssv2", IngestSSv2Config)


def test_bad_yaml_and_missing_file_name_the_file(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        read_params(p)
    with pytest.raises(ConfigError, match="params file not found"):
        read_params(tmp_path / "nope.yaml")


def test_repository_params_file_loads_into_every_stage_config():
    params = REPO / "params.yaml"
    assert load_section(params, "synth_ssv2", SynthSSv2Config).count > 0
    assert load_section(params, "ingest_ssv2", IngestSSv2Config).shards > 0
    assert load_section(params, "ssv2", SSv2Source).root
