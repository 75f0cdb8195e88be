#!/usr/bin/env bash
# The image -> CAD-code run of issue 14 on one GPU machine without DVC or Snakemake: synth_deepcad (COUNT models),
# render_deepcad through the machine's EGL (NVIDIA's on a GPU: carry the GL debs and pyrender's wheels as the
# device README says), build_cad_conversations, train_cad_vlm with the GPU preset (conf/train_cad_vlm/gpu_h200.yaml,
# stopped after MINUTES), eval_cad_vlm (the harness and the baselines on the held-out test images); then
# benchmarks/cad_vlm_gpu_report.py writes cad_vlm_gpu.json / .md into OUT_DIR.
#   usage: bash benchmarks/gpu_cad_run.sh OUT_DIR [MINUTES] [COUNT]
# WORK (default OUT_DIR/work): where data and checkpoints go; on the GPU machine keep it out of $OUT (e.g. /tmp/cad).
# EVAL_IMAGES (default 300): eval_cad_vlm.max_images; scoring takes ~50 ms an image and method on one core here,
# so all 1,500 validation images of 5,000 models would take ~6 minutes for the five methods.
# JOBS (default: the cores): render shards, each in its own process. CAD_OVERRIDES: more dotted.key=value pairs
# for benchmarks/gpu_params.py (the CPU smoke test in tests/pipeline/test_gpu_cad_run.py shrinks the model so).
# On a workstation with DVC the same run is
#   dvc exp run -S 'train_cad_vlm=gpu_h200' -S synth_deepcad.count=5000 -S render_deepcad.shards=16 eval_cad_vlm
set -uo pipefail
out=${1:?OUT_DIR}; minutes=${2:-10}; count=${3:-5000}
py=${PYTHON:-python3}; jobs=${JOBS:-$(nproc)}; work=${WORK:-$out/work}
mkdir -p "$out" "$work"
$py benchmarks/gpu_params.py cad "$out/cad.yaml" "synth_deepcad.count=$count" "synth_deepcad.out=$work/raw" \
  "deepcad.root=$work/raw" "render_deepcad.out=$work/render" "render_deepcad.shards=$jobs" "render_deepcad.cores=1" \
  "build_cad_conversations.out=$work/conversations" "train_cad_vlm.out_dir=$work/train_cad_vlm" \
  "train_cad_vlm.max_minutes=$minutes" train_cad_vlm.tracker=none "train_cad_vlm.tracker_dir=$out/dvclive" \
  "train_cad_vlm.report_dir=$out/train_cad_vlm" "eval_cad_vlm.report_dir=$out/eval_cad_vlm" \
  "eval_cad_vlm.max_images=${EVAL_IMAGES:-300}" ${CAD_OVERRIDES:-} || exit
$py benchmarks/run_stages.py --params "$out/cad.yaml" --jobs "$jobs" --timings "$out/cad_timings.json" \
  synth_deepcad render_deepcad build_cad_conversations train_cad_vlm eval_cad_vlm 2>&1 | tee "$out/cad_run.log"
code=${PIPESTATUS[0]}
[[ $code -eq 0 ]] || { echo "the chain stopped (exit $code): $out/cad_run.log"; exit "$code"; }
$py benchmarks/cad_vlm_gpu_report.py --params "$out/cad.yaml" --timings "$out/cad_timings.json" --out "$out" \
  --argv "$@"
