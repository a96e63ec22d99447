"""The Uni-X causal LM: a Qwen-style decoder with modality-separated first and last layers.

Depths ``0..E-1`` and ``L-D..L-1`` are split: text tokens go through ``model.layers[d]``, vision tokens
through ``model.vision_encode_layers[d]`` resp. ``model.vision_decode_layers[d-(L-D)]``, each modality
attending causally to earlier tokens of its own modality only, at their original positions. The middle
depths are shared with ordinary causal attention. Embedding, final norm and ``lm_head`` are shared.

Efficiency: a split block gathers each modality's tokens once, runs only that modality's branch through
all the block's depths, and scatters back; when a call holds a single modality (every image-token decode
step) nothing is gathered and the other branch is not touched. Split-depth caches hold only their own
modality's keys/values (:mod:`unix_core.cache`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModelForCausalLM, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from .cache import UniXCache
from .config import UniXConfig
from .layers import UniXDecoderLayer, UniXRMSNorm, UniXRotaryEmbedding
from .modality import ModalityPack, config_vision_mask

# transformers 5.x renamed the outputs' ``past_key_values`` field to ``cache`` (and warns on the old name);
# both spellings are in the range requirements.txt allows, so outputs are built and read by whichever exists.
CACHE_FIELD = "cache" if "cache" in BaseModelOutputWithPast.__dataclass_fields__ else "past_key_values"


def output_cache(out) -> UniXCache | None:
    """The cache of a model output, without tripping transformers' deprecation warning for the old name."""
    return getattr(out, CACHE_FIELD)


logger = logging.getLogger(__name__)

TEXT, VISION, SHARED = "text", "vision", "shared"


@dataclass
class _Batch:
    """Per-forward routing and position data, computed once and passed down."""

    is_vision: torch.Tensor  # (B, T) bool
    positions: torch.Tensor  # (B, T)
    valid: torch.Tensor  # (B, T) bool: real (non-padding) tokens
    cos: torch.Tensor  # (B, T, head_dim)
    sin: torch.Tensor
    packs: dict[str, ModalityPack]


class UniXPreTrainedModel(PreTrainedModel):
    config_class = UniXConfig
    config: UniXConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = False
    _no_split_modules = ["UniXDecoderLayer"]
    _skip_keys_device_placement = ["past_key_values"]
    _supports_flash_attn = True
    _supports_sdpa = True


class UniXModel(UniXPreTrainedModel):
    def __init__(self, config: UniXConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(UniXDecoderLayer(config) for _ in range(config.num_hidden_layers))
        self.vision_encode_layers = nn.ModuleList(
            UniXDecoderLayer(config) for _ in range(config.num_vision_encode_layers)
        )
        self.vision_decode_layers = nn.ModuleList(
            UniXDecoderLayer(config) for _ in range(config.num_vision_decode_layers)
        )
        self.norm = UniXRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = UniXRotaryEmbedding(config)
        self.post_init()

    # ----------------------------------------------------------------------------------------------
    @property
    def split_depths(self) -> set[int]:
        c = self.config
        return set(range(c.num_vision_encode_layers)) | set(range(c.first_decode_depth, c.num_hidden_layers))

    def branch_layer(self, depth: int, branch: str) -> UniXDecoderLayer:
        """The layer that processes ``branch`` tokens ("text", "vision" or "shared") at ``depth``."""
        c = self.config
        if branch == VISION:
            if depth < c.num_vision_encode_layers:
                return self.vision_encode_layers[depth]
            if depth >= c.first_decode_depth:
                return self.vision_decode_layers[depth - c.first_decode_depth]
            raise ValueError(f"depth {depth} is shared; it has no vision branch")
        return self.layers[depth]

    def new_cache(self) -> UniXCache:
        return UniXCache(self.config.num_hidden_layers, self.split_depths)

    # ----------------------------------------------------------------------------------------------
    def _prepare(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, cache: UniXCache | None, dtype
    ) -> _Batch:
        B, T = input_ids.shape
        if attention_mask is None:
            valid = torch.ones((B, T), dtype=torch.bool, device=input_ids.device)
        else:
            if attention_mask.dim() != 2 or attention_mask.shape[0] != B or attention_mask.shape[1] < T:
                raise ValueError(
                    f"attention_mask must be (batch, past + new tokens) with batch {B} and at least {T} columns, "
                    f"got shape {tuple(attention_mask.shape)}"
                )
            valid = attention_mask[:, -T:].bool()
        seen = None if cache is None else cache.seen
        if seen is None:
            seen = torch.zeros(B, dtype=torch.long, device=input_ids.device)
        elif seen.shape[0] != B:
            raise ValueError(f"the cache holds {seen.shape[0]} rows but input_ids has {B}")
        # Positions count the real tokens before each token; left padding does not shift them.
        positions = (seen[:, None] + torch.cumsum(valid, dim=1) - 1).clamp(min=0)
        cos, sin = self.rotary_emb(positions, dtype)
        is_vision = config_vision_mask(input_ids, self.config)
        packs = {}
        if self.split_depths:
            packs[TEXT] = ModalityPack.build(~is_vision, positions, valid, cos, sin)
            packs[VISION] = ModalityPack.build(is_vision, positions, valid, cos, sin)
        return _Batch(is_vision, positions, valid, cos, sin, packs)

    def _split_block(
        self, depths: range, h: torch.Tensor, batch: _Batch, cache: UniXCache | None
    ) -> torch.Tensor:
        out = None
        for branch in (TEXT, VISION):
            pack = batch.packs[branch]
            if pack.is_empty:
                continue
            x = pack.gather(h)  # (B, N, C)
            counts = None if pack.identity else pack.counts
            for depth in depths:
                kv = None if cache is None else cache.buffer(depth, branch)
                x = self.branch_layer(depth, branch)(x, pack.cos, pack.sin, pack.positions, pack.valid, counts, kv)
            if pack.identity:  # every token is of this modality: the other pack is empty
                return x
            if out is None:
                out = torch.empty_like(h)
            pack.scatter_(x, out)
        return out

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: UniXCache | None = None,
        use_cache: bool = False,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        if input_ids is None or input_ids.dim() != 2:
            raise ValueError("input_ids must be a (batch, sequence) tensor of token ids")
        if input_ids.shape[1] == 0:
            raise ValueError("input_ids must hold at least one token per row")
        cache = past_key_values
        if use_cache and cache is None:
            cache = self.new_cache()
        h = self.embed_tokens(input_ids)
        batch = self._prepare(input_ids, attention_mask, cache, h.dtype)
        c = self.config
        if c.num_vision_encode_layers:
            h = self._split_block(range(c.num_vision_encode_layers), h, batch, cache)
        for depth in range(c.num_vision_encode_layers, c.first_decode_depth):
            kv = None if cache is None else cache.buffer(depth, SHARED)
            h = self.layers[depth](h, batch.cos, batch.sin, batch.positions, batch.valid, None, kv)
        if c.num_vision_decode_layers:
            h = self._split_block(range(c.first_decode_depth, c.num_hidden_layers), h, batch, cache)
        h = self.norm(h)
        if cache is not None:
            added = batch.valid.sum(dim=1)
            cache.seen = added if cache.seen is None else cache.seen + added
            cache.num_tokens += input_ids.shape[1]
        return BaseModelOutputWithPast(last_hidden_state=h, **{CACHE_FIELD: cache if use_cache else None})


class UniXForCausalLM(UniXPreTrainedModel):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: UniXConfig) -> None:
        super().__init__(config)
        self.model = UniXModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: UniXCache | None = None,
        use_cache: bool = False,
        labels: torch.LongTensor | None = None,
        logits_to_keep: int = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """Logits for every position (or the last ``logits_to_keep``); with ``labels`` also the shifted
        next-token cross-entropy (label -100 is ignored)."""
        out = self.model(input_ids, attention_mask, past_key_values=past_key_values, use_cache=use_cache)
        h = out.last_hidden_state
        if logits_to_keep:
            h = h[:, -logits_to_keep:]
        logits = self.lm_head(h)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100
            )
        return CausalLMOutputWithPast(loss=loss, logits=logits, **{CACHE_FIELD: output_cache(out)})

    # ----------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs) -> "UniXForCausalLM":
        """Load a folder or hub id in the official Uni-X layout (or ours, which is the same).

        Unlike transformers' default, any missing, unexpected or mis-shaped weight is an error naming the
        keys; nothing is silently initialised at random. ``quantization_config``, ``dtype``, ``device_map``
        and the other transformers arguments are passed through.
        """
        from .loading import load_strict

        return load_strict(super().from_pretrained, pretrained_model_name_or_path, *args, **kwargs)


AutoModelForCausalLM.register(UniXConfig, UniXForCausalLM, exist_ok=True)
