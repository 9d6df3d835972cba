"""What LongAlign's LLM branch adds on long ShapeScenes prompts: `segments` against `segments+llm`, split by where
an object's sentence starts in the caption (before token 77, 77-240, after 240: past what the 240 merged CLIP rows
hold).

Rows, all on the same evaluation scenes and generation seeds:
- rendered: the ground-truth scenes through the cell parser (the parser's own accuracy);
- reconstructed: those renders after the pipeline's VAE (the ceiling of any generation through it);
- segments: the base pipeline (no LoRA), 240 segment-merged CLIP rows;
- segments+llm: the trained adapter's rows after the 240, and its UNet LoRA on;
- segments+llm, LLM blind: the same LoRA and adapter, but the LLM reads the empty prompt for every scene, so its rows
  carry no caption. What it gains over `segments` comes from adapting the UNet to the training scenes; what
  `segments+llm` gains over it comes from the LLM reading the caption.

    python -m benchmarks.t2i_llm_branch --adapter runs/llm12/adapter --n 200 --grid 6 --write
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.results import RESULTS, image_sheet, machine, update_section
from vision_long.diffusion.conditioning import (
    LLMBranch,
    attach_llm_branch,
    branch_lora_enabled,
    load_llm_conditioning,
)
from vision_long.diffusion.pipelines import load_pipeline
from vision_long.diffusion.prompts import LLM_METHOD
from vision_long.eval.alignment import (
    RECONSTRUCTED,
    RENDERED,
    AlignmentSuite,
    evaluate_t2i_alignment,
    evaluation_scenes,
    generate_images,
    load_cell_parser,
)

POSITIONS = ("acc_before_77", "acc_77_to_240", "acc_after_240", "acc_all")
ATTRIBUTES = ("presence", "empty_cells", "color", "shape", "size")
BLIND = "segments+llm, LLM blind"
SHEET_SCENES = 6


class BlindBranch(LLMBranch):
    """The branch with the LLM reading the empty prompt for every text: the adapter's rows without the caption."""

    def __call__(self, texts: list[str]) -> torch.Tensor:
        return super().__call__([""] * len(texts))


def blind(branch: LLMBranch) -> BlindBranch:
    """`branch` with its LLM blinded (same adapter and LoRA)."""
    return BlindBranch(branch.embedder, branch.adapter, branch.config, branch.lora)


def sample_sheet(pipe, branch: LLMBranch, suite: AlignmentSuite, out) -> None:
    """Rows of evaluation scenes; columns ground truth | segments | segments+llm | LLM blind (same seeds)."""
    scenes = evaluation_scenes(SHEET_SCENES, suite.seed, suite.grid)
    captions, seeds = [s.caption() for s in scenes], [s.seed for s in scenes]
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    columns = [[s.render(size) for s in scenes]]
    for method, attached in (("segments", branch), (LLM_METHOD, branch), (LLM_METHOD, blind(branch))):
        attach_llm_branch(pipe, attached)
        with branch_lora_enabled(pipe, method == LLM_METHOD):
            columns.append(generate_images(pipe, captions, seeds, method, suite.steps, suite.guidance, SHEET_SCENES))
    attach_llm_branch(pipe, branch)
    cell = 3 * size
    image_sheet(columns, cell).save(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", help="diffusers directory (default: the embedded ShapeScenes pipeline)")
    parser.add_argument("--adapter", required=True, help="OUT/adapter of 'vision-long train t2i --conditioning "
                                                         "segments+llm'")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grid", type=int, default=6)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--section", default="t2i_llm_branch")
    parser.add_argument("--write", action="store_true", help="write the section and a sample sheet beside RESULTS.md")
    args = parser.parse_args()

    pipe = load_pipeline(args.pipeline)
    branch = load_llm_conditioning(pipe, args.adapter)
    cell_parser = load_cell_parser()
    suite = AlignmentSuite(methods=(RENDERED, RECONSTRUCTED, "segments", LLM_METHOD), n=args.n, seed=args.seed, grid=args.grid,
                           steps=args.steps, guidance=args.guidance)
    rows = [(m["method"], m) for m in evaluate_t2i_alignment(suite, cell_parser, pipe, progress=True)]
    attach_llm_branch(pipe, blind(branch))
    blind_suite = AlignmentSuite(methods=(LLM_METHOD,), n=args.n, seed=args.seed, grid=args.grid, steps=args.steps,
                                 guidance=args.guidance)
    rows.append((BLIND, evaluate_t2i_alignment(blind_suite, cell_parser, pipe)[0]))
    attach_llm_branch(pipe, branch)
    for name, m in rows:
        print(name, {k: m[k] for k in (*POSITIONS, *ATTRIBUTES, "seconds")})

    keys = POSITIONS + ATTRIBUTES
    counts = rows[0][1]
    table = ["| method | " + " | ".join(keys) + " | seconds |", "|---" * (len(keys) + 2) + "|"]
    for name, m in rows:
        table.append(f"| {name} | " + " | ".join("-" if m[k] is None else f"{100 * m[k]:.1f}" for k in keys)
                     + f" | {m['seconds']} |")
    command = (f"python -m benchmarks.t2i_llm_branch --adapter {args.adapter} --n {args.n} --seed {args.seed} "
               f"--grid {args.grid} --steps {args.steps} --guidance {args.guidance} --section {args.section} --write")
    print("\n".join(table))
    if args.write:
        sheet = RESULTS.parent / f"{args.section}.png"
        sample_sheet(pipe, branch, suite, sheet)
        body = (f"## LLM branch on long prompts ({args.section})\n\nCommand: `{command}`\n"
                f"Machine: {machine()}. {args.n} evaluation scenes ({args.grid}x{args.grid}; objects whose sentence "
                f"starts before token 77 / at 77-240 / after 240: {counts['n_before_77']} / {counts['n_77_to_240']} / "
                f"{counts['n_after_240']}), one image each, DDIM {args.steps} steps, guidance {args.guidance}. "
                "Accuracy as in t2i_alignment (mean of the four attribute hits per object); presence, color, shape, "
                "size: each attribute over all objects; empty_cells: empty cells left empty (drawing an object in "
                "every cell scores presence 100 and empty_cells 0).\n\n" + "\n".join(table)
                + f"\n\nSamples (`{sheet.name}`): columns ground truth | segments | segments+llm | LLM blind; the "
                f"first {SHEET_SCENES} evaluation scenes.\n")
        update_section(args.section, body)
        print(f"wrote section {args.section} of {RESULTS}")


if __name__ == "__main__":
    main()
