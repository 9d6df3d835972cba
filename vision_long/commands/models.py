"""`vision-long embed | convert | info`: use and convert text-image encoders."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vision_long.commands.common import DTYPES, FORMATTER, MODEL_HELP, CLIError, load_model


def _read_texts(args) -> list[str]:
    if args.text:
        return args.text
    path = Path(args.text_file)
    if not path.is_file():
        raise CLIError(f"{path}: no such text file")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise CLIError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    texts = [line.strip() for line in lines if line.strip()]
    if not texts:
        raise CLIError(f"{path}: no non-empty lines")
    return texts


def _read_images(paths: list[str]):
    from PIL import Image, UnidentifiedImageError

    images = []
    for p in paths:
        if not Path(p).is_file():
            raise CLIError(f"{p}: no such image file")
        try:
            with Image.open(p) as im:
                images.append(im.convert("RGB"))
        except (UnidentifiedImageError, OSError) as e:
            raise CLIError(f"{p}: not a readable image ({e})") from None
    return images


def cmd_embed(args) -> None:
    model = load_model(args.model, args.device, args.dtype)
    if args.image:
        vectors = model.encode_image(_read_images(args.image), batch_size=args.batch_size, progress=True)
        what = "images"
    else:
        texts = _read_texts(args)
        vectors = model.encode_text(texts, batch_size=args.batch_size, truncate=args.truncate, progress=True)
        what = "texts"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, vectors.float().cpu().numpy())
    print(f"wrote {tuple(vectors.shape)} embeddings of {len(vectors)} {what} to {out}")


def cmd_convert(args) -> None:
    from vision_long.checkpoints import save_native
    from vision_long.encoders.hf_format import export_hf

    model = load_model(args.spec, None, args.dtype, stretch=not args.no_stretch)
    if args.to != "native" and model.family != "longclip":
        raise CLIError(f"only CLIP/Long-CLIP models export to transformers/diffusers; {args.spec} is a {model.family} model")
    out = Path(args.out_dir)
    if out.exists() and any(out.iterdir()) and not args.force:
        raise CLIError(f"{out} exists and is not empty; pass --force to write into it")
    (save_native if args.to == "native" else export_hf)(model, out)
    print(f"wrote {args.to} {model.family} model (context {model.context_length}) to {out}")


def cmd_info(args) -> None:
    model = load_model(args.spec, None, None, stretch=not args.no_stretch)
    c = model.config
    rows = [("family", model.family), ("embed dim", model.embed_dim), ("context length", model.context_length)]
    if model.family == "proclip":
        blocks, expansion = c.adapter.resolved()
        rows += [
            ("text embedder", f"{c.llm.name} (frozen, {c.llm_dim} dims, mean pooling; "
                              f"{'long texts averaged over windows' if c.llm.chunk_long else 'long texts refused'})"),
            ("adapter", f"{c.adapter.variant}: {blocks} residual block(s) x{expansion}, LayerNorm, Linear -> {c.embed_dim}"),
        ]
    else:
        rows += [
            ("kept positions", c.text.keep_positions if c.text.keep_positions is not None else "n/a (one table)"),
            ("text tower", f"width {c.text.width}, {c.text.layers} layers, {c.text.heads} heads, {c.text.act}"),
            ("vocabulary", f"{c.text.vocab_size} ids" + (f" (first {c.num_merges} CLIP merges)" if c.num_merges else "")),
        ]
    rows += [
        ("vision tower", f"ViT {c.vision.image_size}px/{c.vision.patch_size}, width {c.vision.width}, {c.vision.layers} layers"),
        ("parameters", f"{model.num_parameters():,}" + (" (without the LLM)" if model.family == "proclip" else "")),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")



def register(sub) -> None:
    """Add the embed, convert and info commands."""
    embed = sub.add_parser(
        "embed",
        formatter_class=FORMATTER,
        help="embed texts or images into an .npy file",
        description="Embed texts (up to the model's context, 248 tokens for Long-CLIP) or images.\n"
        "Vectors are L2-normalized, one row per input, in input order.",
        epilog="examples:\n"
        "  vision-long embed --model longclip:longclip-L.pt --text 'a long paragraph ...' --out q.npy\n"
        "  vision-long embed --model hf:./clip-vit-base-patch16 --text-file captions.txt --truncate --out t.npy\n"
        "  vision-long embed --model ./my-longclip --image a.jpg b.png --out img.npy",
    )
    embed.add_argument("--model", default="default", help=MODEL_HELP)
    source = embed.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", nargs="+", metavar="T", help="one or more texts")
    source.add_argument("--text-file", metavar="F", help="UTF-8 file, one text per line (blank lines skipped)")
    source.add_argument("--image", nargs="+", metavar="PATH", help="one or more image files")
    embed.add_argument("--out", required=True, help="output .npy file (float32, [N, D])")
    embed.add_argument("--truncate", action="store_true", help="cut texts longer than the context instead of failing")
    embed.add_argument("--batch-size", type=int, default=64, help="inputs per forward pass (default: %(default)s)")
    embed.add_argument("--device", default="auto", help="torch device: auto (cuda when available), cuda, cpu, ...")
    embed.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="compute dtype (default: the checkpoint's)")
    embed.set_defaults(func=cmd_embed)

    convert = sub.add_parser(
        "convert",
        formatter_class=FORMATTER,
        help="convert a checkpoint to vision_long's format or to transformers/diffusers",
        description="Load any supported checkpoint and write it as a vision_long directory (--to native)\n"
        "or as a transformers CLIPModel directory with 248 positions (--to hf), usable by\n"
        "CLIPModel/CLIPTextModel.from_pretrained and as a diffusers pipeline's text_encoder + tokenizer.\n"
        "77-token sources are stretched to 248 positions unless --no-stretch.",
        epilog="examples:\n"
        "  vision-long convert longclip:longclip-L.pt ./longclip-L-hf --to hf\n"
        "  vision-long convert openai:ViT-B-16.pt ./clip-b16-stretched --to native",
    )
    convert.add_argument("spec", help="source model spec (see 'embed --help')")
    convert.add_argument("out_dir", help="output directory")
    convert.add_argument("--to", choices=["native", "hf"], default="native", help="output format (default: %(default)s)")
    convert.add_argument("--no-stretch", action="store_true", help="keep a 77-token source at 77 positions")
    convert.add_argument("--force", action="store_true", help="write into a non-empty output directory")
    convert.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="store weights in this dtype")
    convert.set_defaults(func=cmd_convert)

    info = sub.add_parser("info", help="print a model's family, sizes and context length")
    info.add_argument("spec", help="model spec (see 'embed --help')")
    info.add_argument("--no-stretch", action="store_true", help="describe a 77-token source as it is stored")
    info.set_defaults(func=cmd_info)
