#!/usr/bin/env bash
# Rebuild the embedded default models from scratch (fixed seeds) and install them in vision_long/assets/.
#   1. a 77-token CLIP trained from scratch on ShapeScenes (long captions truncated to 77 tokens) -> default-77
#      Scenes of varied density (cell occupancy drawn from [0.1, 1]) so that truncated captions still name
#      objects in every part of the grid, as a real pretrained CLIP has seen captions about every image region.
#   2. the Long-CLIP recipe applied to it (stretch 77 -> 248, L_long + L_short with PCM)          -> default
# A stage whose RUN_DIR/<stage>/model exists is kept (delete it to retrain).
# Usage: bash scripts/build_default_models.sh [RUN_DIR]   (default RUN_DIR: runs/default)
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/default}
start=$(date +%s)
if [ ! -d "$RUN/clip77/model" ]; then
    vision-long train clip --config shapescenes-small --steps 1500 --batch-size 64 --lr 1e-3 --warmup 100 \
        --fill 0.1 1.0 --seed 0 --out "$RUN/clip77"
fi
if [ ! -d "$RUN/longclip/model" ]; then
    vision-long train longclip --init "$RUN/clip77/model" --steps 800 --batch-size 64 --lr 2e-4 --warmup 50 \
        --hard-fraction 0.5 --fill 0.1 1.0 --seed 1 --out "$RUN/longclip"
fi
vision-long convert "$RUN/clip77/model" vision_long/assets/clip77-shapescenes --no-stretch --dtype fp16 --force
vision-long convert "$RUN/longclip/model" vision_long/assets/longclip-shapescenes --dtype fp16 --force
echo "built the default models in $(( ($(date +%s) - start) / 60 )) minutes"
