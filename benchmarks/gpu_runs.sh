#!/usr/bin/env bash
# The GPU training runs of issues 12 and 13 on one GPU machine without DVC or Snakemake, side by side:
#   APT (train_apt GPU preset, SeedVR2's rpgan_r1r2 loss, realesrgan_video degradations) on 240-px SSv2-format
#   clips, then eval_apt; and the video VAE curriculum (GPU preset, 256 -> 512 -> 1024 px) on clips rendered at
#   1024 px, then eval_vae. Both data sets are rendered here by synth_ssv2. Each trainer stops after MINUTES of
#   wall clock (train_*.max_minutes) with a checkpoint and its final weights.
#   usage: bash benchmarks/gpu_runs.sh OUT_DIR [MINUTES] [VAE_STEPS_256,512,1024]
# BETWEEN='cmd' runs while the data is rendered, before the trainers take the GPU.
# RUNS='vae' (or 'apt'): only that run (default 'apt vae'). Rerunning with the same OUT_DIR resumes: the data stages
# skip what exists and each trainer resumes from its last checkpoint with a fresh MINUTES (a machine's call limit).
# VAE_WORKERS=N / APT_WORKERS=N: loader workers of the VAE trainer (default 8; 1024 px clips decode slowly) / of
#   APT's (default 6; realesrgan_video degrades in the workers: ~0.2 s a batch of two 16-frame 224 px clips a core).
# TRAIN_ONLY=1: stop after the trainers (a run split over several calls evaluates only in its last one).
# ABLATION=STEPS: also SeedVR2's loss ablation on the APT data beside the trainers (benchmarks/apt_ablation.py: four
#   loss rows of STEPS steps each, ABLATION_PARALLEL at a time (default 4), ABLATION_WORKERS loader workers each
#   (default 2), each capped at ABLATION_MINUTES (default MINUTES); more overrides in ABLATION_OVERRIDES) into
#   OUT_DIR/ablation.
# APT_OVERRIDES / VAE_OVERRIDES: more dotted.key=value pairs for benchmarks/gpu_params.py (a CPU smoke test).
# Logs, timings, both eval reports (eval_apt/, eval_vae/) and the final metrics land in OUT_DIR. On a workstation
# with DVC, the same params files work with `dvc exp run` (copy them over params.yaml).
set -uo pipefail
out=${1:?OUT_DIR}; minutes=${2:-6}; IFS=, read -r s256 s512 s1024 <<<"${3:-150,25,4}"
py=${PYTHON:-python3}
mkdir -p "$out"
$py benchmarks/gpu_params.py apt "$out/apt.yaml" synth_ssv2.count=480 synth_ssv2.workers=4 \
  train_apt.tracker=none train_apt.steps=4000 train_apt.warmup_steps=100 "train_apt.max_minutes=$minutes" \
  train_apt.checkpoint_every=500 train_apt.compile=true train_apt.degrade.kind=realesrgan_video \
  train_apt.loss.kind=rpgan_r1r2 train_apt.loss.r1=1000 train_apt.loss.r2=1000 train_apt.loss.fm=0.1 \
  train_apt.loss.recon=1.0 train_apt.val_clips=16 synth_ssv2.min_seconds=3.0 \
  eval_apt.flicker_clip_frames=32 eval_apt.flicker_chunk_frames=16 "eval_apt.report_dir=$out/eval_apt" ${APT_OVERRIDES:-} || exit
$py benchmarks/gpu_params.py vae "$out/vae.yaml" synth_ssv2.count=144 synth_ssv2.workers=8 \
  train_curriculum.tracker=none "train_curriculum.max_minutes=$minutes" train_curriculum.clip_stride=1 \
  train_curriculum.val_every=50 train_curriculum.val_clips=2 train_curriculum.checkpoint_every=100 \
  "train_curriculum.curriculum.phases.0.steps=$s256" train_curriculum.curriculum.phases.0.warmup_steps=20 \
  "train_curriculum.curriculum.phases.1.steps=$s512" train_curriculum.curriculum.phases.1.warmup_steps=5 \
  "train_curriculum.curriculum.phases.2.steps=$s1024" train_curriculum.curriculum.phases.2.warmup_steps=1 \
  eval_vae.clips=6 eval_vae.batch_size=1 eval_vae.clip_stride=1 "eval_vae.report_dir=$out/eval_vae" ${VAE_OVERRIDES:-} || exit
# data first (CPU only, both chains at once); BETWEEN (a command, e.g. a GPU benchmark) runs meanwhile
chain() {  # chain NAME WORKERS STAGE...: one run_stages.py chain, its log and timings under OUT_DIR
  local name=$1 workers=$2; shift 2
  $py benchmarks/run_stages.py --params "$out/$name.yaml" --jobs "$workers" --loader-workers "$workers" \
    --loader-backend pyav --timings "$out/${name}_$1.json" "$@" >>"$out/${name}_run.log" 2>&1
}
runs=" ${RUNS:-apt vae} "; a=""; v=""
[[ $runs == *" apt "* ]] && { chain apt 4 synth_ssv2 ingest_ssv2 validate_ssv2 & a=$!; }
[[ $runs == *" vae "* ]] && { chain vae 8 synth_ssv2 ingest_ssv2 validate_ssv2 & v=$!; }
if [[ -n "${BETWEEN:-}" ]]; then eval "$BETWEEN"; fi
# a run whose data chain failed does not train (its trainer would fail on the missing or stale data anyway)
[[ -z $a ]] || wait $a || { echo "apt data chain failed: $out/apt_run.log"; tail -5 "$out/apt_run.log"; runs=${runs/ apt / }; }
[[ -z $v ]] || wait $v || { echo "vae data chain failed: $out/vae_run.log"; tail -5 "$out/vae_run.log"; runs=${runs/ vae / }; }
a=""; v=""
ea=eval_apt; ev=eval_vae; [[ ${TRAIN_ONLY:-0} == 1 ]] && { ea=""; ev=""; }
[[ $runs == *" apt "* ]] && { chain apt "${APT_WORKERS:-6}" train_apt $ea & a=$!; }
[[ $runs == *" vae "* ]] && { chain vae "${VAE_WORKERS:-8}" train_curriculum $ev & v=$!; }
b=""
if [[ -n "${ABLATION:-}" && $runs == *" apt "* ]]; then
  # shellcheck disable=SC2086  # ABLATION_OVERRIDES is a list of key=value words
  $py benchmarks/apt_ablation.py "$out/ablation" --params "$out/apt.yaml" --steps "$ABLATION" \
    --max-minutes "${ABLATION_MINUTES:-$minutes}" --parallel "${ABLATION_PARALLEL:-4}" \
    --loader-workers "${ABLATION_WORKERS:-2}" \
    ${ABLATION_OVERRIDES:-} >>"$out/ablation_run.log" 2>&1 & b=$!
fi
[[ -z $a ]] || { wait $a; echo "apt chain exit $?"; }
[[ -z $v ]] || { wait $v; echo "vae chain exit $?"; }
[[ -z $b ]] || { wait $b; echo "ablation exit $?"; tail -5 "$out/ablation_run.log"; }
for pair in "apt train_apt" "vae train_curriculum"; do  # the trainers' final metrics, from their params' out_dir
  read -r name stage <<<"$pair"
  [[ $runs == *" $name "* ]] || continue
  f=$($py -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))[sys.argv[2]]["out_dir"])' \
      "$out/$name.yaml" "$stage")/final/metrics.json
  echo "== $f"; cat "$f" 2>/dev/null; echo
  cp "$f" "$out/${stage}_final_metrics.json" 2>/dev/null
done
