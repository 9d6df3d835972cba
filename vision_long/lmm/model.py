"""A Dragonfly-style vision-language model over any transformers CLIP vision tower and causal LM (notes §1).

Crops of an image (`processing.multi_resolution_crops`) go through a `CLIPVisionModel` one by one; its penultimate
layer (CLS kept, as LLaVA and Dragonfly) is standardized per channel (`feature_mean` / `feature_std`, measured on
training crops by `set_feature_statistics`) and projected to the LM's width by a Linear layer (Dragonfly) or a
2-layer GELU MLP (LLaVA-1.5/NeXT). Medium and high crops are then mean-pooled (`pool_patch_grid`); the global view
keeps every token. Every visual embedding of a crop gets the crop's place added: learned embeddings of its row and
of its column in its resolution's grid (`crop_rows`, `crop_columns`). In the LM's input the image block comes
first: per crop, one `<image>` placeholder per visual embedding and one `<crop_sep>` token (Dragonfly's per-crop
"newline"); then the prompt. Placeholders are replaced by the visual embeddings and the LM runs on `inputs_embeds`.

Why the two additions to Dragonfly's recipe (measured on ShapeScenes VQA with the default CLIP; they did not by
themselves get a small LM trained from scratch off the answer prior, see benchmarks/RESULTS.md): a frozen CLIP's
residual stream is mostly a component every crop shares (the default CLIP's penultimate layer: per-channel
spread across crops 0.27 against a mean magnitude of 1.7; projected at initialization, 0.05 against 0.42), which
the projector passes on as a near-constant embedding; and under v1 / text zoom the chosen high crops are a
different subset for every image, so without a place embedding the LM cannot tell which cell a crop shows.

Zoom modes (which crops reach the LM):
  none      the global view only
  multires  global + all medium + all high crops, pooled (Dragonfly v2)
  v1        global + medium + the top-k high crops per medium crop (Dragonfly v1's selection)
  text      global + medium + the top-k high crops by long-text CLIP similarity to the question (ours), scored
            by a learned `TextZoomHead` when the config has one (it also reads where the question points)
v1's high crops enter in row-major order, as in Dragonfly v1; text zoom's enter best first.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from open_clip.transform import image_transform
from PIL import Image
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    CLIPVisionConfig,
    CLIPVisionModel,
)

from vision_long.encoders.base import Encoder
from vision_long.encoders.batching import preprocess_images
from vision_long.encoders.loading import load_encoder
from vision_long.lmm.processing import (
    MEDIUM_LAYOUTS,
    POOLED_GRID,
    TEXT_TOP_K,
    V1_TOP_K,
    MultiResolutionConfig,
    MultiResolutionCrops,
    ZoomSelection,
    check_question,
    multi_resolution_crops,
    open_image,
    pool_patch_grid,
    select_zoom_text,
    select_zoom_v1,
)
from vision_long.lmm.zoom_head import PLACE_GRID, TextZoomHead

IMAGE_TOKEN = "<image>"  # one per visual embedding (Dragonfly: <|reserved_special_token_0|>)
SEPARATOR_TOKEN = "<crop_sep>"  # after each crop (Dragonfly: <|reserved_special_token_1|>)
ZOOM_MODES = ("none", "multires", "v1", "text")
PROJECTORS = ("linear", "mlp")  # Dragonfly's Linear; LLaVA's 2-layer GELU MLP
PENULTIMATE_LAYER = -2  # index into `hidden_states`, as LLaVA and Dragonfly
DEFAULT_PROMPT = "Question: {question} Answer:"
DEFAULT_MAX_NEW_TOKENS = 16
FEATURE_STD_FLOOR = 1e-5  # keeps a constant channel from dividing by zero when standardizing
IGNORE_INDEX = -100  # label of positions the loss skips (transformers' convention)
CROP_LEVELS = ("global", "medium", "high")  # the resolutions whose crops get place embeddings, in table order
CROP_POSITION_INIT_STD = 0.02  # as transformers' default `initializer_range` for token embeddings


@dataclass(frozen=True)
class ZoomConfig:
    """How many high crops each zoom mode keeps, the long-text CLIP (a `load_encoder` spec) for `text`, and its
    learned head: `text_dim` > 0 (the CLIP's embedding width) gives the model a `TextZoomHead` with a
    `place_grid` x `place_grid` heat map; 0 ranks crops by the CLIP similarity alone."""

    v1_k: int = V1_TOP_K  # per medium crop
    text_k: int = TEXT_TOP_K  # for the whole image
    text_encoder: str = "default"
    text_dim: int = 0
    place_grid: int = PLACE_GRID

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types; `from_dict` inverts it."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ZoomConfig:
        """The config written by `to_dict`."""
        return cls(**data)


@dataclass
class LMMConfig:
    """Everything needed to rebuild a `ZoomLMM` without its weights.

    vision / language_model: the transformers configs as dicts (`to_dict()`, the LM's with its `model_type`);
    image_token_id / separator_token_id: the ids of `IMAGE_TOKEN` / `SEPARATOR_TOKEN` in the LM's vocabulary;
    resolution.crop_size must equal the vision tower's image size.
    """

    vision: dict[str, Any]
    language_model: dict[str, Any]
    image_token_id: int
    separator_token_id: int
    projector: str = "mlp"
    vision_layer: int = PENULTIMATE_LAYER
    resolution: MultiResolutionConfig = field(default_factory=MultiResolutionConfig)
    zoom: ZoomConfig = field(default_factory=ZoomConfig)
    prompt_template: str = DEFAULT_PROMPT
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS

    def __post_init__(self) -> None:
        if self.projector not in PROJECTORS:
            raise ValueError(f"projector must be one of {PROJECTORS}, got {self.projector!r}")
        if "model_type" not in self.language_model:
            raise ValueError("language_model must be a transformers config dict with its 'model_type'")
        if self.resolution.crop_size != self.vision.get("image_size"):
            raise ValueError(
                f"resolution.crop_size ({self.resolution.crop_size}) must equal the vision tower's image_size "
                f"({self.vision.get('image_size')})"
            )
        if "{question}" not in self.prompt_template:
            raise ValueError(f"prompt_template must contain '{{question}}', got {self.prompt_template!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types; `from_dict` inverts it."""
        data = asdict(self)
        data["resolution"], data["zoom"] = self.resolution.to_dict(), self.zoom.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LMMConfig:
        """The config written by `to_dict`."""
        data = dict(data)
        data["resolution"] = MultiResolutionConfig.from_dict(data["resolution"])
        data["zoom"] = ZoomConfig.from_dict(data["zoom"])
        return cls(**data)


@dataclass(frozen=True)
class LMMAnswer:
    """An answer with what produced it: the crops, the zoom selection (None for `none` / `multires`) and the
    number of LM positions the image took (visual embeddings + separators)."""

    text: str
    zoom: str
    crops: MultiResolutionCrops
    selection: ZoomSelection | None
    image_tokens: int


class ZoomLMM(nn.Module):
    """CLIP vision tower + projector + causal LM; `generate` answers a question about an image.

    Build one from pretrained parts with `ZoomLMM.from_parts`; `ZoomLMM(config)` builds randomly initialised parts
    (what `load_native` does before loading weights). `tokenizer` is the LM's, holding the two image tokens.
    """

    family = "lmm"
    config_class = LMMConfig

    def __init__(
        self,
        config: LMMConfig,
        vision_tower: CLIPVisionModel | None = None,
        language_model: nn.Module | None = None,
        tokenizer: Any = None,
    ):
        super().__init__()
        self.config = config
        if vision_tower is None:
            vision_tower = CLIPVisionModel(CLIPVisionConfig.from_dict(config.vision))
        if language_model is None:
            lm_config = dict(config.language_model)
            lm_type = lm_config.pop("model_type")
            language_model = AutoModelForCausalLM.from_config(AutoConfig.for_model(lm_type, **lm_config))
        self.vision_tower = vision_tower
        self.language_model = language_model
        vision_width = vision_tower.config.hidden_size
        lm_width = language_model.get_input_embeddings().embedding_dim
        if config.projector == "linear":
            self.projector = nn.Linear(vision_width, lm_width)
        else:
            self.projector = nn.Sequential(nn.Linear(vision_width, lm_width), nn.GELU(), nn.Linear(lm_width, lm_width))
        # Per-channel statistics of the tower's features (identity until `set_feature_statistics`); saved.
        self.register_buffer("feature_mean", torch.zeros(vision_width))
        self.register_buffer("feature_std", torch.ones(vision_width))
        # A crop's row / column in its resolution's grid: LEVELS x `max_side` entries each (level-major).
        self.max_side = max(max(layout) for layout in MEDIUM_LAYOUTS) * config.resolution.high_factor
        self.crop_rows = nn.Embedding(len(CROP_LEVELS) * self.max_side, lm_width)
        self.crop_columns = nn.Embedding(len(CROP_LEVELS) * self.max_side, lm_width)
        nn.init.normal_(self.crop_rows.weight, std=CROP_POSITION_INIT_STD)
        nn.init.normal_(self.crop_columns.weight, std=CROP_POSITION_INIT_STD)
        patch_grid = vision_tower.config.image_size // vision_tower.config.patch_size
        if patch_grid % config.resolution.pooled_grid:
            raise ValueError(
                f"resolution.pooled_grid ({config.resolution.pooled_grid}) must divide the vision tower's "
                f"{patch_grid} x {patch_grid} patch grid"
            )
        self.preprocess = image_transform(config.resolution.crop_size, is_train=False)  # OpenAI CLIP mean/std
        zoom = config.zoom
        self.zoom_head = TextZoomHead(zoom.text_dim, zoom.place_grid) if zoom.text_dim else None
        self.tokenizer = None
        if tokenizer is not None:
            self.attach_tokenizer(tokenizer)

    @classmethod
    def from_parts(
        cls,
        vision_tower: CLIPVisionModel,
        language_model: nn.Module,
        tokenizer: Any,
        projector: str = "mlp",
        pooled_grid: int = POOLED_GRID,
        zoom: ZoomConfig | None = None,
        vision_layer: int = PENULTIMATE_LAYER,
    ) -> ZoomLMM:
        """Compose pretrained parts: adds `IMAGE_TOKEN` and `SEPARATOR_TOKEN` to `tokenizer` and resizes the LM's
        embeddings to the tokenizer's length (both in place); the projector starts random. `vision_layer` indexes
        the tower's `hidden_states` (-1 for a tower already cut after the layer to read)."""
        tokenizer.add_tokens([IMAGE_TOKEN, SEPARATOR_TOKEN], special_tokens=True)
        if len(tokenizer) != language_model.get_input_embeddings().num_embeddings:
            language_model.resize_token_embeddings(len(tokenizer))
        config = LMMConfig(
            vision=_json_dict(vision_tower.config.to_dict()),
            language_model=_json_dict(language_model.config.to_dict()),
            image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
            separator_token_id=tokenizer.convert_tokens_to_ids(SEPARATOR_TOKEN),
            projector=projector,
            vision_layer=vision_layer,
            resolution=MultiResolutionConfig(crop_size=vision_tower.config.image_size, pooled_grid=pooled_grid),
            zoom=zoom or ZoomConfig(),
        )
        return cls(config, vision_tower, language_model, tokenizer)

    def attach_tokenizer(self, tokenizer: Any) -> None:
        """Use `tokenizer` for prompts and answers; its image tokens must have the ids the config records."""
        ids = tokenizer.convert_tokens_to_ids([IMAGE_TOKEN, SEPARATOR_TOKEN])
        expected = [self.config.image_token_id, self.config.separator_token_id]
        if ids != expected:
            raise ValueError(f"tokenizer maps {IMAGE_TOKEN}, {SEPARATOR_TOKEN} to {ids}, the model expects {expected}")
        self.tokenizer = tokenizer

    @property
    def device(self) -> torch.device:
        """Where the LM's embeddings (and so the LM's inputs) live."""
        return self.language_model.get_input_embeddings().weight.device

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """The module's state dict with tensors shared between names (tied LM embeddings) copied, because
        safetensors refuses to store one storage twice; loading writes the same values into both names."""
        state = super().state_dict(*args, **kwargs)
        seen: set[int] = set()
        for name, tensor in state.items():
            pointer = tensor.untyped_storage().data_ptr()
            if pointer in seen:
                state[name] = tensor.clone()
            seen.add(pointer)
        return state

    # ---- images -> visual embeddings ---------------------------------------------------------------------
    def vision_features(self, crops: Sequence[Image.Image]) -> torch.Tensor:
        """The tower's features at `config.vision_layer` (not standardized): N crops -> Tensor[N, 1 + G*G, W_v]."""
        weight = next(self.vision_tower.parameters())
        pixels = preprocess_images(list(crops), self.preprocess).to(weight.device, weight.dtype)
        hidden = self.vision_tower(pixel_values=pixels, output_hidden_states=True).hidden_states
        return hidden[self.config.vision_layer]

    def set_feature_statistics(self, features: torch.Tensor) -> None:
        """Standardize the tower's features per channel from now on with the mean and standard deviation of
        `features` (Tensor[..., W_v], e.g. `vision_features` of training crops), so the projector sees what varies
        between crops rather than the component every crop shares."""
        flat = features.detach().reshape(-1, features.shape[-1]).to(self.feature_mean)
        self.feature_mean.copy_(flat.mean(dim=0))
        self.feature_std.copy_(flat.std(dim=0).clamp_min(FEATURE_STD_FLOOR))

    def encode_crops(self, crops: Sequence[Image.Image]) -> torch.Tensor:
        """Projected, standardized tower features of each crop: N crops -> Tensor[N, 1 + G*G, W_lm] (CLS first)."""
        features = self.vision_features(crops)
        return self.projector((features - self.feature_mean.to(features)) / self.feature_std.to(features))

    def crop_position_embeddings(self, places: Sequence[tuple[int, int, int]]) -> torch.Tensor:
        """Place embeddings of crops given as (level, row, column), level indexing `CROP_LEVELS`: Tensor[N, W_lm]."""
        index = torch.tensor(places, device=self.crop_rows.weight.device).reshape(-1, 3)
        bad_level = (index[:, 0] < 0) | (index[:, 0] >= len(CROP_LEVELS))
        bad_place = (index[:, 1:] < 0) | (index[:, 1:] >= self.max_side)
        if bad_level.any() or bad_place.any():
            raise ValueError(f"crop places must be (level < {len(CROP_LEVELS)}, row, column < {self.max_side})")
        offset = index[:, 0] * self.max_side
        return self.crop_rows(offset + index[:, 1]) + self.crop_columns(offset + index[:, 2])

    def image_features(
        self, crops: MultiResolutionCrops, zoom: str, question: str, text_encoder: Encoder | None = None
    ) -> tuple[list[torch.Tensor], ZoomSelection | None]:
        """The visual embeddings of each crop that reaches the LM under `zoom`, in order, and the zoom selection.

        Returns one Tensor[n_i, W_lm] per crop: the global view unpooled (n = 1 + G*G), every other crop pooled
        (n = 1 + P*P); then medium crops, then high crops in row-major order. Each crop's embeddings include its
        place embedding (`crop_position_embeddings`).
        """
        if zoom not in ZOOM_MODES:
            raise ValueError(f"zoom must be one of {ZOOM_MODES}, got {zoom!r}")
        if zoom == "none":
            return [self.encode_crops([crops.global_view])[0] + self.crop_position_embeddings([(0, 0, 0)])], None
        medium, high = list(crops.medium.crops), list(crops.high.crops)
        high_indices = list(range(len(high)))
        selection = None
        if zoom == "text":
            encoder = _cached_encoder(self.config.zoom.text_encoder) if text_encoder is None else text_encoder
            selection = select_zoom_text(crops, question, encoder, self.config.zoom.text_k, self.zoom_head)
            high_indices = list(selection.indices)  # best first
            high = [high[i] for i in high_indices]
        tokens = self.encode_crops([crops.global_view, *medium, *high])
        global_tokens, zoomed = tokens[:1], tokens[1:]
        if zoom == "v1":
            medium_tokens, high_tokens = zoomed[: len(medium)], zoomed[len(medium) :]
            selection = select_zoom_v1(crops, medium_tokens, high_tokens, self.config.zoom.v1_k)
            high_indices = sorted(selection.indices)
            zoomed = torch.cat([medium_tokens, high_tokens[high_indices]])
        places = [(0, 0, 0)]
        places += [(1, *divmod(i, crops.medium.columns)) for i in range(len(medium))]
        places += [(2, *divmod(i, crops.high.columns)) for i in high_indices]
        pooled = pool_patch_grid(zoomed, self.config.resolution.pooled_grid)
        positions = self.crop_position_embeddings(places)  # [crops, W_lm]
        embeddings = [crop + position for crop, position in zip([global_tokens[0], *pooled], positions, strict=True)]
        return embeddings, selection

    # ---- sequences -------------------------------------------------------------------------------------------
    def input_embeddings(
        self, features: list[torch.Tensor], question: str, answer: str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """LM input for one example: (Tensor[L, W_lm] embeddings, LongTensor[L] labels).

        The image block (per crop: n_i placeholders then a separator) precedes the prompt; with an `answer`, its
        tokens and EOS follow and are the only labelled positions (the rest is `IGNORE_INDEX`).
        """
        tokenizer = self._require_tokenizer()
        image_ids: list[int] = []
        for crop in features:
            image_ids += [self.config.image_token_id] * crop.shape[0] + [self.config.separator_token_id]
        prompt = self.config.prompt_template.format(question=check_question(question))
        text_ids = tokenizer(prompt)["input_ids"]
        if {self.config.image_token_id, self.config.separator_token_id} & set(text_ids):
            raise ValueError(f"the question must not contain {IMAGE_TOKEN} or {SEPARATOR_TOKEN}: {question!r}")
        prompt_ids = image_ids + text_ids
        answer_ids = []
        if answer is not None:
            answer_ids = tokenizer(" " + answer.strip(), add_special_tokens=False)["input_ids"]
            answer_ids += [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        ids = torch.tensor(prompt_ids + answer_ids, device=self.device)
        embeddings = self.language_model.get_input_embeddings()(ids)
        visual = torch.cat(features).to(embeddings.dtype)
        is_image = (ids == self.config.image_token_id).unsqueeze(-1).expand_as(embeddings)
        embeddings = embeddings.masked_scatter(is_image, visual)
        labels = torch.full_like(ids, IGNORE_INDEX)
        labels[len(prompt_ids) :] = ids[len(prompt_ids) :]
        return embeddings, labels

    def forward(
        self,
        images: Sequence[Image.Image | str | Path],
        questions: Sequence[str],
        answers: Sequence[str],
        zoom: str,
        text_encoder: Encoder | None = None,
    ) -> torch.Tensor:
        """Teacher-forced cross-entropy of `answers` given images and questions under `zoom` (a scalar Tensor[]).

        Sequences are right-padded to the longest; padding is masked out of attention and of the loss.
        """
        if not len(images) == len(questions) == len(answers) > 0:
            raise ValueError(
                f"need equally many images, questions and answers (at least one), got "
                f"{len(images)}, {len(questions)}, {len(answers)}"
            )
        rows = []
        for image, question, answer in zip(images, questions, answers, strict=True):
            crops = multi_resolution_crops(open_image(image), self.config.resolution)
            features, _ = self.image_features(crops, zoom, question, text_encoder)
            rows.append(self.input_embeddings(features, question, answer))
        length = max(embeddings.shape[0] for embeddings, _ in rows)
        width = rows[0][0].shape[1]
        embeds = rows[0][0].new_zeros(len(rows), length, width)
        labels = torch.full((len(rows), length), IGNORE_INDEX, device=embeds.device)
        mask = torch.zeros(len(rows), length, dtype=torch.long, device=embeds.device)
        for i, (row_embeds, row_labels) in enumerate(rows):
            embeds[i, : len(row_labels)] = row_embeds
            labels[i, : len(row_labels)] = row_labels
            mask[i, : len(row_labels)] = 1
        return self.language_model(inputs_embeds=embeds, attention_mask=mask, labels=labels).loss

    # ---- answering ---------------------------------------------------------------------------------------
    @torch.inference_mode()
    def ask(
        self,
        image: Image.Image | str | Path,
        question: str,
        zoom: str = "text",
        text_encoder: Encoder | None = None,
        **generate_kwargs: Any,
    ) -> LMMAnswer:
        """Answer `question` about `image` (a PIL image or a path), with the crops and zoom scores that led there.

        Decoding is greedy with `config.max_new_tokens` unless `generate_kwargs` (passed to the LM's `generate`)
        say otherwise. `text_encoder` (zoom "text") defaults to `config.zoom.text_encoder`, loaded once.
        """
        tokenizer = self._require_tokenizer()
        question = check_question(question)
        crops = multi_resolution_crops(open_image(image), self.config.resolution)
        features, selection = self.image_features(crops, zoom, question, text_encoder)
        embeddings, _ = self.input_embeddings(features, question)
        options = {
            "max_new_tokens": self.config.max_new_tokens,
            "do_sample": False,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        }
        options.update(generate_kwargs)
        mask = torch.ones(1, embeddings.shape[0], dtype=torch.long, device=embeddings.device)
        new_ids = self.language_model.generate(inputs_embeds=embeddings[None], attention_mask=mask, **options)
        text = tokenizer.decode(new_ids[0], skip_special_tokens=True).strip()
        image_tokens = sum(crop.shape[0] + 1 for crop in features)
        return LMMAnswer(text=text, zoom=zoom, crops=crops, selection=selection, image_tokens=image_tokens)

    def generate(
        self,
        image: Image.Image | str | Path,
        question: str,
        zoom: str = "text",
        text_encoder: Encoder | None = None,
        **generate_kwargs: Any,
    ) -> str:
        """The answer text to `question` about `image` (greedy by default); see `ask` for crops and scores."""
        return self.ask(image, question, zoom, text_encoder, **generate_kwargs).text

    def _require_tokenizer(self) -> Any:
        if self.tokenizer is None:
            raise ValueError("this ZoomLMM has no tokenizer; load it with vision_long.lmm.load_lmm or attach_tokenizer")
        return self.tokenizer


def _json_dict(data: dict[str, Any]) -> dict[str, Any]:
    """`data` as it reads back from config.json (e.g. integer keys become strings), so a loaded config is equal."""
    return json.loads(json.dumps(data))


@lru_cache(maxsize=2)
def _cached_encoder(spec: str) -> Encoder:
    """The long-text CLIP for text-conditioned zoom, loaded once per spec."""
    return load_encoder(spec)
