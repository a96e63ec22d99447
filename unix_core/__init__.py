"""Uni-X core: model, KV cache, checkpoint loading (and, in sub-packages, the image tokenizer and the
synthetic shapes world). Never imports gradio; nothing happens at import time."""

from .config import UniXConfig
from .model import UniXForCausalLM, UniXModel
from .cache import UniXCache
from .modality import vision_token_mask

__all__ = ["UniXConfig", "UniXForCausalLM", "UniXModel", "UniXCache", "vision_token_mask"]
