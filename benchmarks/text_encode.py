"""Texts/s of vision_long's `encode_text` vs open_clip's `encode_text` padded to 248, on the same weights.

The baseline is what upstream Long-CLIP does: every text padded to the full 248-token context. Ours sorts
texts by length and pays only for real tokens. Both sides include tokenization. The length mix is half
short texts (5-30 tokens) and half long ones (100-248 tokens); the ideal speed-up is padded tokens / real
tokens (attention's quadratic cost makes the compute ratio even larger).

    python -m benchmarks.text_encode --write
"""

from __future__ import annotations

import argparse
import random

import open_clip
import torch

from benchmarks.results import best_of, machine, update_section

from vision_long.encoders.longclip import CLIPConfig, LongCLIP, TextConfig, VisionConfig

WORDS = (
    "a the red blue green small large circle square triangle star left right top bottom middle cell grid "
    "next to above below striped dotted outlined bright dark yellow purple orange picture photo of with and "
    "beside near far behind in front scene shows there is an object shape color pattern edge corner"
).split()


def make_texts(tokenizer, n: int, seed: int) -> list[str]:
    """n texts, half 5-30 tokens and half 100-248 tokens long (counting start/end tokens)."""
    rng = random.Random(seed)
    texts = []
    for i in range(n):
        lo, hi = (5, 30) if i % 2 == 0 else (100, 248)
        target = rng.randint(lo, hi)
        words: list[str] = []
        while tokenizer.count_tokens(" ".join(words + ["x"])) <= target:
            words.append(rng.choice(WORDS))
        texts.append(" ".join(words))
    return texts


def build_models(seed: int) -> tuple[LongCLIP, open_clip.model.CLIP]:
    """A ViT-B/16-sized Long-CLIP text tower (random weights) and an open_clip CLIP holding the same weights."""
    torch.manual_seed(seed)
    config = CLIPConfig(
        embed_dim=512,
        text=TextConfig(context_length=248, width=512, layers=12, heads=8, keep_positions=20),
        vision=VisionConfig(image_size=32, patch_size=16, width=64, layers=1, heads=1),  # unused here
    )
    ours = LongCLIP(config).eval()
    with torch.no_grad():
        ours.positional_embedding_res.add_(torch.randn_like(ours.positional_embedding_res) * 0.01)
    baseline = open_clip.model.CLIP(
        embed_dim=512,
        vision_cfg=open_clip.model.CLIPVisionCfg(image_size=32, patch_size=16, width=64, layers=1, head_width=64),
        text_cfg=open_clip.model.CLIPTextCfg(context_length=248, vocab_size=49408, width=512, heads=8, layers=12),
        quick_gelu=True,
    ).eval()
    state = {k: v for k, v in ours.state_dict().items() if not k.startswith("visual.") and k != "positional_embedding_res"}
    state["positional_embedding"] = ours.effective_positional_embedding().detach()
    missing, unexpected = baseline.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith("visual.") for k in missing), (missing, unexpected)
    return ours, baseline


def run_baseline(baseline, texts: list[str], batch_size: int) -> torch.Tensor:
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            ids = open_clip.tokenize(texts[i : i + batch_size], context_length=248)
            out.append(baseline.encode_text(ids))
    return torch.cat(out)



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=256, help="number of texts (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2, help="best of this many timed runs per side")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write", action="store_true", help="write the table into benchmarks/RESULTS.md")
    args = parser.parse_args()

    ours, baseline = build_models(args.seed)
    texts = make_texts(ours.tokenizer, args.n, args.seed)
    lengths = [ours.tokenizer.count_tokens(t) for t in texts]
    ideal = len(texts) * 248 / sum(lengths)

    # warm-up both paths once (thread pools, allocator), then best-of-N
    run_baseline(baseline, texts[: args.batch_size], args.batch_size)
    ours.encode_text(texts[: args.batch_size], normalize=False, batch_size=args.batch_size)
    t_base, ref = best_of(lambda: run_baseline(baseline, texts, args.batch_size), args.repeats)
    t_bucket, bucketed = best_of(
        lambda: ours.encode_text(texts, normalize=False, batch_size=args.batch_size, packed=False), args.repeats
    )
    t_ours, got = best_of(lambda: ours.encode_text(texts, normalize=False, batch_size=args.batch_size), args.repeats)
    diff = (got - ref).abs().max().item()
    diff_bucket = (bucketed - ref).abs().max().item()
    ratio = t_base / t_ours


    body = f"""## Text encoding: packed / length-bucketed vs padded to 248 (foundation and packed-attention issues)

Command: `python -m benchmarks.text_encode --n {args.n} --batch-size {args.batch_size} --repeats {args.repeats} --write`
Machine: {machine()}
Model: ViT-B/16-sized Long-CLIP text tower (width 512, 12 layers, 8 heads, context 248), random weights, fp32.
Texts: {len(texts)} ({len(texts) // 2} of 5-30 tokens, {len(texts) - len(texts) // 2} of 100-248 tokens), mean {sum(lengths) / len(lengths):.1f} tokens; batch {args.batch_size}; tokenization included on both sides; best of {args.repeats}.

| path | seconds | texts/s | speed-up |
|---|---|---|---|
| open_clip `encode_text`, padded to 248 (baseline) | {t_base:.2f} | {len(texts) / t_base:.1f} | 1.00x |
| vision_long `encode_text(packed=False)`: length-sorted batches padded to their longest text | {t_bucket:.2f} | {len(texts) / t_bucket:.1f} | {t_base / t_bucket:.2f}x |
| vision_long `encode_text` (default): packed real tokens, varlen attention | {t_ours:.2f} | {len(texts) / t_ours:.1f} | **{ratio:.2f}x** |

Ideal ratio (padded tokens / real tokens): {ideal:.2f}x; the packed path reaches {100 * ratio / ideal:.0f}% of it.
Max abs difference of the (unnormalized) embeddings vs the baseline: packed {diff:.2e}, bucketed {diff_bucket:.2e}.
"""
    print(body)
    if args.write:
        update_section("text_encode", body)


if __name__ == "__main__":
    main()
