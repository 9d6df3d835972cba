"""`vision-long index | search | serve`: build an image index, query it, serve embeddings and search over HTTP."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from vision_long.commands.common import DTYPES, FORMATTER, MODEL_HELP, CLIError, load_model

DEFAULT_DB = "vision_long.lancedb"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _require(*modules_and_extras: tuple[str, str]) -> None:
    """A one-line install hint instead of a traceback when an optional dependency is missing."""
    for module, extra in modules_and_extras:
        if importlib.util.find_spec(module) is None:
            raise CLIError(f"this command needs {module}: pip install 'vision-long[{extra}]'")


def _recorded_spec(db: str, table: str) -> str | None:
    """The encoder spec an existing index was built with (None when there is no index yet)."""
    from vision_long.retrieval.index import Index

    try:
        return Index.open(db, table=table).record.spec
    except FileNotFoundError:
        return None


def cmd_index(args) -> None:
    from vision_long.retrieval.index import Index, IndexConfig
    from vision_long.retrieval.ingest import build_index, scan
    from vision_long.retrieval.ray_embed import RayOptions

    _require(("lancedb", "retrieval"), *([("ray", "distributed")] if args.engine == "ray" else []))
    if not Path(args.path).exists():
        raise CLIError(f"{args.path}: no such folder or parquet file")
    spec = args.model or _recorded_spec(args.db, args.table) or "default"
    encoder = load_model(spec, "cpu" if args.engine == "ray" else args.device, args.dtype)
    config = IndexConfig(ann_threshold=args.ann_threshold)
    index = Index.open(args.db, encoder, spec, create=True, table=args.table, config=config)
    ray = None
    if args.engine == "ray":
        device = None if args.device == "auto" else args.device
        ray = RayOptions(address=args.ray_address, actors=args.actors, gpus_per_actor=args.gpus_per_actor,
                         device=device, dtype=DTYPES[args.dtype] if args.dtype else None)
    items = scan(args.path, image_column=args.image_column, caption_column=args.caption_column, id_column=args.id_column)
    report = build_index(index, items, commit_every=args.commit_every, batch_size=args.batch_size,
                         progress=not args.quiet, ray=ray)
    for skipped in report.skipped:
        print(f"skipped {skipped.id}: {skipped.reason}", file=sys.stderr)
    print(f"added {report.added} images to {args.db} (table {args.table!r}, now {index.count()} images); "
          f"{len(report.skipped)} unreadable")


def _parse_filters(pairs: list[str]) -> dict:
    """KEY=VALUE pairs; VALUE is read as JSON (numbers, true/false, null, "quoted") and else taken as a string."""
    filters = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CLIError(f"--filter expects KEY=VALUE, got {pair!r}")
        try:
            filters[key] = json.loads(value)
        except json.JSONDecodeError:
            filters[key] = value
    return filters


def _shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def cmd_search(args) -> None:
    from vision_long.retrieval.index import Index
    from vision_long.retrieval.ingest import ImageError, decode_image

    _require(("lancedb", "retrieval"))
    if (args.text is None) == (args.image is None):
        raise CLIError("give a query text or --image QUERY.png (one of them)")
    index = Index.open(args.db, table=args.table)
    spec = args.model or index.record.spec
    index.bind(load_model(spec, args.device, args.dtype), spec)
    try:
        query = decode_image(args.image) if args.image else args.text
    except ImageError as e:
        raise CLIError(f"{args.image}: {e}") from None
    hits = index.search(query, k=args.k, filter=_parse_filters(args.filter), truncate=args.truncate)
    if args.json:
        print(json.dumps([asdict(h) for h in hits], indent=2, ensure_ascii=False))
        return
    if not hits:
        print("no results")
        return
    print(f"{'rank':>4}  {'score':>6}  {'image':<48}  caption")
    for rank, hit in enumerate(hits, 1):
        print(f"{rank:>4}  {hit.score:>6.3f}  {_shorten(hit.source, 48):<48}  {_shorten(hit.caption, 60)}")


def cmd_serve(args) -> None:
    _require(("fastapi", "serve"), ("uvicorn", "serve"), ("python_multipart", "serve"))
    if args.db:
        _require(("lancedb", "retrieval"))
    import uvicorn

    from vision_long.retrieval.api import ServeConfig, create_app
    from vision_long.retrieval.index import Index

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    index = Index.open(args.db, table=args.table) if args.db else None
    spec = args.model or (index.record.spec if index is not None else "default")
    encoder = load_model(spec, args.device, args.dtype)
    api_key = args.api_key or os.environ.get("VISION_LONG_API_KEY") or None
    if args.host not in LOOPBACK and api_key is None:
        print(f"warning: serving on {args.host} without an API key; anyone who can reach it can use it", file=sys.stderr)
    config = ServeConfig(
        max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_body_bytes=int(args.max_body_mb * 2**20),
        max_inputs=args.max_inputs, max_images=args.max_images, max_image_pixels=args.max_image_pixels,
        api_key=api_key, model_name=args.model_name,
    )
    uvicorn.run(create_app(encoder, spec, index, config), host=args.host, port=args.port, log_level=args.log_level)


def _common(p, model_default: str, db: str | None = DEFAULT_DB) -> None:
    p.add_argument("--model", default=None, help=MODEL_HELP.replace("%(default)s", model_default))
    p.add_argument("--db", default=db, help=f"LanceDB directory (default: {db or 'none: embeddings only'})")
    p.add_argument("--table", default="images", help="table in the database (default: %(default)s)")
    p.add_argument("--device", default="auto", help="torch device: auto (cuda when available), cuda, cpu, ...")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="compute dtype (default: the checkpoint's)")


def register(sub) -> None:
    """Add the index, search and serve commands."""
    p = sub.add_parser(
        "index", formatter_class=FORMATTER, help="embed an image folder or parquet file into a searchable index",
        description="Embed images into a LanceDB index: an image folder (recursively; captions from sidecar .txt\n"
        "files, metadata from sidecar .json files) or a parquet file / folder of parquet files (image bytes or\n"
        "paths, optional caption, id and metadata columns). Resumable: images already indexed are skipped, and\n"
        "progress is committed every --commit-every images. Past --ann-threshold images an IVF-PQ index is built.",
        epilog="examples:\n"
        "  vision-long index ./photos --db photos.lancedb\n"
        "  vision-long index shards/ --model longclip:longclip-L.pt --db laion.lancedb --engine ray --actors 4 \\\n"
        "      --gpus-per-actor 1 --batch-size 256 --ray-address auto",
    )
    p.add_argument("path", help="image folder, .parquet file, or folder of .parquet files")
    _common(p, "the one that built --db, else 'default'")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default: %(default)s)")
    p.add_argument("--commit-every", type=int, default=4096, help="images per atomic commit (default: %(default)s)")
    p.add_argument("--ann-threshold", type=int, default=100_000,
                   help="build the ANN index past this many images (default: %(default)s)")
    p.add_argument("--image-column", help="parquet: column of image bytes or paths (default: auto-detect)")
    p.add_argument("--caption-column", help="parquet: caption column (default: auto-detect)")
    p.add_argument("--id-column", help="parquet: id column (default: auto-detect, else FILE#ROW)")
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="embed here or on Ray Data (default: %(default)s)")
    p.add_argument("--ray-address", default=None, help="existing Ray cluster (default: start Ray on this machine)")
    p.add_argument("--actors", type=int, default=1, help="ray: actor pool size, one encoder each (default: %(default)s)")
    p.add_argument("--gpus-per-actor", type=float, default=0.0, help="ray: GPUs per actor (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser(
        "search", formatter_class=FORMATTER, help="search an index with a (long) text or an image",
        description="Rank indexed images by cosine similarity to a text (up to the model's context, 248 tokens\n"
        "for Long-CLIP) or an image, with the encoder that built the index.",
        epilog="examples:\n"
        "  vision-long search 'a red circle in the top-left cell above a striped blue square ...' --db photos.lancedb\n"
        "  vision-long search --image query.png --db photos.lancedb -k 5 --json\n"
        "  vision-long search 'a beach at dusk' --db photos.lancedb --filter split=val --filter year=2024",
    )
    p.add_argument("text", nargs="?", help="query text")
    p.add_argument("--image", metavar="QUERY.png", help="query image instead of a text")
    _common(p, "the one that built --db")
    p.add_argument("-k", type=int, default=10, help="number of results (default: %(default)s)")
    p.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE", help="metadata equality (repeatable)")
    p.add_argument("--truncate", action="store_true", help="cut a query longer than the context instead of failing")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser(
        "serve", formatter_class=FORMATTER, help="serve embeddings (OpenAI-style) and search over HTTP",
        description="Run the FastAPI service: POST /v1/embeddings, /v1/embeddings/image, /v1/search;\n"
        "GET /v1/models, /health; OpenAPI docs at /docs. Binds 127.0.0.1 unless --host says otherwise.\n"
        "Set an API key with --api-key or VISION_LONG_API_KEY to require 'Authorization: Bearer <key>'.",
        epilog="examples:\n"
        "  vision-long serve --db photos.lancedb\n"
        "  VISION_LONG_API_KEY=secret vision-long serve --model ./my-longclip --host 0.0.0.0 --port 8000",
    )
    _common(p, "the one that built --db, else 'default'", db=None)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    p.add_argument("--api-key", default=None, help="require this bearer token (default: $VISION_LONG_API_KEY, else none)")
    p.add_argument("--model-name", default=None, help="model id reported in /v1/models (default: the spec)")
    p.add_argument("--max-batch", type=int, default=64, help="inputs per encoder call; 1 disables micro-batching")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="micro-batch wait for more requests (default: 5)")
    p.add_argument("--max-body-mb", type=float, default=16.0, help="largest request body in MiB (default: 16)")
    p.add_argument("--max-inputs", type=int, default=2048, help="texts per request (default: 2048)")
    p.add_argument("--max-images", type=int, default=64, help="images per request (default: 64)")
    p.add_argument("--max-image-pixels", type=int, default=4096 * 4096, help="largest image, in pixels (default: 4096^2)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads for the encoder (default: torch's)")
    p.add_argument("--log-level", default="info", help="uvicorn log level (default: %(default)s)")
    p.set_defaults(func=cmd_serve)
