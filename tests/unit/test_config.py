import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import pytest
import yaml
from annotated_types import Doc, Ge, Gt, Interval, Le, MinLen, MultipleOf

from lib.config import (
    AllowNonFinite,
    Checked,
    ConfigError,
    check_sections,
    from_dict,
    known_sections,
    load_section,
    read_params,
    to_dict,
)
from lib.ssv2.ingest import IngestSSv2Config, SSv2Source
from lib.ssv2.synth import SynthSSv2Config
from lib.ssv2.validate import ExposureBands
from lib.train.config import TrainConfig

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
    with pytest.raises(ConfigError, match=r"params.yaml: ingest_ssv2\.mode: 'transcode' is not one of 'reencode', "
                                          r"'keep'; change it in the params file"):
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


# ----------------------------------------------------------------------------- choices, bounds, finiteness


@dataclass(frozen=True)
class Marked(Checked):
    rate: Annotated[float, Gt(0)] = 1.0
    fraction: Annotated[float, Interval(ge=0, lt=1)] = 0.5
    count: Annotated[int, Ge(1), Doc("0 is not a count")] = 1
    cap: Annotated[float, Gt(0), AllowNonFinite] | None = None  # .inf: no cap
    pair: tuple[Annotated[float, Ge(0)], Annotated[float, Ge(0)]] = (0.0, 1.0)
    sizes: Annotated[list[Annotated[int, Ge(1)]], MinLen(1)] = field(default_factory=lambda: [1])
    table: dict[str, Annotated[float, Le(1)]] = field(default_factory=dict)
    mode: Literal["a", "b"] = "a"
    level: Literal[1, 2] = 1
    inner: Inner = field(default_factory=Inner)


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_non_finite_floats_are_rejected_naming_the_key(tmp_path, value):
    p = tmp_path / "params.yaml"
    p.write_text(f"train_apt:\n  lr: {value}\n")
    with pytest.raises(ConfigError, match=r"params.yaml: train_apt\.lr: must be a finite number, got -?(nan|inf); "
                                          r"use a finite number"):
        load_section(p, "train_apt", TrainConfig)
    with pytest.raises(ValueError, match=r"^lr: must be a finite number"):
        TrainConfig(lr=float(value.replace(".", "")))


@pytest.mark.parametrize("data, fragment", [
    ({"pair": [0.0, math.inf]}, r"demo\.pair\[1\]: must be a finite number, got inf"),
    ({"table": {"x": math.nan}}, r"demo\.table\.x: must be a finite number, got nan"),
    ({"inner": {"rate": -math.inf}}, r"demo\.inner\.rate: must be a finite number, got -inf"),
])
def test_non_finite_floats_inside_containers_and_nested_configs_are_rejected(data, fragment):
    with pytest.raises(ConfigError, match=fragment):
        from_dict(Marked, data, where="demo")


def test_a_field_that_opts_in_accepts_inf_and_keeps_its_bounds():
    assert from_dict(Marked, {"cap": math.inf}).cap == math.inf
    assert Marked(cap=math.inf).cap == math.inf
    with pytest.raises(ValueError, match=r"^cap: must be > 0 or null, got nan"):  # nan fails every bound
        Marked(cap=math.nan)
    bands = ExposureBands(risky=math.inf)  # the repository's opt-in: no trainer is ever "risky"
    assert bands.risky == math.inf
    with pytest.raises(ValueError, match="conservative <= moderate <= risky"):
        ExposureBands(risky=math.nan)


@pytest.mark.parametrize("kw, message", [
    ({"rate": 0.0}, "rate: must be > 0, got 0.0"),
    ({"fraction": 1.0}, r"fraction: must be in \[0, 1\), got 1.0"),
    ({"count": 0}, r"count: must be >= 1 \(0 is not a count\), got 0"),
    ({"cap": -1.0}, "cap: must be > 0 or null, got -1.0"),
    ({"pair": (0.0, -2.0)}, r"pair\[1\]: must be >= 0, got -2.0"),
    ({"pair": (0.0,)}, "pair: expected 2 items, got 1"),
    ({"sizes": []}, "sizes: must not be empty"),
    ({"sizes": [1, 0]}, r"sizes\[1\]: must be >= 1, got 0"),
    ({"table": {"x": 2.0}}, r"table\.x: must be <= 1, got 2.0"),
    ({"mode": "c"}, "mode: 'c' is not one of 'a', 'b'"),
    ({"level": True}, "level: True is not one of 1, 2"),
    ({"level": 2.0}, "level: 2.0 is not one of 1, 2"),
    ({"count": 1.5}, "count: expected an integer, got float 1.5"),
    ({"count": True}, "count: expected an integer, got bool True"),
    ({"inner": {"rate": 1.0}}, "inner: expected Inner, got dict"),
])
def test_bounds_and_choices_hold_when_built_in_code(kw, message):
    with pytest.raises(ValueError, match=f"^{message}"):
        Marked(**kw)


@pytest.mark.parametrize("data, message", [
    ({"rate": -1}, r"demo\.rate: must be > 0, got -1.0; change it in the params file"),
    ({"sizes": [3, 0]}, r"demo\.sizes\[1\]: must be >= 1, got 0; change it in the params file"),
    ({"cap": 0}, r"demo\.cap: must be > 0 or null, got 0.0; change it in the params file"),
    ({"mode": "c"}, r"demo\.mode: 'c' is not one of 'a', 'b'; change it in the params file"),
    ({"level": True}, r"demo\.level: True is not one of 1, 2; change it in the params file"),
])
def test_bounds_and_choices_hold_from_params(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Marked, data, where="demo")
    assert from_dict(Marked, {"cap": None, "level": 2, "sizes": [2, 3]}) == Marked(level=2, sizes=[2, 3])


def test_trainer_knobs_from_params_name_the_dotted_key(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("train_apt:\n  steps: 0\n")
    with pytest.raises(ConfigError, match=r"params.yaml: train_apt\.steps: must be >= 1, got 0; change it"):
        load_section(p, "train_apt", TrainConfig)
    p.write_text("train_apt:\n  mixed_precision: 'no'\n")
    with pytest.raises(ConfigError, match=r"train_apt\.mixed_precision: 'no' is not one of 'fp32', 'fp16', 'bf16'"):
        load_section(p, "train_apt", TrainConfig)
    p.write_text("train_apt:\n  steps: 10\n  warmup_steps: 20\n")  # a cross-field check, still dotted
    with pytest.raises(ConfigError, match=r"params.yaml: train_apt\.warmup_steps: must be in \[0, steps=10\], got 20"):
        load_section(p, "train_apt", TrainConfig)


def test_trainer_config_built_in_code_is_checked_too():
    with pytest.raises(ValueError, match="^lr: must be > 0, got -1"):
        TrainConfig(lr=-1)
    with pytest.raises(ValueError, match=r"^betas\[1\]: must be in \[0, 1\), got 1.0"):
        TrainConfig(betas=(0.5, 1.0))
    with pytest.raises(ValueError, match="^tracker: 'tensorboard' is not one of 'dvclive', 'wandb', 'none'"):
        TrainConfig(tracker="tensorboard")
    with pytest.raises(ValueError, match="^shards: must be >= 1, got 0"):
        IngestSSv2Config(shards=0)


def test_an_unenforced_marker_is_a_bug_not_a_silent_pass():
    @dataclass(frozen=True)
    class Odd(Checked):
        n: Annotated[int, MultipleOf(2)] = 2

    with pytest.raises(TypeError, match="does not enforce MultipleOf"):
        Odd()


# ----------------------------------------------------------------------------- top-level sections


def test_a_misspelled_section_gets_did_you_mean(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("trian_apt:\n  steps: 5\n")
    with pytest.raises(ConfigError) as err:
        read_params(p)
    assert str(err.value).startswith(f"{p}: trian_apt: unknown section; did you mean 'train_apt'? (known sections: ")
    assert str(err.value).endswith("rename or remove it (a new section is declared in a stage's params in dvc.yaml)")
    with pytest.raises(ConfigError, match="trian_apt: unknown section"):  # also when another section is asked for
        load_section(p, "ingest_ssv2", IngestSSv2Config)


def test_an_unknown_section_is_rejected(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("ingest_ssv2:\n  shards: 2\nnotes:\n  owner: me\n")
    with pytest.raises(ConfigError, match=r"params.yaml: notes: unknown section \(known sections: audio, "):
        read_params(p)
    with pytest.raises(ConfigError, match="notes: unknown section"):  # the Snakefile's check of its config
        check_sections({"ingest_ssv2": {}, "notes": {}}, "params.yaml")


def test_known_sections_come_from_dvc_yaml(tmp_path):
    dvc = tmp_path / "dvc.yaml"
    dvc.write_text(yaml.safe_dump({"stages": {
        "a": {"cmd": "python -m stages.a --cores ${alpha.cores}", "params": ["beta", "gamma.steps"],
              "outs": [{"${delta.out}/x": {"persist": True}}]},
        "b": {"cmd": "b", "params": [{"other.yaml": ["zeta"]}, {"params.yaml": ["eta.k"]}]}}}))
    assert known_sections(dvc) == {"alpha", "beta", "gamma", "delta", "eta"}
    assert known_sections(tmp_path / "missing.yaml") is None  # an installed copy: no check


def test_every_section_of_the_repository_params_file_is_known():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert set(params) <= known_sections()
    assert read_params(REPO / "params.yaml") == params


def test_safe_load_equals_pyyamls_safe_load_and_refuses_python_objects():
    import yaml

    from lib.config import safe_load

    for name in ("params.yaml", "dvc.yaml"):
        text = (Path(__file__).resolve().parents[2] / name).read_text()
        assert safe_load(text) == yaml.safe_load(text)
    with pytest.raises(yaml.constructor.ConstructorError, match="python/object/apply:os.system"):
        safe_load("!!python/object/apply:os.system ['true']")
