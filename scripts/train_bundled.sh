#!/usr/bin/env bash
# Train the bundled demo checkpoint checkpoints/mammosynth-phantom-256/ on a 2-core CPU.
#
# Input:  data/prepared-256, made by
#           mammosynth phantom --out data/phantom --studies 1000 --seed 0 --height 512
#           mammosynth ingest  --root data/phantom --out data/prepared-256 --size 256x192
# Output: runs/bundled/{vae,ldm,vae_decoder,vae_wide,ldm_wide,ldm_lesion,ldm_label}/ (run folders: config, git sha, data hash,
#         logs, checkpoints)
#         checkpoints/mammosynth-phantom-256/ (fp16 diffusers folder, README.md model card, samples.png)
# The shipped checkpoint: RUNS=runs/bundled10 (its vae/ is runs/bundled2/vae, made by stage 1 with
# THREADS=1 beside a second job; its ldm/ is runs/bundled5/ldm, one 7000-step leg of stage 2 with
# THREADS=2 alone; its vae_decoder/ is stage 3 with THREADS=2 (runs/bundled6); its vae_wide/ and
# ldm_wide/ are stages 4 and 5 with THREADS=2 (runs/bundled7/vae, runs/bundled8/ldm_wide); its
# ldm_lesion/ is stage 5b's train-ldm command with THREADS=2, run by hand with stage 5's latents.pt
# copied into its folder (the same cache it would encode; runs/bundled9/ldm_lesion); its ldm_label/
# is stage 5c's train-ldm command with THREADS=2, run by hand (same argv as the script's); assembled
# by this script with CKPT=out/candidate-label and moved into place after it was evaluated).
#
# Budget on 2 cores: VAE 1400 steps in 42 min (THREADS=1, a second job beside it) + 4 min evaluation;
# LDM 7000 steps in ~85 min with THREADS=2 alone (0.7 s/step) + 7 min latent encoding; decoder
# fine-tune 2000 steps in ~50 min with THREADS=2 (1.45 s/step); wide VAE 1500 steps in 48 min
# (1.7 s/step) + 4 min evaluation; wide LDM 4500 steps in ~56 min (0.74 s/step) + 3 min encoding;
# lesion-weighted LDM 6000 steps in 90 min (0.7 s/step alone, sampling jobs ran beside it); label-mask
# LDM 5000 steps in 64.5 min + 5 min latent encoding (tests ran beside it); model card ~5 min. Fixed
# step counts (VAE_STEPS, LDM_STEPS, LDM_EXTEND_STEPS, DEC_STEPS, WIDE_STEPS, WIDE_LDM_STEPS,
# LESION_LDM_STEPS, LABEL_LDM_STEPS) make the run reproducible whatever the machine's load; the
# minutes (VAE_MINUTES, LDM_MINUTES + LDM_EXTEND_MINUTES per later leg, cumulative, ...) are only a cap.
# The privacy checker and the fidelity encoder are separate stages (see README.md); the bundled
# ones were made by the commands below. The Siamese run has three cosine legs (each later leg a warm
# restart; --max_minutes is cumulative over the run): 2200 steps in 79 min (ran as
# runs/bundled/siamese2, copied), resumed to 4600 steps with two disguised copies per study in each
# batch (runs/bundled/siamese3), resumed to 9000 steps in 77 min on a quiet machine
# (runs/bundled/siamese4; 233 min in all). The index adds zoom views ×0.9 and ×1.1 to each embedding.
#   mammosynth train-siamese --data data/prepared-256 --out runs/bundled/siamese4 --max_train_steps 2200 --num_threads 1 --seed 0
#   mammosynth train-siamese --data data/prepared-256 --out runs/bundled/siamese4 --max_train_steps 4600 --copies_per_study 2 --num_threads 2 --seed 0 --max_minutes 160
#   mammosynth train-siamese --data data/prepared-256 --out runs/bundled/siamese4 --max_train_steps 9000 --copies_per_study 2 --num_threads 2 --seed 0 --max_minutes 236
#   mammosynth build-index --siamese runs/bundled/siamese4 --data data/prepared-256 --out $CKPT/privacy_checker --zoom-tta 0.9,1.1
#   mammosynth train-encoder --data data/prepared-256 --out $CKPT/feature_extractor --threads 1
# build-index registers the checker in $CKPT/model_index.json; this script keeps both folders
# when it rebuilds $CKPT. scripts/evaluate_bundled.sh then measures the checkpoint.
# Re-running the script resumes where it stopped (finished stages are skipped).
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${DATA:-data/prepared-256}
RUNS=${RUNS:-runs/bundled}
CKPT=${CKPT:-checkpoints/mammosynth-phantom-256}
THREADS=${THREADS:-1}
NOTES=${NOTES-docs/bundled-model-notes.md}   # the card's "known weaknesses" text; NOTES= for none
VAE_MINUTES=${VAE_MINUTES:-90}
LDM_MINUTES=${LDM_MINUTES:-200}   # a cap only (7000 steps take ~85 min with THREADS=2 alone, ~170 with THREADS=1)
# Fixed step counts (reproducible whatever the machine's load); the minutes stay as a cap.
VAE_STEPS=${VAE_STEPS:-1400}
LDM_STEPS=${LDM_STEPS:-7000}
LDM_EXTEND_STEPS=${LDM_EXTEND_STEPS-}   # later legs (space-separated totals); empty: one leg only
LDM_EXTEND_MINUTES=${LDM_EXTEND_MINUTES:-60}  # added to the cumulative --max_minutes cap per leg
DEC_STEPS=${DEC_STEPS:-2000}      # decoder fine-tune (stage 3); 0 skips it and ships the VAE's own decoder
DEC_MINUTES=${DEC_MINUTES:-90}
WIDE_CHANNELS=${WIDE_CHANNELS:-8}  # stage 4 widens the VAE to this many latent channels; 0 ships the 4-channel model
WIDE_STEPS=${WIDE_STEPS:-1500}
WIDE_MINUTES=${WIDE_MINUTES:-60}
WIDE_LDM_STEPS=${WIDE_LDM_STEPS:-4500}
WIDE_LDM_MINUTES=${WIDE_LDM_MINUTES:-90}
LESION_LDM_STEPS=${LESION_LDM_STEPS:-6000}  # stage 5b (with WIDE_CHANNELS > 0); 0 ships stage 5's LDM
LESION_WEIGHT=${LESION_WEIGHT:-8}          # stage 5b's --lesion_weight: box cells weigh 1 + this
LESION_LDM_MINUTES=${LESION_LDM_MINUTES:-100}
LABEL_LDM_STEPS=${LABEL_LDM_STEPS:-5000}    # stage 5c (after 5b); 0 ships stage 5b's LDM
LABEL_LDM_MINUTES=${LABEL_LDM_MINUTES:-80}
vae_steps_arg=${VAE_STEPS:+--max_train_steps $VAE_STEPS}
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS

if [ ! -f "$DATA/manifest.csv" ]; then
  echo "no prepared dataset at $DATA; make it first:" >&2
  echo "  mammosynth phantom --out data/phantom --studies 1000 --seed 0 --height 512" >&2
  echo "  mammosynth ingest --root data/phantom --out $DATA --size 256x192" >&2
  exit 2
fi

# 1. VAE (1 channel, f=8), random 96x72 crops (half of them on the lesion), L1 (x5 inside
#    lesion boxes, so calcification specks survive) + SSIM + small KL
if [ -f "$RUNS/vae/metrics.json" ] && [ -f "$RUNS/vae/vae/config.json" ]; then
  echo "VAE already trained: $RUNS/vae"
else
  python -m mammosynth.training.train_vae \
    --data "$DATA" --out "$RUNS/vae" --preset bundled --crop 96x72 \
    --train_batch_size 8 --learning_rate 5e-4 --lr_warmup_steps 50 --lr_scheduler cosine \
    --ssim_weight 0.5 --kl_weight 1e-6 --lesion_weight 4 --lesion_crop_prob 0.5 --ema_decay 0.999 \
    --max_minutes "$VAE_MINUTES" $vae_steps_arg --checkpointing_steps 100 --checkpoints_total_limit 2 \
    --validation_steps 200 --logging_steps 10 --eval_images 400 \
    --num_threads "$THREADS" --seed 0 --resume_from_checkpoint latest
fi

# 2. Conditional LDM on cached VAE latents (CFG dropout 0.1 per field + 0.1 all), in legs: the
#    first runs a cosine schedule over LDM_STEPS; each later leg (LDM_EXTEND_STEPS, space-separated
#    totals) resumes the same run with a longer --max_train_steps, which restarts the cosine at the
#    point it would have reached on the longer schedule (a warm restart). --max_minutes is cumulative.
ldm_steps_done() {
  python -c "import json,sys; print(json.load(open(sys.argv[1])).get('metrics', {}).get('steps', 0))" \
    "$RUNS/ldm/run.json" 2>/dev/null || echo 0
}
leg_minutes=$LDM_MINUTES
for leg_steps in ${LDM_STEPS:-0} $LDM_EXTEND_STEPS; do
  done_steps=$(ldm_steps_done)
  if [ -f "$RUNS/ldm/pipeline/model_index.json" ] && [ "$done_steps" -ge "$leg_steps" ]; then
    echo "LDM already trained to $done_steps steps: $RUNS/ldm"
  else
    leg_arg=--max_train_steps; [ "$leg_steps" -gt 0 ] || leg_arg=
    python -m mammosynth.training.train_ldm \
      --data "$DATA" --vae "$RUNS/vae" --out "$RUNS/ldm" --preset bundled \
      --train_batch_size 16 --learning_rate 4e-4 --lr_warmup_steps 100 --lr_scheduler cosine \
      --cond_dropout 0.1 --cond_drop_all 0.1 --ema_decay 0.999 --latent_norm channel --snr_gamma 5 \
      --max_minutes "$leg_minutes" ${leg_arg:+$leg_arg $leg_steps} --checkpointing_steps 100 --checkpoints_total_limit 2 \
      --validation_steps 500 --logging_steps 10 --save_fp16 \
      --num_threads "$THREADS" --seed 0 --resume_from_checkpoint latest
  fi
  leg_minutes=$(( leg_minutes + LDM_EXTEND_MINUTES ))
done

# 3. Decoder fine-tune: the LDM's VAE with its encoder frozen (so the latents, and the LDM trained
#    on them, stay valid), decoder trained on for DEC_STEPS more steps with 128x96 crops and a
#    patch-GAN term (adaptive weight 0.5): with L1 + SSIM alone the decoder draws the latents as a
#    blur with a grid texture; the adversarial term makes it draw the phantom's fine grain.
if [ "$DEC_STEPS" -gt 0 ]; then
  if [ -f "$RUNS/vae_decoder/metrics.json" ] && [ -f "$RUNS/vae_decoder/vae/config.json" ]; then
    echo "decoder already fine-tuned: $RUNS/vae_decoder"
  else
    python -m mammosynth.training.train_vae \
      --data "$DATA" --out "$RUNS/vae_decoder" --init_vae "$RUNS/ldm/pipeline/vae" --freeze_encoder --crop 128x96 \
      --train_batch_size 8 --learning_rate 2e-4 --lr_warmup_steps 50 --lr_scheduler cosine \
      --ssim_weight 0.5 --kl_weight 1e-6 --lesion_weight 4 --lesion_crop_prob 0.5 --ema_decay 0.999 \
      --adv_weight 0.5 --adv_adaptive --disc_learning_rate 2e-4 \
      --max_minutes "$DEC_MINUTES" --max_train_steps "$DEC_STEPS" --checkpointing_steps 100 --checkpoints_total_limit 2 \
      --validation_steps 250 --logging_steps 10 --eval_images 400 \
      --num_threads "$THREADS" --seed 0 --resume_from_checkpoint latest
  fi
fi

# An LDM on the wide latents, warm-started: warm_ldm INIT OUT LR STEPS MINUTES VALIDATION_STEPS [more flags]
warm_ldm() {
  python -m mammosynth.training.train_ldm \
    --data "$DATA" --vae "$RUNS/vae_wide" --init_pipeline "$1" --out "$2" \
    --train_batch_size 16 --learning_rate "$3" --lr_warmup_steps 100 --lr_scheduler cosine \
    --cond_dropout 0.1 --cond_drop_all 0.1 --ema_decay 0.999 --latent_norm channel --snr_gamma 5 \
    --max_minutes "$5" --max_train_steps "$4" --checkpointing_steps 100 --checkpoints_total_limit 2 \
    --validation_steps "$6" --logging_steps 10 --save_fp16 \
    --num_threads "$THREADS" --seed 0 --resume_from_checkpoint latest "${@:7}"
}

# 4. Wider latents: 4x32x24 latents cannot carry calcification specks and spicules. The stage-3 VAE
#    is widened to WIDE_CHANNELS latent channels (its own channels kept, the new ones start unused:
#    models.autoencoder.widen_latent) and encoder + decoder train on with the same loss and patch-GAN.
# 5. The LDM on the wide latents, warm-started from stage 2's (its UNet widened: models.unet.widen_unet_latent).
if [ "$WIDE_CHANNELS" -gt 0 ]; then
  wide_from=$RUNS/vae_decoder; [ "$DEC_STEPS" -gt 0 ] || wide_from=$RUNS/vae
  if [ -f "$RUNS/vae_wide/metrics.json" ] && [ -f "$RUNS/vae_wide/vae/config.json" ]; then
    echo "wide VAE already trained: $RUNS/vae_wide"
  else
    python -m mammosynth.training.train_vae \
      --data "$DATA" --out "$RUNS/vae_wide" --init_vae "$wide_from" --latent_channels "$WIDE_CHANNELS" \
      --crop 128x96 --train_batch_size 8 --learning_rate 2e-4 --lr_warmup_steps 50 --lr_scheduler cosine \
      --ssim_weight 0.5 --kl_weight 1e-6 --lesion_weight 4 --lesion_crop_prob 0.5 --ema_decay 0.999 \
      --adv_weight 0.5 --adv_adaptive --disc_learning_rate 2e-4 \
      --max_minutes "$WIDE_MINUTES" --max_train_steps "$WIDE_STEPS" --checkpointing_steps 100 --checkpoints_total_limit 2 \
      --validation_steps 250 --logging_steps 10 --eval_images 400 \
      --num_threads "$THREADS" --seed 0 --resume_from_checkpoint latest
  fi
  if [ -f "$RUNS/ldm_wide/pipeline/model_index.json" ]; then
    echo "wide LDM already trained: $RUNS/ldm_wide"
  else
    warm_ldm "$RUNS/ldm" "$RUNS/ldm_wide" 4e-4 "$WIDE_LDM_STEPS" "$WIDE_LDM_MINUTES" 500
  fi
fi

# 5b. Lesion-weighted LDM: stage 5's LDM trained on (half its learning rate, a fresh cosine) with the
#     latent cells inside lesion boxes weighing 1 + LESION_WEIGHT in the loss: a lesion is 1-3 % of
#     the latent, and with plain MSE every lesion type came out as the same bright blob.
if [ "$WIDE_CHANNELS" -gt 0 ] && [ "$LESION_LDM_STEPS" -gt 0 ]; then
  if [ -f "$RUNS/ldm_lesion/pipeline/model_index.json" ]; then
    echo "lesion-weighted LDM already trained: $RUNS/ldm_lesion"
  else
    warm_ldm "$RUNS/ldm_wide" "$RUNS/ldm_lesion" 2e-4 "$LESION_LDM_STEPS" "$LESION_LDM_MINUTES" 1000 \
      --lesion_weight "$LESION_WEIGHT"
  fi
fi

# 5c. Stage 5b's LDM trained on for LABEL_LDM_STEPS (learning rate 1.5e-4, a fresh cosine, same lesion
#     weight). In the shipped run this leg was the first whose conditioning masks hold only the boxes
#     of each image's own lesion label: until then train-ldm's masks held every finding's boxes, and
#     10 % of the phantom's lesion images show two types (a calcification label came with an
#     architectural distortion's box as well). A fresh run uses label masks from stage 2 on.
if [ "$WIDE_CHANNELS" -gt 0 ] && [ "$LESION_LDM_STEPS" -gt 0 ] && [ "$LABEL_LDM_STEPS" -gt 0 ]; then
  if [ -f "$RUNS/ldm_label/pipeline/model_index.json" ]; then
    echo "label-mask LDM already trained: $RUNS/ldm_label"
  else
    warm_ldm "$RUNS/ldm_lesion" "$RUNS/ldm_label" 1.5e-4 "$LABEL_LDM_STEPS" "$LABEL_LDM_MINUTES" 1000 \
      --lesion_weight "$LESION_WEIGHT"
  fi
fi

# 6. Assemble the checkpoint folder (the wide model, or the stage-2 LDM with the stage-3 decoder),
#    sample grids, conditioning check and model card
rm -rf "$CKPT.tmp"
mkdir -p "$(dirname "$CKPT")"
decoder_arg=
ldm_run=$RUNS/ldm
if [ "$WIDE_CHANNELS" -gt 0 ]; then
  ldm_run=$RUNS/ldm_wide
  decoder_arg="--wide_vae_run $RUNS/vae_wide --base_ldm_run $RUNS/ldm"
  if [ "$LESION_LDM_STEPS" -gt 0 ]; then ldm_run=$RUNS/ldm_lesion; decoder_arg="$decoder_arg $RUNS/ldm_wide"; fi
  if [ "$LESION_LDM_STEPS" -gt 0 ] && [ "$LABEL_LDM_STEPS" -gt 0 ]; then
    ldm_run=$RUNS/ldm_label; decoder_arg="$decoder_arg $RUNS/ldm_lesion"
  fi
  cp -r "$ldm_run/pipeline" "$CKPT.tmp"
  if [ "$DEC_STEPS" -gt 0 ]; then decoder_arg="$decoder_arg --decoder_run $RUNS/vae_decoder"; fi
else
  cp -r "$RUNS/ldm/pipeline" "$CKPT.tmp"
  if [ "$DEC_STEPS" -gt 0 ]; then
    python -m mammosynth swap-decoder --checkpoint "$CKPT.tmp" --vae "$RUNS/vae_decoder"
    decoder_arg="--decoder_run $RUNS/vae_decoder"
  fi
fi
for keep in privacy_checker feature_extractor; do   # components other stages add later
  if [ -d "$CKPT/$keep" ]; then cp -r "$CKPT/$keep" "$CKPT.tmp/"; fi
done
rm -rf "$CKPT" && mv "$CKPT.tmp" "$CKPT"
if [ -d "$CKPT/privacy_checker" ]; then   # keep the gate registered (train-ldm saves without one)
  python -c "from mammosynth.pipelines.pipeline_mammo_ldm import register_privacy_checker as r; r('$CKPT')"
fi
python -m mammosynth.training.model_card \
  --checkpoint "$CKPT" --vae_run "$RUNS/vae" --ldm_run "$ldm_run" $decoder_arg --data "$DATA" \
  --command "bash scripts/train_bundled.sh" --num_threads "$THREADS" ${NOTES:+--notes "$NOTES"}
du -sh "$CKPT"/vae "$CKPT"/unet "$CKPT"/condition_encoder
echo "done: $CKPT"
