# DeepCAD rendering in shards: parse -> CAD code -> mesh -> views, one GL renderer per shard.
# A shard reruns only when its own models, the render params or the code change.
import dataclasses
import functools

from lib.config import from_dict
from lib.deepcad.render_models import DeepCADSource, RenderDeepCADConfig, plan_render
from lib.io import source_digest
from lib.shards import shard_name

DEEPCAD = from_dict(DeepCADSource, config.get("deepcad") or {}, f"{PARAMS_FILE}: deepcad")
RENDER = from_dict(RenderDeepCADConfig, config.get("render_deepcad") or {}, f"{PARAMS_FILE}: render_deepcad")
RENDER_SHARDS = [f"{RENDER.out}/shards/{shard_name(i)}" for i in range(RENDER.shards)]
RENDER_SETTINGS = {k: v for k, v in dataclasses.asdict(RENDER).items() if k not in ("cores", "shards")}
RENDER_CODE = source_digest("lib.deepcad.render_models", "lib.deepcad.parse", "lib.deepcad.normalize",
                            "lib.deepcad.cadcode", "lib.deepcad.mesh", "lib.deepcad.schema", "lib.render",
                            "lib.shards")


@functools.cache
def deepcad_plan():
    return plan_render(DEEPCAD.root, RENDER.shards)


rule render_deepcad:
    input:
        f"{RENDER.out}/models.parquet",
        f"{RENDER.out}/quarantine.json",
        f"{RENDER.out}/summary.json",


rule deepcad_shard:
    output:
        f"{RENDER.out}/shards/shard-{{index}}.parquet",
    wildcard_constraints:
        index=r"\d+",
    params:
        data=lambda wc: deepcad_plan().fingerprints(RENDER.shards)[int(wc.index)],
        settings=RENDER_SETTINGS,
        root=DEEPCAD.root,
        code=RENDER_CODE,
    log:
        "logs/render_deepcad/shard-{index}.log",
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        "python -m stages.render_deepcad --params {PARAMS_FILE} --no-progress shard --index {wildcards.index} > {log} 2>&1"


rule deepcad_merge:
    input:
        RENDER_SHARDS,
    output:
        f"{RENDER.out}/models.parquet",
        f"{RENDER.out}/quarantine.json",
        f"{RENDER.out}/summary.json",
    params:
        plan=lambda wc: deepcad_plan().digest(),
    log:
        "logs/render_deepcad/merge.log",
    shell:
        "python -m stages.render_deepcad --params {PARAMS_FILE} --no-progress merge > {log} 2>&1"
