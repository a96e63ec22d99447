"""Build a Uni-X model from a plain Qwen2/Qwen3 causal LM (the paper's stage-2 initialisation).

- The vocabulary is extended by the image codebook: ``vocab_size = base vocab_size + vision_vocab_size``,
  and image code ``c`` is token id ``real_text_vocab_size + c`` (``real_text_vocab_size`` = the text
  tokenizer's length, which may be smaller than the base embedding table, exactly as the official
  ``expand_vocabulary.py`` does). New embedding and ``lm_head`` rows start at the mean of the old rows.
- The first ``num_vision_encode_layers`` and last ``num_vision_decode_layers`` layers get vision twins
  initialised as exact copies of their text layers. The paper's best split for 28 layers is 9 : 5.

Invariant: on text-only input the converted model computes exactly what the source model computed (for the
text vocabulary), because text tokens still run through the original layers.
"""

from __future__ import annotations

import logging

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

from .config import BACKBONES, UniXConfig, resolve_separator
from .layers import UniXRotaryEmbedding
from .model import UniXForCausalLM

logger = logging.getLogger(__name__)

VISION_START_TOKEN = "<|vision_start|>"
VISION_END_TOKEN = "<|vision_end|>"


def unix_config_from_qwen(
    source_config,
    *,
    num_vision_encode_layers: int,
    num_vision_decode_layers: int,
    vision_vocab_size: int,
    real_text_vocab_size: int,
    vision_start_id: int,
    vision_end_id: int | None = None,
) -> UniXConfig:
    backbone = source_config.model_type
    if backbone not in BACKBONES:
        raise ValueError(f"source model_type={backbone!r} is not supported; allowed: {', '.join(BACKBONES)}")
    if not 0 < real_text_vocab_size <= source_config.vocab_size:
        raise ValueError(
            f"real_text_vocab_size={real_text_vocab_size} must be in [1, {source_config.vocab_size}] "
            "(the source's embedding rows)"
        )
    head_dim = getattr(source_config, "head_dim", None) or source_config.hidden_size // source_config.num_attention_heads
    return UniXConfig(
        backbone=backbone,
        vocab_size=source_config.vocab_size + vision_vocab_size,
        hidden_size=source_config.hidden_size,
        intermediate_size=source_config.intermediate_size,
        num_hidden_layers=source_config.num_hidden_layers,
        num_attention_heads=source_config.num_attention_heads,
        num_key_value_heads=source_config.num_key_value_heads,
        head_dim=head_dim,
        hidden_act=source_config.hidden_act,
        max_position_embeddings=source_config.max_position_embeddings,
        rms_norm_eps=source_config.rms_norm_eps,
        rope_parameters=dict(source_config.rope_parameters),
        tie_word_embeddings=bool(source_config.tie_word_embeddings),
        attention_bias=True if backbone == "qwen2" else bool(source_config.attention_bias),
        qk_norm=backbone == "qwen3",
        bos_token_id=source_config.bos_token_id,
        eos_token_id=source_config.eos_token_id,
        pad_token_id=source_config.pad_token_id,
        num_vision_encode_layers=num_vision_encode_layers,
        num_vision_decode_layers=num_vision_decode_layers,
        real_text_vocab_size=real_text_vocab_size,
        vision_vocab_size=vision_vocab_size,
        vision_start_id=vision_start_id,
        vision_end_id=vision_end_id,
    )


def _extend_rows(weight: torch.Tensor, extra: int) -> torch.Tensor:
    mean = weight.float().mean(dim=0, keepdim=True).to(weight.dtype)
    return torch.cat([weight, mean.expand(extra, -1)], dim=0)


def convert_qwen_to_unix(
    source: str | PreTrainedModel,
    *,
    num_vision_encode_layers: int,
    num_vision_decode_layers: int,
    vision_vocab_size: int = 8192,
    real_text_vocab_size: int | None = None,
    vision_start_id: int | None = None,
    vision_end_id: int | None = None,
    tokenizer=None,
    dtype: torch.dtype | None = None,
    row_separator: tuple[str, int] | None = None,
) -> UniXForCausalLM:
    """Convert a plain Qwen2/Qwen3 causal LM (folder, hub id or loaded model) into a Uni-X model.

    ``real_text_vocab_size`` defaults to ``len(tokenizer)`` and ``vision_start_id``/``vision_end_id`` to the
    tokenizer's ``<|vision_start|>``/``<|vision_end|>`` ids; without a tokenizer they must be given.
    ``row_separator`` (token text, codes per row), e.g. ``("<|vision_pad|>", 32)``, turns on the official
    ``add_sep_for_vis`` layout; the token is looked up in ``tokenizer``.
    """
    if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__"):
        if tokenizer is None:
            tokenizer = _try_tokenizer(str(source))
        source = AutoModelForCausalLM.from_pretrained(source, dtype=dtype or "auto")
    if tokenizer is not None:
        real_text_vocab_size = real_text_vocab_size or len(tokenizer)
        vocab = tokenizer.get_vocab()
        vision_start_id = vision_start_id if vision_start_id is not None else vocab.get(VISION_START_TOKEN)
        vision_end_id = vision_end_id if vision_end_id is not None else vocab.get(VISION_END_TOKEN)
    if real_text_vocab_size is None or vision_start_id is None:
        raise ValueError(
            "real_text_vocab_size and vision_start_id are needed: pass them, or a tokenizer that has "
            f"{VISION_START_TOKEN!r}"
        )
    config = unix_config_from_qwen(
        source.config,
        num_vision_encode_layers=num_vision_encode_layers,
        num_vision_decode_layers=num_vision_decode_layers,
        vision_vocab_size=vision_vocab_size,
        real_text_vocab_size=real_text_vocab_size,
        vision_start_id=vision_start_id,
        vision_end_id=vision_end_id,
    )
    if row_separator is not None:
        if tokenizer is None:
            raise ValueError("row_separator needs the tokenizer, to look its token up")
        config.add_sep_for_vis, config.vis_sep_tokens, config.vis_sep_lens = 1, row_separator[0], row_separator[1]
        resolve_separator(config, tokenizer)
    state = {k: v.detach() for k, v in source.state_dict().items()}
    state["model.embed_tokens.weight"] = _extend_rows(state["model.embed_tokens.weight"], vision_vocab_size)
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    else:
        state["lm_head.weight"] = _extend_rows(state["lm_head.weight"], vision_vocab_size)
    for j in range(num_vision_encode_layers):
        _copy_layer(state, src=j, dst=f"model.vision_encode_layers.{j}")
    for j in range(num_vision_decode_layers):
        _copy_layer(state, src=config.first_decode_depth + j, dst=f"model.vision_decode_layers.{j}")
    target_dtype = state["model.embed_tokens.weight"].dtype
    with torch.device("meta"):
        model = UniXForCausalLM(config)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise ValueError(f"source weights do not fit a Uni-X layout: missing {missing}, unexpected {unexpected}")
    if config.tie_word_embeddings:
        model.tie_weights()
    model.model.rotary_emb = UniXRotaryEmbedding(config)
    return model.to(target_dtype).eval()


def _copy_layer(state: dict[str, torch.Tensor], src: int, dst: str) -> None:
    prefix = f"model.layers.{src}."
    for key in [k for k in state if k.startswith(prefix)]:
        state[dst + "." + key[len(prefix) :]] = state[key].clone()


def _try_tokenizer(source: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as err:
        logger.info("no tokenizer loaded from %s (%s); ids must be given explicitly", source, err)
        return None
