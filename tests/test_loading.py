"""Tests for unix_core.loading: strict keys, hub ids through huggingface_hub (offline), 8-bit errors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from unix_core import UniXForCausalLM

HUB_ID = "uni-x-studio/unix-tiny"
REVISION = "0123456789abcdef0123456789abcdef01234567"


def _copy_checkpoint(fixtures_dir, tmp_path):
    dst = tmp_path / "ckpt"
    shutil.copytree(fixtures_dir / "unix_tiny", dst)
    return dst


def _edit_weights(folder, edit):
    path = folder / "model.safetensors"
    state = load_file(path)
    edit(state)
    save_file(state, path, metadata={"format": "pt"})


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.pop("model.vision_decode_layers.1.mlp.up_proj.weight"), "missing keys: model.vision_decode_layers.1.mlp.up_proj.weight"),
        (lambda s: s.__setitem__("model.vision_decode_layers.2.mlp.up_proj.weight", torch.zeros(128, 64)), "unexpected keys: model.vision_decode_layers.2.mlp.up_proj.weight"),
        (lambda s: s.__setitem__("model.layers.3.mlp.down_proj.weight", torch.zeros(64, 100)), r"mis-shaped keys: model.layers.3.mlp.down_proj.weight \(checkpoint"),
    ],
)
def test_key_problems_are_errors_naming_the_keys(fixtures_dir, tmp_path, edit, message):
    folder = _copy_checkpoint(fixtures_dir, tmp_path)
    _edit_weights(folder, edit)
    with pytest.raises(ValueError, match=message):
        UniXForCausalLM.from_pretrained(folder)


def test_config_with_fewer_vision_layers_than_weights_is_an_error(fixtures_dir, tmp_path):
    folder = _copy_checkpoint(fixtures_dir, tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["num_vision_encode_layers"] = 2
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="unexpected keys: model.vision_encode_layers.2"):
        UniXForCausalLM.from_pretrained(folder)


def test_unsupported_official_feature_is_refused(fixtures_dir, tmp_path):
    folder = _copy_checkpoint(fixtures_dir, tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["use_share_ffn"] = 1
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="use_share_ffn"):
        UniXForCausalLM.from_pretrained(folder)


def test_official_config_with_row_separators_loads_and_needs_the_separator_id(fixtures_dir, tmp_path):
    """``add_sep_for_vis`` as the official training script writes it (token text, length as a string)."""
    folder = _copy_checkpoint(fixtures_dir, tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(add_sep_for_vis=1, vis_sep_tokens="<|vision_pad|>", vis_sep_lens="32")
    (folder / "config.json").write_text(json.dumps(cfg))
    model = UniXForCausalLM.from_pretrained(folder)
    assert (model.config.vis_sep_lens, model.config.vis_sep_token_id) == (32, None)
    with pytest.raises(ValueError, match="vis_sep_token_id is unknown"):
        model(torch.tensor([[1, 2, 3]]))
    model.config.vis_sep_token_id = 5
    assert model(torch.tensor([[1, 2, 3]])).logits.shape[:2] == (1, 3)


def _fake_hub_cache(fixtures_dir, tmp_path):
    """Lay out the fixture as huggingface_hub's cache holds a downloaded repo (no network involved)."""
    repo = tmp_path / "hub" / ("models--" + HUB_ID.replace("/", "--"))
    snapshot = repo / "snapshots" / REVISION
    shutil.copytree(fixtures_dir / "unix_tiny", snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REVISION)
    return tmp_path / "hub"


@torch.no_grad()
def test_hub_id_loads_through_huggingface_hub_offline(fixtures_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache_dir = _fake_hub_cache(fixtures_dir, tmp_path)
    model = UniXForCausalLM.from_pretrained(HUB_ID, cache_dir=cache_dir, local_files_only=True)
    local = UniXForCausalLM.from_pretrained(fixtures_dir / "unix_tiny")
    vec = load_file(fixtures_dir / "unix_tiny" / "vectors.safetensors")
    ids = vec["mixed.input_ids"]
    torch.testing.assert_close(model(ids).logits, local(ids).logits, atol=0, rtol=0)
    with pytest.raises(OSError):
        UniXForCausalLM.from_pretrained("uni-x-studio/not-there", cache_dir=cache_dir, local_files_only=True)


def test_dtype_argument_is_honoured(fixtures_dir):
    model = UniXForCausalLM.from_pretrained(fixtures_dir / "unix_tiny", dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16
    vec = load_file(fixtures_dir / "unix_tiny" / "vectors.safetensors")
    with torch.no_grad():
        logits = model(vec["mixed.input_ids"]).logits.float()
    assert (logits - vec["mixed.prefill_logits"]).abs().max() < 0.15  # bf16 rounding, same computation


def test_8bit_where_unsupported_is_a_clear_error(fixtures_dir, monkeypatch):
    from transformers import BitsAndBytesConfig

    import unix_core.loading as loading

    monkeypatch.setattr(loading, "int8_support_error", lambda device: f"no int8 kernels for {device} (test)")
    with pytest.raises(ValueError, match=r"8-bit loading is not possible here: no int8 kernels for (cpu|cuda) \(test\)"):
        UniXForCausalLM.from_pretrained(
            fixtures_dir / "unix_tiny", quantization_config=BitsAndBytesConfig(load_in_8bit=True)
        )


@torch.no_grad()
def test_8bit_loading_where_supported(fixtures_dir):
    """CUDA, or the CPU with a bitsandbytes that has CPU int8 kernels (0.46+); skipped elsewhere."""
    from transformers import BitsAndBytesConfig

    from unix_core.loading import int8_support_error

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if (reason := int8_support_error(device)) is not None:
        pytest.skip(reason)
    model = UniXForCausalLM.from_pretrained(
        fixtures_dir / "unix_tiny",
        quantization_config=BitsAndBytesConfig(load_in_8bit=True),
        device_map=device,
        dtype=torch.float16 if device == "cuda" else torch.float32,
    )
    assert type(model.model.vision_encode_layers[0].mlp.up_proj).__name__ == "Linear8bitLt"
    assert type(model.model.layers[4].self_attn.q_proj).__name__ == "Linear8bitLt"
    vec = load_file(fixtures_dir / "unix_tiny" / "vectors.safetensors")
    logits = model(vec["mixed.input_ids"].to(device)).logits.float().cpu()
    ref = vec["mixed.prefill_logits"]
    assert (logits - ref).abs().max() < 0.5  # int8 rounding of random weights, same computation
    assert torch.corrcoef(torch.stack([logits.flatten(), ref.flatten()]))[0, 1] > 0.99


def test_config_written_in_the_official_layout_reads_back_equal(fixtures_dir):
    from unix_core.config import UniXConfig, unix_to_official_config_dict

    golden = json.loads((fixtures_dir / "unix_tiny" / "config.json").read_text())
    config = UniXConfig.from_pretrained(fixtures_dir / "unix_tiny")
    official = unix_to_official_config_dict(config)
    assert (official["model_type"], official["architectures"]) == (golden["model_type"], golden["architectures"])
    shared = set(golden) - {"torch_dtype", "rope_scaling", "layer_types", "max_window_layers", "sliding_window",
                            "use_sliding_window", "transformers_version"}
    assert {k: official[k] for k in shared} == {k: golden[k] for k in shared}
    assert UniXConfig.from_dict(official).to_dict() == config.to_dict()


def test_own_layout_checkpoint_loads_through_transformers_auto_classes(tmp_path):
    """A checkpoint saved with ``save_pretrained`` (``model_type: "uni_x"``, as the training script writes it)
    resolves through AutoConfig and AutoModelForCausalLM to the same model."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from tests.helpers import random_model
    from unix_core import UniXConfig

    model = random_model(seed=3)
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "uni_x"
    assert isinstance(AutoConfig.from_pretrained(tmp_path), UniXConfig)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, UniXForCausalLM)
    ids = torch.tensor([[1, 2, 3, 4]])
    assert torch.equal(loaded(ids).logits, model(ids).logits)
