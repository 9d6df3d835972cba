#!/usr/bin/env bash
# The Long-CLIP paper's ablations on ShapeScenes at a matched (small) budget of 150 steps per arm, all from the
# same 77-token model: the full recipe (kept positions + PCM), naive interpolation of every position (no kept
# positions), and kept positions without PCM.
# Usage: bash scripts/longclip_ablations.sh [RUN_DIR [HARD_FRACTION]]   (needs RUN_DIR/clip77 from
# build_default_models.sh or longclip_hard_negatives.sh; HARD_FRACTION: that run's --hard-fraction, default 0.5)
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/default}
HARD=${2:-0.5}
common=(--init "$RUN/clip77/model" --steps 150 --batch-size 64 --lr 2e-4 --warmup 30 --hard-fraction "$HARD" --seed 1)
vision-long train longclip "${common[@]}" --out "$RUN/ablate-kps-pcm"
vision-long train longclip "${common[@]}" --positions interpolate --out "$RUN/ablate-interpolate"
vision-long train longclip "${common[@]}" --no-pcm --out "$RUN/ablate-no-pcm"
