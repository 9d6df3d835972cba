"""LongAlign segment encoding: packed real tokens vs segments padded to 77 (upstream) and to the longest segment.

20 long ShapeScenes captions (4x4 grids, about 240 tokens each) are split into sentences; every segment goes
through an SD-1.5-sized CLIP text encoder (CLIP-L text config, random weights, fp32). Upstream LongAlign pads
every segment to 77 tokens; the ideal speed-up is padded tokens / real tokens.

    python -m benchmarks.packed_segments --write
"""

from __future__ import annotations

import argparse
import tempfile

import torch

from benchmarks.results import best_of, machine, update_section
from vision_long.data.scenes import EVAL_SEED_OFFSET, random_scene
from vision_long.diffusion.segments import (
    HiddenLayer,
    encode_segment_hidden_states,
    encode_segment_hidden_states_packed,
    split_segments,
)


def build_encoder():
    from transformers import CLIPTextConfig, CLIPTextModel
    from transformers import CLIPTokenizer as HFTokenizer

    from vision_long.tokenization import CLIPTokenizer, TokenizerConfig

    directory = tempfile.mkdtemp()
    CLIPTokenizer(TokenizerConfig(77)).save_hf(directory)
    torch.manual_seed(0)
    config = CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                            max_position_embeddings=77, hidden_act="quick_gelu")
    return CLIPTextModel(config).eval(), HFTokenizer.from_pretrained(directory)


def upstream_padded(encoder, tokenizer, segments):
    """LongAlign's way: every segment padded to 77 tokens, one batched call."""
    ids = tokenizer(segments, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    return encoder(ids).last_hidden_state



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--grid", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()

    encoder, tokenizer = build_encoder()
    prompts = [random_scene(EVAL_SEED_OFFSET + 500_000 + i, args.grid).caption() for i in range(args.prompts)]
    segments = [s for p in prompts for s in split_segments(p)]
    lengths = [len(x) for x in tokenizer(segments, max_length=77, truncation=True).input_ids]
    prompt_tokens = [len(tokenizer(p).input_ids) for p in prompts]
    ideal = len(segments) * 77 / sum(lengths)
    layer = HiddenLayer()

    with torch.inference_mode():
        encode_segment_hidden_states_packed(encoder, tokenizer, segments[:4], layer)  # warm-up, builds the tower
        upstream_padded(encoder, tokenizer, segments[:4])
        t_up, ref = best_of(lambda: upstream_padded(encoder, tokenizer, segments), args.repeats)
        t_long, longest = best_of(lambda: encode_segment_hidden_states(encoder, tokenizer, segments, layer), args.repeats)
        t_pack, packed = best_of(lambda: encode_segment_hidden_states_packed(encoder, tokenizer, segments, layer), args.repeats)
    diff = max((packed.hidden[i, :n] - ref[i, :n]).abs().max().item() for i, n in enumerate(lengths))
    diff_longest = max((longest.hidden[i, :n] - ref[i, :n]).abs().max().item() for i, n in enumerate(lengths))


    body = f"""## LongAlign segment encoding: packed vs padded (packed-attention issue)

Command: `python -m benchmarks.packed_segments --prompts {args.prompts} --grid {args.grid} --repeats {args.repeats} --write`
Machine: {machine()}
Encoder: SD-1.5-sized CLIP text encoder (CLIP-L text config: width 768, 12 layers), random weights, fp32, inference.
Prompts: {args.prompts} ShapeScenes {args.grid}x{args.grid} captions, {min(prompt_tokens)}-{max(prompt_tokens)} tokens each; {len(segments)} segments of {min(lengths)}-{max(lengths)} tokens (mean {sum(lengths) / len(lengths):.1f}). Best of {args.repeats}.

| path | seconds | speed-up vs upstream |
|---|---|---|
| upstream LongAlign: every segment padded to 77, one batched call | {t_up:.2f} | 1.00x |
| `encode_segment_hidden_states`: one batched call padded to the longest segment | {t_long:.2f} | {t_up / t_long:.2f}x |
| `encode_segment_hidden_states_packed` (default): packed real tokens, varlen attention | {t_pack:.2f} | **{t_up / t_pack:.2f}x** |

Ideal ratio (padded tokens / real tokens): {ideal:.2f}x; packed reaches {100 * t_up / t_pack / ideal:.0f}% of it.
Max abs difference of the hidden states on real tokens vs upstream: packed {diff:.2e}, padded-to-longest {diff_longest:.2e}.
"""
    print(body)
    if args.write:
        update_section("packed_segments", body)


if __name__ == "__main__":
    main()
