#!/usr/bin/env bash
# Quality campaign, second leg: UNet sizes on the chosen f = 4 latents at equal CPU time.
#
#   UNETS="u32 u64" LEGS="25 45" bash scripts/ldm_sweep.sh      # sizes side by side, one core each
#   python scripts/sweep_table.py runs/ldm-sweep                  # FID / C2ST vs CPU minutes per size
#
# Every size trains from scratch on the latents of $VAE (runs/sweep/f4c4/vae by default: the f = 4,
# 4-channel autoencoder that scripts/vae_sweep.sh chose) with stage 2's recipe of train_bundled.sh
# (batch 16, CFG dropout 0.1 per field + 0.1 all, min-SNR 5, per-channel latent norm, EMA 0.999) at a
# constant learning rate, one torch thread, until its cumulative --max_minutes reaches each leg of
# LEGS. After each leg the run's pipeline makes $IMAGES images with the conditions of the first
# $IMAGES training rows (ungated: these are measurements, not a release; $STEPS steps, guidance
# $GUIDANCE), and `mammosynth evaluate --parts fidelity,realism` compares them with the real test
# split (FID with the shipped fidelity encoder, its real-vs-real floor, and the CNN C2ST) into
# $RUNS/<size>/eval-<minutes>min/. Re-running resumes: a measured leg is skipped, a stopped leg
# resumes from its last checkpoint, a half-made image set is completed.
#
# Sizes (NAME: train-ldm flags):
#   u32  the bundled preset: blocks 32-64-128, attention at the two coarse levels (~2.2 M parameters)
#   u64  twice as wide: blocks 64-128-256 (~8.6 M parameters)
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${DATA:-data/prepared-256}
RUNS=${RUNS:-runs/ldm-sweep}
VAE=${VAE:-runs/sweep/f4c4/vae}
CKPT=${CKPT:-checkpoints/mammosynth-phantom-256}   # its feature_extractor/ measures FID
UNETS=${UNETS:-"u32 u64"}
LEGS=${LEGS:-"25 45"}                              # cumulative CPU minutes at which each size is measured
IMAGES=${IMAGES:-128}                              # u64 samples at ~6 s per image on one busy core
STEPS=${STEPS:-20}
GUIDANCE=${GUIDANCE:-3.0}
EVAL_ARGS=${EVAL_ARGS:---max-images $IMAGES}       # both sets at the same size (the real test set too)
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

for path in "$DATA/manifest.csv" "$VAE/config.json"; do
  if [ ! -f "$path" ]; then
    echo "missing $path: make the data with stage 0 of scripts/train_bundled.sh and the VAE with scripts/vae_sweep.sh" >&2
    exit 2
  fi
done

unet_flags() {
  case "$1" in
    u32) echo "--preset bundled" ;;
    u64) echo "--preset bundled --block_out_channels 64,128,256" ;;
    *) echo "unknown UNet size $1 (expected u32 or u64)" >&2; return 2 ;;
  esac
}

measure() {  # measure RUN MINUTES
  local run=$1 out=$1/eval-$2min
  if [ -f "$out/metrics.json" ]; then echo "already measured: $out"; return; fi
  python -m mammosynth generate-set --checkpoint "$run/pipeline" --like "$DATA" --split training \
    --out "$run/synthetic-$2min" --limit "$IMAGES" --steps "$STEPS" --guidance "$GUIDANCE" --batch-size 16 \
    --privacy off --seed 0 --no-progress
  python -m mammosynth evaluate --data "$DATA" --synthetic "$run/synthetic-$2min" --checkpoint "$CKPT" \
    --parts fidelity,realism --out "$out" --threads 1 $EVAL_ARGS
}

run_unet() {
  local name=$1 flags minutes out=$RUNS/$1
  flags=$(unet_flags "$name")
  for minutes in $LEGS; do
    if [ ! -f "$out/eval-${minutes}min/metrics.json" ]; then
      python -m mammosynth train-ldm --data "$DATA" --vae "$VAE" --out "$out" $flags \
        --train_batch_size 16 --learning_rate 4e-4 --lr_warmup_steps 100 --lr_scheduler constant_with_warmup \
        --cond_dropout 0.1 --cond_drop_all 0.1 --ema_decay 0.999 --latent_norm channel --snr_gamma 5 \
        --max_minutes "$minutes" --max_train_steps 1000000 --checkpointing_steps 50 --checkpoints_total_limit 2 \
        --validation_steps 100000 --logging_steps 10 --num_validation_images 4 --no_progress \
        --num_threads 1 --seed 0 --resume_from_checkpoint latest
      measure "$out" "$minutes"
    fi
  done
}

mkdir -p "$RUNS"
pids=()
for name in $UNETS; do
  unet_flags "$name" > /dev/null
  mkdir -p "$RUNS/$name"
  run_unet "$name" > "$RUNS/$name.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
python scripts/sweep_table.py "$RUNS" || true
exit $status
