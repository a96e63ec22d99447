"""Configuration of a Uni-X causal LM.

A Uni-X model is a Qwen-style decoder whose first ``num_vision_encode_layers`` and last
``num_vision_decode_layers`` depths exist twice: a text layer (``model.layers.d``) and a vision twin
(``model.vision_encode_layers.j`` / ``model.vision_decode_layers.j``, index restarting at 0). The middle
depths are shared. Token ids ``>= real_text_vocab_size`` (image codes) and ``vision_start_id`` are vision
tokens; everything else is text.

Invariants checked here (``ValueError`` otherwise):
- ``num_vision_encode_layers + num_vision_decode_layers <= num_hidden_layers``;
- ``real_text_vocab_size + vision_vocab_size <= vocab_size`` and ``0 <= vision_start_id < real_text_vocab_size``;
- heads divide evenly (``num_attention_heads % num_key_value_heads == 0``).

The official checkpoints store this as a Qwen3 ``config.json`` (``model_type: "qwen3"``) with the Uni-X
fields as extra keys; :meth:`UniXConfig.get_config_dict` maps such files (and Qwen2 ones) onto this class.
Saved configs keep every official field (including the legacy ``rope_theta``) so the official code can read
them back.
"""

from __future__ import annotations

from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig

BACKBONES = ("qwen3", "qwen2")

# Optional features of the official code that this implementation does not provide. A checkpoint that
# turns one on is refused rather than silently computed differently.
_UNSUPPORTED_OFFICIAL_FEATURES = (
    "add_share_ffn",
    "all_modal_visible",
    "ffn_share_size",
    "ffn_vision_size",
    "use_share_attn",
    "use_share_ffn",
    "attn_v_q_heads",
    "decoder_sparse_step",
)


@strict
class UniXConfig(PreTrainedConfig):
    """Hyper-parameters of :class:`unix_core.UniXForCausalLM`.

    ``backbone`` picks the layer flavour: ``"qwen3"`` (RMSNorm on q and k, no qkv bias by default) or
    ``"qwen2"`` (qkv bias, no q/k norm). ``qk_norm`` and ``attention_bias`` default from it.
    ``attn_implementation`` (transformers' standard argument) may be ``"sdpa"`` (default) or
    ``"flash_attention_2"`` (needs the optional ``flash-attn`` package and a CUDA device).
    """

    model_type = "uni_x"
    keys_to_ignore_at_inference = ["cache", "past_key_values"]  # the output's cache, by either transformers 5.x name

    vocab_size: int = 8704
    hidden_size: int = 512
    intermediate_size: int = 1408
    num_hidden_layers: int = 8
    num_attention_heads: int = 8
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    hidden_act: str = "silu"
    max_position_embeddings: int = 4096
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-6
    use_cache: bool = True
    tie_word_embeddings: bool = False
    rope_parameters: dict | None = None
    backbone: str = "qwen3"
    attention_bias: bool | None = None
    qk_norm: bool | None = None
    attention_dropout: float | int = 0.0
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    # Uni-X
    num_vision_encode_layers: int = 0
    num_vision_decode_layers: int = 0
    real_text_vocab_size: int = 512
    vision_vocab_size: int = 8192
    vision_start_id: int = 510
    vision_end_id: int | None = None
    # Row separators (the official ``add_sep_for_vis`` variant): after every ``vis_sep_lens`` image codes a
    # ``vis_sep_tokens`` token (a text-range id) follows, counted as vision, forced during generation.
    # ``vis_sep_tokens`` is the token's text, as the official config stores it; ``vis_sep_token_id`` is its
    # id, which ``resolve_separator`` looks up in the tokenizer (the official code does the same at load).
    add_sep_for_vis: bool | int = 0
    vis_sep_tokens: str = ""
    vis_sep_lens: int | str = 0
    vis_sep_token_id: int | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        for name in _UNSUPPORTED_OFFICIAL_FEATURES:
            if kwargs.get(name):
                raise ValueError(
                    f"config field {name}={kwargs[name]!r} enables an optional feature of the official Uni-X code "
                    f"that is not supported; allowed: 0 (off) for {', '.join(_UNSUPPORTED_OFFICIAL_FEATURES)}"
                )
        if kwargs.get("skip_connection_loc", -1) not in (-1, None):
            raise ValueError(
                f"config field skip_connection_loc={kwargs['skip_connection_loc']!r} is not supported; allowed: -1"
            )
        if kwargs.get("use_sliding_window"):
            raise ValueError("config field use_sliding_window=True is not supported; allowed: False")
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone={self.backbone!r} is not supported; allowed: {', '.join(BACKBONES)}")
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.attention_bias is None:
            self.attention_bias = self.backbone == "qwen2"
        if self.qk_norm is None:
            self.qk_norm = self.backbone == "qwen3"
        super().__post_init__(**kwargs)
        if self.rope_parameters is None:
            self.rope_parameters = {"rope_type": "default", "rope_theta": 10000.0}
        self.rope_parameters.setdefault("rope_type", "default")
        self.rope_parameters.setdefault("rope_theta", 10000.0)
        self.add_sep_for_vis = int(bool(self.add_sep_for_vis))
        self._validate_uni_x()
        self._validate_separator()

    def _validate_separator(self) -> None:
        if not self.add_sep_for_vis:
            return
        try:
            every = int(self.vis_sep_lens)
        except ValueError:
            every = 0
        if every < 1:
            raise ValueError(
                f"add_sep_for_vis is on but vis_sep_lens={self.vis_sep_lens!r}; allowed: a positive integer (codes "
                "between separators, e.g. the grid width)"
            )
        self.vis_sep_lens = every
        if "," in self.vis_sep_tokens or not self.vis_sep_tokens.strip():
            raise ValueError(
                f"add_sep_for_vis is on but vis_sep_tokens={self.vis_sep_tokens!r}; allowed: exactly one token, "
                "e.g. <|vision_pad|>"
            )
        sep = self.vis_sep_token_id
        if sep is not None and (not 0 <= sep < self.real_text_vocab_size or sep == self.vision_start_id):
            raise ValueError(
                f"vis_sep_token_id={sep} must be a text-range id in [0, {self.real_text_vocab_size}) other than "
                f"vision_start_id ({self.vision_start_id})"
            )

    @property
    def separator(self) -> tuple[int, int] | None:
        """(separator id, codes between separators), or None without separators. Raises when the separator is
        on but its id has not been looked up (``resolve_separator``)."""
        if not self.add_sep_for_vis:
            return None
        if self.vis_sep_token_id is None:
            raise ValueError(
                f"the config turns row separators on (vis_sep_tokens={self.vis_sep_tokens!r}) but vis_sep_token_id "
                "is unknown; look it up with unix_core.resolve_separator(config, tokenizer) (UniXPipeline does)"
            )
        return self.vis_sep_token_id, int(self.vis_sep_lens)

    def _validate_uni_x(self) -> None:
        n_split = self.num_vision_encode_layers + self.num_vision_decode_layers
        if self.num_vision_encode_layers < 0 or self.num_vision_decode_layers < 0:
            raise ValueError(
                "num_vision_encode_layers and num_vision_decode_layers must be >= 0, got "
                f"{self.num_vision_encode_layers} and {self.num_vision_decode_layers}"
            )
        if n_split > self.num_hidden_layers:
            raise ValueError(
                f"num_vision_encode_layers + num_vision_decode_layers = {n_split} exceeds num_hidden_layers = "
                f"{self.num_hidden_layers}; allowed: a sum between 0 and num_hidden_layers"
            )
        if self.real_text_vocab_size + self.vision_vocab_size > self.vocab_size:
            raise ValueError(
                f"real_text_vocab_size ({self.real_text_vocab_size}) + vision_vocab_size ({self.vision_vocab_size}) "
                f"exceeds vocab_size ({self.vocab_size}); image code c is token id real_text_vocab_size + c and "
                "must have an embedding row"
            )
        if not 0 <= self.vision_start_id < self.real_text_vocab_size:
            raise ValueError(
                f"vision_start_id={self.vision_start_id} must be a text-range id in [0, {self.real_text_vocab_size})"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of num_key_value_heads "
                f"({self.num_key_value_heads})"
            )

    # ----------------------------------------------------------------------------------------------
    # Official layout
    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path, **kwargs) -> tuple[dict, dict]:
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        return official_to_unix_config_dict(config_dict), kwargs

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs):
        return super().from_dict(official_to_unix_config_dict(config_dict), **kwargs)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        # Readers built on transformers 4.x (the official code) look for the legacy key.
        out["rope_theta"] = self.rope_parameters.get("rope_theta", 10000.0)
        for name in _UNSUPPORTED_OFFICIAL_FEATURES:
            out.setdefault(name, 0)
        out.setdefault("skip_connection_loc", -1)
        return out

    # ----------------------------------------------------------------------------------------------
    @property
    def first_decode_depth(self) -> int:
        """First depth that belongs to the vision-decode block (== num_hidden_layers when there is none)."""
        return self.num_hidden_layers - self.num_vision_decode_layers

    def is_split_depth(self, depth: int) -> bool:
        return depth < self.num_vision_encode_layers or depth >= self.first_decode_depth


def resolve_separator(config: UniXConfig, tokenizer) -> None:
    """Set ``config.vis_sep_token_id`` from ``config.vis_sep_tokens`` and the checkpoint's text tokenizer (a
    no-op without row separators). The text must be one token; an id already in the config must agree."""
    if not config.add_sep_for_vis:
        return
    ids = tokenizer(config.vis_sep_tokens, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(
            f"vis_sep_tokens={config.vis_sep_tokens!r} is {len(ids)} tokens in this tokenizer; allowed: exactly one"
        )
    if config.vis_sep_token_id not in (None, ids[0]):
        raise ValueError(
            f"config vis_sep_token_id={config.vis_sep_token_id} but the tokenizer gives {config.vis_sep_tokens!r} "
            f"the id {ids[0]}"
        )
    config.vis_sep_token_id = ids[0]
    config._validate_separator()


def official_to_unix_config_dict(config_dict: dict) -> dict:
    """Map a config dict in the official layout (``model_type`` qwen3/qwen2) onto :class:`UniXConfig` fields.

    Only key renaming happens here; values are validated by the config class. Dicts already in our own
    layout are returned unchanged (a copy).
    """
    out = dict(config_dict)
    model_type = out.get("model_type", UniXConfig.model_type)
    if model_type in BACKBONES:
        out.setdefault("backbone", model_type)
        out["model_type"] = UniXConfig.model_type
    elif model_type != UniXConfig.model_type:
        raise ValueError(
            f"config model_type={model_type!r} is not a Uni-X checkpoint; allowed: "
            f"{UniXConfig.model_type!r} or an official Uni-X config ({', '.join(BACKBONES)})"
        )
    if out.get("backbone") == "qwen2":
        # Qwen2 configs have neither head_dim nor q/k norm; their qkv projections always carry a bias.
        out.setdefault("attention_bias", True)
    for legacy in ("max_window_layers", "layer_types", "sliding_window"):
        out.pop(legacy, None)
    return out


# The class name the official code records for its Qwen3-based Uni-X (see tests/fixtures golden configs).
OFFICIAL_ARCHITECTURES = {"qwen3": "UniQwen3ForCausalLMInference"}


def unix_to_official_config_dict(config: UniXConfig) -> dict:
    """``config`` as the official code writes ``config.json``: ``model_type`` is the backbone (qwen3/qwen2)
    and ``architectures`` names the official class; every Uni-X field stays. :meth:`UniXConfig.from_dict`
    reads it back to an equal config."""
    out = config.to_dict()
    out["model_type"] = out.pop("backbone")
    if out["model_type"] in OFFICIAL_ARCHITECTURES:
        out["architectures"] = [OFFICIAL_ARCHITECTURES[out["model_type"]]]
    return out


# Checkpoints this package writes in its own layout (``model_type: "uni_x"``, e.g. the training script's) load
# through transformers' Auto classes too: AutoConfig, and AutoTokenizer, which reads config.json to pick a
# tokenizer and otherwise warns that it cannot place the model type.
AutoConfig.register(UniXConfig.model_type, UniXConfig, exist_ok=True)
