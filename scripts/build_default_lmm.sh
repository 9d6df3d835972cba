#!/usr/bin/env bash
# Train the default ShapeScenes VQA model and install it as vision_long/assets/lmm-shapescenes (what
# `vision-long ask` and `vision-long eval --suite vqa` use when no --model is given).
#   vision tower: the embedded Long-CLIP's image tower (64 px, ViT/8), frozen, read at its penultimate layer
#   LM:           Llama, 2 layers, width 192, from scratch, word-level tokenizer of the VQA vocabulary, lr 1e-3
#   crops:        medium/high crops' 8 x 8 patch grids mean-pooled to 4 x 4 (+ CLS): a linear probe reads the
#                 shape of the object in a 64 px cell from 4 x 4 at 99.2 %, from 2 x 2 at 95.0 %, and after 700
#                 steps of shape questions an LM answered 57 % of them on 4 x 4, 14 % (chance) on 2 x 2
#                 (benchmarks/RESULTS.md, lmm_crop_probe and lmm_curriculum)
#   zoom:         text zoom: a learned head over the long-text CLIP's embeddings scores the high crops (the
#                 similarity to each crop plus where the question points), fitted first on 1,000 training
#                 questions and then frozen; it keeps 1 high crop (--text-k 1). Trained under text zoom only: the
#                 LM learns nothing from v1 or multires layouts (36 small crops) at this size
#   curriculum:   color questions from step 0, shape from step 500, existence from step 2000 (--kind-starts):
#                 with all kinds from step 0 the LM settles on the answer prior and never reads the crop
#   data:         every item a 6 x 6 scene of small objects at 384 px, the evaluation's (no easy grids)
#   model:        features standardized per channel, each crop's place embedded (see vision_long/lmm/model.py)
# Time: 51 minutes on one CPU thread beside another training job (runs/lmm10a, session 7); 3200 steps x 8 items.
# The run resumes from RUN_DIR/checkpoint when interrupted.
# The installed copy is stored in fp16 (load_lmm upcasts to fp32) and must stay under 30 MB.
# Usage: bash scripts/build_default_lmm.sh [RUN_DIR]   (default RUN_DIR: runs/lmm-default)
#   STEPS=3 HEAD_ITEMS=10 KIND_STARTS='1 2' DEST=/tmp/lmm bash scripts/build_default_lmm.sh /tmp/lmm-run
#   (a smoke run that installs elsewhere)
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/lmm-default}
STEPS=${STEPS:-3200}
HEAD_ITEMS=${HEAD_ITEMS:-1000}
KIND_STARTS=${KIND_STARTS:-500 2000}
DEST=${DEST:-vision_long/assets/lmm-shapescenes}
MAX_BYTES=$((30 * 1024 * 1024))
start=$(date +%s)
if [ ! -d "$RUN/model" ]; then
    vision-long train lmm --out "$RUN" --steps "$STEPS" --warmup $(( STEPS < 50 ? 1 : 50 )) --batch-size 8 \
        --lr 1e-3 --layers 2 --zoom text --text-k 1 --zoom-head-items "$HEAD_ITEMS" --pooled-grid 4 \
        --kinds color shape exists --kind-starts $KIND_STARTS --easy-grids --seed 0
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
