#!/usr/bin/env bash
# Quality campaign, first leg: autoencoder designs at equal CPU time, judged by their ceiling.
#
#   DESIGNS="f8c8 f4c4" LEGS="30 60" bash scripts/vae_sweep.sh      # designs side by side, one core each
#   python scripts/sweep_table.py runs/sweep                          # FID / C2ST vs CPU minutes per design
#
# Every design trains from scratch with the bundled VAE recipe (stage 1 of train_bundled.sh: 96x72
# crops, half on a lesion, L1 x5 in lesion boxes + SSIM + small KL, EMA) at a constant learning rate,
# one torch thread, until its cumulative --max_minutes reaches each leg of LEGS; after each leg
# `mammosynth evaluate --parts reconstruction` measures what the VAE keeps (real training images
# through it and back vs the real test images: FID at the real-vs-real floor's size, CNN C2ST,
# background, edge lines, band power) into $RUNS/<design>/ceiling-<minutes>min/. The shipped VAE is
# measured once as the reference ($RUNS/shipped/ceiling). Re-running resumes: a trained leg or a
# finished evaluation is skipped, a stopped leg resumes from its last checkpoint.
#
# Designs (NAME: train-vae flags):
#   f8c8  f = 8, 8 latent channels (the shipped family): --block_out_channels 16,32,64,64 --latent_channels 8
#   f8c16 f = 8, 16 latent channels, wider: --block_out_channels 32,64,128,128 --latent_channels 16
#   f4c4  f = 4, 4 latent channels (64x48 latents): --block_out_channels 32,64,128 --latent_channels 4
#   f4c8  f = 4, 8 latent channels: --block_out_channels 32,64,128 --latent_channels 8
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${DATA:-data/prepared-256}
RUNS=${RUNS:-runs/sweep}
CKPT=${CKPT:-checkpoints/mammosynth-phantom-256}   # its feature_extractor/ measures FID; its vae/ is the reference
DESIGNS=${DESIGNS:-"f8c8 f4c4"}
LEGS=${LEGS:-"30 60"}                              # cumulative CPU minutes at which each design is measured
EVAL_ARGS=${EVAL_ARGS:-}                           # more `mammosynth evaluate` options
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

if [ ! -f "$DATA/manifest.csv" ]; then
  echo "no prepared dataset at $DATA; make it with stage 0 of scripts/train_bundled.sh" >&2
  exit 2
fi

design_flags() {
  case "$1" in
    f8c8) echo "--block_out_channels 16,32,64,64 --latent_channels 8" ;;
    f8c16) echo "--block_out_channels 32,64,128,128 --latent_channels 16" ;;
    f4c4) echo "--block_out_channels 32,64,128 --latent_channels 4" ;;
    f4c8) echo "--block_out_channels 32,64,128 --latent_channels 8" ;;
    *) echo "unknown design $1 (expected f8c8, f8c16, f4c4 or f4c8)" >&2; return 2 ;;
  esac
}

ceiling() {  # ceiling VAE OUT
  if [ -f "$2/metrics.json" ]; then echo "already measured: $2"; return; fi
  python -m mammosynth evaluate --data "$DATA" --checkpoint "$CKPT" --vae "$1" --parts reconstruction \
    --out "$2" --threads 1 $EVAL_ARGS
}

run_design() {
  local name=$1 flags minutes
  flags=$(design_flags "$name")
  for minutes in $LEGS; do
    local out=$RUNS/$name
    if [ ! -f "$out/ceiling-${minutes}min/metrics.json" ]; then
      python -m mammosynth train-vae --data "$DATA" --out "$out" $flags --crop 96x72 \
        --train_batch_size 8 --learning_rate 5e-4 --lr_warmup_steps 50 --lr_scheduler constant_with_warmup \
        --ssim_weight 0.5 --kl_weight 1e-6 --lesion_weight 4 --lesion_crop_prob 0.5 --ema_decay 0.999 \
        --max_minutes "$minutes" --max_train_steps 1000000 --checkpointing_steps 100 --checkpoints_total_limit 2 \
        --validation_steps 100000 --logging_steps 10 --eval_images 100 --no_progress \
        --num_threads 1 --seed 0 --resume_from_checkpoint latest
      ceiling "$out/vae" "$out/ceiling-${minutes}min"
    fi
  done
}

mkdir -p "$RUNS"
ceiling "$CKPT" "$RUNS/shipped/ceiling" > "$RUNS/shipped.log" 2>&1 &
pids=($!)
for name in $DESIGNS; do
  design_flags "$name" > /dev/null
  mkdir -p "$RUNS/$name"
  run_design "$name" > "$RUNS/$name.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
python scripts/sweep_table.py "$RUNS"
exit $status
