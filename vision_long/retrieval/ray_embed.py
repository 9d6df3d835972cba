"""Image embedding on Ray Data: `map_batches` over an actor pool whose actors load the encoder once each.

Without an address Ray starts on this machine (and is shut down afterwards); `RayOptions.address` joins an
existing cluster (`"auto"`, `"ray://head:10001"`). The driver puts the items into Ray's object store a window at
a time (it spills to disk when full), the actors decode and embed them with the same `embed_items` as the
single-process path, and the driver receives ids and vectors and writes them to the index. Captions and metadata
stay on the driver. Workers read images from `source`, so on a cluster the paths must be visible to every node
(shared storage); parquet-embedded bytes travel through the object store.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

import numpy as np
from tqdm.auto import tqdm

from vision_long.retrieval.ingest import Item, Skipped, chunked, embed_items


@dataclass(frozen=True)
class RayOptions:
    """Where and how the actor pool runs."""

    address: str | None = None  # None: a local Ray instance; else an existing cluster ("auto", "ray://host:10001")
    actors: int = 1  # actor pool size (each holds one encoder)
    gpus_per_actor: float = 0.0
    cpus_per_actor: float = 1.0
    device: str | None = None  # torch device in the actors; default: "cuda" when gpus_per_actor > 0, else "cpu"
    dtype: str | None = None  # torch dtype name ("float16", ...); default: the checkpoint's
    window: int = 16_384  # items the driver hands to the object store at a time


class ImageEmbedder:
    """The Ray Data actor: loads the encoder in `__init__`, embeds one batch of rows per call."""

    def __init__(self, spec: str, device: str, dtype: str | None, batch_size: int):
        import torch

        from vision_long.encoders.loading import load_encoder

        self.encoder = load_encoder(spec, device=device, dtype=getattr(torch, dtype) if dtype else None)
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """{"id", "source", "data"} -> {"id", "vector" float32[B, D] (zeros when unreadable), "error" ("" when ok)}."""
        items = [
            Item(id=str(i), source=str(s), data=d if isinstance(d, bytes) else None)  # an all-null column is NaN
            for i, s, d in zip(batch["id"], batch["source"], batch["data"])
        ]
        kept, vectors, skipped = embed_items(self.encoder, items, self.batch_size)
        out = np.zeros((len(items), self.encoder.embed_dim), np.float32)
        errors = {s.id: s.reason for s in skipped}
        rows = {item.id: n for n, item in enumerate(items)}
        out[[rows[item.id] for item in kept]] = vectors
        return {"id": batch["id"], "vector": out, "error": np.array([errors.get(item.id, "") for item in items])}


def embed_with_ray(
    items: Iterable[Item], spec: str, options: RayOptions, batch_size: int, commit_every: int, bar: tqdm | None = None
) -> Iterator[tuple[list[Item], np.ndarray, list[Skipped]]]:
    """Embed `items` on a Ray actor pool; yields (items, float32 [N, D], unreadable items) every `commit_every` rows."""
    import ray
    import ray.data

    started = not ray.is_initialized()
    if started:
        ray.init(address=options.address, log_to_driver=False, include_dashboard=False)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        described: dict[str, Item] = {}
        parts = []
        for chunk in chunked(items, options.window):
            parts.append(ray.data.from_items([{"id": it.id, "source": it.source, "data": it.data} for it in chunk]))
            described.update((it.id, replace(it, data=None)) for it in chunk)
        if not parts:
            return
        dataset = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
        device = options.device or ("cuda" if options.gpus_per_actor > 0 else "cpu")
        embedded = dataset.map_batches(
            ImageEmbedder,
            fn_constructor_kwargs={"spec": spec, "device": device, "dtype": options.dtype, "batch_size": batch_size},
            batch_size=batch_size,
            compute=ray.data.ActorPoolStrategy(size=options.actors),
            num_gpus=options.gpus_per_actor,
            num_cpus=options.cpus_per_actor,
        )
        for out in embedded.iter_batches(batch_size=commit_every, batch_format="numpy"):
            ok = out["error"] == ""
            kept = [described[str(i)] for i in out["id"][ok]]
            skipped = [Skipped(str(i), str(e)) for i, e in zip(out["id"][~ok], out["error"][~ok])]
            if bar is not None:
                bar.update(len(out["id"]))
            yield kept, out["vector"][ok], skipped
    finally:
        if started:
            ray.shutdown()
