"""What the demo's three tabs do, without any UI: search an index with a long text, generate from a long prompt with
two methods side by side, ask a question with zoom-in. `demo.app` is a thin Gradio layer over `DemoBackend`.

Models load once: the retrieval encoder when the backend is built (it builds or opens the index), the text-to-image
pipeline and the LMM on their first use, so the page is up in seconds. Every method raises `DemoInputError` (a
ValueError with a one-line message for the user) for unusable input and never changes stored data because of it.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from vision_long.data.scenes import DEFAULT_GRID, EVAL_SEED_OFFSET, random_scene
from vision_long.encoders.base import Encoder
from vision_long.retrieval.ingest import ImageError, decode_image
from vision_long.tokenization import CLIPTokenizer

CLIP_CONTEXT = 77  # the wall a stock CLIP text encoder stops at
DEMO_SEED_OFFSET = EVAL_SEED_OFFSET + 500_000  # gallery / example scenes: evaluation seeds, never trained on
MAX_QUERY_CHARS = 20_000  # a text query or prompt longer than this is refused (about 4,000 BPE tokens)
MAX_RESULTS = 48
GALLERY_SIZE = 96
GALLERY_IMAGE_SIZE = 128
GENERATION_METHODS = ("segments", "chunks", "truncate")
ZOOM_MODES = ("text", "v1", "multires", "none")
WORD_SPANS = re.compile(r"\S+\s*")

# HighlightedText labels of a query's token zones
KEPT = "within 77 tokens"
LONG_ONLY = "cut by a 77-token CLIP, read by this model"
CUT = "beyond this model's context (ignored)"


class DemoInputError(ValueError):
    """Input the demo cannot use; the message is shown to the user as it is."""


def cache_root() -> Path:
    """Where the demo keeps what it builds (the default gallery index): $VISION_LONG_CACHE or ~/.cache/vision_long."""
    return Path(os.environ.get("VISION_LONG_CACHE", Path.home() / ".cache" / "vision_long")) / "demo"


@dataclass
class DemoConfig:
    """What the demo serves. `db` None: a ShapeScenes gallery index built on first start under `cache_dir`;
    `pipeline` / `lmm` None: the embedded defaults (assets/t2i-shapescenes, assets/lmm-shapescenes)."""

    model: str = "default"
    db: str | None = None
    pipeline: str | None = None
    lmm: str | None = None
    device: str | None = None
    gallery_size: int = GALLERY_SIZE
    cache_dir: Path = field(default_factory=cache_root)
    max_image_pixels: int = 4096 * 4096
    steps: int = 25


@dataclass
class SearchResult:
    """A ranked gallery: (image, "rank. score caption-start") pairs best first, and the query's token zones as
    (text span, label) pairs (label None for an image query)."""

    gallery: list[tuple[Image.Image, str]]
    scores: list[float]
    ids: list[str]
    zones: list[tuple[str, str | None]]
    summary: str


@dataclass
class GenerationPair:
    """The same prompt and seed through `truncate` and through `method`, with the prompt's segments."""

    baseline: Image.Image
    image: Image.Image
    method: str
    segments: list[list[Any]]  # rows [index, tokens, text]
    summary: str


@dataclass
class AskResult:
    answer: str
    image: Image.Image  # the question's image with the crops that reached the LM outlined
    scores: list[list[Any]]  # rows [rank, box, score] of the chosen zoom-in crops (empty without selection)
    summary: str


def words_within(text: str, count_tokens, limit: int) -> int:
    """End offset in `text` of the longest run of leading whole words whose ids (start and end tokens included,
    counted by `count_tokens`) fit in `limit` positions. Binary search: O(log words) tokenizations."""
    ends = [0] + [m.end() for m in WORD_SPANS.finditer(text)]
    lo, hi = 0, len(ends) - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count_tokens(text[: ends[mid]].rstrip()) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return ends[lo]


def token_zones(text: str, model_count, model_context: int, clip_count=None) -> list[tuple[str, str]]:
    """`text` cut at word boundaries into (span, label) zones: what a 77-token CLIP keeps (`KEPT`), what only a
    model with `model_context` positions reads (`LONG_ONLY`), what that model drops too (`CUT`). The counters map a
    prefix to its number of ids with special tokens: `clip_count` the CLIP BPE's (default: `model_count`),
    `model_count` the model's own tokenizer's. A word straddling a limit counts as cut."""
    clip_end = words_within(text, clip_count or model_count, CLIP_CONTEXT)
    model_end = words_within(text, model_count, model_context)
    if model_end < clip_end:  # a model with fewer than 77 positions: only its own cut matters
        cuts, labels = [0, model_end, len(text)], (KEPT, CUT)
    else:
        cuts, labels = [0, clip_end, model_end, len(text)], (KEPT, LONG_ONLY, CUT)
    return [(text[a:b], label) for a, b, label in zip(cuts, cuts[1:], labels) if b > a]


def _required_text(text: str | None, what: str, empty_message: str) -> str:
    """`text` stripped; DemoInputError when it is empty (`empty_message`) or longer than `MAX_QUERY_CHARS`."""
    text = (text or "").strip()
    if not text:
        raise DemoInputError(empty_message)
    if len(text) > MAX_QUERY_CHARS:
        raise DemoInputError(f"the {what} has {len(text)} characters; the limit is {MAX_QUERY_CHARS}")
    return text


def _stable_name(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:12]


class DemoBackend:
    """The demo's models and the functions behind its tabs. Thread-safe: requests for one model are serialized."""

    def __init__(self, config: DemoConfig | None = None, progress: bool = True):
        from vision_long.commands.common import load_model
        from vision_long.retrieval.index import EncoderRecord, Index

        self.config = config or DemoConfig()
        self.encoder: Encoder = load_model(self.config.model, self.config.device)
        self.clip_tokenizer = CLIPTokenizer()
        if self.config.db is None:
            # named by what the encoder computes, not its spec: a rebuilt "default" gets a gallery of its own
            record = EncoderRecord.of(self.encoder, self.config.model)
            name = _stable_name(" ".join(f"{v:.3f}" for v in record.fingerprint))
            self.db = self.config.cache_dir / f"gallery-{name}-{self.config.gallery_size}"
            self.index = Index.open(self.db, self.encoder, self.config.model, create=True)
            self._fill_gallery(progress)
        else:
            self.db = Path(self.config.db)
            self.index = Index.open(self.db, self.encoder, self.config.model)
        self.work_dir = Path(tempfile.mkdtemp(prefix="vision-long-demo-"))
        self._locks = {name: threading.Lock() for name in ("search", "pipeline", "lmm")}
        self._pipe = None
        self._lmm = None

    # --- search -----------------------------------------------------------------------------------
    def _fill_gallery(self, progress: bool) -> None:
        """Render and index the ShapeScenes gallery (only what the index lacks, so a restart reuses it)."""
        from vision_long.retrieval.ingest import Item, build_index

        folder = self.db.with_name(self.db.name + "-images")
        folder.mkdir(parents=True, exist_ok=True)
        items = []
        for i in range(self.config.gallery_size):
            scene = random_scene(DEMO_SEED_OFFSET + i, DEFAULT_GRID)
            path = folder / f"scene_{i:04d}.png"
            if not path.is_file():
                scene.render(GALLERY_IMAGE_SIZE).save(path)
            items.append(Item(id=f"scene_{i:04d}", source=str(path), caption=scene.caption(),
                              metadata={"seed": DEMO_SEED_OFFSET + i}))
        build_index(self.index, items, progress=progress)

    def example_query(self) -> str:
        """The long caption of one gallery scene (the default query)."""
        return random_scene(DEMO_SEED_OFFSET + 7, DEFAULT_GRID).caption()

    def zones(self, text: str) -> list[tuple[str, str]]:
        """`token_zones` of `text`: the 77 cut in CLIP BPE, this encoder's cut in its own tokens."""
        return token_zones(text, self.encoder.tokenizer.count_tokens, self.encoder.context_length,
                           self.clip_tokenizer.count_tokens)

    def search(self, text: str | None = None, image: Image.Image | None = None, k: int = 12) -> SearchResult:
        """Rank the index for a text query (cut at the encoder's context, the cut shown) or, when `text` is empty,
        an image query."""
        text = (text or "").strip()
        if not text and image is None:
            raise DemoInputError("type a description or upload an image to search with")
        if len(text) > MAX_QUERY_CHARS:
            raise DemoInputError(f"the query has {len(text)} characters; the limit is {MAX_QUERY_CHARS}")
        if not 1 <= k <= MAX_RESULTS:
            raise DemoInputError(f"results must be between 1 and {MAX_RESULTS}, got {k}")
        if text:
            query, zones = text, self.zones(text)
            tokens = self.encoder.tokenizer.count_tokens(text)
            clip_cut = self.clip_tokenizer.count_tokens(text) > CLIP_CONTEXT
            summary = (f"{tokens} tokens for {self.config.model} (context {self.encoder.context_length}); "
                       + ("a 77-token CLIP would cut the highlighted rest." if clip_cut else "fits in 77 tokens."))
        else:
            query, zones, summary = self._check_image(image), [], "image query"
        with self._locks["search"]:
            hits = self.index.search(query, k=k, truncate=True)
        gallery = []
        for rank, hit in enumerate(hits, 1):
            try:
                picture = decode_image(hit.source, self.config.max_image_pixels)
            except (ImageError, OSError):
                picture = Image.new("RGB", (GALLERY_IMAGE_SIZE, GALLERY_IMAGE_SIZE), "gray")
            gallery.append((picture, f"{rank}. {hit.score:.3f}  {hit.caption[:80]}"))
        summary += f" {len(hits)} results from {self.index.count()} indexed images."
        return SearchResult(gallery, [h.score for h in hits], [h.id for h in hits], zones, summary)

    def _check_image(self, image: Any) -> Image.Image:
        if not isinstance(image, Image.Image):
            raise DemoInputError(f"expected an image, got {type(image).__name__}")
        if image.width * image.height > self.config.max_image_pixels:
            raise DemoInputError(f"the image is {image.width}x{image.height}; the limit is "
                                 f"{self.config.max_image_pixels} pixels")
        return image.convert("RGB")

    # --- generate ---------------------------------------------------------------------------------
    def pipeline(self):
        """The text-to-image pipeline, loaded on first use (PipelineError, a DemoInputError-like ValueError, when
        the default is not installed)."""
        from vision_long.diffusion.pipelines import load_pipeline

        with self._locks["pipeline"]:
            if self._pipe is None:
                self._pipe = load_pipeline(self.config.pipeline, device=self.config.device)
            return self._pipe

    def example_prompt(self, seed: int = 3) -> tuple[str, Image.Image]:
        """A ShapeScenes caption and the scene it describes (the ground truth to compare generations with)."""
        scene = random_scene(DEMO_SEED_OFFSET + 100_000 + seed, DEFAULT_GRID)
        return scene.caption(), scene.render(GALLERY_IMAGE_SIZE)

    def generate(self, prompt: str, method: str = "segments", seed: int = 0, steps: int | None = None,
                 guidance: float = 7.5) -> GenerationPair:
        """`prompt` through `truncate` and through `method` with the same seed and sampler: what the method adds."""
        from vision_long.diffusion.generation import (
            GenerationRequest,
            generate,
            prompt_report,
        )
        from vision_long.diffusion.prompts import PromptError

        prompt = _required_text(prompt, "prompt", "type a prompt to generate from")
        if method not in GENERATION_METHODS:
            raise DemoInputError(f"unknown method {method!r}; choose one of {', '.join(GENERATION_METHODS)}")
        steps = self.config.steps if steps is None else steps
        if not 1 <= steps <= 100:
            raise DemoInputError(f"steps must be between 1 and 100, got {steps}")
        pipe = self.pipeline()
        images = {}
        with self._locks["pipeline"]:
            for name in dict.fromkeys(("truncate", method)):
                request = GenerationRequest(prompt=prompt, method=name, steps=steps, guidance=guidance, seed=int(seed))
                out = self.work_dir / f"{_stable_name(prompt)}-{name}-{seed}-{steps}.png"
                try:
                    images[name] = generate(request, out, pipe, progress=False).image
                except PromptError as e:
                    raise DemoInputError(str(e)) from None
            report = prompt_report(pipe, prompt, "segments")
        rows = [[i, n, s] for i, (s, n) in enumerate(zip(report["segments"], report["segment_tokens"]), 1)]
        summary = (f"{report['tokens']} tokens; truncate keeps the first {pipe.tokenizer.model_max_length}, "
                   f"segments merges {len(rows)} sentences into {report['merged_tokens']} tokens.")
        return GenerationPair(images["truncate"], images[method], method, rows, summary)

    # --- ask --------------------------------------------------------------------------------------
    def lmm(self):
        """The LMM, loaded on first use (FileNotFoundError saying how to build it when the default is missing)."""
        from vision_long.lmm.ask import resolve_lmm

        with self._locks["lmm"]:
            if self._lmm is None:
                self._lmm = resolve_lmm(self.config.lmm, device=self.config.device)
            return self._lmm

    def example_scene(self, seed: int = 0) -> tuple[Image.Image, str]:
        """A large ShapeScenes VQA image with small objects and a question about one object's color or shape (the
        kinds the embedded LMM reads; its existence answers are near chance)."""
        from vision_long.lmm.vqa import VQAConfig, vqa_item

        item = vqa_item(DEMO_SEED_OFFSET + 200_000 + int(seed), VQAConfig(kinds=("color", "shape")))
        return item.image(), item.question

    def ask(self, image: Image.Image | None, question: str, zoom: str = "text") -> AskResult:
        """Answer `question` about `image`; the image comes back with the crops that reached the LM outlined."""
        from vision_long.lmm.ask import draw_crops

        if image is None:
            raise DemoInputError("upload an image or press 'New scene' first")
        image = self._check_image(image)
        question = _required_text(question, "question", "type a question about the image")
        if zoom not in ZOOM_MODES:
            raise DemoInputError(f"unknown zoom {zoom!r}; choose one of {', '.join(ZOOM_MODES)}")
        model = self.lmm()
        text_encoder = self.encoder if zoom == "text" and self.encoder.family == "longclip" else None
        with self._locks["lmm"]:
            answer = model.ask(image, question, zoom=zoom, text_encoder=text_encoder)
        rows = []
        if answer.selection is not None:
            rows = [[rank, str(tuple(int(v) for v in box)), round(float(score), 4)]
                    for rank, (box, score) in enumerate(zip(answer.selection.boxes, answer.selection.scores), 1)]
        summary = f"zoom {zoom}: {answer.image_tokens} image tokens reached the language model"
        return AskResult(answer.text, draw_crops(image, answer), rows, summary)
