"""`vision-long generate`: one image from a long prompt with a local SD-1.5 or SDXL diffusers pipeline
(default: the embedded ShapeScenes pipeline, vision_long/assets/t2i-shapescenes)."""

from __future__ import annotations

from pathlib import Path

from vision_long.commands.common import DTYPES, FORMATTER, CLIError, resolve_device


def _read_prompt(args) -> str:
    if args.prompt is not None:
        return args.prompt
    path = Path(args.prompt_file)
    if not path.is_file():
        raise CLIError(f"{path}: no such prompt file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise CLIError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def cmd_generate(args) -> None:
    import torch

    from vision_long.diffusion.generation import GenerationRequest, generate
    from vision_long.diffusion.segments import SegmentOptions

    request = GenerationRequest(
        prompt=_read_prompt(args), negative_prompt=args.negative_prompt, method=args.method, steps=args.steps,
        guidance=args.guidance, seed=args.seed, width=args.width, height=args.height,
        options=SegmentOptions(split_mode=args.split),
    )
    dtype = getattr(torch, DTYPES[args.dtype]) if args.dtype else None
    result = generate(request, args.out, pipeline=args.pipeline, longclip_text_encoder=args.longclip,
                      device=resolve_device(args.device), dtype=dtype)
    report = result.record["prompt_report"]
    segments = f", {len(report['segments'])} segments" if report["segments"] is not None else ""
    print(f"wrote {result.image_path} ({result.image.width}x{result.image.height}, {args.method}, "
          f"{report['tokens']} tokens{segments}) and {result.sidecar_path}")


def register(sub) -> None:
    """Add `generate`."""
    from vision_long.diffusion.prompts import METHODS

    p = sub.add_parser(
        "generate",
        formatter_class=FORMATTER,
        help="generate an image from a long prompt (embedded ShapeScenes pipeline, or a local SD-1.5 / SDXL one)",
        description="Generate one image from a prompt longer than CLIP's 77 tokens with a local diffusers\n"
        "Stable Diffusion 1.x or SDXL directory, and write a PNG plus a JSON sidecar (prompt, method, seed,\n"
        "segments, token counts, timings). Methods: segments (LongAlign, default), longclip (a Long-CLIP text\n"
        "encoder from 'vision-long convert ... --to hf'), chunks (compel/lpw 75-token chunks), truncate (stock).\n"
        "Without --pipeline: the embedded 64 px ShapeScenes pipeline (scripts/build_default_t2i.sh builds it).",
        epilog="examples:\n"
        "  vision-long generate --prompt 'In the top-left cell there is a large red circle. In the center ...'\n"
        "  vision-long generate --prompt-file scene.txt --pipeline ./stable-diffusion-v1-5 --out scene.png\n"
        "  vision-long generate --prompt 'A red circle ... ' --pipeline ./sdxl --method chunks --width 1024 --height 1024\n"
        "  vision-long generate --prompt-file scene.txt --pipeline ./sd15 --method longclip --longclip ./longclip-L-hf",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", metavar="TEXT", help="the prompt")
    source.add_argument("--prompt-file", metavar="F", help="UTF-8 file holding the prompt (lines are joined)")
    p.add_argument("--negative-prompt", default="", metavar="T", help="negative prompt (default: none)")
    p.add_argument("--pipeline", metavar="DIR", help="local diffusers SD-1.5 or SDXL directory (default: the embedded ShapeScenes pipeline)")
    p.add_argument("--method", choices=METHODS, default="segments", help="long-prompt encoding (default: %(default)s)")
    p.add_argument("--longclip", metavar="DIR", help="Long-CLIP text encoder directory, for --method longclip")
    p.add_argument("--split", choices=["fixed", "upstream"], default="fixed",
                   help="sentence splitter for --method segments: fixed, or LongAlign's as shipped (default: %(default)s)")
    p.add_argument("--steps", type=int, default=25, help="denoising steps (default: %(default)s)")
    p.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--width", type=int, help="image width in pixels (default: the UNet's native size)")
    p.add_argument("--height", type=int, help="image height in pixels (default: the UNet's native size)")
    p.add_argument("--device", default="auto", help="torch device: auto (cuda when available), cuda, cpu, ...")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="weights dtype (default: the pipeline's)")
    p.add_argument("--out", default="out.png", help="output PNG; the sidecar is the same path with .json (default: %(default)s)")
    p.set_defaults(func=cmd_generate)
