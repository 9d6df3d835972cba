#!/usr/bin/env bash
# The Long-CLIP paper's ablations on ShapeScenes, with the same budget as the default model:
# naive interpolation of all positions (no kept positions), and kept positions without PCM.
# Usage: bash scripts/longclip_ablations.sh [RUN_DIR]   (needs RUN_DIR/clip77 from build_default_models.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/default}
common=(--init "$RUN/clip77/model" --steps 400 --batch-size 64 --lr 2e-4 --warmup 50 --hard-fraction 0.5 --seed 1)
vision-long train longclip "${common[@]}" --positions interpolate --out "$RUN/longclip-interpolate"
vision-long train longclip "${common[@]}" --no-pcm --out "$RUN/longclip-no-pcm"
