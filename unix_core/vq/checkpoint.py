"""Reading and writing VQGAN tokenizer checkpoints, with strict key checks.

Two folder layouts are understood:

* ours: `vq_config.json` (`VQConfig.to_dict`) + `vq_model.safetensors` (the state dict);
* taming/Chameleon: `vqgan.yaml` (`model.params` read with `yaml.safe_load`) + `vqgan.ckpt`
  (a torch pickle read with `weights_only=True`; its `state_dict` entry is used, a bare
  name -> tensor dict is accepted too).

Our parameter names are taming's, so the only remapping (`taming_to_native_state_dict`) drops
the training-only `loss.*` keys (perceptual loss / discriminator) that taming checkpoints carry.
Every other key must match the model built from the config exactly, names and shapes
(`check_state_dict`); the model is built on the meta device and the loaded tensors are assigned.
"""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path
from typing import Any, Mapping

import torch
import yaml
from safetensors.torch import load_file, save_file

from unix_core.vq.config import VQConfig
from unix_core.vq.model import VQModel

logger = logging.getLogger(__name__)

NATIVE_CONFIG_NAME = "vq_config.json"
NATIVE_WEIGHTS_NAME = "vq_model.safetensors"
TAMING_CONFIG_NAME = "vqgan.yaml"
TAMING_WEIGHTS_NAME = "vqgan.ckpt"
TAMING_TRAINING_ONLY_PREFIXES = ("loss.",)
_MAX_LISTED_KEYS = 8


def taming_to_native_state_dict(state_dict: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Drop taming's training-only keys (`loss.*`); every other key is kept unchanged."""
    out: dict[str, torch.Tensor] = {}
    dropped = 0
    for name, value in state_dict.items():
        if not isinstance(name, str):
            raise ValueError(f"vqgan.ckpt state_dict has a non-string key {name!r}")
        if name.startswith(TAMING_TRAINING_ONLY_PREFIXES):
            dropped += 1
            continue
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"vqgan.ckpt state_dict entry {name!r} is a {type(value).__name__}, not a tensor")
        out[name] = value
    if dropped:
        logger.info("ignored %d training-only keys %s in the taming checkpoint", dropped, TAMING_TRAINING_ONLY_PREFIXES)
    return out


def check_state_dict(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise ValueError naming missing, unexpected and mis-shaped keys; return None when all match."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    mis_shaped = [
        f"{k} (expected {list(expected[k].shape)}, found {list(found[k].shape)})"
        for k in expected
        if k in found and tuple(expected[k].shape) != tuple(found[k].shape)
    ]
    problems = []
    for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", mis_shaped)):
        if keys:
            listed = ", ".join(keys[:_MAX_LISTED_KEYS])
            more = f", ... ({len(keys) - _MAX_LISTED_KEYS} more)" if len(keys) > _MAX_LISTED_KEYS else ""
            problems.append(f"{len(keys)} {label}: {listed}{more}")
    if problems:
        raise ValueError(f"{source} does not match the VQGAN config: " + "; ".join(problems))


def load_model(folder: str | Path, *, device: torch.device | str, dtype: torch.dtype) -> VQModel:
    """Load a VQModel (eval mode) from a folder in our layout (preferred) or the taming layout."""
    folder = Path(folder)
    if (folder / NATIVE_CONFIG_NAME).is_file():
        config, state_dict, source = _read_native(folder)
    elif (folder / TAMING_CONFIG_NAME).is_file():
        config, state_dict, source = _read_taming(folder)
    else:
        raise ValueError(
            f"{folder} holds no VQGAN tokenizer: expected {NATIVE_CONFIG_NAME} + {NATIVE_WEIGHTS_NAME} "
            f"or {TAMING_CONFIG_NAME} + {TAMING_WEIGHTS_NAME}"
        )
    with torch.device("meta"):
        model = VQModel(config)
    check_state_dict(model.state_dict(), state_dict, source)
    state_dict = {k: v.to(dtype=dtype) if v.is_floating_point() else v for k, v in state_dict.items()}
    model.load_state_dict(state_dict, strict=True, assign=True)
    return model.to(device=device).eval()


def save_model(model: VQModel, folder: str | Path) -> None:
    """Write `vq_config.json` + `vq_model.safetensors` (tensors in the model's dtype)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state_dict = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(state_dict, str(folder / NATIVE_WEIGHTS_NAME), metadata={"format": "pt"})
    text = json.dumps(model.config.to_dict(), indent=2) + "\n"
    (folder / NATIVE_CONFIG_NAME).write_text(text, encoding="utf-8")


def _read_native(folder: Path) -> tuple[VQConfig, dict[str, torch.Tensor], str]:
    config_path, weights_path = folder / NATIVE_CONFIG_NAME, folder / NATIVE_WEIGHTS_NAME
    try:
        data = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{config_path} is not valid JSON: {exc}") from exc
    config = VQConfig.from_dict(data)
    if not weights_path.is_file():
        raise ValueError(f"{folder} has {NATIVE_CONFIG_NAME} but no {NATIVE_WEIGHTS_NAME}")
    return config, load_file(str(weights_path), device="cpu"), str(weights_path)


def _read_taming(folder: Path) -> tuple[VQConfig, dict[str, torch.Tensor], str]:
    config_path, weights_path = folder / TAMING_CONFIG_NAME, folder / TAMING_WEIGHTS_NAME
    try:
        data = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{config_path} is not valid YAML: {exc}") from exc
    try:
        params = data["model"]["params"]
    except (TypeError, KeyError) as exc:
        raise ValueError(f"{config_path} lacks model.params (taming/Chameleon layout expected)") from exc
    config = VQConfig.from_taming_params(params)
    if not weights_path.is_file():
        raise ValueError(f"{folder} has {TAMING_CONFIG_NAME} but no {TAMING_WEIGHTS_NAME}")
    try:
        checkpoint = torch.load(weights_path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(
            f"{weights_path} cannot be read with torch.load(weights_only=True): it holds Python objects "
            f"besides tensors and plain containers ({exc}). Re-save it as torch.save({{'state_dict': sd}}, path) "
            f"from a trusted environment."
        ) from exc
    if isinstance(checkpoint, Mapping) and "state_dict" in checkpoint:
        state_dict = checkpoint["state_dict"]
    elif isinstance(checkpoint, Mapping) and checkpoint and all(
        isinstance(value, torch.Tensor) for value in checkpoint.values()
    ):
        state_dict = checkpoint  # a bare name -> tensor dict
    else:
        found = sorted(checkpoint)[:_MAX_LISTED_KEYS] if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
        raise ValueError(f"{weights_path} has no 'state_dict' entry (found {found})")
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"{weights_path} 'state_dict' is a {type(state_dict).__name__}, not a mapping")
    return config, taming_to_native_state_dict(state_dict), str(weights_path)
