"""Uni-X core: model, KV cache, checkpoint loading, generation, image tokenizer (``unix_core.vq``) and the
synthetic shapes world (``unix_core.world``). Never imports gradio.

Nothing happens at import time: the public names below are resolved lazily, so ``import unix_core.world``
stays light (no torch).
"""

from importlib import import_module

_EXPORTS = {
    "UniXConfig": ".config",
    "resolve_separator": ".config",
    "UniXForCausalLM": ".model",
    "UniXModel": ".model",
    "UniXCache": ".cache",
    "vision_token_mask": ".modality",
    "UniXPipeline": ".pipeline",
    "trace_routing": ".routing",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module 'unix_core' has no attribute {name!r}")
