#!/usr/bin/env bash
# Rebuild the embedded default text-to-image pipeline from scratch (fixed seeds) and install it in
# vision_long/assets/t2i-shapescenes (UNet and VAE stored in fp16, loaded in fp32; about 30 MB).
#   1. AutoencoderKL (32-64-128 channels): 64 px scenes <-> 16x16x4 latents, L1 + KL         2400 steps x 16 scenes
#      (at 600 steps it is still on its plateau of painting objects one mean color; at 1500 its round trip keeps
#      54% of the colors the alignment metric reads, at 2400 95%: RESULTS.md, t2i_build and t2i_vae_ceiling)
#   2. UNet (64-128-192 channels, cross-attention at 16 and 8 px and in the mid block, 8.8M parameters): noise
#      prediction with Min-SNR weighting on the frozen VAE's latents, conditioned on the long captions through
#      LongAlign segments of the embedded Long-CLIP's text tower, which trains with the UNet at a tenth of its
#      learning rate (--text-lr-scale 0.1; frozen, shapes were at chance: RESULTS.md, t2i_text_tuning),
#      10% empty-prompt dropout                                                                 2400 steps x 24
#      (24 scenes a step, not 32, to fit the 90-minute budget: at 32 the UNet took 1.46 s a step with the text
#      tower tuned, about 97 minutes for the build: RESULTS.md, t2i_text_tuning)
# Timed as one clean run on 2 idle cores (session 9, `/usr/bin/time`): 87.5 minutes wall clock, VAE 38.5 (0.96 s a
# step), UNet 48.6 (1.21 s a step, 1.08-1.39 per 200 steps): RESULTS.md, t2i_build.
# Scenes: 3 x 3 grids with cell occupancy drawn from [0.1, 1], so each object sentence is sometimes one of few.
# A stage whose output exists is kept (delete RUN_DIR/vae/vae or RUN_DIR/unet/pipeline to retrain); an
# interrupted stage resumes from its checkpoint.
# Usage: bash scripts/build_default_t2i.sh [RUN_DIR]   (default RUN_DIR: runs/t2i)
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/t2i}
start=$(date +%s)
if [ ! -f "$RUN/vae/vae/config.json" ]; then
    vision-long train t2i --stage vae --config shapescenes-64 --steps 2400 --batch-size 16 --lr 1e-3 --warmup 50 \
        --fill 0.1 1.0 --seed 0 --out "$RUN/vae"
fi
if [ ! -f "$RUN/unet/pipeline/model_index.json" ]; then
    vision-long train t2i --stage unet --vae "$RUN/vae" --text-encoder default --config shapescenes-64 --steps 2400 \
        --batch-size 24 --lr 1e-3 --warmup 100 --fill 0.1 1.0 --seed 0 --text-lr-scale 0.1 --out "$RUN/unet"
fi
python -c "import sys; from vision_long.diffusion.pipelines import DEFAULT_PIPELINE; \
from vision_long.diffusion.small_sd import install_pipeline; print('installed', install_pipeline(sys.argv[1], DEFAULT_PIPELINE))" \
    "$RUN/unet/pipeline"
echo "built the default text-to-image pipeline in $(( ($(date +%s) - start) / 60 )) minutes"
