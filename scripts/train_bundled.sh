#!/usr/bin/env bash
# Rebuild the bundled demo checkpoint checkpoints/mammosynth-phantom-256/ from nothing on a 2-core CPU:
#
#   bash scripts/train_bundled.sh            # then: bash scripts/evaluate_bundled.sh (~35 min)
#
# Every stage writes a run folder under $RUNS (config, git sha, data hash, log, checkpoints) and
# is skipped when its result exists, so re-running the script resumes where it stopped (a stopped
# training stage resumes from its last checkpoint, exactly).
#
# Stage                                                    steps      minutes on 2 cores
#  0. phantom data (1,000 studies, 512 px) + ingest 256x192  -          ~10 + 3
#  1. VAE, 4 latent channels, f = 8                           1,400      42 (THREADS=1 beside a 2nd job)
#  2. LDM on the VAE's latents                                7,000      85 + 7 latent encoding
#  3. decoder fine-tune (encoder frozen, patch-GAN)           2,000      50
#  4. VAE widened to 8 latent channels                        1,500      48 + 4 evaluation
#  5. LDM on the wide latents (warm start from 2)             4,500      56 + 3 encoding
#  5b. lesion-weighted LDM (box cells x9)                     6,000      90
#  5c. the same, a fresh cosine at lr 1.5e-4                  5,000      65 + 5 encoding
#  6. assemble the fp16 checkpoint folder                     -          <1
#  7. Siamese re-ID network, 3 cosine legs                    9,000      233
#  7b. the same network on wider re-framing (warm restart)   4,148      45 (1 thread)
#  8. privacy index + copy sketch + calibration (build-index) -          ~3
#  9. fidelity encoder (train-encoder)                        10 epochs  6
#  9b. distilled student (distill) + tiny decoder, add-fast    3,679 + 4,120  75 + 44 (1 thread)
# 10. model card, sample grids, conditioning check            -          ~5
#
# Fixed step counts (the *_STEPS variables) make the run reproducible whatever the machine's load;
# the *_MINUTES are only a cap (--max_minutes is cumulative over a run's legs). Stage N=0 in a
# *_STEPS variable leaves that stage out (WIDE_CHANNELS=0: the 4-channel model). How the shipped
# folders were made, leg by leg, is in docs/bundled-training-diary.md.
set -euo pipefail
cd "$(dirname "$0")/.."

PHANTOM=${PHANTOM:-data/phantom}
PHANTOM_STUDIES=${PHANTOM_STUDIES:-1000}   # stage 0: phantom patients (4 images each)
DATA=${DATA:-data/prepared-256}
RUNS=${RUNS:-runs/bundled}
CKPT=${CKPT:-checkpoints/mammosynth-phantom-256}
THREADS=${THREADS:-2}   # torch threads per stage; THREADS=1 leaves a core free (about 1.7x slower)
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
SIAMESE_LEGS=${SIAMESE_LEGS:-"2200 4600 9000"}   # stage 7: cumulative steps at the end of each cosine leg
SIAMESE_MINUTES=${SIAMESE_MINUTES:-"100 160 236"} # the cumulative --max_minutes cap of each leg
SIAMESE_WIDE_STEPS=${SIAMESE_WIDE_STEPS:-4148}    # stage 7b: the wide-geometry leg (steps, minutes cap)
SIAMESE_WIDE_MINUTES=${SIAMESE_WIDE_MINUTES:-60}
ENCODER_EPOCHS=${ENCODER_EPOCHS:-10}             # stage 9
STUDENT_STEPS=${STUDENT_STEPS:-3679}             # stage 9b: the distilled few-step student; 0 ships none
STUDENT_MINUTES=${STUDENT_MINUTES:-150}
TINY_STEPS=${TINY_STEPS:-4120}                   # stage 9b: the tiny decoder; 0 ships none
TINY_MINUTES=${TINY_MINUTES:-60}
CARD_ARGS=${CARD_ARGS:-}                         # stage 10: more model_card options (e.g. "--seeds 2 --steps 4")
vae_steps_arg=${VAE_STEPS:+--max_train_steps $VAE_STEPS}
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS

# 0. Phantom data in the VinDr-Mammo layout, then the prepared dataset the networks train on
if [ ! -f "$DATA/manifest.csv" ]; then
  if [ ! -f "$PHANTOM/phantom_summary.json" ]; then
    python -m mammosynth phantom --out "$PHANTOM" --studies "$PHANTOM_STUDIES" --seed 0 --height 512
  fi
  python -m mammosynth ingest --root "$PHANTOM" --out "$DATA" --size 256x192
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
#     weight).
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

# 7. Siamese re-identification network (the privacy gate's embedder): three cosine legs of one run,
#    each later leg a warm restart with two disguised copies of each study in every batch.
siamese_steps_done() {
  python -c "import json,sys; print(json.load(open(sys.argv[1])).get('metrics', {}).get('steps', 0))" \
    "$RUNS/siamese/run.json" 2>/dev/null || echo 0
}
read -r -a siamese_minutes <<< "$SIAMESE_MINUTES"
leg=0
for leg_steps in $SIAMESE_LEGS; do
  if [ -f "$RUNS/siamese/siamese/config.json" ] && [ "$(siamese_steps_done)" -ge "$leg_steps" ]; then
    echo "Siamese network already trained to $(siamese_steps_done) steps: $RUNS/siamese"
  else
    copies_arg=; [ "$leg" -eq 0 ] || copies_arg="--copies_per_study 2"
    python -m mammosynth train-siamese --data "$DATA" --out "$RUNS/siamese" --max_train_steps "$leg_steps" \
      --max_minutes "${siamese_minutes[$leg]}" $copies_arg --num_threads "$THREADS" --seed 0 \
      --resume_from_checkpoint latest
  fi
  leg=$(( leg + 1 ))
done

# 7b. Wider re-framing for the gate's network (issue 20): a warm restart of the network above on
#     shifts up to ±10 %, zooms up to ±18 % and rotations up to ±6°, two disguised copies of each study
#     in every batch (4,148 steps, 45 CPU minutes on one thread; checkpoints/campaign/siamese-wide is
#     this leg's network, made with --max_minutes 45).
if [ ! -f "$RUNS/siamese-wide/siamese/config.json" ]; then
  python -m mammosynth train-siamese --data "$DATA" --out "$RUNS/siamese-wide" --init_siamese "$RUNS/siamese" \
    --max_shift 0.1 --max_scale 0.18 --max_rotation_deg 6 --copies_per_study 2 --learning_rate 3e-4 \
    --lr_warmup_steps 50 --max_minutes "$SIAMESE_WIDE_MINUTES" --max_train_steps "$SIAMESE_WIDE_STEPS" \
    --num_threads "$THREADS" --seed 0 --no_progress --resume_from_checkpoint latest
fi

# 8. The privacy gate: the training set's embeddings (with zoom views x0.9 and x1.1), the copy sketch
#    (whole-frame and block by block) and thresholds calibrated on the test split's unseen patients
#    (1 % in all: 0.7 % Siamese, 0.3 % sketch); build-index registers it in the checkpoint.
if [ ! -f "$CKPT/privacy_checker/config.json" ]; then
  python -m mammosynth build-index --siamese "$RUNS/siamese-wide" --data "$DATA" --out "$CKPT/privacy_checker" \
    --zoom-tta 0.9,1.1
fi

# 9. The fidelity encoder FID/KID and the realism metrics measure with.
if [ ! -f "$CKPT/feature_extractor/config.json" ]; then
  python -m mammosynth train-encoder --data "$DATA" --out "$RUNS/feature_extractor" --epochs "$ENCODER_EPOCHS" \
    --threads "$THREADS"
  cp -r "$RUNS/feature_extractor" "$CKPT/feature_extractor"
fi

# 9b. The fast parts (issue 21): the few-step student distilled from the LDM (latent consistency
#     distillation) and the tiny decoder distilled from the VAE's; add-fast puts both into $CKPT.
if [ "$STUDENT_STEPS" -gt 0 ] && [ ! -f "$CKPT/student_unet/config.json" ]; then
  python -m mammosynth distill --teacher "$CKPT" --data "$DATA" --out "$RUNS/student" --train_batch_size 16 \
    --learning_rate 1e-4 --lr_scheduler constant_with_warmup --lr_warmup_steps 100 \
    --max_train_steps "$STUDENT_STEPS" --max_minutes "$STUDENT_MINUTES" --checkpointing_steps 200 \
    --checkpoints_total_limit 2 --num_threads "$THREADS" --no_progress --save_fp16 --seed 0 \
    --resume_from_checkpoint latest
  python -m mammosynth add-fast --checkpoint "$CKPT" --student "$RUNS/student"
fi
if [ "$TINY_STEPS" -gt 0 ] && [ ! -f "$CKPT/tiny_vae/config.json" ]; then
  python -m mammosynth distill-decoder --checkpoint "$CKPT" --data "$DATA" --out "$RUNS/tiny-decoder" \
    --max_train_steps "$TINY_STEPS" --max_minutes "$TINY_MINUTES" --num_threads "$THREADS" --save_fp16 \
    --no_progress --resume_from_checkpoint latest
  python -m mammosynth add-fast --checkpoint "$CKPT" --tiny-decoder "$RUNS/tiny-decoder"
fi

# 10. Model card, sample grids and conditioning check
python -m mammosynth.training.model_card \
  --checkpoint "$CKPT" --vae_run "$RUNS/vae" --ldm_run "$ldm_run" $decoder_arg --data "$DATA" \
  --command "bash scripts/train_bundled.sh" --num_threads "$THREADS" ${NOTES:+--notes "$NOTES"} $CARD_ARGS
du -sh "$CKPT"/vae "$CKPT"/unet "$CKPT"/condition_encoder
echo "done: $CKPT"
