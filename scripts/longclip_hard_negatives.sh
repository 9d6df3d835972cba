#!/usr/bin/env bash
# Long-CLIP's hard-negative claim on ShapeScenes (+25 points of hard-negative T2I R@1 over the 77-token model;
# benchmarks/RESULTS.md, longclip_hard_negatives_72): two changes to the default 77-token base,
#   - 72 px images (shapescenes-small-72): each cell of a 3x3 scene is exactly 3 x 3 patches, so every object
#     meets the patch grid at the same offset and what the tower learns for one cell holds for every cell;
#   - partial captions (each object's sentence kept with probability 0.5), so the base is asked about every cell,
#     as a pretrained CLIP's short captions name any part of an image;
# then the default Long-CLIP stage with three quarters of each batch in hard-negative groups (the default
# stage has half: 48.3 instead of 51.4). Nothing is installed.
# Time: 27-35 + 15-25 minutes on one CPU thread beside another training job.
# Usage: bash scripts/longclip_hard_negatives.sh [RUN_DIR]   (default RUN_DIR: runs/hard72)
#   then: bash scripts/longclip_ablations.sh RUN_DIR 0.75 and python -m benchmarks.longclip_shapescenes --runs RUN_DIR
#         --base RUN_DIR/clip77/model --longclip RUN_DIR/longclip/model --hard-fraction 0.75 --section NAME --title TITLE
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/hard72}
vision-long train clip --config shapescenes-small-72 --steps 1500 --batch-size 64 --lr 1e-3 --warmup 100 \
    --partial-captions 0.5 --seed 0 --out "$RUN/clip77"
vision-long train longclip --init "$RUN/clip77/model" --steps 400 --batch-size 64 --lr 2e-4 --warmup 50 --hard-fraction 0.75 \
    --seed 1 --out "$RUN/longclip"
