"""How much a pipeline's prompt conditioning moves when one attribute of a ShapeScenes sentence changes.

A UNet can only learn to draw what its conditioning distinguishes. For one sentence and its variants that change a
single attribute (color, shape, size, cell), this prints ||E(variant) - E(base)|| / ||E(base)|| over the
sentence's rows of the `segments` conditioning, for each `clip_skip`, and over the per-token states of an LLM
embedder (what the `segments+llm` branch's adapter reads):

    python -m benchmarks.t2i_conditioning_probe [--pipeline DIR] [--llm minilm]
"""

from __future__ import annotations

import argparse

import torch

from vision_long.diffusion.pipelines import load_pipeline
from vision_long.diffusion.prompts import encode_long_prompt
from vision_long.encoders.llm_embedder import LLMConfig, LLMEmbedder

BASE = "In the top-left cell there is a large red circle."
VARIANTS = {
    "color": "In the top-left cell there is a large blue circle.",
    "shape": "In the top-left cell there is a large red square.",
    "size": "In the top-left cell there is a small red circle.",
    "cell": "In the bottom-right cell there is a large red circle.",
}


def _relative_changes(embed) -> dict[str, float]:
    """||embed(variant) - embed(BASE)|| / ||embed(BASE)|| for each attribute variant."""
    base = embed(BASE)
    return {name: round(((embed(text) - base).norm() / base.norm()).item(), 3) for name, text in VARIANTS.items()}


def relative_changes(pipe, clip_skip: int) -> dict[str, float]:
    """Relative change of the base sentence's `segments` conditioning rows per attribute variant."""
    rows = len(pipe.tokenizer(BASE)["input_ids"]) - 1  # the merge keeps <sot> and the words, drops <eot>
    return _relative_changes(
        lambda text: encode_long_prompt(pipe, [text], "", "segments", clip_skip=clip_skip)["prompt_embeds"][0, :rows])


def llm_relative_changes(llm: str) -> dict[str, float]:
    """The same relative changes over the base sentence's per-token last hidden states of LLM embedder `llm`."""
    embedder = LLMEmbedder(LLMConfig(name=llm))
    rows = len(embedder.tokenizer.with_special(embedder.tokenizer.encode(BASE)))
    return _relative_changes(lambda text: embedder.token_states([text], rows)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", help="diffusers directory (default: the embedded ShapeScenes pipeline)")
    parser.add_argument("--llm", default="minilm", help="LLM embedder to compare, as in `train t2i --llm` "
                        "(default: %(default)s; 'none' skips it)")
    args = parser.parse_args()
    pipe = load_pipeline(args.pipeline)
    with torch.no_grad():
        for skip in range(pipe.text_encoder.config.num_hidden_layers):
            print(f"clip_skip {skip}", relative_changes(pipe, skip))
        if args.llm != "none":
            print(f"llm {args.llm}", llm_relative_changes(args.llm))


if __name__ == "__main__":
    main()
