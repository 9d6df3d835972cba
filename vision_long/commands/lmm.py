"""`vision-long ask IMAGE QUESTION`: answer a question about an image with the multi-resolution LMM."""

from __future__ import annotations

import json
import sys

from vision_long.commands.common import FORMATTER, resolve_device

ZOOM_CHOICES = ("text", "v1", "multires", "none")  # = vision_long.lmm.model.ZOOM_MODES, without importing it here
KIND_CHOICES = ("color", "shape", "exists")  # = vision_long.lmm.vqa.QUESTION_KINDS, likewise


def cmd_ask(args) -> None:
    from vision_long.lmm.ask import ask_image, draw_crops, resolve_lmm

    model = resolve_lmm(args.model, device=resolve_device(args.device))
    answer = ask_image(args.image, args.question, zoom=args.zoom, model=model)
    if args.json:
        selection = answer.selection
        record = {
            "answer": answer.text,
            "zoom": answer.zoom,
            "image_tokens": answer.image_tokens,
            "selected": [] if selection is None else [
                {"index": i, "box": [round(v, 1) for v in box], "score": round(score, 4)}
                for i, box, score in zip(selection.indices, selection.boxes, selection.scores, strict=True)
            ],
        }
        print(json.dumps(record))
    else:
        print(answer.text)
    if args.out:
        draw_crops(args.image, answer).save(args.out)
        print(f"wrote {args.out} (crops that reached the LM under zoom {answer.zoom})", file=sys.stderr)


def register(sub) -> None:
    """Add `ask`."""
    p = sub.add_parser(
        "ask", formatter_class=FORMATTER, help="answer a question about an image (multi-resolution LMM with zoom-in)",
        description="Answer a question about an image with a Dragonfly-style LMM: a global view, 4 medium crops and\n"
        "zoomed-in high crops go through a CLIP vision tower into a small language model. Zoom modes:\n"
        "  text      the high crops that best match the question by a long-text CLIP (ours; default): its\n"
        "            similarity to each crop plus, with the model's learned zoom head, where the question points\n"
        "            ('row 2, column 5')\n"
        "  v1        Dragonfly v1: per medium crop, the high crops most like it (ignores the question)\n"
        "  multires  every high crop, pooled (Dragonfly v2)\n"
        "  none      the global view only\n"
        "The default model is vision_long/assets/lmm-shapescenes (build it with scripts/build_default_lmm.sh),\n"
        "trained on ShapeScenes VQA: ask about the small objects of a 6 x 6 scene.",
        epilog="examples:\n  vision-long ask scene.png \"What color is the star?\"\n"
        "  vision-long ask scene.png \"What shape is the small object in the cell at row 2, column 5?\" "
        "--zoom v1 --out crops.png\n"
        "  vision-long ask scene.png \"Is there a red circle in the image?\" --model runs/lmm/model --json",
    )
    p.add_argument("image", help="the image file")
    p.add_argument("question", help="the question, quoted")
    p.add_argument("--zoom", choices=ZOOM_CHOICES, default="text",
                   help="which crops reach the LM (default: %(default)s)")
    p.add_argument("--model", default="default",
                   help="an LMM directory written by 'vision-long train lmm' (OUT/model) (default: the embedded one)")
    p.add_argument("--out", metavar="PNG", help="write the image with the crops that reached the LM outlined")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object: answer, zoom, image_tokens, selected crops with boxes and scores")
    p.add_argument("--device", default="auto", help="torch device (default: cuda when available, else cpu)")
    p.set_defaults(func=cmd_ask)
