#!/usr/bin/env bash
# The quality campaign across sessions (issue 19): one leg a session, resumable, nothing lost at the stop.
#
#   MINUTES=80 nohup bash scripts/campaign.sh > runs/campaign.log 2>&1 &    # this session's leg, one thread
#   python scripts/campaign_snapshot.py show                                 # every leg so far: the curve
#
# A session's run folders end with it, so every leg ends by packing the generator into the committed
# snapshot $SNAP (fp16, ~10 MB: the f = 4, 4-channel VAE with its latent statistics, the u32 UNet and its
# condition encoder) and appending the leg to its ledger.json. Commit that folder (at most once a session).
#
#  0. data: stage 0 of train_bundled.sh when $DATA is missing (phantom, 1,000 studies, seed 0; ~3 minutes)
#  1. the VAE: the snapshot's; the first time (no snapshot) scripts/vae_sweep.sh trains f4c4 for 60 minutes
#  2. the UNet: $RUN resumes from its last checkpoint when it has one (the same session); otherwise it
#     warm-starts from the snapshot (--init_pipeline, --keep_latent_stats: the latents keep their
#     normalisation; Adam's moments and the EMA start again from the snapshot's weights, with a warm-up of
#     100 steps); the first time it starts from scratch. Stage 2's recipe at a constant learning rate, one
#     torch thread, until $RUN holds $MINUTES of training.
#  3. measures the leg as scripts/ldm_sweep.sh does: $IMAGES images with the conditions of the first training
#     rows (ungated: a measurement, not a release), FID and CNN C2ST against as many real test images.
#  4. packs the snapshot and appends the leg (steps, CPU minutes, command, start point, the measurement).
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${DATA:-data/prepared-256}
SNAP=${SNAP:-checkpoints/campaign/f4c4-u32}
RUN=${RUN:-runs/campaign/u32}
VAE_RUN=${VAE_RUN:-runs/sweep/f4c4}
CKPT=${CKPT:-checkpoints/mammosynth-phantom-256}   # its feature_extractor/ measures FID
MINUTES=${MINUTES:-80}
IMAGES=${IMAGES:-128}
STEPS=${STEPS:-20}
GUIDANCE=${GUIDANCE:-3.0}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

if [ ! -f "$DATA/manifest.csv" ]; then
  python -m mammosynth phantom --out data/phantom --studies 1000 --seed 0 --height 512
  python -m mammosynth ingest --root data/phantom --out "$DATA" --size 256x192
fi

init=()
if [ -d "$RUN/checkpoints" ] && ls "$RUN/checkpoints" | grep -q '^checkpoint-'; then
  vae=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['config']['vae'])" "$RUN/run.json")
  echo "resuming $RUN from its last checkpoint (VAE $vae)"
elif [ -f "$SNAP/model_index.json" ]; then
  vae=$SNAP/vae
  init=(--init_pipeline "$SNAP" --keep_latent_stats)
  echo "warm start from the snapshot $SNAP ($(python scripts/campaign_snapshot.py total --snapshot "$SNAP"))"
else
  if [ ! -f "$VAE_RUN/vae/config.json" ]; then
    DESIGNS=f4c4 LEGS=60 bash scripts/vae_sweep.sh
  fi
  vae=$VAE_RUN/vae
  echo "no snapshot at $SNAP: the UNet starts from scratch on $vae"
fi

mkdir -p "$RUN"
python -m mammosynth train-ldm --data "$DATA" --vae "$vae" --out "$RUN" --preset bundled "${init[@]}" \
  --train_batch_size 16 --learning_rate 4e-4 --lr_warmup_steps 100 --lr_scheduler constant_with_warmup \
  --cond_dropout 0.1 --cond_drop_all 0.1 --ema_decay 0.999 --latent_norm channel --snr_gamma 5 \
  --max_minutes "$MINUTES" --max_train_steps 1000000 --checkpointing_steps 50 --checkpoints_total_limit 2 \
  --validation_steps 100000 --logging_steps 10 --num_validation_images 4 --no_progress \
  --num_threads 1 --seed 0 --resume_from_checkpoint latest

rm -rf "$RUN/synthetic" "$RUN/eval"
python -m mammosynth generate-set --checkpoint "$RUN/pipeline" --like "$DATA" --split training \
  --out "$RUN/synthetic" --limit "$IMAGES" --steps "$STEPS" --guidance "$GUIDANCE" --batch-size 16 \
  --privacy off --seed 0 --no-progress
python -m mammosynth evaluate --data "$DATA" --synthetic "$RUN/synthetic" --checkpoint "$CKPT" \
  --parts fidelity,realism --out "$RUN/eval" --threads 1 --max-images "$IMAGES"

python scripts/campaign_snapshot.py pack --run "$RUN" --vae-run "$VAE_RUN" --eval "$RUN/eval" --snapshot "$SNAP"
python scripts/campaign_snapshot.py show --snapshot "$SNAP"
