"""Generate an image from a long prompt through the library (what `vision-long generate` does).

    python demos/generate.py ./stable-diffusion-v1-5 [segments|longclip|chunks|truncate]
"""

import sys

from vision_long.diffusion import GenerationRequest, generate

PROMPT = (
    "A sunny kitchen seen from the doorway. A wooden table stands in the middle with three blue bowls on it. "
    "A black cat sleeps on the left chair; a striped towel hangs from the oven handle. Through the window on the "
    "right a red bicycle leans against a white fence. Copper pans hang above the stove, the largest one dented. "
    "A calendar on the back wall shows March, and a green kettle steams on the back burner."
)

if __name__ == "__main__":
    pipeline = sys.argv[1] if len(sys.argv) > 1 else None  # None: the embedded default pipeline
    method = sys.argv[2] if len(sys.argv) > 2 else "segments"
    result = generate(GenerationRequest(prompt=PROMPT, method=method, steps=25, seed=0), "kitchen.png", pipeline)
    print(result.image_path, result.sidecar_path, result.record["prompt_report"]["tokens"], "tokens")
