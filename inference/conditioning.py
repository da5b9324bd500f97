"""What the UNet's cross-attention sees: a named, configurable conditioning with classifier-free-guidance dropout.

* ``empty_prompt`` — the text encoder's hidden states of ``""`` (``(B, 77, D)``), fixed. iNVS conditions on the
  partial view through the UNet's input channels, so the text branch carries nothing; the conditional and
  unconditional embeddings are the same and CFG dropout changes nothing (guidance scale 1 at inference).
* ``clip_image`` — the CLIP image embedding of the *source* view (``CLIPVisionModelWithProjection.image_embeds``,
  frozen), one token ``(B, 1, P)``, mapped to the UNet's ``cross_attention_dim`` by a trainable linear layer
  (:class:`ImageProjection`). CFG dropout replaces a sample's CLIP embedding by zeros with probability
  ``cfg_dropout``; at inference the unconditional embedding is the projection of zeros (Zero-1-to-3 does the same).

The CLIP input is the source view on white, resized (bicubic, antialiased) to the encoder's ``image_size`` and
normalised with CLIP's mean and std.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from invs.model_spec import CONDITIONINGS
from invs.models import ModelUnavailableError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ImageProjection(ModelMixin, ConfigMixin):
    """Linear map of CLIP image embeddings ``(B, 1, P)`` to cross-attention tokens ``(B, 1, D)`` (a diffusers model:
    ``save_pretrained`` / ``from_pretrained``, a module of :class:`inference.pipeline.NovelViewPipeline`)."""

    @register_to_config
    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.linear = nn.Linear(in_features, out_features)

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        return self.linear(embeds)


def build_tiny_image_encoder(seed: int = 0) -> Any:
    """A small random ``CLIPVisionModelWithProjection`` (32 px, 8 px patches, projection 32), built offline."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed + 3)
    config = CLIPVisionConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        projection_dim=32,
    )
    return CLIPVisionModelWithProjection(config).eval()


def load_image_encoder(model_id_or_path: str) -> Any:
    """A pretrained ``CLIPVisionModelWithProjection``; :class:`ModelUnavailableError` (one line) if absent."""
    from transformers import CLIPVisionModelWithProjection

    try:
        return CLIPVisionModelWithProjection.from_pretrained(model_id_or_path).eval()
    except (OSError, ValueError) as exc:
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ModelUnavailableError(
            f"cannot load the CLIP image encoder {model_id_or_path!r} ({detail}); download it first or set "
            "train.image_encoder to a local directory, or use inference.conditioning=empty_prompt"
        ) from exc


def clip_pixels(images: torch.Tensor, size: int) -> torch.Tensor:
    """Images ``(B, 3, H, W)`` in ``[-1, 1]`` to CLIP's input: ``size x size``, CLIP-normalised."""
    x = F.interpolate((images + 1) / 2, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    mean = torch.tensor(CLIP_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x.clamp(0, 1) - mean) / std


class Conditioner:
    """Frozen part of the conditioning: turns a batch into the cross-attention input before :class:`ImageProjection`.

    ``features(batch, drop)`` returns ``(B, L, C)``: the empty prompt's hidden states (``L = 77``), or CLIP image
    embeddings of ``batch["source"]`` (``L = 1``) with the rows where ``drop`` is true set to zero.
    """

    def __init__(self, kind: Literal["empty_prompt", "clip_image"], components: dict[str, Any]) -> None:
        if kind not in CONDITIONINGS:
            raise ValueError(f"unknown conditioning {kind!r}; valid: {', '.join(CONDITIONINGS)}")
        self.kind = kind
        self.image_encoder = components.get("image_encoder")
        self._prompt: torch.Tensor | None = None
        if kind == "empty_prompt":
            self._prompt = empty_prompt_embedding(components)
        elif self.image_encoder is None:
            raise ValueError("clip_image conditioning needs components['image_encoder']")

    @classmethod
    def from_embedding(cls, embedding: torch.Tensor) -> Conditioner:
        """A fixed-prompt conditioner from precomputed hidden states ``(1, tokens, dim)`` (benchmarks)."""
        self = cls.__new__(cls)
        self.kind, self.image_encoder, self._prompt = "empty_prompt", None, embedding
        return self

    @property
    def feature_dim(self) -> int:
        if self._prompt is not None:
            return int(self._prompt.shape[-1])
        return int(self.image_encoder.config.projection_dim)

    def to(self, device: torch.device | str) -> Conditioner:
        if self._prompt is not None:
            self._prompt = self._prompt.to(device)
        if self.image_encoder is not None:
            self.image_encoder.to(device)
        return self

    @torch.no_grad()
    def features(self, batch: dict[str, torch.Tensor], drop: torch.Tensor | None = None) -> torch.Tensor:
        b = batch["source"].shape[0]
        if self._prompt is not None:
            return self._prompt.expand(b, -1, -1)
        encoder = self.image_encoder
        pixels = clip_pixels(batch["source"].float(), encoder.config.image_size)
        embeds = encoder(pixel_values=pixels.to(encoder.dtype)).image_embeds.float().unsqueeze(1)
        if drop is not None:
            embeds = embeds * (~drop).to(embeds.dtype).view(b, 1, 1)
        return embeds

    def unconditional(self, batch_size: int, device: torch.device | str) -> torch.Tensor:
        if self._prompt is not None:
            return self._prompt.to(device).expand(batch_size, -1, -1)
        return torch.zeros(batch_size, 1, self.feature_dim, device=device)


def empty_prompt_embedding(components: dict[str, Any]) -> torch.Tensor:
    """Text-encoder hidden states ``(1, tokens, dim)`` of ``""``, padded to the tokenizer's length."""
    tokenizer, encoder = components["tokenizer"], components["text_encoder"]
    ids = tokenizer(
        "", padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        return encoder(ids.to(encoder.device))[0].float()


def cfg_drop_mask(batch: int, probability: float, generator: torch.Generator | None) -> torch.Tensor:
    """Boolean ``(batch,)``: which samples get the unconditional embedding."""
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"cfg_dropout must be in [0, 1], got {probability}")
    return torch.rand(batch, generator=generator) < probability
