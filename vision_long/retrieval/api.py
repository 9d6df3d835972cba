"""The HTTP embedding and search service: `create_app(encoder, spec, index, config) -> FastAPI`.

Routes: POST /v1/embeddings (OpenAI's shape: `input` one or up to 2048 strings, `encoding_format` float or base64
= little-endian float32; plus `truncate`, default false: a text over the context is a 400 naming its token count),
POST /v1/embeddings/image (multipart `files`, or JSON `input` data URLs / base64), POST /v1/search (one of `text`,
`image`, `vector`; `k`; metadata `filter`), GET /v1/models, GET /health. Errors are 4xx with
`{"error": {"message", "type", "code", "param"}}`. Concurrent requests of one kind are micro-batched into one
encoder call on a single encoder thread (`batching.MicroBatcher`), so the event loop never waits on the model.
Limits: body bytes (413), inputs per request (400), image pixels read from the header before decoding (413);
with an API key every route but /health needs `Authorization: Bearer <key>` (401).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import time
from collections.abc import Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.exceptions import HTTPException

from vision_long.encoders.base import Encoder
from vision_long.retrieval.batching import EncoderBatchers, TextTooLong
from vision_long.retrieval.index import FilterValue, Index
from vision_long.retrieval.ingest import ImageError, ImageTooLarge, decode_image

OPENAI_MAX_INPUTS = 2048  # OpenAI's limit on inputs per embeddings request
MAX_K = 1000  # search results per query
DATA_URL = re.compile(r"data:[\w.+-]+/[\w.+-]+(?:;[\w.+-]+=[\w.+-]+)*;base64,(.*)", re.S)


@dataclass(frozen=True)
class ServeConfig:
    """Batching and limits of the service."""

    max_batch: int = 64  # inputs per encoder call; 1 turns micro-batching off
    max_wait_ms: float = 5.0  # how long the first request of a batch waits for company
    max_body_bytes: int = 16 * 2**20
    max_inputs: int = OPENAI_MAX_INPUTS  # texts per request
    max_images: int = 64  # images per request
    max_image_pixels: int = 4096 * 4096
    api_key: str | None = None
    model_name: str | None = None  # the id in /v1/models (default: the model spec)


class APIError(Exception):
    """A client error, returned as `{"error": {...}}` with `status`."""

    def __init__(self, status: int, message: str, code: str, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


# --- schemas ---------------------------------------------------------------------------------------------
class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input: str | list[str] = Field(description=f"a text or up to {OPENAI_MAX_INPUTS} texts (no empty strings)")
    model: str | None = Field(None, description="the served model's id (optional)")
    encoding_format: Literal["float", "base64"] = "float"
    truncate: bool = Field(False, description="cut texts longer than the context instead of rejecting them")
    user: str | None = None


class ImageEmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input: str | list[str] = Field(description="images as data URLs (data:image/png;base64,...) or plain base64")
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str | None = None
    image: str | None = Field(None, description="data URL or plain base64")
    vector: list[float] | None = None
    k: int = Field(10, ge=1, le=MAX_K)
    filter: dict[str, FilterValue] | None = Field(None, description="metadata key -> value; all must match")
    truncate: bool = False
    model: str | None = None

    @model_validator(mode="after")
    def _one_query(self) -> SearchRequest:
        if sum(q is not None for q in (self.text, self.image, self.vector)) != 1:
            raise ValueError("give exactly one of text, image or vector")
        return self


class SearchHit(BaseModel):
    id: str
    score: float = Field(description="cosine similarity")
    source: str
    caption: str
    metadata: dict


class SearchResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[SearchHit]
    model: str
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "vision_long"
    family: str
    embed_dim: int
    context_length: int
    image_size: int
    indexed_images: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    code: str
    param: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


ERRORS = {s: {"model": ErrorResponse} for s in (400, 401, 404, 413, 415, 422)}
_MULTIPART = {"type": "object", "required": ["files"], "properties": {
    "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
    "model": {"type": "string"}, "encoding_format": {"type": "string", "enum": ["float", "base64"]}}}
IMAGE_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": _MULTIPART},
    "application/json": {"schema": ImageEmbeddingRequest.model_json_schema()}}}}


# --- the app ---------------------------------------------------------------------------------------------
def create_app(encoder: Encoder, spec: str, index: Index | None = None, config: ServeConfig | None = None) -> FastAPI:
    """The service for `encoder` (loaded from `spec`), searching `index` when given. See the module docstring."""
    cfg = config or ServeConfig()
    name = cfg.model_name or spec
    if index is not None and index.encoder is not encoder:
        index.bind(encoder, spec)
    created = int(time.time())
    service = EncoderBatchers(encoder, cfg.max_batch, cfg.max_wait_ms / 1000)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        service.start()
        yield
        await service.stop()

    app = FastAPI(title="vision_long", version="1", lifespan=lifespan, description=__doc__.split("\n\n", 1)[1])
    app.state.service = service
    app.add_middleware(BodyLimit, max_bytes=cfg.max_body_bytes)
    _add_error_handlers(app)
    bearer = HTTPBearer(auto_error=False, description="the server's --api-key")

    def authorize(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if credentials is None:
            raise APIError(401, "missing API key: send 'Authorization: Bearer <key>'", "missing_api_key")
        if not hmac.compare_digest(credentials.credentials.encode(), cfg.api_key.encode()):
            raise APIError(401, "invalid API key", "invalid_api_key")

    guarded = {"dependencies": [Depends(authorize)]} if cfg.api_key else {}

    def check_model(model: str | None) -> None:
        if model is not None and model != name:
            raise APIError(404, f"model {model!r} is not served here; this server serves {name!r}", "model_not_found", "model")

    async def embed_texts(texts: list[str], truncate: bool) -> tuple[list[np.ndarray], int]:
        _check_count(len(texts), cfg.max_inputs, "texts")
        if empty := [i for i, t in enumerate(texts) if not t.strip()]:
            raise APIError(400, f"input {empty[0]} is empty", "empty_input", "input")
        try:
            return await service.embed_texts(texts, truncate)
        except TextTooLong as e:
            param = f"input[{e.index}]" if len(texts) > 1 else "input"
            raise APIError(400, f"{e}; shorten it or set \"truncate\": true", "context_length_exceeded", param) from None

    async def embed_images(blobs: Sequence[bytes]) -> list[np.ndarray]:
        return await service.embed_images(await run_in_threadpool(decode_all, blobs))

    def decode_all(blobs: Sequence[bytes]) -> list:
        images = []
        for i, blob in enumerate(blobs):
            try:
                images.append(decode_image(blob, cfg.max_image_pixels))
            except ImageTooLarge as e:
                raise APIError(413, f"image {i}: {e}", "image_too_large", f"input[{i}]") from None
            except ImageError as e:
                raise APIError(400, f"image {i}: {e}", "invalid_image", f"input[{i}]") from None
        return images

    @app.get("/health", tags=["service"])
    async def health() -> dict[str, str]:
        """Liveness: 200 while the server runs (no API key needed)."""
        return {"status": "ok"}

    @app.get("/v1/models", response_model=ModelList, responses=ERRORS, tags=["service"], **guarded)
    async def models() -> ModelList:
        """The one model this server embeds with, its sizes, and how many images its index holds."""
        rows = await run_in_threadpool(index.count) if index is not None else None
        card = ModelCard(id=name, created=created, family=encoder.family, embed_dim=encoder.embed_dim,
                         context_length=encoder.context_length, image_size=encoder.image_size, indexed_images=rows)
        return ModelList(data=[card])

    @app.post("/v1/embeddings", response_model=EmbeddingResponse, responses=ERRORS, tags=["embeddings"], **guarded)
    async def embeddings(req: EmbeddingRequest) -> EmbeddingResponse:
        """Embed texts (OpenAI's request and response shape)."""
        check_model(req.model)
        vectors, tokens = await embed_texts([req.input] if isinstance(req.input, str) else req.input, req.truncate)
        return _embedding_response(vectors, req.encoding_format, name, tokens)

    @app.post("/v1/embeddings/image", response_model=EmbeddingResponse, responses=ERRORS, tags=["embeddings"],
              openapi_extra=IMAGE_BODY, **guarded)
    async def image_embeddings(request: Request) -> EmbeddingResponse:
        """Embed images sent as multipart `files` or as JSON data URLs / base64 strings."""
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            async with request.form(max_files=cfg.max_images, max_fields=8) as form:
                files = form.getlist("files")
                if any(isinstance(f, str) for f in files):
                    raise APIError(400, "'files' must be file parts", "invalid_request", "files")
                model, encoding_format = form.get("model"), form.get("encoding_format", "float")
                if encoding_format not in ("float", "base64"):
                    raise APIError(400, "encoding_format must be 'float' or 'base64'", "invalid_request", "encoding_format")
                _check_count(len(files), cfg.max_images, "images")
                blobs = [await f.read() for f in files]
        elif content_type.startswith("application/json"):
            try:
                req = ImageEmbeddingRequest.model_validate_json(await request.body())
            except ValidationError as e:
                raise RequestValidationError(e.errors(include_url=False)) from None
            model, encoding_format = req.model, req.encoding_format
            strings = [req.input] if isinstance(req.input, str) else req.input
            _check_count(len(strings), cfg.max_images, "images")
            blobs = [_decode_base64(s, f"input[{i}]") for i, s in enumerate(strings)]
        else:
            raise APIError(415, "send multipart/form-data (files) or application/json (input)", "unsupported_media_type")
        check_model(model)
        return _embedding_response(await embed_images(blobs), encoding_format, name, 0)

    @app.post("/v1/search", response_model=SearchResponse, responses=ERRORS, tags=["search"], **guarded)
    async def search(req: SearchRequest) -> SearchResponse:
        """The `k` indexed images closest (cosine) to a text, an image or a vector."""
        check_model(req.model)
        if index is None:
            raise APIError(404, "this server has no index; start it with --db", "no_index")
        tokens = 0
        if req.text is not None:
            (vector,), tokens = await embed_texts([req.text], req.truncate)
        elif req.image is not None:
            (vector,) = await embed_images([_decode_base64(req.image, "image")])
        else:
            vector = np.asarray(req.vector, np.float32)
        try:
            hits = await run_in_threadpool(index.search, vector, req.k, req.filter)
        except ValueError as e:  # wrong vector size, zero vector, bad filter key
            raise APIError(400, str(e), "invalid_query", "vector" if req.vector is not None else "filter") from None
        data = [SearchHit(**vars(h)) for h in hits]
        return SearchResponse(data=data, model=name, usage=Usage(prompt_tokens=tokens, total_tokens=tokens))

    return app


def _check_count(n: int, limit: int, what: str) -> None:
    if n == 0:
        raise APIError(400, f"no {what} given", "empty_input", "input")
    if n > limit:
        raise APIError(400, f"{n} {what} in one request; at most {limit}", "too_many_inputs", "input")


def _decode_base64(text: str, param: str) -> bytes:
    """Bytes of a data URL (`data:image/png;base64,...`) or of plain base64."""
    match = DATA_URL.fullmatch(text) if text.startswith("data:") else None
    if text.startswith("data:") and match is None:
        raise APIError(400, f"{param}: only base64 data URLs (data:<type>;base64,...) are accepted", "invalid_base64", param)
    try:
        return base64.b64decode("".join((match.group(1) if match else text).split()), validate=True)
    except (binascii.Error, ValueError):
        raise APIError(400, f"{param} is not valid base64", "invalid_base64", param) from None


def _embedding_response(vectors: Sequence[np.ndarray], encoding_format: str, model: str, tokens: int) -> EmbeddingResponse:
    as_float = encoding_format == "float"
    data = [Embedding(index=i, embedding=v.tolist() if as_float else _base64_floats(v)) for i, v in enumerate(vectors)]
    return EmbeddingResponse(data=data, model=model, usage=Usage(prompt_tokens=tokens, total_tokens=tokens))


def _base64_floats(vector: np.ndarray) -> str:
    return base64.b64encode(vector.astype("<f4").tobytes()).decode()


def _error(status: int, message: str, code: str, param: str | None = None, headers: dict | None = None) -> JSONResponse:
    body = ErrorResponse(error=ErrorDetail(message=message, type="invalid_request_error", code=code, param=param))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(_: Request, e: APIError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
        return _error(e.status, e.message, e.code, e.param, headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        where = [".".join(str(x) for x in err["loc"] if x != "body") or "body" for err in e.errors()]
        message = "; ".join(f"{w}: {err['msg']}" for w, err in zip(where, e.errors()))
        return _error(422, message or "invalid request", "invalid_request", where[0] if where else None)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, e: HTTPException) -> JSONResponse:
        return _error(e.status_code, str(e.detail), "http_error", None, e.headers)


class BodyLimit:
    """ASGI middleware: 413 for a body over `max_bytes` (Content-Length checked first; a chunked body is read
    up to the limit and replayed to the app)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > self.max_bytes:
                return await self._reject(scope, receive, send)
            return await self.app(scope, receive, send)
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                return await self._reject(scope, receive, send)
            if message["type"] != "http.request" or not message.get("more_body", False):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _reject(self, scope, receive, send) -> None:
        response = _error(413, f"request body is larger than {self.max_bytes:,} bytes", "request_too_large")
        await response(scope, receive, send)
