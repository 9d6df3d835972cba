"""Search image collections with long texts: a LanceDB index, resumable ingestion (local or Ray Data), and an
HTTP service (`vision_long.retrieval.api.create_app`, which needs the `serve` extra).

    from vision_long import load_encoder
    from vision_long.retrieval import Index, build_index, scan

    encoder = load_encoder("default")
    index = Index.open("photos.lancedb", encoder, "default", create=True)
    build_index(index, scan("photos/"))
    hits = index.search("a red circle above a striped blue square, and to its right ...", k=10)
"""

from vision_long.retrieval.index import EncoderMismatch, EncoderRecord, Hit, Index, IndexConfig
from vision_long.retrieval.ingest import BuildReport, ImageError, Item, Skipped, build_index, decode_image, scan
from vision_long.retrieval.ray_embed import RayOptions

__all__ = [
    "BuildReport",
    "EncoderMismatch",
    "EncoderRecord",
    "Hit",
    "ImageError",
    "Index",
    "IndexConfig",
    "Item",
    "RayOptions",
    "Skipped",
    "build_index",
    "decode_image",
    "scan",
]
