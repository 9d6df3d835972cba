"""LongAlign segment encoding runs packed (real tokens only) with the padded path's results."""

import pytest
import torch

from vision_long.diffusion.prompts import encode_long_prompt
from vision_long.diffusion.segments import (
    HiddenLayer,
    SegmentOptions,
    encode_segment_hidden_states,
    encode_segment_hidden_states_packed,
    encode_segments,
    split_segments,
)


@pytest.mark.parametrize("layer", [HiddenLayer(), HiddenLayer(-2, False), HiddenLayer(-2, True)])
def test_packed_segment_states_equal_padded(sd15, prompt_400, layer):
    segments = split_segments(prompt_400) + ["", "one more short sentence"]
    with torch.no_grad():
        padded = encode_segment_hidden_states(sd15.text_encoder, sd15.tokenizer, segments, layer)
        packed = encode_segment_hidden_states_packed(sd15.text_encoder, sd15.tokenizer, segments, layer)
    assert torch.equal(padded.lengths, packed.lengths)
    for row, n in enumerate(packed.lengths.tolist()):
        assert (packed.hidden[row, :n] - padded.hidden[row, :n]).abs().max() <= 1e-5
    assert (packed.pooled - padded.pooled).abs().max() <= 1e-5


@pytest.mark.parametrize("pipe_name", ["sd15", "sdxl"])
def test_encode_long_prompt_packed_equals_padded(pipe_name, request, prompt_400):
    pipe = request.getfixturevalue(pipe_name)
    with torch.no_grad():
        packed = encode_long_prompt(pipe, [prompt_400, "a cat. a dog."], "blurry, low quality")
        padded = encode_long_prompt(pipe, [prompt_400, "a cat. a dog."], "blurry, low quality",
                                    options=SegmentOptions(packed=False))
    assert packed.keys() == padded.keys()
    for key in packed:
        assert (packed[key] - padded[key]).abs().max() <= 1e-5, key


def test_training_the_encoder_uses_the_differentiable_path(sd15):
    sd15.text_encoder.requires_grad_(True)
    try:
        embeds, _ = encode_segments(sd15.text_encoder, sd15.tokenizer, ["a red circle. a blue square."])
        embeds.sum().backward()
        assert next(sd15.text_encoder.parameters()).grad is not None
    finally:
        sd15.text_encoder.requires_grad_(False)
        sd15.text_encoder.zero_grad(set_to_none=True)
