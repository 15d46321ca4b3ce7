#!/usr/bin/env bash
# The whole chain on VinDr-Mammo (or any VinDr-layout root) at a GPU preset, over N GPUs and M nodes:
#
#   VINDR=/data/vindr-mammo PRESET=vindr-512 GPUS=8 bash scripts/train_vindr.sh
#   # several nodes (shared file system): on node k = 0..NODES-1
#   VINDR=... NODES=4 NODE_RANK=k MASTER_ADDR=node0 GPUS=8 bash scripts/train_vindr.sh
#
# Stages (each skipped when its result exists, so re-running resumes; a stopped training stage resumes
# from its last checkpoint):
#   1. ingest at the preset's frame size, one worker per core            (one process)
#   2. train-vae                                                           (data-parallel: GPUS x NODES)
#   3. train-ldm (latents cached in shards, encoded by every process)      (data-parallel)
#   4. train-siamese                                                       (data-parallel)
#   5. checkpoint folder = the LDM's pipeline                              (node 0)
#   6. build-index: the privacy gate over the training split (faiss)       (node 0)
#   7. train-encoder: the fidelity encoder                                 (node 0)
#   8. generate-set: one synthetic image per training image, gated         (data-parallel, one node)
#   9. privacy-audit, 10. evaluate, 11. paper-table                        (node 0)
# The single-process stages run on node 0; the other nodes wait for their results (shared file system).
# GPU-hours per stage are estimated from FLOPs counted with FlopCounterMode and printed first
# (python -m mammosynth.training.dry_run; GPU_PEAK_TFLOPS / GPU_UTILISATION set the assumed speed).
# The presets' per-GPU batch sizes are for 80 GB GPUs: `mammosynth train-ldm --preset P --dry-run`
# prints the memory they need. Nothing is downloaded: VINDR must already be on disk.
#
# The same script runs on the phantom at test size (PRESET=vindr-tiny, GPUS=2 processes on the CPU via
# torchrun/gloo) in tests/test_train_vindr.py.
set -euo pipefail
cd "$(dirname "$0")/.."

VINDR=${VINDR:?set VINDR to the VinDr-Mammo root (images/, breast-level_annotations.csv, finding_annotations.csv)}
PRESET=${PRESET:-vindr-512}
preset() { python -m mammosynth.training.presets "$PRESET" "$1" "$2"; }
SIZE=${SIZE:-$(preset vae frames)}
DATA=${DATA:-data/vindr-$SIZE}
RUNS=${RUNS:-runs/vindr-$PRESET}
CKPT=${CKPT:-checkpoints/mammosynth-vindr-$PRESET}
SYNTH=${SYNTH:-$RUNS/synthetic}
REPORTS=${REPORTS:-$CKPT/reports}
GPUS=${GPUS:-$( (command -v nvidia-smi >/dev/null && nvidia-smi -L | wc -l) || echo 1)}   # processes per node
NODES=${NODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}
LAUNCHER=${LAUNCHER:-torchrun}                       # torchrun or accelerate
WORKERS=${WORKERS:-$(nproc)}                         # ingest decoders
THREADS=${THREADS:-}                                 # torch CPU threads per process (empty: torch's choice)
VAE_STEPS=${VAE_STEPS:-$(preset vae steps)}
LDM_STEPS=${LDM_STEPS:-$(preset ldm steps)}
SIAMESE_STEPS=${SIAMESE_STEPS:-$(preset siamese steps)}
ENCODER_EPOCHS=${ENCODER_EPOCHS:-$(preset encoder epochs)}
CHECKPOINT_EVERY=${CHECKPOINT_EVERY:-1000}
GEN_STEPS=${GEN_STEPS:-50}
GEN_LIMIT=${GEN_LIMIT:-}                             # cap on synthetic images (empty: one per training image)
GPU_PEAK_TFLOPS=${GPU_PEAK_TFLOPS:-989}              # bf16 dense peak per GPU (H100/H200 SXM; A100: 312)
GPU_UTILISATION=${GPU_UTILISATION:-0.35}
VAE_ARGS=${VAE_ARGS:-}                               # more options per stage
LDM_ARGS=${LDM_ARGS:-}
SIAMESE_ARGS=${SIAMESE_ARGS:-}
AUDIT_ARGS=${AUDIT_ARGS:-}
EVAL_ARGS=${EVAL_ARGS:-}
threads_arg=${THREADS:+--num_threads $THREADS}
PROCESSES=$(( GPUS * NODES ))
if [ -n "$THREADS" ]; then export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS; fi

# A data-parallel stage: python -m MODULE ARGS on GPUS x NODES processes (one process: plain python).
launch() {
  if [ "$PROCESSES" -le 1 ]; then
    python -m "$@"
  elif [ "$LAUNCHER" = accelerate ]; then
    accelerate launch --num_processes "$PROCESSES" --num_machines "$NODES" --machine_rank "$NODE_RANK" \
      --main_process_ip "$MASTER_ADDR" --main_process_port "$MASTER_PORT" --multi_gpu -m "$@"
  elif [ "$NODES" -gt 1 ]; then
    torchrun --nnodes "$NODES" --nproc_per_node "$GPUS" --node_rank "$NODE_RANK" \
      --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" -m "$@"
  else
    torchrun --standalone --nproc_per_node "$GPUS" -m "$@"
  fi
}
# Node 0 runs a single-process stage; the other nodes wait until its result exists.
on_node0() { [ "$NODE_RANK" -eq 0 ]; }
wait_for() { until [ -e "$1" ]; do sleep 20; done; }
stage() { echo "== $1 ($(date +%H:%M:%S))"; }

# 1. Ingest at the preset's size (DICOM decoding on every core)
if [ ! -f "$DATA/manifest.csv" ]; then
  if on_node0; then
    stage "ingest $VINDR -> $DATA at $SIZE"
    python -m mammosynth ingest --root "$VINDR" --out "$DATA" --size "$SIZE" --workers "$WORKERS"
  else
    wait_for "$DATA/manifest.csv"
  fi
fi
TRAIN_IMAGES=$(python -c "import pandas as pd,sys; m=pd.read_csv(sys.argv[1]); print(int((m['split']=='training').sum()))" \
  "$DATA/manifest.csv")

# The plan: GPU-hours per stage from the FLOPs of the preset's networks
if on_node0; then
  python -m mammosynth.training.dry_run --preset "$PRESET" --train-images "$TRAIN_IMAGES" --processes "$PROCESSES" \
    --peak-tflops "$GPU_PEAK_TFLOPS" --utilisation "$GPU_UTILISATION" --inference-steps "$GEN_STEPS" \
    --vae-steps "$VAE_STEPS" --ldm-steps "$LDM_STEPS" --siamese-steps "$SIAMESE_STEPS" \
    --encoder-epochs "$ENCODER_EPOCHS" --json "$RUNS/plan.json"
fi

train_args="--preset $PRESET --checkpointing_steps $CHECKPOINT_EVERY --checkpoints_total_limit 2 --no_progress
  --resume_from_checkpoint latest --seed 0 $threads_arg"

# 2. VAE (f = 8, the preset's latent channels, crops, bf16, checkpointing)
if [ -f "$RUNS/vae/vae/config.json" ] && [ -f "$RUNS/vae/metrics.json" ]; then
  echo "VAE already trained: $RUNS/vae"
else
  stage "train-vae ($VAE_STEPS steps on $PROCESSES processes)"
  launch mammosynth.training.train_vae --data "$DATA" --out "$RUNS/vae" $train_args \
    --max_train_steps "$VAE_STEPS" --lesion_weight 4 --lesion_crop_prob 0.5 --validation_steps "$CHECKPOINT_EVERY" \
    $VAE_ARGS
fi

# 3. LDM on the VAE's latents (sharded latent cache, per-channel standardisation, Min-SNR)
if [ -f "$RUNS/ldm/pipeline/model_index.json" ]; then
  echo "LDM already trained: $RUNS/ldm"
else
  stage "train-ldm ($LDM_STEPS steps on $PROCESSES processes)"
  launch mammosynth.training.train_ldm --data "$DATA" --vae "$RUNS/vae" --out "$RUNS/ldm" $train_args \
    --max_train_steps "$LDM_STEPS" --latent_norm channel --snr_gamma 5 --lesion_weight 8 --save_fp16 \
    --validation_steps "$CHECKPOINT_EVERY" $LDM_ARGS
fi

# 4. Siamese re-identification network (the privacy gate's embedder)
if [ -f "$RUNS/siamese/siamese/config.json" ]; then
  echo "Siamese network already trained: $RUNS/siamese"
else
  stage "train-siamese ($SIAMESE_STEPS steps on $PROCESSES processes)"
  launch mammosynth.training.train_siamese --data "$DATA" --out "$RUNS/siamese" $train_args \
    --max_train_steps "$SIAMESE_STEPS" --copies_per_study 2 $SIAMESE_ARGS
fi

# 5.-7. The checkpoint folder, its privacy gate and its fidelity encoder (node 0)
if ! on_node0; then
  wait_for "$REPORTS/table.md"
  echo "node $NODE_RANK: done"
  exit 0
fi
if [ ! -f "$CKPT/model_index.json" ]; then
  stage "checkpoint $CKPT"
  rm -rf "$CKPT.tmp" && mkdir -p "$(dirname "$CKPT")"
  cp -r "$RUNS/ldm/pipeline" "$CKPT.tmp" && mv "$CKPT.tmp" "$CKPT"
fi
if [ ! -f "$CKPT/privacy_checker/config.json" ]; then
  stage "build-index"
  # auto: exact search below 100,000 images, faiss IVF{4√N},Flat at nprobe 64 from there on (the exact
  # top-1 at 1 M rows in benchmarks/bench_index_scale.py); FAISS_FACTORY / NPROBE choose another
  python -m mammosynth build-index --siamese "$RUNS/siamese" --data "$DATA" --out "$CKPT/privacy_checker" \
    --backend auto ${FAISS_FACTORY:+--faiss-factory "$FAISS_FACTORY"} ${NPROBE:+--nprobe "$NPROBE"}
fi
if [ ! -f "$CKPT/feature_extractor/config.json" ]; then
  stage "train-encoder ($ENCODER_EPOCHS epochs)"
  python -m mammosynth train-encoder --data "$DATA" --out "$RUNS/feature_extractor" --preset "$PRESET" \
    --epochs "$ENCODER_EPOCHS" ${THREADS:+--threads $THREADS}
  rm -rf "$CKPT/feature_extractor.tmp"
  cp -r "$RUNS/feature_extractor" "$CKPT/feature_extractor.tmp" && mv "$CKPT/feature_extractor.tmp" "$CKPT/feature_extractor"
fi

# 8. Synthetic set (gated; generate-set resumes an unfinished set and merges the per-process shards)
stage "generate-set"
gen_processes=$GPUS; [ "$gen_processes" -ge 1 ] || gen_processes=1
if [ "$gen_processes" -gt 1 ]; then gen=(torchrun --standalone --nproc_per_node "$gen_processes" -m mammosynth)
else gen=(python -m mammosynth); fi
"${gen[@]}" generate-set --checkpoint "$CKPT" --like "$DATA" --split training --out "$SYNTH" \
  --steps "$GEN_STEPS" --guidance 3.0 --batch-size 16 --no-progress ${GEN_LIMIT:+--limit $GEN_LIMIT}

# 9.-11. Privacy audit, evaluation, the paper's table
mkdir -p "$REPORTS"
if [ ! -f "$REPORTS/privacy.json" ]; then
  stage "privacy-audit"
  python -m mammosynth privacy-audit --checkpoint "$CKPT" --data "$DATA" --synthetic "$SYNTH" \
    --out "$REPORTS/privacy.json" $AUDIT_ARGS
fi
if [ ! -f "$REPORTS/eval/metrics.json" ]; then
  stage "evaluate"
  python -m mammosynth evaluate --data "$DATA" --synthetic "$SYNTH" --checkpoint "$CKPT" --out "$REPORTS/eval" \
    --privacy-report "$REPORTS/privacy.json" $EVAL_ARGS
fi
python -m mammosynth paper-table --reports "$REPORTS/eval" --privacy-report "$REPORTS/privacy.json" \
  --out "$REPORTS/table.md.tmp"
mv "$REPORTS/table.md.tmp" "$REPORTS/table.md"
echo "done: $CKPT ($REPORTS/table.md)"
