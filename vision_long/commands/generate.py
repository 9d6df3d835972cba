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


def _method_and_split(args) -> tuple[str, str]:
    """The prompt encoding and sentence splitter: --adapter and --longsd imply segments+llm, and --longsd
    LongAlign's own splitter; other methods default to segments with the fixed splitter."""
    from vision_long.diffusion.prompts import LLM_METHOD

    if args.adapter and args.longsd:
        raise CLIError("--adapter and --longsd are two different LLM branches; pass one")
    if args.t5 and not args.longsd:
        raise CLIError("--t5 is LongSD's text model; it goes with --longsd DIR")
    llm = bool(args.adapter or args.longsd)
    method = args.method or (LLM_METHOD if llm else "segments")
    if llm and method != LLM_METHOD:
        raise CLIError(f"--adapter / --longsd condition the UNet on segments+llm; --method {method} would ignore "
                       "the LLM branch the UNet was trained with")
    if method == LLM_METHOD and not llm:
        raise CLIError("--method segments+llm needs an LLM branch: --adapter DIR (from 'train t2i --conditioning "
                       "segments+llm') or --longsd DIR")
    return method, args.split or ("upstream" if args.longsd else "fixed")


def _pipeline(args, device: str | None, dtype):
    """The pipeline argument of `generate`: a directory, or for --adapter / --longsd a loaded pipeline carrying
    its LLM branch."""
    from vision_long.diffusion.pipelines import load_pipeline

    if args.longsd:
        from vision_long.diffusion.longsd import load_longsd

        if not args.pipeline or not args.t5:
            raise CLIError("--longsd needs the Stable Diffusion 1.5 it was trained on (--pipeline DIR) and a local "
                           "T5-large (--t5 DIR)")
        return load_longsd(args.longsd, args.pipeline, args.t5, device=device, dtype=dtype)
    if args.adapter:
        from vision_long.diffusion.conditioning import load_llm_conditioning

        pipe = load_pipeline(args.pipeline, device=device, dtype=dtype)
        load_llm_conditioning(pipe, args.adapter)
        return pipe
    return args.pipeline


def cmd_generate(args) -> None:
    import torch

    from vision_long.diffusion.generation import GenerationRequest, generate
    from vision_long.diffusion.segments import SegmentOptions

    method, split = _method_and_split(args)
    request = GenerationRequest(
        prompt=_read_prompt(args), negative_prompt=args.negative_prompt, method=method, steps=args.steps,
        guidance=args.guidance, seed=args.seed, width=args.width, height=args.height,
        options=SegmentOptions(split_mode=split),
    )
    request.check()
    dtype = getattr(torch, DTYPES[args.dtype]) if args.dtype else None
    device = resolve_device(args.device)
    result = generate(request, args.out, pipeline=_pipeline(args, device, dtype), longclip_text_encoder=args.longclip,
                      device=device, dtype=dtype)
    report = result.record["prompt_report"]
    segments = f", {len(report['segments'])} segments" if report["segments"] is not None else ""
    print(f"wrote {result.image_path} ({result.image.width}x{result.image.height}, {method}, "
          f"{report['tokens']} tokens{segments}) and {result.sidecar_path}")


def register(sub) -> None:
    """Add `generate`."""
    from vision_long.diffusion.prompts import METHODS
    from vision_long.diffusion.segments import SPLIT_MODES

    p = sub.add_parser(
        "generate",
        formatter_class=FORMATTER,
        help="generate an image from a long prompt (embedded ShapeScenes pipeline, or a local SD-1.5 / SDXL one)",
        description="Generate one image from a prompt longer than CLIP's 77 tokens with a local diffusers\n"
        "Stable Diffusion 1.x or SDXL directory, and write a PNG plus a JSON sidecar (prompt, method, seed,\n"
        "segments, token counts, timings). Methods: segments (LongAlign, default), longclip (a Long-CLIP text\n"
        "encoder from 'vision-long convert ... --to hf'), chunks (compel/lpw 75-token chunks), truncate (stock),\n"
        "segments+llm (the 240 segment rows followed by an LLM's per-token states through a trained adapter).\n"
        "Without --pipeline: the embedded 64 px ShapeScenes pipeline (scripts/build_default_t2i.sh builds it).\n"
        "segments+llm needs the LLM branch the UNet was trained with, one of:\n"
        "  --adapter DIR  OUT/adapter of 'vision-long train t2i --conditioning segments+llm': the text adapter,\n"
        "                 its LLM (named in DIR/llm.json) and the UNet LoRA trained with it (DIR/lora), added to\n"
        "                 --pipeline (the pipeline the adapter was trained on)\n"
        "  --longsd DIR   LongAlign's released LongSD (s28750_adapter/, s28750_lora_vis.pt, sd15-reward-3750.pt):\n"
        "                 both LoRAs merged into --pipeline (a local SD-1.5), T5-large from --t5, UniPC sampling\n"
        "                 and LongAlign's own sentence splitter (--split upstream) by default\n"
        "Either one implies --method segments+llm.",
        epilog="examples:\n"
        "  vision-long generate --prompt 'In the top-left cell there is a large red circle. In the center ...'\n"
        "  vision-long generate --prompt-file scene.txt --pipeline ./stable-diffusion-v1-5 --out scene.png\n"
        "  vision-long generate --prompt 'A red circle ... ' --pipeline ./sdxl --method chunks --width 1024 --height 1024\n"
        "  vision-long generate --prompt-file scene.txt --pipeline ./sd15 --method longclip --longclip ./longclip-L-hf\n"
        "  vision-long generate --prompt-file scene.txt --pipeline runs/t2i/unet/pipeline --adapter runs/t2i/llm/adapter\n"
        "  vision-long generate --prompt-file scene.txt --longsd ./LongSD --pipeline ./stable-diffusion-v1-5 --t5 ./t5-large",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", metavar="TEXT", help="the prompt")
    source.add_argument("--prompt-file", metavar="F", help="UTF-8 file holding the prompt (lines are joined)")
    p.add_argument("--negative-prompt", default="", metavar="T", help="negative prompt (default: none)")
    p.add_argument("--pipeline", metavar="DIR", help="local diffusers SD-1.5 or SDXL directory (default: the embedded ShapeScenes pipeline)")
    p.add_argument("--method", choices=METHODS,
                   help="long-prompt encoding (default: segments; segments+llm with --adapter or --longsd)")
    p.add_argument("--longclip", metavar="DIR", help="Long-CLIP text encoder directory, for --method longclip")
    p.add_argument("--adapter", metavar="DIR", help="LLM adapter directory (OUT/adapter of 'train t2i --conditioning "
                   "segments+llm'), for --method segments+llm")
    p.add_argument("--longsd", metavar="DIR", help="LongAlign's LongSD release directory; with --pipeline SD15_DIR "
                   "and --t5 DIR")
    p.add_argument("--t5", metavar="DIR", help="local T5-large transformers directory, for --longsd")
    p.add_argument("--split", choices=SPLIT_MODES,
                   help="sentence splitter for segments and segments+llm: fixed, or LongAlign's as shipped "
                   "(default: upstream with --longsd, else fixed)")
    p.add_argument("--steps", type=int, default=25, help="denoising steps (default: %(default)s)")
    p.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--width", type=int, help="image width in pixels (default: the UNet's native size)")
    p.add_argument("--height", type=int, help="image height in pixels (default: the UNet's native size)")
    p.add_argument("--device", default="auto", help="torch device: auto (cuda when available), cuda, cpu, ...")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="weights dtype (default: the pipeline's)")
    p.add_argument("--out", default="out.png", help="output PNG; the sidecar is the same path with .json (default: %(default)s)")
    p.set_defaults(func=cmd_generate)
