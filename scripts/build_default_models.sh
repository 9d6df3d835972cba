#!/usr/bin/env bash
# Rebuild the embedded default models from scratch (fixed seeds) and install them in vision_long/assets/.
#   1. a 77-token CLIP trained from scratch on ShapeScenes (long captions truncated to 77 tokens) -> default-77
#   2. the Long-CLIP recipe applied to it (stretch 77 -> 248, L_long + L_short with PCM)          -> default
# Usage: bash scripts/build_default_models.sh [RUN_DIR]   (default RUN_DIR: runs/default)
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/default}
start=$(date +%s)
vision-long train clip --config shapescenes-small --steps 1500 --batch-size 64 --lr 1e-3 --warmup 100 \
    --seed 0 --out "$RUN/clip77"
vision-long train longclip --init "$RUN/clip77/model" --steps 400 --batch-size 64 --lr 2e-4 --warmup 50 --hard-fraction 0.5 \
    --seed 1 --out "$RUN/longclip"
vision-long convert "$RUN/clip77/model" vision_long/assets/clip77-shapescenes --no-stretch --dtype fp16 --force
vision-long convert "$RUN/longclip/model" vision_long/assets/longclip-shapescenes --dtype fp16 --force
echo "built the default models in $(( ($(date +%s) - start) / 60 )) minutes"
