"""Tiny DeepCAD roots for tests: the real fixture model, variants of it, and one of every malformed case."""
from __future__ import annotations

import copy
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_SHARED = REPO.parent / "shared" / "fixtures" / "deepcad" / "cylinder_r39mm_h5mm.json"
_LOCAL = REPO / "tests" / "fixtures" / "deepcad" / "cylinder_r39mm_h5mm.json"


FIXTURE = _SHARED if _SHARED.is_file() else _LOCAL  # the shared copy when present, else the repo's copy


def real_model() -> dict:
    """Return the real DeepCAD fixture model (a 39 mm radius, 5 mm high cylinder) as a dict."""
    return json.loads(FIXTURE.read_text())


def _extrude(model: dict) -> dict:
    return next(e for e in model["entities"].values() if e["type"] == "ExtrudeFeature")


def _sketch(model: dict) -> dict:
    return next(e for e in model["entities"].values() if e["type"] == "Sketch")


def _curve(model: dict) -> dict:
    sketch = _sketch(model)
    profile = next(iter(sketch["profiles"].values()))
    return profile["loops"][0]["profile_curves"][0]


def _point(x: float, y: float) -> dict:
    return {"x": x, "y": y, "z": 0.0}


def square_model(points: list[tuple[float, float]]) -> dict:
    """The fixture with its circle replaced by a loop of Line3D curves through ``points`` (closed)."""
    m = real_model()
    lines = [{"type": "Line3D", "start_point": _point(*a), "end_point": _point(*b), "curve": f"L{i}"}
             for i, (a, b) in enumerate(zip(points, points[1:] + points[:1], strict=False))]
    next(iter(_sketch(m)["profiles"].values()))["loops"][0]["profile_curves"] = lines
    return m


def malformed_models() -> dict[str, tuple[str, str | dict]]:
    """Return ``{name: (expected reason, model dict or raw text)}``, one per malformed case."""
    cases: dict[str, tuple[str, str | dict]] = {}

    def variant(reason, name, edit):
        m = real_model()
        edit(m)
        cases[name] = (reason, m)

    cases["syntax"] = ("json_syntax", '{"entities": {')
    variant("unknown_curve", "spline", lambda m: _curve(m).update(type="NurbsCurve3D"))
    variant("unknown_extent", "to_object", lambda m: _extrude(m).update(extent_type="ToObjectFeatureExtentType"))
    variant("unknown_operation", "boolean_xor", lambda m: _extrude(m).update(operation="XorFeatureOperation"))
    variant("bad_extent", "zero_extent", lambda m: _extrude(m)["extent_one"]["distance"].update(value=0.0))
    variant("bad_extent", "nan_extent", lambda m: _extrude(m)["extent_one"]["distance"].update(value=float("nan")))
    variant("dangling_profile", "dangling", lambda m: _extrude(m)["profiles"][0].update(profile="NOPE"))
    variant("empty_sequence", "empty", lambda m: m.update(sequence=[]))
    cases["open_loop"] = ("open_loop", _open_square())
    cases["bowtie"] = ("self_intersecting_loop", square_model([(0, 0), (0.02, 0.02), (0.02, 0), (0, 0.02)]))
    return cases


def _open_square() -> dict:
    m = square_model([(0, 0), (0.02, 0), (0.02, 0.02), (0, 0.02)])
    curves = next(iter(_sketch(m)["profiles"].values()))["loops"][0]["profile_curves"]
    curves[-1]["end_point"] = _point(0.0, 0.01)  # the last side stops halfway
    return m


def write_root(root: Path, models: dict[str, str | dict], splits: dict[str, list[str]]) -> None:
    """Write ``cad_json/<id>.json`` for each model ("folder/id" -> dict or raw text) and the split file."""
    for model_id, content in models.items():
        path = root / "cad_json" / f"{model_id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    (root / "train_val_test_split.json").write_text(json.dumps(splits))


def bad_root(root: Path) -> tuple[list[str], dict[str, str]]:
    """A root with good models and one of every malformed case; return (good ids, {id: expected reason})."""
    good = {"0000/00000001": real_model(),
            "0000/00000002": square_model([(0, 0), (0.03, 0), (0.03, 0.02), (0, 0.02)]),
            "0001/00001003": copy.deepcopy(real_model())}
    bad_models = {}
    expected = {}
    for k, (_name, (reason, content)) in enumerate(sorted(malformed_models().items())):
        model_id = f"0002/{2000 + k:08d}"
        bad_models[model_id] = content
        expected[model_id] = reason
    write_root(root, {**good, **bad_models, "0003/00003000": real_model()},
               {"train": [*good, *bad_models, "../../../etc/passwd", "0009/00009999"],
                "validation": [], "test": []})
    expected.update({"../../../etc/passwd": "path_escape", "0009/00009999": "missing_model",
                     "0003/00003000": "not_in_split"})
    return list(good), expected


# A 0.5 x 0.5 x 0.25 box as CAD code (lib/deepcad/cadcode.py): volumes and token counts are known by hand.
BOX_CODE = """bbox min=(0.0000,0.0000,0.0000) max=(0.5000,0.5000,0.2500)
extrude 1: new_body one_side e1=0.2500 e2=0.0000
  plane o=(0.0000,0.0000,0.0000) x=(1.0000,0.0000,0.0000) y=(0.0000,1.0000,0.0000) n=(0.0000,0.0000,1.0000)
    profile
      loop outer
        line (0.0000,0.0000)->(0.5000,0.0000)
        line (0.5000,0.0000)->(0.5000,0.5000)
        line (0.5000,0.5000)->(0.0000,0.5000)
        line (0.0000,0.5000)->(0.0000,0.0000)
"""
