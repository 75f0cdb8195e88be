# One rule template for every sharded stage (lib.shards.FanOut): SSv2 ingestion and DeepCAD rendering.
# For each fan-out, with <p> its rule prefix (ssv2, deepcad):
#   <stage>     the target users type (ingest_ssv2, render_deepcad): the merged outputs and the plan's files
#   <p>_shard   one shard: <out>/shards/shard-00003-<digest>.parquet (its log and a benchmark .tsv under logs/)
#   <p>_plan    the plan record <out>/shards/plan-<digest>.json, which the merge waits for
#   <p>_merge   verifies the plan's shards and writes the stage's outputs
# A digest covers the shard's items, the settings and the stage's code (lib.shards), so a shard reruns
# exactly when the file with its name is missing: no params rerun trigger, nothing read from .snakemake/.
# The run locks each fan-out root it writes (lib.locks); a second run fails at once naming the holder.
from lib.deepcad.render_models import FANOUT as DEEPCAD_RENDER
from lib.fanout_rules import FanOutRules, RunLocks
from lib.ssv2.ingest import FANOUT as SSV2_INGEST

FANOUTS = [FanOutRules(f, config, PARAMS_FILE) for f in (SSV2_INGEST, DEEPCAD_RENDER)]
RUN_LOCKS = RunLocks()


onstart:
    RUN_LOCKS.hold(FANOUTS, workflow.dag.needrun_jobs())
    for fan in FANOUTS:  # each shard job reads its items instead of planning again (lib.shards.FanOut.write_slices)
        fan.write_slices(workflow.dag.needrun_jobs())


onsuccess:
    RUN_LOCKS.release()


onerror:
    RUN_LOCKS.release()


# conda: for `snakemake --use-conda` users only; CI and the DVC stages run the rules in the project's .venv.
for fan in FANOUTS:

    rule:
        name:
            fan.target
        input:
            fan.target_inputs,
        localrule: True

    rule:
        name:
            fan.shard_rule
        output:
            fan.shard_output,
        wildcard_constraints:
            index=r"\d+",
            digest=r"[0-9a-f]{16}",
        params:
            entry=fan.fanout.entry,
            params_file=PARAMS_FILE,
        log:
            fan.shard_log,
        benchmark:
            fan.shard_benchmark
        threads: 1
        resources:
            mem_mb=fan.fanout.mem_mb,
        conda:
            "../envs/pipeline.yaml"
        # LP_NUM_THREADS: Mesa's llvmpipe (the CPU renderer) otherwise starts a thread per core in every job, so
        # N parallel jobs on N cores oversubscribe them; a GPU's EGL ignores it. Measured in bench_render.py.
        shell:
            "LP_NUM_THREADS={threads} python -m {params.entry} --params {params.params_file} --no-progress"
            " shard --index {wildcards.index} --digest {wildcards.digest} > {log} 2>&1"

    rule:
        name:
            fan.plan_rule
        output:
            fan.plan_output,
        wildcard_constraints:
            digest=r"[0-9a-f]{16}",
        params:
            entry=fan.fanout.entry,
            params_file=PARAMS_FILE,
        log:
            fan.plan_log,
        localrule: True
        conda:
            "../envs/pipeline.yaml"
        shell:
            "python -m {params.entry} --params {params.params_file} --no-progress"
            " record --digest {wildcards.digest} > {log} 2>&1"

    rule:
        name:
            fan.merge_rule
        input:
            fan.merge_inputs,
        output:
            fan.outputs,
        params:
            entry=fan.fanout.entry,
            params_file=PARAMS_FILE,
        log:
            fan.merge_log,
        conda:
            "../envs/pipeline.yaml"
        shell:
            "python -m {params.entry} --params {params.params_file} --no-progress merge > {log} 2>&1"
