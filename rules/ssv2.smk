# SSv2 ingestion in shards. A shard reruns only when its own videos/labels or the copy settings change:
# its `data` param is a digest of its slice of the plan (Snakemake's params rerun trigger).
import dataclasses
import functools

from lib.config import from_dict
from lib.io import source_digest
from lib.shards import shard_name
from lib.ssv2.ingest import IngestSSv2Config, SSv2Source, plan_ingest

SSV2 = from_dict(SSv2Source, config.get("ssv2") or {}, f"{PARAMS_FILE}: ssv2")
INGEST = from_dict(IngestSSv2Config, config.get("ingest_ssv2") or {}, f"{PARAMS_FILE}: ingest_ssv2")
INGEST_SHARDS = [f"{INGEST.out}/shards/{shard_name(i)}" for i in range(INGEST.shards)]
# What changes every shard's output; `cores` and `shards` are not here (shards is in the data digest).
INGEST_SETTINGS = {k: v for k, v in dataclasses.asdict(INGEST).items() if k not in ("cores", "shards")}
# The code that decides a shard's rows and copies: changing it reruns every shard.
INGEST_CODE = source_digest("lib.ssv2.ingest", "lib.shards", "lib.ssv2.labels", "lib.video.probe", "lib.video.encode",
                            "lib.quarantine")


@functools.cache
def ssv2_plan():
    return plan_ingest(SSV2.root, INGEST.shards)


rule ingest_ssv2:
    input:
        f"{INGEST.out}/manifest.parquet",
        f"{INGEST.out}/quarantine.json",
        f"{INGEST.out}/summary.json",


rule ssv2_shard:
    output:
        f"{INGEST.out}/shards/shard-{{index}}.parquet",
    wildcard_constraints:
        index=r"\d+",
    params:
        data=lambda wc: ssv2_plan().fingerprints(INGEST.shards)[int(wc.index)],
        settings=INGEST_SETTINGS,
        root=SSV2.root,
        code=INGEST_CODE,
    log:
        "logs/ingest_ssv2/shard-{index}.log",
    threads: 1
    resources:
        mem_mb=1500,
    shell:
        "python -m stages.ingest_ssv2 --params {PARAMS_FILE} --no-progress shard --index {wildcards.index} > {log} 2>&1"


rule ssv2_merge:
    input:
        INGEST_SHARDS,
    output:
        f"{INGEST.out}/manifest.parquet",
        f"{INGEST.out}/quarantine.json",
        f"{INGEST.out}/summary.json",
    params:
        plan=lambda wc: ssv2_plan().digest(),
    log:
        "logs/ingest_ssv2/merge.log",
    shell:
        "python -m stages.ingest_ssv2 --params {PARAMS_FILE} --no-progress merge > {log} 2>&1"
