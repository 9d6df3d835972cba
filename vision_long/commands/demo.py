"""`vision-long demo`: the Gradio page (Search, Generate, Ask) on the embedded default models, served locally.

Search queries a LanceDB index with a long text or an image; without --db a ShapeScenes gallery is rendered and
indexed on first start (kept under $VISION_LONG_CACHE, default ~/.cache/vision_long, so later starts reuse it) and
the query's token count is shown with the part a 77-token CLIP would cut highlighted. Generate runs a long prompt
through 'truncate' and the chosen method with the same seed, side by side, and lists the prompt's segments. Ask
answers a question about an image with the zoom-in LMM and outlines the crops it looked at. The text-to-image
pipeline and the LMM load on first use, so the page is up in seconds.
"""

from __future__ import annotations

from vision_long.commands.common import FORMATTER, MODEL_HELP, resolve_device


def cmd_demo(args) -> None:
    from vision_long.demo.app import launch
    from vision_long.demo.backend import DemoBackend, DemoConfig

    config = DemoConfig(model=args.model, db=args.db, pipeline=args.pipeline, lmm=args.lmm,
                        device=resolve_device(args.device), gallery_size=args.gallery_size, steps=args.steps)
    backend = DemoBackend(config)
    print(f"vision_long demo on http://{args.host}:{args.port} (Ctrl+C to stop)")
    launch(backend, host=args.host, port=args.port)


def register(sub) -> None:
    """Add `demo`."""
    p = sub.add_parser(
        "demo", formatter_class=FORMATTER, help="the Gradio demo: long-text search, long-prompt generation, zoom-in",
        description=__doc__,
        epilog="examples:\n  vision-long demo                      # http://127.0.0.1:7860, embedded defaults\n"
               "  vision-long demo --db photos.lance --model longclip:longclip-L.pt\n"
               "  vision-long demo --pipeline ./stable-diffusion-v1-5 --port 8080\n"
               "  open http://127.0.0.1:7860/?tab=ask&example=1   # a tab, with its example run",
    )
    p.add_argument("--db", help="an index built by 'vision-long index' with --model (default: a ShapeScenes gallery built on first "
                                "start)")
    p.add_argument("--model", default="default", help=MODEL_HELP)
    p.add_argument("--pipeline", help="diffusers SD-1.5 / SDXL directory for Generate (default: the embedded "
                                      "ShapeScenes pipeline)")
    p.add_argument("--lmm", help="LMM directory for Ask (default: the embedded ShapeScenes LMM)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind; 0.0.0.0 exposes the demo to the network "
                                                      "(default: %(default)s)")
    p.add_argument("--port", type=int, default=7860, help="port (default: %(default)s)")
    p.add_argument("--gallery-size", type=int, default=96, help="scenes in the default gallery (default: %(default)s)")
    p.add_argument("--steps", type=int, default=25, help="default denoising steps for Generate (default: %(default)s)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.set_defaults(func=cmd_demo)
