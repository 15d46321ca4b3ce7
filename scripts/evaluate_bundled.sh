#!/usr/bin/env bash
# Measure the bundled checkpoint end to end and put the numbers in its model card:
#   synthetic set (training label distribution, privacy-gated) -> privacy audit -> evaluation
#   -> paper table -> model card sections.
# Output: $OUT (the synthetic set, not in git), $CKPT/reports/{privacy.json,*.png,eval/,table.md},
#         $CKPT/README.md re-rendered.
# Budget on 2 CPU cores (PROCS=2, one thread each): generate-set ~20-30 min for 3,172 images at
# 20 steps, audit ~5 min, evaluate ~10-15 min. Every stage resumes or is cheap to rerun.
# Extra options per stage: GEN_ARGS, AUDIT_ARGS, EVAL_ARGS (e.g. GEN_ARGS="--limit 32" for a dry run).
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${DATA:-data/prepared-256}
CKPT=${CKPT:-checkpoints/mammosynth-phantom-256}
OUT=${OUT:-out/bundled-synth}
REPORTS=${REPORTS:-$CKPT/reports}
PROCS=${PROCS:-2}
THREADS=${THREADS:-1}                            # per generate-set process
SOLO_THREADS=${SOLO_THREADS:-$(( PROCS * THREADS ))}  # the single-process stages (audit, evaluate) use every core
STEPS=${STEPS:-20}
GUIDANCE=${GUIDANCE:-3.0}
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS

if [ ! -f "$CKPT/privacy_checker/config.json" ]; then
  echo "$CKPT has no privacy_checker/: run mammosynth build-index first (see README.md)" >&2
  exit 2
fi

stage() { echo "$1 $(( SECONDS - start )) s" | tee -a "$REPORTS/timings.txt"; start=$SECONDS; }
mkdir -p "$REPORTS"; : > "$REPORTS/timings.txt"; start=$SECONDS

# 1. One synthetic image per training image, same conditions, gated; PROCS processes, rank 0 merges.
torchrun --standalone --nproc_per_node "$PROCS" -m mammosynth generate-set \
  --checkpoint "$CKPT" --like "$DATA" --split training --out "$OUT" \
  --steps "$STEPS" --guidance "$GUIDANCE" --batch-size 8 --no-progress ${GEN_ARGS:-}
stage generate-set

# 2. Privacy audit: re-ID, planted copies, membership inference, pixel nearest neighbours.
python -m mammosynth privacy-audit --checkpoint "$CKPT" --data "$DATA" --synthetic "$OUT" \
  --out "$REPORTS/privacy.json" --num-threads "$SOLO_THREADS" ${AUDIT_ARGS:-}
stage privacy-audit

# 3. Fidelity, utility, adherence, realism (+ the audit merged).
python -m mammosynth evaluate --data "$DATA" --synthetic "$OUT" --checkpoint "$CKPT" \
  --out "$REPORTS/eval" --privacy-report "$REPORTS/privacy.json" --threads "$SOLO_THREADS" ${EVAL_ARGS:-}
stage evaluate

# 4. The seed paper's table with our numbers, and the model card.
python -m mammosynth paper-table --reports "$REPORTS/eval" --privacy-report "$REPORTS/privacy.json" \
  --out "$REPORTS/table.md"
python -m mammosynth.training.model_card --checkpoint "$CKPT" --vae_run x --ldm_run x --card_only
echo "done: $REPORTS"
