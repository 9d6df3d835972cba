"""Text-to-image generation with a long prompt, as one library call: load, encode, denoise, save PNG + JSON.

    from vision_long.diffusion import GenerationRequest, generate
    result = generate(GenerationRequest(prompt=long_text, method="segments"), "out.png", pipeline="./sd15")

The JSON sidecar (`out.json` beside `out.png`) records the prompt, method, seed, sampler settings, the prompt's
segments and token counts, the conditioning shape and the timings of each step.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from vision_long.diffusion.pipelines import (
    load_pipeline,
    load_text_encoder,
    pipeline_kind,
)
from vision_long.diffusion.prompts import (
    LLM_METHOD,
    METHODS,
    PromptError,
    check_prompts,
    encode_long_prompt,
)
from vision_long.diffusion.segments import (
    SEGMENT_CONTEXT,
    SegmentOptions,
    merged_length,
    split_segments,
    token_counter,
)


@dataclass
class GenerationRequest:
    """What to generate: one prompt and the sampler settings (width/height None: the UNet's native size)."""

    prompt: str
    negative_prompt: str = ""
    method: str = "segments"
    steps: int = 25
    guidance: float = 7.5
    seed: int = 0
    width: int | None = None
    height: int | None = None
    options: SegmentOptions = field(default_factory=SegmentOptions)

    def check(self) -> None:
        """Raise PromptError for an unusable request, before anything is loaded."""
        check_prompts(self.prompt)
        if self.method not in METHODS:
            raise PromptError(f"unknown method {self.method!r}; expected one of {', '.join(METHODS)}")
        if self.steps < 1:
            raise PromptError(f"steps must be >= 1, got {self.steps}")
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise PromptError(f"{name} must be positive, got {value}")


@dataclass
class GenerationResult:
    image: object  # PIL.Image.Image
    image_path: Path
    sidecar_path: Path
    record: dict


def prompt_report(
    pipe, prompt: str, method: str, options: SegmentOptions | None = None, context: int | None = None
) -> dict:
    """Token counts of `prompt` under the pipeline's tokenizer (start/end included) and, for "segments", its
    segments; `truncated` says whether the method drops tokens (context: the longclip encoder's positions)."""
    options = options or SegmentOptions()
    count = token_counter(pipe.tokenizer)
    tokens = count(prompt) + 2
    report: dict = {"tokens": tokens, "segments": None}
    if method in ("segments", LLM_METHOD):  # segments+llm: the same CLIP segments, then the LLM's tokens
        segments = split_segments(prompt, options.split_mode, count)
        lengths = [count(s) + 2 for s in segments]
        merged = merged_length([min(n, SEGMENT_CONTEXT) for n in lengths], options.first_start_only)
        report.update(segments=segments, segment_tokens=lengths, merged_tokens=merged,
                      truncated=merged > options.max_tokens or max(lengths) > SEGMENT_CONTEXT)
    elif method == "chunks":
        report["truncated"] = False
    else:
        report["truncated"] = tokens > (context if method == "longclip" else pipe.tokenizer.model_max_length)
    return report


def _size(pipe, request: GenerationRequest) -> tuple[int, int]:
    native = pipe.unet.config.sample_size * pipe.vae_scale_factor
    width, height = request.width or native, request.height or native
    if width % pipe.vae_scale_factor or height % pipe.vae_scale_factor:
        raise PromptError(f"width and height must be multiples of {pipe.vae_scale_factor}, got {width}x{height}")
    return width, height


def _versions() -> dict:
    import diffusers

    import vision_long

    return {"vision_long": vision_long.__version__, "diffusers": diffusers.__version__, "torch": torch.__version__}


def generate(
    request: GenerationRequest,
    out: str | Path,
    pipeline=None,
    longclip_text_encoder=None,
    device: str | None = None,
    dtype: torch.dtype | None = None,
    progress: bool = True,
) -> GenerationResult:
    """Generate one image for `request` and write `out` (a .png) and its JSON sidecar (`out` with .json).

    pipeline: a loaded SD-1.x/SDXL pipeline, a local diffusers directory, or None for the embedded default.
    longclip_text_encoder: a Long-CLIP `CLIPTextModel` or its directory (method "longclip" only).
    Raises PromptError / PipelineError (ValueErrors with one-line messages) for unusable inputs.
    """
    request.check()
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise PromptError(f"{out}: the output must be a .png file")
    timings = {}
    start = time.perf_counter()
    if pipeline is None or isinstance(pipeline, (str, Path)):
        source = str(pipeline) if pipeline is not None else "default"
        pipe = load_pipeline(pipeline, device=device, dtype=dtype)
    else:
        source, pipe = type(pipeline).__name__, pipeline.to(device) if device else pipeline
    kind = pipeline_kind(pipe)
    longclip, context = {}, None
    if request.method == "longclip":
        if longclip_text_encoder is None:
            raise PromptError("method 'longclip' needs a Long-CLIP text encoder (--longclip DIR)")
        te, tok = load_text_encoder(longclip_text_encoder, None, pipe._execution_device, pipe.unet.dtype)
        longclip, context = {"longclip_text_encoder": te, "longclip_tokenizer": tok}, te.config.max_position_embeddings
    width, height = _size(pipe, request)
    timings["load_s"] = time.perf_counter() - start

    start = time.perf_counter()
    kwargs = encode_long_prompt(pipe, request.prompt, request.negative_prompt, request.method,
                                options=request.options, **longclip)
    timings["encode_s"] = time.perf_counter() - start

    start = time.perf_counter()
    pipe.set_progress_bar_config(disable=not progress, desc=f"denoise ({request.method})")
    generator = torch.Generator("cpu").manual_seed(request.seed)
    image = pipe(**kwargs, num_inference_steps=request.steps, guidance_scale=request.guidance, generator=generator,
                 width=width, height=height, output_type="pil").images[0]
    timings["denoise_s"] = time.perf_counter() - start

    start = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out, format="PNG")
    record = {
        **{k: v for k, v in asdict(request).items() if k != "options"},
        "width": width, "height": height, "segment_options": asdict(request.options),
        "pipeline": source, "pipeline_kind": kind,
        "prompt_embeds_shape": list(kwargs["prompt_embeds"].shape),
        "prompt_report": prompt_report(pipe, request.prompt, request.method, request.options, context),
        "negative_prompt_tokens": token_counter(pipe.tokenizer)(request.negative_prompt) + 2,
        "versions": _versions(),
    }
    timings["save_s"] = time.perf_counter() - start
    timings["total_s"] = sum(timings.values())
    record["timings_s"] = {k: round(v, 4) for k, v in timings.items()}
    sidecar = out.with_suffix(".json")
    sidecar.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return GenerationResult(image=image, image_path=out, sidecar_path=sidecar, record=record)
