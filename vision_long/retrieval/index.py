"""`Index`: image embeddings in a LanceDB table on local disk, searchable by text, image or vector.

One row per image: `id`, `vector` (float32[D], L2-normalized), `source` (path or URI), `caption` and free JSON
`metadata`. The table's schema metadata records the encoder that built it (`EncoderRecord`: spec, family,
dimension and a fingerprint, its embedding of `PROBE_TEXT`); adding or querying with another encoder is refused.

Every write is one Lance commit (data files first, then an atomic manifest switch), so an interrupted `add`
leaves the previous version as it was. Below `IndexConfig.ann_threshold` rows every search is exact; past it an
IVF-PQ index (cosine) is built, new rows are folded into it as they accumulate, and searches re-rank
`refine_factor * k` candidates with exact distances, so returned scores are exact cosine similarities.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from vision_long.encoders.base import Encoder
from vision_long.retrieval.ingest import DEFAULT_MAX_PIXELS, Item, Skipped, embed_items

DEFAULT_TABLE = "images"
RECORD_KEY = b"vision_long.encoder"
PROBE_TEXT = "a photo of a red circle above a blue square, next to a small green triangle"
SAME_ENCODER_COSINE = 0.99  # fingerprints of one model in fp32 / fp16 / bf16 agree far closer than this
METADATA_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
FilterValue = str | int | float | bool | None


class EncoderMismatch(ValueError):
    """A query or addition from an encoder other than the one that built the index."""


@dataclass(frozen=True)
class EncoderRecord:
    """Which encoder built an index. `fingerprint` is its embedding of `PROBE_TEXT` (None: vectors only)."""

    spec: str
    embed_dim: int
    family: str = "vectors"
    context_length: int = 0
    fingerprint: tuple[float, ...] | None = None

    @classmethod
    def of(cls, encoder: Encoder, spec: str) -> EncoderRecord:
        probe = encoder.encode_text([PROBE_TEXT])[0].float().cpu()
        return cls(absolute_spec(spec), encoder.embed_dim, encoder.family, encoder.context_length, tuple(probe.tolist()))

    def check(self, other: EncoderRecord) -> None:
        """Raise `EncoderMismatch` unless `other` is the same encoder (same dimension and fingerprint)."""
        if other.embed_dim != self.embed_dim:
            raise EncoderMismatch(
                f"this index was built with {self.spec!r} ({self.embed_dim}-dim embeddings); {other.spec!r} makes "
                f"{other.embed_dim}-dim embeddings. Use --model {self.spec} or another --db/--table"
            )
        if self.fingerprint is None or other.fingerprint is None:
            same = self.spec == other.spec
        else:
            same = float(np.dot(self.fingerprint, other.fingerprint)) >= SAME_ENCODER_COSINE
        if not same:
            raise EncoderMismatch(
                f"this index was built with {self.spec!r}; {other.spec!r} is a different encoder (its embeddings "
                f"differ), so its vectors are not comparable. Use --model {self.spec} or another --db/--table"
            )


def absolute_spec(spec: str) -> str:
    """`spec` with relative file paths made absolute, so the recorded spec loads from any working directory."""
    family, sep, source = spec.partition(":")
    if sep and family == "open_clip" and "@" in source:
        arch, _, weights = source.partition("@")
        return f"open_clip:{arch}@{Path(weights).resolve()}" if Path(weights).exists() else spec
    if sep and family in ("longclip", "openai", "hf") and Path(source).exists():
        return f"{family}:{Path(source).resolve()}"
    return str(Path(spec).resolve()) if Path(spec).exists() else spec


@dataclass(frozen=True)
class IndexConfig:
    """When to build the ANN index and how to search it."""

    ann_threshold: int = 100_000  # rows; every search is exact below this
    ann_refresh: float = 0.25  # fold unindexed rows into the ANN index once they exceed this fraction of it
    nprobes: int = 20  # IVF partitions searched per query
    refine_factor: int = 10  # re-rank refine_factor * k PQ candidates with exact distances
    sub_vector_dims: int = 8  # PQ sub-vector width: num_sub_vectors = D // 8 (when D divides)


@dataclass(frozen=True)
class Hit:
    """One search result; `score` is the cosine similarity to the query."""

    id: str
    score: float
    source: str
    caption: str
    metadata: dict[str, Any]


def metadata_filter(filter: dict[str, FilterValue]) -> str:
    """SQL for 'every key equals its value' on the JSON `metadata` column (values compared as JSON text, so 1 and
    1.0 differ; None matches a missing key or a null)."""
    clauses = []
    for key, value in filter.items():
        if not isinstance(key, str) or not METADATA_KEY.fullmatch(key):
            raise ValueError(f"filter key {key!r} must be an identifier (letters, digits, underscore)")
        if not isinstance(value, FilterValue):
            raise ValueError(f"filter value for {key!r} must be a string, number, boolean or null")
        field = f"json_extract(metadata, '$.{key}')"
        literal = json.dumps(value, ensure_ascii=False).replace("'", "''")
        clauses.append(f"({field} IS NULL OR {field} = 'null')" if value is None else f"{field} = '{literal}'")
    return " AND ".join(clauses)


def _quoted(ids: Iterable[str]) -> str:
    return ", ".join("'" + str(i).replace("'", "''") + "'" for i in ids)


class Index:
    """A LanceDB-backed image index bound (optionally) to the encoder that built it. See the module docstring."""

    def __init__(self, db: str | Path, table: Any, record: EncoderRecord, config: IndexConfig | None = None):
        self.db = str(db)
        self.table = table
        self.record = record
        self.config = config or IndexConfig()
        self.encoder: Encoder | None = None
        self.spec: str | None = None  # what the bound encoder was loaded from (may differ from record.spec)
        self._has_ann = bool(table.list_indices())

    # --- opening ---------------------------------------------------------------------------------
    @classmethod
    def create(
        cls, db: str | Path, record: EncoderRecord, table: str = DEFAULT_TABLE, config: IndexConfig | None = None
    ) -> Index:
        """A new empty index at `db`/`table` recording `record`; an existing table is an error."""
        import lancedb

        connection = lancedb.connect(str(db))
        if table in _table_names(connection):
            raise FileExistsError(f"{db}: index table {table!r} already exists")
        return cls(db, connection.create_table(table, schema=_schema(record)), record, config)

    @classmethod
    def open(
        cls,
        db: str | Path,
        encoder: Encoder | None = None,
        spec: str | None = None,
        *,
        create: bool = False,
        table: str = DEFAULT_TABLE,
        config: IndexConfig | None = None,
    ) -> Index:
        """Open `db`/`table`, checked against and bound to `encoder` (loaded from `spec`) when given.

        With `create=True` a missing table is created for `encoder`.
        """
        import lancedb

        if (encoder is None) != (spec is None):
            raise ValueError("pass both encoder and spec, or neither")
        connection = lancedb.connect(str(db))
        if table not in _table_names(connection):
            if not create or encoder is None:
                raise FileNotFoundError(f"{db}: no index table {table!r} (build one with 'vision-long index')")
            index = cls.create(db, EncoderRecord.of(encoder, spec), table, config)
            index.encoder, index.spec = encoder, absolute_spec(spec)
            return index
        handle = connection.open_table(table)
        raw = (handle.schema.metadata or {}).get(RECORD_KEY)
        if raw is None:
            raise ValueError(f"{db}: table {table!r} is not a vision_long index (no encoder record)")
        data = json.loads(raw)
        fingerprint = data.pop("fingerprint")
        index = cls(db, handle, EncoderRecord(**data, fingerprint=tuple(fingerprint) if fingerprint else None), config)
        return index.bind(encoder, spec) if encoder is not None else index

    def bind(self, encoder: Encoder, spec: str) -> Index:
        """Attach `encoder` for text/image queries and additions after checking it built this index."""
        self.record.check(EncoderRecord.of(encoder, spec))
        self.encoder, self.spec = encoder, absolute_spec(spec)
        return self

    def require_encoder(self) -> Encoder:
        if self.encoder is None:
            raise ValueError(f"this index is open without an encoder; open it with its encoder ({self.record.spec!r})")
        return self.encoder

    # --- writing -----------------------------------------------------------------------------------
    def add(self, items: Sequence[Item], batch_size: int = 64, progress: bool = True) -> list[Skipped]:
        """Embed `items` and add them in one commit (replacing rows with the same id); returns the unreadable ones."""
        from tqdm.auto import tqdm

        with tqdm(total=len(items), desc="index images", unit="img", disable=not progress) as bar:
            kept, vectors, skipped = embed_items(self.require_encoder(), list(items), batch_size, DEFAULT_MAX_PIXELS, bar)
        if kept:
            self.add_vectors(kept, vectors)
        return skipped

    def add_vectors(self, items: Sequence[Item], vectors: np.ndarray | torch.Tensor) -> None:
        """Add `items` with their embeddings float[N, D] in one atomic commit (rows with the same id are replaced)."""
        import pyarrow as pa

        vectors = np.ascontiguousarray(torch.as_tensor(vectors).float().cpu().numpy())
        if vectors.ndim != 2 or vectors.shape != (len(items), self.record.embed_dim):
            raise ValueError(f"expected vectors [{len(items)}, {self.record.embed_dim}], got {list(vectors.shape)}")
        if len({item.id for item in items}) != len(items):
            raise ValueError("duplicate ids in one addition")
        data = pa.table(
            {
                "id": [item.id for item in items],
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), self.record.embed_dim),
                "source": [item.source for item in items],
                "caption": [item.caption for item in items],
                "metadata": pa.array([json.dumps(item.metadata, ensure_ascii=False) for item in items], pa.json_(pa.utf8())),
            },
            schema=_schema(self.record),
        )
        self.table.merge_insert("id").when_matched_update_all().when_not_matched_insert_all().execute(data)
        self._maintain_ann()

    def delete(self, ids: Iterable[str]) -> None:
        """Remove the rows with these ids (one commit); unknown ids are ignored."""
        ids = list(ids)
        if ids:
            self.table.delete(f"id IN ({_quoted(ids)})")

    def optimize(self) -> None:
        """Compact the table's files and fold new rows into the ANN index (if there is one)."""
        self.table.optimize()

    def build_ann(self) -> None:
        """(Re)train the IVF-PQ index (cosine) on every row now; `add` does this by itself past the threshold."""
        from lancedb.index import IvfPq

        dim, width = self.record.embed_dim, self.config.sub_vector_dims
        sub_vectors = dim // width if dim % width == 0 else None
        self.table.create_index("vector", config=IvfPq(distance_type="cosine", num_sub_vectors=sub_vectors))
        self._has_ann = True

    def _maintain_ann(self) -> None:
        if self.table.count_rows() < self.config.ann_threshold:
            return
        if not self._has_ann:
            self.build_ann()
            return
        stats = self.table.index_stats(self.table.list_indices()[0].name)
        if stats.num_unindexed_rows > self.config.ann_refresh * stats.num_indexed_rows:
            self.table.optimize()

    # --- reading -----------------------------------------------------------------------------------
    def count(self) -> int:
        return self.table.count_rows()

    def ids(self) -> set[str]:
        """Every id in the index."""
        return set(self.table.search().select(["id"]).limit(None).to_arrow().column("id").to_pylist())

    def missing(self, items: Iterable[Item]) -> Iterator[Item]:
        """The items whose id the index does not hold yet (lazily, in order)."""
        have = self.ids()
        return (item for item in items if item.id not in have)

    def embed_query(self, query: str | Image.Image, truncate: bool = False) -> np.ndarray:
        """A text or image query as float32[D] with this index's encoder."""
        encoder = self.require_encoder()
        if isinstance(query, str):
            vector = encoder.encode_text([query], truncate=truncate)
        else:
            vector = encoder.encode_image([query])
        return vector[0].float().cpu().numpy()

    def search(
        self,
        query: str | Image.Image | np.ndarray | torch.Tensor,
        k: int = 10,
        filter: dict[str, FilterValue] | None = None,
        truncate: bool = False,
        exact: bool = False,
    ) -> list[Hit]:
        """The `k` rows most similar (cosine) to a text, an image or a vector float[D], best first.

        `filter` keeps rows whose metadata has every key equal to its value (applied before ranking).
        Exact below `config.ann_threshold` rows or with `exact=True`; else ANN (IVF-PQ, then exact re-ranking).
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        vector = self.embed_query(query, truncate) if isinstance(query, (str, Image.Image)) else self._check_vector(query)
        search = self.table.search(vector).metric("cosine").limit(k)
        if filter:
            search = search.where(metadata_filter(filter), prefilter=True)
        if exact or not self._has_ann or self.count() < self.config.ann_threshold:
            search = search.bypass_vector_index()
        else:
            search = search.nprobes(self.config.nprobes).refine_factor(self.config.refine_factor)
        rows = search.select(["id", "source", "caption", "metadata", "_distance"]).to_list()
        return [
            Hit(r["id"], 1.0 - float(r["_distance"]), r["source"], r["caption"], json.loads(r["metadata"] or "{}"))
            for r in rows
        ]

    def _check_vector(self, vector: np.ndarray | torch.Tensor | Sequence[float]) -> np.ndarray:
        v = np.asarray(torch.as_tensor(vector).float().cpu(), dtype=np.float32)
        if v.shape != (self.record.embed_dim,):
            raise ValueError(f"query vector must have shape [{self.record.embed_dim}], got {list(v.shape)}")
        if not np.isfinite(v).all() or not np.linalg.norm(v) > 0:
            raise ValueError("query vector must be finite and non-zero")
        return v


def _schema(record: EncoderRecord) -> Any:
    """The table's Arrow schema; the encoder record rides in its metadata."""
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("vector", pa.list_(pa.float32(), record.embed_dim)),
            pa.field("source", pa.string()),
            pa.field("caption", pa.string()),
            pa.field("metadata", pa.json_(pa.utf8())),
        ],
        metadata={RECORD_KEY: json.dumps(asdict(record)).encode()},
    )


def _table_names(connection: Any) -> list[str]:
    names, token = [], None
    while True:
        page = connection.list_tables(page_token=token)
        names.extend(page.tables)
        token = page.page_token
        if not token:
            return names
