#!/usr/bin/env bash
# Train the default ShapeScenes VQA model and install it as vision_long/assets/lmm-shapescenes (what
# `vision-long ask` and `vision-long eval --suite vqa` use when no --model is given).
#   vision tower: the embedded Long-CLIP's image tower (64 px, ViT/8), frozen, read at its penultimate layer
#   LM:           Llama, 2 layers, width 192, from scratch, word-level tokenizer of the VQA vocabulary, lr 1e-3
#                 (4 layers and lr 2e-3 / 3e-3 stayed at the answer prior longer when question kinds mix:
#                 benchmarks/RESULTS.md, lmm_vqa)
#   zoom:         text zoom scores high crops with a learned head over the long-text CLIP's embeddings (the
#                 similarity to each crop plus where the question points), fitted first on 1,000 training
#                 questions and then frozen; it keeps 1 high crop (--text-k 1), best first
#   modes:        cycled per step, text on every other step (text multires text v1 text none), so each mode the
#                 eval suite compares is one the model was trained on, and the mode the LM can learn from (one
#                 crop that shows the asked object) gets half the steps
#   data:         every other item a 2 x 2 / 3 x 3 scene instead of the evaluation's 6 x 6 (VQABatches.easy_grids)
#   model:        features standardized per channel, each crop's place embedded (see vision_long/lmm/model.py)
# The run resumes from RUN_DIR/checkpoint when interrupted.
# The installed copy is stored in fp16 (load_lmm upcasts to fp32) and must stay under 30 MB.
# Usage: bash scripts/build_default_lmm.sh [RUN_DIR]   (default RUN_DIR: runs/lmm-default)
#   STEPS=2 HEAD_ITEMS=10 DEST=/tmp/lmm bash scripts/build_default_lmm.sh /tmp/lmm-run   a smoke run that
#   installs elsewhere
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/lmm-default}
STEPS=${STEPS:-2000}
HEAD_ITEMS=${HEAD_ITEMS:-1000}
DEST=${DEST:-vision_long/assets/lmm-shapescenes}
MAX_BYTES=$((30 * 1024 * 1024))
start=$(date +%s)
if [ ! -d "$RUN/model" ]; then
    vision-long train lmm --out "$RUN" --steps "$STEPS" --warmup $(( STEPS < 100 ? 1 : 100 )) --batch-size 8 \
        --lr 1e-3 --layers 2 --zoom text multires text v1 text none --text-k 1 --zoom-head-items "$HEAD_ITEMS" \
        --pooled-grid 2 --seed 0
fi
rm -rf "$DEST"
python - "$RUN/model" "$DEST" <<'PY'
import sys

import torch

from vision_long.lmm import load_lmm, save_lmm

save_lmm(load_lmm(sys.argv[1], dtype=torch.float16), sys.argv[2])
PY
bytes=$(du -sb "$DEST" | cut -f1)
if [ "$bytes" -gt "$MAX_BYTES" ]; then
    echo "error: $DEST is $bytes bytes, over the 30 MB limit" >&2
    exit 1
fi
echo "installed $DEST ($(( bytes / 1024 )) KiB) in $(( ($(date +%s) - start) / 60 )) minutes"
echo "evaluate: for z in none multires v1 text; do vision-long eval --suite vqa --model $DEST --zoom \$z --n 500 --seed 0 --json; done"
