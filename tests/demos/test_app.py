"""The page served on 127.0.0.1 and driven like a user would: every endpoint through `gradio_client`, and each tab
rendered by a headless Chromium."""

import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from vision_long.demo.app import TAB_TITLES, TABS, launch
from vision_long.demo.browser import WINDOW, chromium_path, screenshot_tabs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def url(backend):
    app = launch(backend, port=free_port(), block=False)
    yield app.local_url.rstrip("/")
    app.close()


@pytest.fixture(scope="module")
def client(url):
    return Client(url, verbose=False)


def test_binds_to_localhost_only(url):
    assert url.startswith("http://127.0.0.1:")


def test_search_endpoint_returns_the_ranked_gallery_and_the_cut(client, backend):
    query = backend.example_query()
    gallery, zones, summary = client.predict(query, None, 4, api_name="/search")
    assert len(gallery) == 4
    scores = [float(item["caption"].split()[1]) for item in gallery]
    assert scores == sorted(scores, reverse=True)
    assert [item["caption"].split(".")[0] for item in gallery] == ["1", "2", "3", "4"]
    assert scores == pytest.approx(backend.search(query, k=4).scores, abs=1e-3)
    assert Image.open(gallery[0]["image"]).size == (128, 128)
    assert "".join(z["token"] for z in zones) == query and zones[-1]["class_or_confidence"]
    assert "tokens" in summary


def test_generate_endpoints_give_two_images_of_the_pipeline_size(client, backend):
    prompt, truth = client.predict(2, api_name="/new_prompt")
    assert prompt == backend.example_prompt(2)[0] and Image.open(truth).size == (128, 128)
    baseline, image, segments, summary = client.predict(prompt, "segments", 1, 2, api_name="/generate")
    size = backend.pipeline().unet.config.sample_size * backend.pipeline().vae_scale_factor
    assert Image.open(baseline).size == Image.open(image).size == (size, size)
    assert len(segments["data"]) == prompt.count(".") and "segments merges" in summary


def test_ask_endpoints_answer_and_draw_the_crops(client, backend):
    image, question = client.predict(1, api_name="/new_scene")
    assert question == backend.example_scene(1)[1]
    answer, crops, scores, summary = client.predict(handle_file(image), question, "v1", api_name="/ask")
    assert answer.strip() and answer == backend.ask(Image.open(image), question, "v1").answer
    assert Image.open(crops).size == Image.open(image).size
    assert len(scores["data"]) > 0 and "image tokens" in summary


def test_bad_input_comes_back_as_a_message(client):
    with pytest.raises(Exception, match="type a description or upload an image"):
        client.predict("", None, 4, api_name="/search")
    with pytest.raises(Exception, match="upload an image or press 'New scene'"):
        client.predict(None, "what?", "text", api_name="/ask")
    with pytest.raises(Exception, match="not in the list of choices"):  # gradio checks the radio itself
        client.predict(None, "what?", "closer", api_name="/ask")


@pytest.mark.skipif(chromium_path() is None, reason="no chromium on PATH (.ci/run installs Debian's chromium)")
def test_a_real_browser_renders_each_tab_and_its_results(url, tmp_path):
    pytest.importorskip("playwright")
    shots = screenshot_tabs(url, tmp_path, run=True, timeout_s=120)
    assert sorted(shots) == sorted(TABS)
    for tab, path in shots.items():
        pixels = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
        assert pixels.shape[1] == WINDOW["width"] and pixels.std() > 10, f"the {tab} screenshot is blank"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(url, wait_until="networkidle")
        assert [page.get_by_role("tab", name=title).is_visible() for title in TAB_TITLES.values()] == [True] * 3
        browser.close()


def test_the_script_launcher_is_the_demo_command():
    """`python demos/app.py` takes `vision-long demo`'s options (its --help is the command's)."""
    script = Path(__file__).parents[2] / "demos" / "app.py"
    done = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage: vision-long demo") and "--lmm LMM" in done.stdout
