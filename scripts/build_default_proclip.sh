#!/usr/bin/env bash
# Rebuild the embedded ProCLIP (default-proclip) from default-77 and the offline all-MiniLM-L6-v2, fixed seeds.
#   stage 1: the adapter is distilled onto the 77-token CLIP's text tower            -> RUN/proclip-stage1
#   stage 2: image tower + adapter, InfoNCE + lambda x self-distillation to an EMA teacher -> RUN/proclip-stage2
# The frozen MiniLM embeds the scene pool once (cached in RUN/llm-cache; about 10 minutes on 2 cores).
# A stage whose RUN/<stage>/model exists is kept (delete it to retrain).
# Usage: bash scripts/build_default_proclip.sh [RUN_DIR] [CLIP]   (defaults: runs/default, RUN_DIR/clip77/model)
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/default}
CLIP=${2:-$RUN/clip77/model}
start=$(date +%s)
common=(--llm minilm --llm-cache "$RUN/llm-cache" --seed 0)
if [ ! -d "$RUN/proclip-stage1/model" ]; then
    vision-long train proclip --stage 1 --init "$CLIP" "${common[@]}" --steps 500 --out "$RUN/proclip-stage1"
fi
if [ ! -d "$RUN/proclip-stage2/model" ]; then
    vision-long train proclip --stage 2 --init "$RUN/proclip-stage1/model" "${common[@]}" --steps 500 \
        --out "$RUN/proclip-stage2"
fi
vision-long convert "$RUN/proclip-stage2/model" vision_long/assets/proclip-shapescenes --dtype fp16 --force
echo "built default-proclip in $(( ($(date +%s) - start) / 60 )) minutes"
