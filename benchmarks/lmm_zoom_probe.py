"""Can a long-text CLIP find the crop a ShapeScenes VQA question asks about? How often the crop holding the asked
object ranks first (and in the top 4) among the 36 high crops of a 6 x 6 VQA image, by cosine similarity between
the question's text embedding and:

- crop:    each high crop's image embedding (what `select_zoom_text` ranks);
- canvas:  each high crop pasted at its place on an empty background of the full image size, so the image tower
           sees where the crop lies;
- place:   the text "cell at row r, column c" of each crop (text against text: does the question's embedding
           carry the cell it names?).

Items without a target cell ("no" answers to existence questions) are skipped; place is scored on questions that
name a cell.

    python -m benchmarks.lmm_zoom_probe --n 300 --write
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import torch
from PIL import Image

from benchmarks.results import machine, update_section
from vision_long.data.scenes import BACKGROUND_RGB, cell_name
from vision_long.encoders.loading import load_encoder
from vision_long.lmm.processing import MultiResolutionConfig, multi_resolution_crops
from vision_long.lmm.vqa import vqa_item, vqa_seeds

TOP = 4


def canvases(image: Image.Image, boxes) -> list[Image.Image]:
    """One full-size background image per box, holding only that box's pixels at their place."""
    out = []
    for box in boxes:
        left, top, right, bottom = (round(v) for v in box)
        canvas = Image.new("RGB", image.size, BACKGROUND_RGB)
        canvas.paste(image.crop((left, top, right, bottom)), (left, top))
        out.append(canvas)
    return out


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="the long-text CLIP (a model spec; default: %(default)s)")
    parser.add_argument("--n", type=int, default=300, help="evaluation VQA items read (default: %(default)s)")
    parser.add_argument("--write", action="store_true", help="write the section of RESULTS.md")
    args = parser.parse_args()

    encoder = load_encoder(args.model)
    geometry = MultiResolutionConfig(crop_size=encoder.image_size)
    hits: dict[tuple[str, str], list[tuple[bool, bool]]] = defaultdict(list)
    places = None
    for seed in vqa_seeds("eval", args.n):
        item = vqa_item(seed)
        if item.cell is None:
            continue
        image = item.image()
        crops = multi_resolution_crops(image, geometry)
        if places is None:
            grid = crops.high.columns
            places = encoder.encode_text([cell_name(i, grid) for i in range(len(crops.high))], normalize=True)
        text = encoder.encode_text([item.question], normalize=True)
        names_cell = "row" in item.question
        group = f"{item.kind}, by {'cell' if names_cell else 'object'}"
        views = {"crop": encoder.encode_image(list(crops.high.crops), normalize=True),
                 "canvas": encoder.encode_image(canvases(image, crops.high.boxes), normalize=True)}
        if names_cell:
            views["place"] = places
        for name, embeddings in views.items():
            ranked = (embeddings.float() @ text.float().T).squeeze(1).topk(TOP).indices.tolist()
            hits[name, group].append((ranked[0] == item.cell, item.cell in ranked))

    groups = sorted({g for _, g in hits})
    table = ["| ranking | " + " | ".join(f"{g} (n)" for g in groups) + " |", "|---" * (len(groups) + 1) + "|"]
    for name in ("crop", "canvas", "place"):
        cells = []
        for g in groups:
            rows = hits.get((name, g))
            cells.append("-" if not rows else f"{100 * sum(a for a, _ in rows) / len(rows):.1f} / "
                         f"{100 * sum(b for _, b in rows) / len(rows):.1f} ({len(rows)})")
        table.append(f"| {name} | " + " | ".join(cells) + " |")
    print("\n".join(table))
    if args.write:
        body = ("## Can the long-text CLIP find the asked crop? (multi-resolution LMM issue)\n\n"
                f"Command: `python -m benchmarks.lmm_zoom_probe --model {args.model} --n {args.n} --write`\n"
                f"Machine: {machine()}. The first {args.n} evaluation VQA items (6 x 6 scenes at 384 px, 36 high crops "
                f"of {encoder.image_size} px, one cell each). Cells: top-1 / top-{TOP} accuracy in % of the asked "
                f"cell's crop (chance 2.8 / 11.1), and items (n). Rankings: crop = the crop's image embedding (what "
                "text zoom ranks); canvas = the crop at its place on an empty image; place = the text 'cell at row "
                "r, column c' (questions naming a cell only).\n\n" + "\n".join(table) + "\n")
        update_section("lmm_zoom_probe", body)


if __name__ == "__main__":
    main()
