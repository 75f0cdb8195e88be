"""How much of a CAD model survives the tokenizer: the quantised ground truth re-meshed against its source.

`python benchmarks/cad_token_fidelity.py [--n 200] [--seed 0] [--workers 2] [--out reports/benchmarks]`

For ``n`` synthetic models (``lib.deepcad.synth``, families dealt in turn) plus the real DeepCAD fixture, each
normalised and written as 4-decimal CAD code (the training answers), this encodes and decodes the code with each
tokenizer setting below and scores the decoded code against the source with :func:`geometry_scores` (exact
volumetric IoU, Chamfer of 2048 surface samples; a decoded model that does not mesh scores IoU 0). Writes
``cad_token_fidelity.md`` and ``.json`` (per setting: overall and per family: mean / median / min IoU, median
Chamfer, mesh failure rate, tokens per model mean / max) to ``--out``. Goal of the default layout: median IoU
>= 0.99, mean >= 0.97 and at most 1% failing on every family and the fixture.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.cad.tokenizer import CADTokenizer  # noqa: E402
from lib.deepcad.cadcode import to_code  # noqa: E402
from lib.deepcad.normalize import normalize  # noqa: E402
from lib.deepcad.parse import load_model, parse_model  # noqa: E402
from lib.deepcad.synth import FAMILIES, make_model  # noqa: E402
from lib.eval.cad_geometry import geometry_scores  # noqa: E402
from tests.helpers.deepcad_data import FIXTURE  # noqa: E402

SETTINGS = {  # name -> CADTokenizer kwargs; the first is the default
    "local (default)": {},
    "local, 1-token sketch values": {"sketch_digits": 1},
    "local, 1 token per value": {"sketch_digits": 1, "frame_digits": 1},
    "local, n_levels=1024, 1-token sketch": {"n_levels": 1024, "sketch_digits": 1},
    "global (old)": {"layout": "global"},
}


def corpus(n: int, seed: int) -> list[tuple[str, str]]:
    fams = sorted(FAMILIES)
    items = [(fams[i % len(fams)], to_code(normalize(parse_model(make_model(seed, i, fams[i % len(fams)])))))
             for i in range(n)]
    return [*items, ("fixture", to_code(normalize(load_model(FIXTURE))))]


def score(job: tuple[str, str, str]) -> dict:
    setting, family, text = job
    tok = CADTokenizer(**SETTINGS[setting])
    ids = tok.encode(text)
    decoded = tok.decode(ids)
    s = geometry_scores(decoded, text)
    return {"setting": setting, "family": family, "tokens": len(ids), "valid": s["valid"], "iou": s["iou"],
            "chamfer": s["chamfer"], "exact_round_trip": tok.encode(decoded) == ids}


def summarise(rows: list[dict]) -> dict:
    iou = np.array([r["iou"] for r in rows])
    cd = np.array([r["chamfer"] for r in rows if r["valid"]])
    tokens = np.array([r["tokens"] for r in rows])
    return {"n": len(rows), "mean_iou": float(iou.mean()), "median_iou": float(np.median(iou)),
            "min_iou": float(iou.min()), "median_chamfer": float(np.median(cd)) if len(cd) else float("nan"),
            "mesh_failure_rate": float(np.mean([not r["valid"] for r in rows])),
            "tokens_mean": float(tokens.mean()), "tokens_max": int(tokens.max()),
            "exact_round_trip": float(np.mean([r["exact_round_trip"] for r in rows]))}


def meets_goal(s: dict) -> bool:
    return s["median_iou"] >= 0.99 and s["mean_iou"] >= 0.97 and s["mesh_failure_rate"] <= 0.01


def report(results: dict, n: int, seed: int, seconds: float) -> str:
    lines = [f"# CAD token fidelity ({n} synthetic models, seed {seed}, plus the DeepCAD fixture)", "",
             "Quantised ground truth (`decode(encode(code))`) re-meshed against the 4-decimal source code: exact "
             "volumetric IoU (a model that no longer meshes counts 0), median Chamfer of the ones that mesh, tokens "
             "per model with `<bos>`/`<eos>`. Goal: median IoU >= 0.99, mean >= 0.97, <= 1% failing, on every family "
             f"and the fixture. `python benchmarks/cad_token_fidelity.py --n {n}` ({seconds:.0f} s on this CPU).", "",
             "| setting | mean IoU | median IoU | min IoU | median Chamfer | mesh failures | tokens mean / max | "
             "families meeting the goal |", "|---|---|---|---|---|---|---|---|"]
    for name, res in results.items():
        s = res["all"]
        ok = sum(meets_goal(f) for f in res["families"].values())
        lines.append(f"| {name} | {s['mean_iou']:.4f} | {s['median_iou']:.4f} | {s['min_iou']:.3f} | "
                     f"{s['median_chamfer']:.2e} | {s['mesh_failure_rate']:.1%} | {s['tokens_mean']:.1f} / "
                     f"{s['tokens_max']} | {ok} / {len(res['families'])} |")
    for name, res in results.items():
        lines += ["", f"## {name}", "", "| family | n | mean IoU | median IoU | min IoU | median Chamfer | "
                  "mesh failures | tokens mean | goal |", "|---|---|---|---|---|---|---|---|---|"]
        for fam, s in res["families"].items():
            lines.append(f"| {fam} | {s['n']} | {s['mean_iou']:.4f} | {s['median_iou']:.4f} | {s['min_iou']:.3f} | "
                         f"{s['median_chamfer']:.2e} | {s['mesh_failure_rate']:.1%} | {s['tokens_mean']:.1f} | "
                         f"{'yes' if meets_goal(s) else 'no'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--settings", nargs="*", default=list(SETTINGS), help="names from SETTINGS")
    ap.add_argument("--out", default="reports/benchmarks")
    args = ap.parse_args()
    t0 = time.time()
    items = corpus(args.n, args.seed)
    jobs = [(s, fam, text) for s in args.settings for fam, text in items]
    with ProcessPoolExecutor(args.workers) as pool:
        rows = list(pool.map(score, jobs, chunksize=16))
    results = {}
    for s in args.settings:
        mine = [r for r in rows if r["setting"] == s]
        fams = sorted({r["family"] for r in mine}, key=lambda f: (f == "fixture", f))
        results[s] = {"kwargs": SETTINGS[s], "all": summarise([r for r in mine if r["family"] != "fixture"]),
                      "families": {f: summarise([r for r in mine if r["family"] == f]) for f in fams}}
    seconds = time.time() - t0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cad_token_fidelity.json").write_text(json.dumps({"n": args.n, "seed": args.seed, "seconds": seconds,
                                                             "results": results}, indent=1) + "\n")
    (out / "cad_token_fidelity.md").write_text(report(results, args.n, args.seed, seconds))
    print((out / "cad_token_fidelity.md").read_text())


if __name__ == "__main__":
    main()
