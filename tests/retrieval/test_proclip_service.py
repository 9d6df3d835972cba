"""The embedding service serves a ProCLIP (LLM tokenizer, its own pad id and context) like any other encoder."""

import numpy as np
from fastapi.testclient import TestClient
from proclip_fixtures import tiny_proclip

from vision_long import load_encoder
from vision_long.checkpoints import save_native
from vision_long.retrieval.api import ServeConfig, create_app


def test_proclip_text_and_image_embeddings(tiny_llm_dir, tmp_path, scene_folder):
    spec = f"proclip:{save_native(tiny_proclip(tiny_llm_dir), tmp_path / 'pro')}"
    encoder = load_encoder(spec)
    texts = ["a red circle", "in the bottom-right cell there is a small dotted green star with a black outline"]
    with TestClient(create_app(encoder, spec, None, ServeConfig(max_wait_ms=5))) as client:
        card = client.get("/v1/models").json()["data"][0]
        assert (card["family"], card["context_length"], card["embed_dim"]) == ("proclip", 64, 16)
        body = client.post("/v1/embeddings", json={"input": texts}).json()
        got = np.array([d["embedding"] for d in body["data"]], np.float32)
        assert np.allclose(got, encoder.encode_text(texts).numpy(), atol=1e-6)
        assert body["usage"]["prompt_tokens"] == sum(encoder.tokenizer.count_tokens(t) for t in texts)

        long = " ".join(["a small green star in a cell."] * 20)
        r = client.post("/v1/embeddings", json={"input": long})
        assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
        r = client.post("/v1/embeddings", json={"input": long, "truncate": True})
        assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] == 64

        png = (scene_folder / "scene_001.png").read_bytes()
        r = client.post("/v1/embeddings/image", files=[("files", ("a.png", png, "image/png"))])
        assert r.status_code == 200 and len(r.json()["data"][0]["embedding"]) == 16
