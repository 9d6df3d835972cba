"""Long prompts for diffusers pipelines: LongAlign segments, Long-CLIP, chunking; segment-level CLIP scores.

    from vision_long.diffusion import encode_long_prompt
    kwargs = encode_long_prompt(pipe, long_prompt, negative_prompt="blurry", method="segments")
    image = pipe(**kwargs, num_inference_steps=25).images[0]
"""

from vision_long.diffusion.generation import (
    GenerationRequest,
    GenerationResult,
    generate,
    prompt_report,
)
from vision_long.diffusion.pipelines import (
    PipelineError,
    detect_layout,
    load_pipeline,
    pipeline_kind,
)
from vision_long.diffusion.prompts import METHODS, PromptError, encode_long_prompt
from vision_long.diffusion.scoring import (
    ScoreParts,
    decompose_scores,
    reweighted_score,
    segment_clip_score,
    segment_text_embeddings,
)
from vision_long.diffusion.segments import (
    SegmentOptions,
    encode_segment_hidden_states,
    merge_segments,
    pad_embedding,
    split_segments,
)

__all__ = [
    "METHODS",
    "GenerationRequest",
    "GenerationResult",
    "PipelineError",
    "PromptError",
    "ScoreParts",
    "SegmentOptions",
    "decompose_scores",
    "detect_layout",
    "encode_long_prompt",
    "encode_segment_hidden_states",
    "generate",
    "load_pipeline",
    "merge_segments",
    "pad_embedding",
    "pipeline_kind",
    "prompt_report",
    "reweighted_score",
    "segment_clip_score",
    "segment_text_embeddings",
    "split_segments",
]
