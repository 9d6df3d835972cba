"""The image tower of one of our CLIPs as a transformers `CLIPVisionModel`: the LMM's vision tower.

The weights are renamed with `encoders.hf_format` (the same OpenAI -> transformers key map the `CLIPModel` export
uses) and the architecture comes from `hf_format.hf_config_from`, so the tower computes exactly what
`LongCLIP.encode_pixels` computes: with `projection=True`, `image_embeds` equals `encode_pixels(pixels)`; without,
`pooler_output @ encoder.visual.proj` does, and `hidden_states` are the ViT's residual stream.

`layers` keeps only the first blocks, as LLaVA does when it reads a penultimate layer: a tower cut to L - 1 blocks
gives as `hidden_states[-1]` what the whole tower gives as `hidden_states[-2]`, for 1/L less compute and weights.
"""

from __future__ import annotations

from transformers import CLIPVisionModel, CLIPVisionModelWithProjection

from vision_long.checkpoints import load_state_dict_checked
from vision_long.encoders.hf_format import hf_config_from, openai_to_hf_state_dict
from vision_long.encoders.loading import load_encoder
from vision_long.encoders.longclip import LongCLIP

HF_VISION_PREFIX = "vision_model."  # transformers' CLIPModel prefix of image-tower keys
HF_PROJECTION = "visual_projection.weight"


def vision_tower_from_clip(
    encoder: LongCLIP | str, projection: bool = False, layers: int | None = None
) -> CLIPVisionModel | CLIPVisionModelWithProjection:
    """A transformers vision tower holding the image tower of `encoder` (a `LongCLIP` or a `load_encoder` spec
    such as "default" or "default-77"), in fp32 on the CPU, in eval mode.

    projection=False gives a `CLIPVisionModel` (what `ZoomLMM` composes); True gives a
    `CLIPVisionModelWithProjection` whose `image_embeds` (Tensor[N, D]) equal `encoder.encode_pixels`.
    `layers` (default: all) keeps the first `layers` transformer blocks; `hidden_states` (each Tensor[N, 1 + G*G,
    W]) then stop there. Both take the encoder's preprocessing (OpenAI mean/std at `encoder.image_size` pixels).
    """
    if isinstance(encoder, str):
        encoder = load_encoder(encoder)
    if not isinstance(encoder, LongCLIP):
        raise TypeError(
            f"expected a LongCLIP (a CLIP of this package, e.g. load_encoder('default')) or a spec, "
            f"got {type(encoder).__name__}"
        )
    total = encoder.config.vision.layers
    layers = total if layers is None else layers
    if not isinstance(layers, int) or not 1 <= layers <= total:
        raise ValueError(f"layers must be an int in [1, {total}] (the image tower's blocks), got {layers!r}")
    config = hf_config_from(encoder).vision_config
    config.num_hidden_layers = layers
    dropped = tuple(f"visual.transformer.resblocks.{i}." for i in range(layers, total))
    openai_state = {
        k: v.detach().float().cpu()
        for k, v in encoder.state_dict().items()
        if k.startswith("visual.") and not k.startswith(dropped)
    }
    hf_state = openai_to_hf_state_dict(openai_state)  # vision_model.* and visual_projection.weight
    tower = CLIPVisionModelWithProjection(config) if projection else CLIPVisionModel(config)
    if not projection:
        hf_state.pop(HF_PROJECTION)
    if not any(key.startswith(HF_VISION_PREFIX) for key in tower.state_dict()):
        hf_state = {key.removeprefix(HF_VISION_PREFIX): value for key, value in hf_state.items()}
    load_state_dict_checked(tower, hf_state, source=f"the image tower of {type(encoder).__name__}")
    return tower.eval()
