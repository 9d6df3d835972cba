"""The Gradio page over `DemoBackend`: tabs Search, Generate and Ask.

Every button is also an API endpoint (`gradio_client`: `/search`, `/generate`, `/new_prompt`, `/ask`,
`/new_scene`). Each tab opens filled with an example (a gallery caption, a ShapeScenes prompt with its scene, a VQA
scene with a question). Requests queue with one worker per tab, so a long generation never runs twice at once on a
small machine; bad input comes back as a message, never a traceback.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from vision_long.demo.backend import (
    CUT,
    GENERATION_METHODS,
    KEPT,
    LONG_ONLY,
    MAX_RESULTS,
    ZOOM_MODES,
    DemoBackend,
    DemoInputError,
)

TABS = ("search", "generate", "ask")
TAB_TITLES = {"search": "Search", "generate": "Generate", "ask": "Ask"}
ZONE_COLORS = {KEPT: "#b7e4c7", LONG_ONLY: "#ffd166", CUT: "#ef8a8a"}
MAX_UPLOAD = "20mb"
QUEUE_SIZE = 32
INTRO = (
    "# vision_long\n"
    "CLIP reads 77 tokens. **Search** a gallery with a paragraph, **Generate** from a long prompt, **Ask** about "
    "small details with zoom-in. Everything runs locally on the embedded ShapeScenes models."
)
# Generated images are small (64 px for the embedded pipeline): shown scaled to their frame with crisp pixels,
# while the API returns them at their true size.
CSS = ".pixelated img { image-rendering: pixelated; width: 100%; height: 100%; object-fit: contain; }"


def _user_errors(fn):
    """Turn DemoInputError / ValueError / FileNotFoundError into a gr.Error the page shows as a message."""

    def wrapper(*args):
        try:
            return fn(*args)
        except (DemoInputError, ValueError, FileNotFoundError) as e:
            raise gr.Error(str(e)) from None

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


def build_app(backend: DemoBackend) -> gr.Blocks:
    """The page: one tab per back end, each button an API endpoint named after it."""

    @_user_errors
    def search(text: str, image: Any, k: float):
        """Rank the gallery for a long text (or, with no text, an image); returns gallery, token zones, summary."""
        result = backend.search(text, image, int(k))
        return result.gallery, result.zones, result.summary

    @_user_errors
    def generate(prompt: str, method: str, seed: float, steps: float):
        """The prompt through `truncate` and through `method`, same seed: two images, the segments, a summary."""
        pair = backend.generate(prompt, method, int(seed), int(steps))
        return pair.baseline, pair.image, pair.segments, pair.summary

    @_user_errors
    def new_prompt(seed: float):
        """A ShapeScenes caption and the scene it describes."""
        return backend.example_prompt(int(seed))

    @_user_errors
    def ask(image: Any, question: str, zoom: str):
        """The answer, the image with the zoom-in crops outlined, the chosen crops' scores, a summary."""
        result = backend.ask(image, question, zoom)
        return result.answer, result.image, result.scores, result.summary

    @_user_errors
    def new_scene(seed: float):
        """A large ShapeScenes image with small objects, and a question about one cell."""
        return backend.example_scene(int(seed))

    with gr.Blocks(title="vision_long demo") as app:
        gr.Markdown(INTRO)
        with gr.Tabs():
            with gr.Tab(TAB_TITLES["search"], id="search"):
                with gr.Row():
                    with gr.Column(scale=2):
                        query = gr.Textbox(label="Long text query", lines=6, value=backend.example_query())
                        query_image = gr.Image(label="…or an image query (used when the text is empty)", type="pil",
                                               height=160)
                        k = gr.Slider(1, MAX_RESULTS, value=12, step=1, label="Results")
                        search_button = gr.Button("Search", variant="primary")
                    with gr.Column(scale=3):
                        zones = gr.HighlightedText(label="What each model reads", color_map=ZONE_COLORS,
                                                   show_legend=True, combine_adjacent=True)
                        search_summary = gr.Markdown()
                gallery = gr.Gallery(label="Results, best first", columns=6, height="auto", format="png")
            with gr.Tab(TAB_TITLES["generate"], id="generate"), gr.Row():
                with gr.Column(scale=2):
                    example_prompt, example_truth = backend.example_prompt(0)
                    prompt = gr.Textbox(label="Long prompt", lines=6, value=example_prompt)
                    with gr.Row():
                        method = gr.Dropdown(list(GENERATION_METHODS), value="segments", label="Method")
                        gen_seed = gr.Number(0, precision=0, label="Seed")
                        steps = gr.Slider(1, 100, value=backend.config.steps, step=1, label="Steps")
                    with gr.Row():
                        generate_button = gr.Button("Generate", variant="primary")
                        prompt_seed = gr.Number(0, precision=0, label="Scene", min_width=80)
                        prompt_button = gr.Button("New ShapeScenes prompt")
                    truth = gr.Image(example_truth, label="The scene the prompt describes", type="pil",
                                     height=160, interactive=False)
                with gr.Column(scale=3):
                    with gr.Row():
                        baseline = gr.Image(label="truncate (77 tokens)", type="pil", height=288, interactive=False,
                                            elem_classes="pixelated")
                        generated = gr.Image(label="selected method", type="pil", height=288, interactive=False,
                                             elem_classes="pixelated")
                    gen_summary = gr.Markdown()
                    segments = gr.Dataframe(headers=["#", "tokens", "segment"], label="Segments",
                                            interactive=False, wrap=True)
            with gr.Tab(TAB_TITLES["ask"], id="ask"), gr.Row():
                with gr.Column():
                    example_image, example_question = backend.example_scene(0)
                    ask_image = gr.Image(example_image, label="Image", type="pil", height=384)
                    with gr.Row():
                        scene_seed = gr.Number(0, precision=0, label="Scene", min_width=80)
                        scene_button = gr.Button("New scene")
                    question = gr.Textbox(label="Question", lines=2, value=example_question)
                    zoom = gr.Radio(list(ZOOM_MODES), value="text", label="Zoom-in")
                    ask_button = gr.Button("Ask", variant="primary")
                with gr.Column():
                    answer = gr.Textbox(label="Answer", interactive=False)
                    crops = gr.Image(label="Crops that reached the language model", type="pil",
                                     interactive=False, height=384)
                    ask_summary = gr.Markdown()
                    crop_scores = gr.Dataframe(headers=["rank", "box", "score"], label="Zoom-in crops",
                                               interactive=False)

        search_button.click(search, [query, query_image, k], [gallery, zones, search_summary], api_name="search",
                            concurrency_id="search")
        generate_button.click(generate, [prompt, method, gen_seed, steps], [baseline, generated, segments, gen_summary],
                              api_name="generate", concurrency_id="generate")
        prompt_button.click(new_prompt, [prompt_seed], [prompt, truth], api_name="new_prompt")
        ask_button.click(ask, [ask_image, question, zoom], [answer, crops, crop_scores, ask_summary], api_name="ask",
                         concurrency_id="ask")
        scene_button.click(new_scene, [scene_seed], [ask_image, question], api_name="new_scene")

    app.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE)
    return app


def launch(backend: DemoBackend, host: str = "127.0.0.1", port: int = 7860, block: bool = True) -> gr.Blocks:
    """Build the page and serve it on `host`:`port` (127.0.0.1 by default: only this machine can reach it)."""
    app = build_app(backend)
    app.launch(server_name=host, server_port=port, prevent_thread_lock=not block, max_file_size=MAX_UPLOAD,
               show_error=True, quiet=not block, footer_links=["api"], css=CSS)
    return app
