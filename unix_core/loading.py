"""Strict checkpoint loading for Uni-X models (local folders and hub ids, optionally 8-bit).

transformers' ``from_pretrained`` does the heavy lifting (hub resolution through huggingface_hub, sharded
safetensors, dtype, ``device_map``, bitsandbytes quantization); this module turns its lenient reporting
into errors: any missing, unexpected or mis-shaped key raises ``ValueError`` naming the keys, instead of
a warning and a silently random-initialised weight.

The official layout needs no key remapping: our parameter names are the official ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

_MAX_KEYS_SHOWN = 12


def _describe(keys: list[str]) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:_MAX_KEYS_SHOWN])
    return shown + (f" (and {len(keys) - _MAX_KEYS_SHOWN} more)" if len(keys) > _MAX_KEYS_SHOWN else "")


def check_loading_info(info: dict[str, Any], source: str) -> None:
    """Raise ``ValueError`` if transformers reported any missing, unexpected or mismatched key."""
    problems = []
    if info.get("missing_keys"):
        problems.append(f"missing keys: {_describe(list(info['missing_keys']))}")
    if info.get("unexpected_keys"):
        problems.append(f"unexpected keys: {_describe(list(info['unexpected_keys']))}")
    if info.get("mismatched_keys"):
        shapes = [f"{name} (checkpoint {tuple(a)} vs model {tuple(b)})" for name, a, b in info["mismatched_keys"]]
        problems.append(f"mis-shaped keys: {_describe(shapes)}")
    if info.get("error_msgs"):
        problems.append("errors: " + "; ".join(info["error_msgs"]))
    if problems:
        raise ValueError(
            f"checkpoint {source} does not match its config in the Uni-X layout "
            "(model.embed_tokens, model.layers.N, model.vision_encode_layers.N, model.vision_decode_layers.N, "
            "model.norm, lm_head): " + "; ".join(problems)
        )


def int8_support_error(device: str) -> str | None:
    """Why bitsandbytes' LLM.int8 layers cannot run on ``device`` here, or None if they can.

    Probed with a tiny layer rather than guessed from versions: recent bitsandbytes releases run int8 on
    the CPU too, older ones only on CUDA.
    """
    try:
        import bitsandbytes as bnb
    except ImportError:
        return "the bitsandbytes package is not installed (pip install bitsandbytes)"
    if device == "cuda" and not torch.cuda.is_available():
        return "no CUDA device is available"
    try:
        layer = bnb.nn.Linear8bitLt(16, 16, bias=False, has_fp16_weights=False).to(device)
        with torch.no_grad():
            layer(torch.ones(1, 16, device=device, dtype=torch.float16))
    except Exception as err:  # any failure of the probe means: unsupported here
        return f"bitsandbytes {getattr(bnb, '__version__', '?')} cannot run int8 layers on {device}: {err}"
    return None


def _check_8bit_support(kwargs: dict[str, Any]) -> None:
    quantization = kwargs.get("quantization_config")
    if quantization is None or not getattr(quantization, "load_in_8bit", False):
        return
    device_map = kwargs.get("device_map")
    on_cpu = device_map in (None, "cpu") or (isinstance(device_map, dict) and set(device_map.values()) <= {"cpu"})
    device = "cpu" if on_cpu and not torch.cuda.is_available() else "cuda"
    reason = int8_support_error(device)
    if reason is not None:
        raise ValueError(f"8-bit loading is not possible here: {reason}; load without 8-bit instead")


def load_strict(loader: Callable, source, *args, **kwargs):
    """Call transformers' ``from_pretrained`` (``loader``) and fail on any key problem."""
    _check_8bit_support(kwargs)
    want_info = kwargs.pop("output_loading_info", False)
    kwargs["ignore_mismatched_sizes"] = True  # collect mismatches and report them ourselves
    model, info = loader(source, *args, output_loading_info=True, **kwargs)
    check_loading_info(info, str(source))
    return (model, info) if want_info else model
