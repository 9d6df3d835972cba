"""`vision-long eval --suite ...`: evaluation suites that print a table or one JSON object."""

from __future__ import annotations

import json

from vision_long.commands.benchmark_eval import BENCHMARK_SUITES, add_suites, run_suite
from vision_long.commands.common import (
    FORMATTER,
    MODEL_HELP,
    CLIError,
    load_model,
    resolve_device,
)
from vision_long.commands.lmm import KIND_CHOICES, ZOOM_CHOICES

SUITES = ("long-retrieval", "vqa", "t2i-alignment", *BENCHMARK_SUITES)


def cmd_eval_vqa(args) -> None:
    """`--suite vqa`: each --model is an LMM directory ('default': the embedded LMM)."""
    from vision_long.eval.vqa import evaluate_vqa
    from vision_long.lmm.ask import resolve_lmm
    from vision_long.lmm.vqa import VQAConfig

    if args.plot:
        raise CLIError("--plot is for the retrieval suites; --suite vqa prints accuracy and image tokens only")
    config = VQAConfig(kinds=tuple(args.kinds))
    for spec in args.model:
        model = resolve_lmm(spec, device=resolve_device(args.device))
        m = {**evaluate_vqa(model, n=args.n, seed=args.seed, zoom=args.zoom, config=config, progress=not args.json),
             "model": spec}
        if args.json:
            print(json.dumps(m))
        else:
            kinds = ", ".join(f"{kind} {100 * acc:.2f}" for kind, acc in m["by_kind"].items())
            print(f"model {spec}: vqa, zoom {m['zoom']}, {m['n']} items, seed {m['seed']}, {m['seconds']} s")
            print(f"  accuracy {100 * m['accuracy']:6.2f}  ({kinds})\n  image tokens per image {m['image_tokens']:.1f}")


def cmd_eval_t2i_alignment(args) -> None:
    """`--suite t2i-alignment`: generate per method, parse the images back into scenes, print the accuracies."""
    from vision_long.eval.alignment import (
        RENDERED,
        AlignmentSuite,
        evaluate_t2i_alignment,
        load_cell_parser,
        longclip_kwargs,
    )

    if args.plot:
        raise CLIError("--plot is for the retrieval suites; --suite t2i-alignment prints accuracies only")
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    suite = AlignmentSuite(methods=methods, n=args.n, seed=args.seed, grid=args.grid, steps=args.steps,
                           guidance=args.guidance, batch_size=args.batch_size)
    device = resolve_device(args.device)
    parser = load_cell_parser(args.parser, device=device)
    pipe = None
    if any(m != RENDERED for m in methods) or args.pipeline or args.lora:
        from vision_long.diffusion.pipelines import load_pipeline

        pipe = load_pipeline(args.pipeline, device=device)
        if args.lora:
            from vision_long.diffusion.preference import load_lora

            load_lora(pipe, args.lora)
        if args.adapter:
            from vision_long.diffusion.conditioning import load_llm_conditioning

            load_llm_conditioning(pipe, args.adapter, device=device)
        if "longclip" in methods:
            suite.encode_kwargs = longclip_kwargs(pipe, args.longclip)
    for m in evaluate_t2i_alignment(suite, parser, pipe, progress=not args.json):
        m = {**m, "pipeline": None if pipe is None else (args.pipeline or "default"), "lora": args.lora,
             "adapter": args.adapter}
        if args.json:
            print(json.dumps(m))
        else:
            keys = ("acc_before_77", "acc_after_77", "acc_all", "presence", "color", "shape", "size")
            pct = {k: "   n/a" if m[k] is None else f"{100 * m[k]:6.2f}" for k in keys}
            print(f"method {m['method']}: {m['n']} scenes of {m['grid']}x{m['grid']} at {m['image_size']} px, "
                  f"{m['n_before_77']} + {m['n_after_77']} objects, seed {m['seed']}, {m['seconds']} s")
            print("  " + "  ".join(f"{k} {pct[k]}" for k in keys[:3])
                  + "  (" + ", ".join(f"{k} {pct[k]}" for k in keys[3:]) + ")")


def _t2i_alignment_args(p) -> None:
    g = p.add_argument_group(
        "t2i-alignment", "ShapeScenes long-prompt alignment of a text-to-image pipeline: per method, one image per\n"
        "evaluation scene's long caption (same seed per scene across methods), parsed back into a scene by the cell\n"
        "parser; per-object accuracy (presence, color, shape, size) split by whether the object's sentence starts\n"
        "before or after token 77. Method 'rendered' parses the scenes' own renders (the parser's accuracy),\n"
        "'reconstructed' those renders after the pipeline's VAE (the ceiling of any generation through it).\n"
        "example: vision-long eval --suite t2i-alignment --methods truncate,chunks,segments,longclip --n 200 --json")
    g.add_argument("--methods", default="truncate,chunks,segments,longclip",
                   help="comma-separated prompt encodings and/or 'rendered', 'reconstructed' (default: %(default)s)")
    g.add_argument("--pipeline", metavar="DIR",
                   help="local diffusers SD-1.5/SDXL directory (default: the embedded one)")
    g.add_argument("--lora", metavar="DIR", help="a UNet LoRA from 'vision-long train preference' (OUT/model)")
    g.add_argument("--adapter", metavar="DIR", help="the LLM branch of 'vision-long train t2i --conditioning "
                   "segments+llm' (OUT/adapter), for method segments+llm")
    g.add_argument("--longclip", metavar="DIR",
                   help="Long-CLIP text encoder directory for method longclip (default: the pipeline's own encoder "
                   "when it has more than 77 positions)")
    g.add_argument("--parser", metavar="DIR", help="cell parser directory (default: the embedded one)")
    g.add_argument("--steps", type=int, default=25, help="denoising steps (default: %(default)s)")
    g.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance (default: %(default)s)")


def cmd_eval(args) -> None:
    if args.suite in BENCHMARK_SUITES:
        return run_suite(args)
    if args.suite == "vqa":
        return cmd_eval_vqa(args)
    if args.suite == "t2i-alignment":
        return cmd_eval_t2i_alignment(args)
    from vision_long.eval.long_retrieval import (
        evaluate_long_retrieval,
        plot_recall_by_length,
    )

    results = {}
    for spec in args.model:
        model = load_model(spec, args.device, stretch=not args.no_stretch)
        if args.llm_cache and hasattr(model, "llm"):
            model.llm.use_cache(args.llm_cache)  # a frozen LLM: reuse caption embeddings across runs and models
        result = evaluate_long_retrieval(model, n=args.n, seed=args.seed, grid=args.grid,
                                         batch_size=args.batch_size, progress=not args.json)
        result.metrics["model"] = spec
        results[spec] = result
    if args.plot:
        plot_recall_by_length(results, args.plot)
    for result in results.values():
        m = result.metrics
        if args.json:
            print(json.dumps(m))
        else:
            print(f"model {m['model']} (context {m['context_length']}), {m['n']} scenes of {m['grid']}x{m['grid']}, "
                  f"{m['n_hard_groups']} hard-negative groups, seed {m['seed']}, {m['seconds']} s")
            for key in ("t2i_r1_long", "i2t_r1_long", "t2i_r1_short", "i2t_r1_short", "t2i_r1_hard",
                        "t2i_r1_hard_color", "t2i_r1_hard_shape"):
                print(f"  {key:<17} {100 * m[key]:6.2f}")


def register(sub) -> None:
    """Add `eval`."""
    p = sub.add_parser(
        "eval", formatter_class=FORMATTER, help="evaluate models (ShapeScenes long-caption retrieval, ...)",
        description="Suites:\n  long-retrieval  ShapeScenes retrieval R@1 with long captions (truncated at the model's\n"
        "                  context), short captions (first sentence), and hard-negative groups that differ\n"
        "                  only after token 77 (also split by the attribute they change: color, shape).\n"
        "                  Evaluation seeds never overlap training seeds.\n"
        "  vqa             ShapeScenes VQA accuracy (exact match) and image tokens per image of an LMM\n"
        "                  (--model: 'default' or OUT/model of 'vision-long train lmm') under --zoom.",
        epilog="examples:\n  vision-long eval --suite long-retrieval --model default --json\n"
        "  vision-long eval --suite long-retrieval --model default-77 default --plot recall.png\n"
        "  vision-long eval --suite long-retrieval --model default-proclip --grid 6 --json\n"
        "  vision-long eval --suite vqa --zoom text --n 500 --seed 0 --json\n"
        "  vision-long eval --suite vqa --model runs/lmm/model --zoom multires --n 200\n"
        "  vision-long eval --suite urban1k --data data/Urban1k --model longclip:longclip-L.pt --compare",
    )
    p.add_argument("--suite", choices=SUITES, required=True)
    p.add_argument("--model", nargs="+", default=["default"], help=MODEL_HELP.replace("model spec", "one or more model specs"))
    p.add_argument("--n", type=int, default=1000,
                   help="scenes (and n/4 hard-negative groups), or vqa items (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="evaluation seed (default: %(default)s)")
    p.add_argument("--grid", type=int, default=3, help="grid size of the long-retrieval scenes (default: %(default)s)")
    p.add_argument("--zoom", choices=ZOOM_CHOICES, default="text",
                   help="vqa: which crops reach the LM: text, v1, multires or none (default: %(default)s)")
    p.add_argument("--kinds", nargs="+", choices=KIND_CHOICES, default=list(KIND_CHOICES),
                   help="vqa: the question kinds asked (default: all three)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-stretch", action="store_true", help="evaluate 77-token checkpoints as they are (no stretching)")
    p.add_argument("--json", action="store_true", help="print one JSON object per model")
    p.add_argument("--plot", metavar="PNG", help="long-retrieval: R@1 against caption length; public suites: "
                   "our numbers beside the published ones")
    p.add_argument("--llm-cache", metavar="DIR", help="ProCLIP models: cache the frozen LLM's caption embeddings here")
    add_suites(p)
    _t2i_alignment_args(p)
    p.set_defaults(func=cmd_eval)
