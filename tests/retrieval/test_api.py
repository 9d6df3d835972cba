"""The HTTP contract: every route, every error path (4xx + JSON error body), micro-batching, the OpenAPI schema."""

import base64
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import NUM_SCENES, data_url, png_bytes, png_header_only
from fastapi.testclient import TestClient
from PIL import Image

from vision_long.retrieval.api import OPENAI_MAX_INPUTS, ServeConfig, create_app

KEY = "s3cret"
LONG = "In the top-left cell there is a large red circle with white stripes. " * 30


@pytest.fixture(scope="module")
def client(encoder, tiny_spec, built_index):
    with TestClient(create_app(encoder, tiny_spec, built_index, ServeConfig(max_wait_ms=20))) as c:
        yield c


@pytest.fixture(scope="module")
def strict(encoder, tiny_spec):
    """No index; an API key and small limits."""
    config = ServeConfig(api_key=KEY, max_body_bytes=20_000, max_images=2, max_image_pixels=64 * 64, model_name="tiny")
    with TestClient(create_app(encoder, tiny_spec, None, config), headers={"Authorization": f"Bearer {KEY}"}) as c:
        yield c


def error(response, status: int, code: str | None = None) -> str:
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert set(body) == {"message", "type", "code", "param"} and body["type"] == "invalid_request_error"
    if code is not None:
        assert body["code"] == code, body
    return body["message"]


def scene_png(scene_folder, name="scene_001.png") -> bytes:
    return (scene_folder / name).read_bytes()


def test_health_and_models(client, strict, tiny_spec):
    assert client.get("/health").json() == {"status": "ok"}
    (card,) = client.get("/v1/models").json()["data"]
    assert card["id"] == tiny_spec and card["object"] == "model" and card["indexed_images"] == NUM_SCENES
    assert (card["embed_dim"], card["context_length"], card["family"]) == (64, 248, "longclip")
    assert strict.get("/v1/models").json()["data"][0]["id"] == "tiny"


def test_text_embeddings_match_the_encoder(client, encoder):
    r = client.post("/v1/embeddings", json={"input": ["a cat", "a red circle above a blue square"]})
    body = r.json()
    assert r.status_code == 200 and body["object"] == "list" and [d["index"] for d in body["data"]] == [0, 1]
    got = np.array([d["embedding"] for d in body["data"]], np.float32)
    assert np.allclose(got, encoder.encode_text(["a cat", "a red circle above a blue square"]).numpy(), atol=1e-6)
    tokens = sum(encoder.tokenizer.count_tokens(t) for t in ["a cat", "a red circle above a blue square"])
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    b64 = client.post("/v1/embeddings", json={"input": "a cat", "encoding_format": "base64"}).json()["data"][0]
    assert np.allclose(np.frombuffer(base64.b64decode(b64["embedding"]), "<f4"), got[0], atol=1e-6)


def test_long_texts_need_truncate(client, encoder):
    message = error(client.post("/v1/embeddings", json={"input": ["ok", LONG]}), 400, "context_length_exceeded")
    assert f"input 1 is {encoder.tokenizer.count_tokens(LONG)} tokens" in message and "truncate" in message
    r = client.post("/v1/embeddings", json={"input": LONG, "truncate": True})
    assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] == 248
    want = encoder.encode_text([LONG], truncate=True)[0].numpy()
    assert np.allclose(r.json()["data"][0]["embedding"], want, atol=1e-6)


@pytest.mark.parametrize(
    "body,status,code",
    [
        ({"input": []}, 400, "empty_input"),
        ({"input": ""}, 400, "empty_input"),
        ({"input": ["a", "  "]}, 400, "empty_input"),
        ({"input": ["x"] * (OPENAI_MAX_INPUTS + 1)}, 400, "too_many_inputs"),
        ({"input": [1, 2, 3]}, 422, "invalid_request"),
        ({"input": "a", "encoding_format": "int8"}, 422, "invalid_request"),
        ({"input": "a", "truncat": True}, 422, "invalid_request"),
        ({}, 422, "invalid_request"),
        ({"input": "a", "model": "text-embedding-3-small"}, 404, "model_not_found"),
    ],
)
def test_text_embedding_errors(client, body, status, code):
    error(client.post("/v1/embeddings", json=body), status, code)


def test_malformed_json_and_unknown_routes(client):
    error(client.post("/v1/embeddings", content=b"{not json", headers={"content-type": "application/json"}), 422)
    error(client.get("/v1/nothing"), 404)
    error(client.get("/v1/embeddings"), 405)


def test_image_embeddings_multipart_and_json(client, encoder, scene_folder):
    png = scene_png(scene_folder)
    want = encoder.encode_image([Image.open(scene_folder / "scene_001.png").convert("RGB")])[0].numpy()
    files = [("files", ("a.png", png, "image/png")), ("files", ("b.png", png, "image/png"))]
    r = client.post("/v1/embeddings/image", files=files, data={"encoding_format": "base64"})
    assert r.status_code == 200 and len(r.json()["data"]) == 2
    assert np.allclose(np.frombuffer(base64.b64decode(r.json()["data"][1]["embedding"]), "<f4"), want, atol=1e-6)
    for item in (data_url(png), base64.b64encode(png).decode()):
        r = client.post("/v1/embeddings/image", json={"input": [item]})
        assert r.status_code == 200 and np.allclose(r.json()["data"][0]["embedding"], want, atol=1e-6)


def test_image_embedding_errors(client, strict, scene_folder):
    png = scene_png(scene_folder)
    post = lambda c, body: c.post("/v1/embeddings/image", json=body)  # noqa: E731
    error(post(client, {"input": "data:image/png;base64,@@@"}), 400, "invalid_base64")
    error(post(client, {"input": ["Zm9v!"]}), 400, "invalid_base64")
    error(post(client, {"input": "data:image/png,rawbytes"}), 400, "invalid_base64")
    assert "not a readable image" in error(post(client, {"input": [base64.b64encode(b"%PDF-1.4").decode()]}), 400)
    error(post(client, {"input": [data_url(png[:80])]}), 400, "invalid_image")
    error(post(client, {"input": [data_url(png_header_only(30_000, 30_000))]}), 413, "image_too_large")
    error(post(strict, {"input": [data_url(png_bytes(Image.new("RGB", (65, 64))))]}), 413, "image_too_large")
    error(post(strict, {"input": [data_url(png)] * 3}), 400, "too_many_inputs")
    error(post(client, {"input": []}), 400, "empty_input")
    error(post(client, {"input": "x", "size": 3}), 422, "invalid_request")
    error(client.post("/v1/embeddings/image", content=png, headers={"content-type": "image/png"}), 415)
    error(client.post("/v1/embeddings/image", files=[("files", ("a.png", b"GIF89a?", "image/gif"))]), 400, "invalid_image")
    error(client.post("/v1/embeddings/image", files=[("files", (None, b"a text field"))]), 400)
    error(client.post("/v1/embeddings/image", data={"model": "tiny"}, files=[("other", ("a", b"x"))]), 400, "empty_input")
    too_many = [("files", (f"{i}.png", png, "image/png")) for i in range(3)]
    error(strict.post("/v1/embeddings/image", files=too_many), 400)


def test_body_size_limit(strict):
    big = {"input": "word " * 5000}
    error(strict.post("/v1/embeddings", json=big), 413, "request_too_large")
    chunked = strict.post("/v1/embeddings", content=iter([b'{"input": "', b"w" * 25_000, b'"}']),
                          headers={"content-type": "application/json"})
    error(chunked, 413, "request_too_large")
    assert strict.post("/v1/embeddings", content=iter([b'{"input": "', b"small", b'"}']),
                       headers={"content-type": "application/json"}).status_code == 200


def test_search_by_text_image_vector_with_filter(client, built_index, encoder, scene_folder):
    r = client.post("/v1/search", json={"text": "a large red circle", "k": 3})
    body = r.json()
    assert r.status_code == 200
    assert [h["id"] for h in body["data"]] == [h.id for h in built_index.search("a large red circle", k=3)]
    assert body["usage"]["prompt_tokens"] == encoder.tokenizer.count_tokens("a large red circle")
    top = client.post("/v1/search", json={"image": data_url(scene_png(scene_folder)), "k": 1}).json()["data"][0]
    assert top["id"] == str(scene_folder / "scene_001.png") and top["score"] == pytest.approx(1, abs=1e-5)
    assert top["metadata"] == {"split": "odd", "n": 1} and top["caption"].startswith("In the")
    vector = np.random.default_rng(0).standard_normal(64).tolist()
    hits = client.post("/v1/search", json={"vector": vector, "k": 20, "filter": {"split": "even"}}).json()["data"]
    assert len(hits) == NUM_SCENES // 2 and all(h["metadata"]["split"] == "even" for h in hits)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)


@pytest.mark.parametrize(
    "body,status,code",
    [
        ({}, 422, "invalid_request"),
        ({"text": "a", "vector": [0.0] * 64}, 422, "invalid_request"),
        ({"text": "a", "k": 0}, 422, "invalid_request"),
        ({"text": "a", "k": 1001}, 422, "invalid_request"),
        ({"text": " "}, 400, "empty_input"),
        ({"text": LONG}, 400, "context_length_exceeded"),
        ({"vector": [1.0] * 63}, 400, "invalid_query"),
        ({"vector": [0.0] * 64}, 400, "invalid_query"),
        ({"text": "a", "filter": {"bad key": 1}}, 400, "invalid_query"),
        ({"text": "a", "filter": {"k": [1, 2]}}, 422, "invalid_request"),
        ({"image": "not base64!"}, 400, "invalid_base64"),
        ({"image": data_url(b"not an image")}, 400, "invalid_image"),
    ],
)
def test_search_errors(client, body, status, code):
    error(client.post("/v1/search", json=body), status, code)


def test_search_without_index(strict):
    error(strict.post("/v1/search", json={"text": "a"}), 404, "no_index")


def test_api_key(strict):
    anonymous = {"Authorization": ""}
    for method, path in (("get", "/v1/models"), ("post", "/v1/embeddings"), ("post", "/v1/search")):
        r = getattr(strict, method)(path, headers=anonymous, **({"json": {"input": "a"}} if method == "post" else {}))
        error(r, 401, "missing_api_key")
        assert r.headers["www-authenticate"] == "Bearer"
    error(strict.post("/v1/embeddings", json={"input": "a"}, headers={"Authorization": "Bearer wrong"}), 401,
          "invalid_api_key")
    error(strict.post("/v1/embeddings/image", json={"input": "a"}, headers={"Authorization": "Basic czNjcmV0"}), 401)
    assert strict.get("/health", headers=anonymous).status_code == 200
    assert strict.post("/v1/embeddings", json={"input": "a", "model": "tiny"}).status_code == 200


def test_concurrent_requests_are_micro_batched(client, encoder):
    texts = [f"a small green triangle number {i}" for i in range(16)]
    batcher = client.app.state.service.text
    before = batcher.calls
    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda t: client.post("/v1/embeddings", json={"input": t}), texts))
    assert all(r.status_code == 200 for r in responses)
    assert batcher.calls - before < len(texts)
    got = np.array([r.json()["data"][0]["embedding"] for r in responses], np.float32)
    assert np.allclose(got, encoder.encode_text(texts).numpy(), atol=1e-5)


def test_openapi_documents_routes_errors_and_auth(client, strict):
    spec = client.get("/openapi.json").json()
    assert set(spec["paths"]) == {"/health", "/v1/models", "/v1/embeddings", "/v1/embeddings/image", "/v1/search"}
    image = spec["paths"]["/v1/embeddings/image"]["post"]
    assert set(image["requestBody"]["content"]) == {"multipart/form-data", "application/json"}
    for path in ("/v1/embeddings", "/v1/embeddings/image", "/v1/search"):
        responses = spec["paths"][path]["post"]["responses"]
        assert {"200", "400", "401", "413", "422"} <= set(responses)
        assert responses["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")
    assert "truncate" in spec["components"]["schemas"]["EmbeddingRequest"]["properties"]
    assert "securitySchemes" not in spec.get("components", {})
    secured = strict.get("/openapi.json").json()
    assert "HTTPBearer" in secured["components"]["securitySchemes"]
    assert secured["paths"]["/v1/search"]["post"]["security"] == [{"HTTPBearer": []}]
