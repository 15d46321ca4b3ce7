#!/usr/bin/env bash
# The one-shot GPU job: phantom -> ingest -> VAE + LDM at a GPU preset for fixed minutes -> evaluate -> a packed
# candidate checkpoint and its reports in $OUT, in ONE command of about 10 minutes on the lent device machine
# (one H200, 16 cores; files back: at most 8, each at most 16 MB):
#
#   OUT=/some/folder bash scripts/device_job.sh                      # on the device: $OUT is given
#   OUT=/tmp/dj PRESET=vindr-tiny SIZE=64x48 STUDIES=8 PHANTOM_HEIGHT=128 VAE_MINUTES=0.2 LDM_MINUTES=0.2 \
#     GEN_IMAGES=8 bash scripts/device_job.sh                        # the same at test size on a CPU
#
# $OUT receives: summary.json (stage times, images/s trained, % of the GPU's bf16 peak, the evaluation's
# headline), dry_run.txt (the preset's figures measured on this device), log.txt (the last lines of every
# stage), and candidate.tar.part-00.. (the candidate checkpoint folder + reports, fp16, split in 15 MB parts;
# `cat candidate.tar.part-* | tar -x` restores it). The job stops with an error, before packing, if the
# parts would exceed MAX_PARTS. Every stage skips what WORK already holds, so a second call resumes.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:?set OUT to the folder whose files come back}
WORK=${WORK:-/tmp/mammosynth-device-job}
PRESET=${PRESET:-device-512}
preset() { python -m mammosynth.training.presets "$PRESET" "$1" "$2"; }
SIZE=${SIZE:-$(preset vae frames)}
STUDIES=${STUDIES:-400}                  # phantom patients, 4 images each
PHANTOM_HEIGHT=${PHANTOM_HEIGHT:-512}
CORES=${CORES:-$(nproc)}
VAE_MINUTES=${VAE_MINUTES:-1.5}
LDM_MINUTES=${LDM_MINUTES:-2.5}
ENCODER_EPOCHS=${ENCODER_EPOCHS:-4}
GEN_IMAGES=${GEN_IMAGES:-256}
GEN_STEPS=${GEN_STEPS:-25}
GPU_PEAK_TFLOPS=${GPU_PEAK_TFLOPS:-989}  # H200 SXM dense bf16
MAX_PARTS=${MAX_PARTS:-6}                # + summary.json and dry_run.txt + log.txt = 8 files
EVAL_ARGS=${EVAL_ARGS:-}
THREADS=${THREADS:-}
threads_arg=${THREADS:+--num_threads $THREADS}
mkdir -p "$OUT" "$WORK"
LOG=$WORK/log.txt
: > "$LOG"
times=$WORK/times.tsv
[ -f "$times" ] || : > "$times"
start_all=$SECONDS

# run NAME COMMAND...: the command's output goes to the log; its time to times.tsv
run() {
  local name=$1 t0=$SECONDS
  shift
  echo "== $name ($(date +%H:%M:%S))" | tee -a "$LOG"
  if ! "$@" >> "$LOG" 2>&1; then
    echo "device job: stage $name failed; last lines:" >&2
    tail -n 40 "$LOG" >&2
    tail -n 300 "$LOG" > "$OUT/log.txt"
    exit 1
  fi
  printf '%s\t%s\n' "$name" "$(( SECONDS - t0 ))" >> "$times"
}

phantom=$WORK/phantom data=$WORK/data runs=$WORK/runs cand=$WORK/candidate reports=$WORK/candidate/reports
if [ ! -f "$phantom/phantom_summary.json" ]; then
  rm -rf "$phantom"
  run phantom python -m mammosynth phantom --out "$phantom" --studies "$STUDIES" --height "$PHANTOM_HEIGHT" \
    --seed 1 --workers "$CORES"
fi
if [ ! -f "$data/manifest.csv" ]; then
  run ingest python -m mammosynth ingest --root "$phantom" --out "$data" --size "$SIZE" --workers "$CORES"
fi
run dry-run bash -c "for n in vae ldm; do python -m mammosynth train-\$n --preset $PRESET --dry-run $threads_arg; done \
  > '$WORK/dry_run.txt' 2>&1"

# The fidelity encoder trains on the CPU cores while the GPU trains the generator.
encoder_pid=
if [ ! -f "$runs/encoder/config.json" ]; then
  python -m mammosynth train-encoder --data "$data" --out "$runs/encoder" --preset "$PRESET" \
    --epochs "$ENCODER_EPOCHS" --threads "$(( CORES > 4 ? CORES / 2 : 1 ))" > "$WORK/encoder.log" 2>&1 &
  encoder_pid=$!
fi

common="--preset $PRESET --no_progress --resume_from_checkpoint latest --checkpoints_total_limit 1 --seed 0 $threads_arg"
if [ ! -f "$runs/vae/vae/config.json" ]; then
  run train-vae python -m mammosynth.training.train_vae --data "$data" --out "$runs/vae" $common \
    --max_minutes "$VAE_MINUTES" --checkpointing_steps 100000 --validation_steps 100000 --eval_images 64 \
    --scaling_images 128
fi
if [ ! -f "$runs/ldm/pipeline/model_index.json" ]; then
  run train-ldm python -m mammosynth.training.train_ldm --data "$data" --vae "$runs/vae" --out "$runs/ldm" $common \
    --max_minutes "$LDM_MINUTES" --latent_norm channel --snr_gamma 5 --save_fp16 --checkpointing_steps 100000 \
    --validation_steps 100000 --num_validation_images 2
fi
if [ -n "$encoder_pid" ]; then
  run train-encoder wait "$encoder_pid"
  cat "$WORK/encoder.log" >> "$LOG"
fi
if [ ! -f "$runs/encoder/config.json" ]; then
  echo "device job: the fidelity encoder failed:" >&2; tail -n 20 "$WORK/encoder.log" >&2; exit 1
fi

# The candidate: the LDM's pipeline (no privacy gate: the phantom set is made up) + its fidelity encoder
if [ ! -f "$cand/model_index.json" ]; then
  rm -rf "$cand.tmp" && cp -r "$runs/ldm/pipeline" "$cand.tmp" && cp -r "$runs/encoder" "$cand.tmp/feature_extractor"
  mv "$cand.tmp" "$cand"
fi
run generate-set python -m mammosynth generate-set --checkpoint "$cand" --like "$data" --split training \
  --out "$WORK/synthetic" --limit "$GEN_IMAGES" --steps "$GEN_STEPS" --guidance 3.0 --batch-size 32 --privacy off \
  --no-progress
if [ ! -f "$reports/eval/metrics.json" ]; then
  run evaluate python -m mammosynth evaluate --data "$data" --synthetic "$WORK/synthetic" --checkpoint "$cand" \
    --out "$reports/eval" --threads "$CORES" $EVAL_ARGS
fi
cp "$WORK/dry_run.txt" "$runs/vae/run.json" "$reports/" && cp "$runs/ldm/run.json" "$reports/ldm_run.json"

# Throughput and the summary (images/s of each training run and its share of the GPU's bf16 peak)
python - "$runs" "$PRESET" "$GPU_PEAK_TFLOPS" "$times" "$reports/eval/metrics.json" "$WORK/summary.json" <<'PY'
import json, sys
from pathlib import Path

import torch

from mammosynth.data.prepared import atomic_write_text
from mammosynth.training.dry_run import flops_per_image

runs, preset, peak, times, metrics, out = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
summary = {"preset": preset, "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
           "peak_tflops_assumed": peak, "stages_s": {}, "training": {}}
for line in Path(times).read_text().splitlines():
    name, seconds = line.split("\t")
    summary["stages_s"][name] = int(seconds)
for network in ("vae", "ldm"):
    info = json.loads((runs / network / "run.json").read_text())
    steps, minutes = info["metrics"]["steps"], info["metrics"]["elapsed_min"]
    batch = info["config"]["train_batch_size"] * info["invocations"][-1].get("processes", 1)
    rate = steps * batch / max(minutes * 60, 1e-9)
    gflop = flops_per_image(network, preset)["train"]
    summary["training"][network] = {"steps": steps, "batch": batch, "minutes": round(minutes, 2),
                                    "images_per_s": round(rate, 2), "train_gflop_per_image": round(gflop, 2),
                                    "percent_of_bf16_peak": round(100 * rate * gflop / (peak * 1e3), 2)}
m = json.loads(Path(metrics).read_text())
summary["evaluation"] = {"fid_over_floor": m.get("fidelity", {}).get("fid_over_floor"), "targets": m.get("targets")}
atomic_write_text(out, json.dumps(summary, indent=2, default=str))
print(json.dumps(summary["training"], indent=1))
PY

# Pack: the candidate folder (weights fp16, reports) in parts of 15 MB; refuse to exceed MAX_PARTS
rm -f "$OUT"/candidate.tar.part-*
tar -C "$WORK" -cf "$WORK/candidate.tar" candidate
size=$(stat -c %s "$WORK/candidate.tar")
parts=$(( (size + 15728640 - 1) / 15728640 ))
if [ "$parts" -gt "$MAX_PARTS" ]; then
  echo "device job: the candidate packs to $size bytes = $parts parts of 15 MB, more than MAX_PARTS=$MAX_PARTS" >&2
  cp "$WORK/summary.json" "$OUT/"; tail -n 300 "$LOG" > "$OUT/log.txt"; exit 1
fi
split -b 15M -d -a 2 "$WORK/candidate.tar" "$OUT/candidate.tar.part-"
cp "$WORK/summary.json" "$WORK/dry_run.txt" "$OUT/"
tail -n 300 "$LOG" > "$OUT/log.txt"
echo "device job done in $(( SECONDS - start_all )) s: $(ls "$OUT" | wc -l) files in $OUT ($size bytes of candidate)"
