"""Time to encode one 400-token prompt (plus the empty negative) with each long-prompt method.

Two SD-1.5-layout pipelines with random weights: the tiny one the tests use (text width 32) and a full-size one
(CLIP-L text encoder: width 768, 12 layers, 12 heads, 77 positions, full 49,408-id vocabulary; the SD-1.5 UNet).
`longclip` uses a 248-position copy of the pipeline's text encoder (positions stretched with KPS). Each time is
compared with the stock 77-token encode (`truncate`) and with one UNet step of the matching UNet at classifier-free
guidance batch 2 (full size: 64x64 latents, i.e. 512x512 images).

    python -m benchmarks.prompt_encoding --write
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from vision_long.diffusion.prompts import LLM_METHOD, METHODS, encode_long_prompt
from vision_long.tokenization import CLIPTokenizer, TokenizerConfig

WORDS = "a red circle sits left of the blue square on top of a large striped grid near the green star".split()
TINY = {
    "num_merges": 488,
    "text": {"vocab_size": 1002, "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 3,
             "num_attention_heads": 4, "hidden_act": "gelu", "bos_token_id": 1000, "eos_token_id": 1001,
             "pad_token_id": 1001},
    "unet": {"block_out_channels": (32, 64), "layers_per_block": 1, "sample_size": 8, "cross_attention_dim": 32,
             "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
             "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D")},
}
FULL = {  # CLIP ViT-L/14 text tower and the SD-1.5 UNet (diffusers' defaults are SD-1.5's but for the context width)
    "num_merges": None,
    "text": {"vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
             "num_attention_heads": 12, "hidden_act": "quick_gelu", "bos_token_id": 49406, "eos_token_id": 49407,
             "pad_token_id": 49407},
    "unet": {"sample_size": 64, "cross_attention_dim": 768},
}


def build_pipeline(spec: dict, workdir: Path):
    """A random-weight SD-1.5-layout pipeline and a 248-position Long-CLIP-style copy of its text encoder."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel
    from transformers import CLIPTokenizer as HFCLIPTokenizer

    from vision_long.encoders.longclip import stretch_positions

    tok_dir = workdir / f"tokenizer-{spec['num_merges']}"
    CLIPTokenizer(TokenizerConfig(77, spec["num_merges"])).save_hf(tok_dir)
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(CLIPTextConfig(max_position_embeddings=77, **spec["text"])).eval()
    long_encoder = CLIPTextModel(CLIPTextConfig(max_position_embeddings=248, **spec["text"])).eval()
    state = text_encoder.state_dict()
    key = "embeddings.position_embedding.weight"
    state[key] = stretch_positions(state[key])
    long_encoder.load_state_dict({k: v for k, v in state.items() if not k.endswith("position_ids")}, strict=False)
    unet = UNet2DConditionModel(**spec["unet"]).eval()
    vae = AutoencoderKL(block_out_channels=(32,), down_block_types=("DownEncoderBlock2D",),
                        up_block_types=("UpDecoderBlock2D",))
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=HFCLIPTokenizer.from_pretrained(str(tok_dir), model_max_length=77),
        unet=unet, scheduler=DDIMScheduler(clip_sample=False), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    return pipe, (long_encoder, HFCLIPTokenizer.from_pretrained(str(tok_dir), model_max_length=248))


def make_prompt(tokenizer, tokens: int) -> str:
    """Sentences of scene words until the prompt has at least `tokens` content tokens."""
    sentences, i = [], 0
    while len(tokenizer(" ".join(sentences), add_special_tokens=False, verbose=False).input_ids) < tokens:
        sentences.append(" ".join(WORDS[(i + j) % len(WORDS)] for j in range(6 + i % 9)).capitalize() + ".")
        i += 1
    return " ".join(sentences)


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up (allocator, pad* cache)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def unet_step(pipe, context: torch.Tensor) -> None:
    """One CFG UNet step: batch 2 (uncond + cond) of latents at the UNet's native size."""
    size = pipe.unet.config.sample_size
    latents = torch.randn(2, pipe.unet.config.in_channels, size, size)
    with torch.no_grad():
        pipe.unet(latents, 500, encoder_hidden_states=context.expand(2, -1, -1))


def measure(name: str, spec: dict, tokens: int, repeats: int, unet_repeats: int, workdir: Path) -> list[dict]:
    start = time.perf_counter()
    pipe, (long_encoder, long_tokenizer) = build_pipeline(spec, workdir)
    print(f"[{name}] built in {time.perf_counter() - start:.1f} s")
    prompt = make_prompt(pipe.tokenizer, tokens)
    count = len(pipe.tokenizer(prompt, add_special_tokens=False, verbose=False).input_ids)
    rows = []
    for method in (m for m in METHODS if m != LLM_METHOD):  # the LLM branch needs a trained adapter
        extra = {"longclip_text_encoder": long_encoder, "longclip_tokenizer": long_tokenizer} if method == "longclip" else {}
        shape = tuple(encode_long_prompt(pipe, prompt, "", method, **extra)["prompt_embeds"].shape)
        seconds = best_time(lambda: encode_long_prompt(pipe, prompt, "", method, **extra), repeats)  # noqa: B023
        rows.append({"pipeline": name, "method": method, "shape": shape, "seconds": seconds, "tokens": count})
        print(f"[{name}] {method}: {seconds * 1e3:.1f} ms, conditioning {shape}")
    context = torch.zeros(1, 77, pipe.unet.config.cross_attention_dim)
    if unet_repeats:
        step = best_time(lambda: unet_step(pipe, context), unet_repeats)
    else:  # one timed step, no warm-up: a full-size step is long on a small CPU
        start = time.perf_counter()
        unet_step(pipe, context)
        step = time.perf_counter() - start
    print(f"[{name}] one UNet step (batch 2, 77-token context): {step:.3f} s")
    stock = next(r["seconds"] for r in rows if r["method"] == "truncate")
    for r in rows:
        r.update(vs_stock=r["seconds"] / stock, vs_step=r["seconds"] / step, step=step)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| pipeline | method | conditioning | encode (ms) | x stock 77-token encode | x one UNet step |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['pipeline']} | `{r['method']}` | {list(r['shape'])} | {r['seconds'] * 1e3:.1f} | "
                     f"{r['vs_stock']:.2f}x | {r['vs_step']:.3f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=400, help="content tokens of the prompt (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="best of this many timed encodes (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--skip-full", action="store_true", help="only the tiny pipeline")
    parser.add_argument("--write", action="store_true", help="write the table into benchmarks/RESULTS.md")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        rows = measure("tiny (width 32)", TINY, args.tokens, args.repeats, 5, Path(tmp))
        if not args.skip_full:
            rows += measure("full size (CLIP-L text, SD-1.5 UNet)", FULL, args.tokens, args.repeats, 0, Path(tmp))

    from benchmarks.results import machine, update_section

    steps = {r["pipeline"]: r["step"] for r in rows}
    step_note = f"tiny: 8x8 latents, best of 5 ({steps[rows[0]['pipeline']]:.3f} s)"
    if not args.skip_full:
        step_note += (f"; full size: SD-1.5 UNet at 64x64 latents, **timed once without warm-up** because one step "
                      f"is slow on this CPU ({steps[rows[-1]['pipeline']]:.2f} s)")
    command = f"python -m benchmarks.prompt_encoding --tokens {args.tokens} --repeats {args.repeats}"
    command += (f" --threads {args.threads}" if args.threads else "") + (" --skip-full" if args.skip_full else "")
    body = f"""## Long-prompt encoding for diffusion: time per method (LongAlign issue)

Command: `{command} --write`
Machine: {machine()}
Prompt: a {args.tokens}-token prompt ({rows[0]['tokens']} content tokens under the tiny 488-merge vocabulary,
{rows[-1]['tokens']} under the full CLIP vocabulary) plus the empty negative prompt, encoded together (`truncate` is the
stock 77-token encode); random weights, fp32, best of {args.repeats} after one warm-up (so `segments` reuses its cached pad*).
Times include tokenization and sentence splitting.
UNet step: batch 2 (CFG), 77-token context; {step_note}.

{table(rows)}
"""
    print(body)
    if args.write:
        update_section("prompt_encoding", body)


if __name__ == "__main__":
    main()
