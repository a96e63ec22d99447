"""VQGAN tokenizer: parity with the official golden vectors, checkpoint layouts, strict loading, decoding."""

import dataclasses
import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from unix_core.vq import VQConfig, VQImageTokenizer
from unix_core.vq.checkpoint import NATIVE_CONFIG_NAME, NATIVE_WEIGHTS_NAME
from unix_core.vq.image_io import load_image, whiten_transparency
from unix_core.vq.model import VQModel

IMAGES = ("rgb_shapes", "rgba_alpha", "gray_L")


@pytest.fixture(scope="module")
def golden_dir(request):
    from tests.conftest import FIXTURES

    return FIXTURES / "vqgan_tiny"


@pytest.fixture(scope="module")
def golden(golden_dir):
    return load_file(str(golden_dir / "vectors.safetensors"))


@pytest.fixture(scope="module")
def tokenizer(golden_dir):
    return VQImageTokenizer.from_pretrained(golden_dir)


def _taming_folder(path, config: VQConfig, state_dict: dict, **extra_params) -> None:
    params = {**config.to_taming_params(), "lossconfig": {"target": "torch.nn.Identity"}, **extra_params}
    path.mkdir(parents=True, exist_ok=True)
    document = {"model": {"target": "taming.models.vqgan.VQModel", "params": params}}
    (path / "vqgan.yaml").write_text(yaml.safe_dump(document))
    torch.save({"state_dict": state_dict}, path / "vqgan.ckpt")


# ---- parity with the official tokenizer (vqgan_tiny golden vectors) ----


@pytest.mark.parametrize("name", IMAGES)
def test_golden_parity(tokenizer, golden, golden_dir, name):
    path = golden_dir / f"{name}.png"
    pixels = tokenizer.preprocess(path)
    assert pixels.dtype == torch.float32 and pixels.shape == (1, 3, 64, 64)
    torch.testing.assert_close(pixels, golden[f"{name}.preprocessed"], atol=1e-6, rtol=0)
    with torch.inference_mode():
        latent = tokenizer.model.encode_latent(pixels)
    torch.testing.assert_close(latent, golden[f"{name}.pre_quant_latent"], atol=1e-4, rtol=0)
    codes = tokenizer.encode(path)
    assert codes.shape == (16, 16) and codes.dtype == torch.int64
    assert torch.equal(codes.flatten(), golden[f"{name}.codes"])
    decoded = tokenizer.decode_pixels(codes[None])
    torch.testing.assert_close(decoded, golden[f"{name}.decoded"], atol=1e-4, rtol=0)
    image = tokenizer.decode(codes)
    assert image.mode == "RGB" and image.size == (64, 64)
    assert_truncated_like(image, golden[f"{name}.decoded"][0], Image.open(golden_dir / f"{name}.decoded.png"))


def assert_truncated_like(image, golden_pixels, golden_image):
    """The 8-bit image equals the official one, except by one level where the official float value sits on an
    integer (truncation there flips with float rounding, which differs between CPUs and thread counts)."""
    got, expected = np.asarray(image).astype(int), np.asarray(golden_image).astype(int)
    scaled = ((golden_pixels.clamp(-1, 1) + 1) / 2 * 255).permute(1, 2, 0).double().numpy()
    on_boundary = np.abs(scaled - np.rint(scaled)) < 1e-3
    differ = got != expected
    assert np.abs(got - expected).max() <= 1 and on_boundary[differ].all(), np.argwhere(differ & ~on_boundary)[:5]


def test_golden_whitening_is_exact(golden, golden_dir):
    whitened = whiten_transparency(load_image(golden_dir / "rgba_alpha.png"))
    assert np.array_equal(np.asarray(whitened), golden["rgba_alpha.whitened_rgb"].numpy())


def test_golden_ckpt_is_weights_only_and_properties(golden_dir, tokenizer):
    checkpoint = torch.load(golden_dir / "vqgan.ckpt", weights_only=True, map_location="cpu")
    assert set(checkpoint["state_dict"]) == set(tokenizer.model.state_dict())
    assert tokenizer.codebook_size == 64 and tokenizer.embed_dim == 16
    assert tokenizer.downsample_factor == 4 and tokenizer.image_size == 64 and tokenizer.grid_size == 16
    assert tokenizer.device == torch.device("cpu") and tokenizer.dtype == torch.float32


def test_encode_accepts_paths_bytes_files_arrays_and_images(tokenizer, golden, golden_dir):
    path = golden_dir / "rgb_shapes.png"
    expected = golden["rgb_shapes.codes"].view(16, 16)
    data = path.read_bytes()
    with open(path, "rb") as handle:
        from_file = tokenizer.encode(handle)
    for source in (str(path), data, from_file, Image.open(path), np.asarray(Image.open(path))):
        codes = source if isinstance(source, torch.Tensor) else tokenizer.encode(source)
        assert torch.equal(codes, expected)


def test_encode_batch_equals_single(tokenizer, golden, golden_dir):
    codes = tokenizer.encode_batch([golden_dir / f"{name}.png" for name in IMAGES])
    assert codes.shape == (3, 16, 16)
    for i, name in enumerate(IMAGES):
        assert torch.equal(codes[i].flatten(), golden[f"{name}.codes"])
    batched = tokenizer.decode_pixels(codes)
    torch.testing.assert_close(batched, torch.cat([golden[f"{name}.decoded"] for name in IMAGES]), atol=1e-4, rtol=0)
    for image, name in zip(tokenizer.decode_batch(codes), IMAGES):
        # batched convs round differently (~1e-5): only values on a 1/255 boundary may move, by one level
        diff = np.abs(np.asarray(image).astype(int) - np.asarray(Image.open(golden_dir / f"{name}.decoded.png")))
        assert diff.max() <= 1 and np.count_nonzero(diff) <= 8


def test_encode_other_size(tokenizer, golden_dir):
    assert tokenizer.encode(golden_dir / "rgb_shapes.png", size=32).shape == (8, 8)
    for bad in (30, 0, -4, 2, 32.0):
        with pytest.raises(ValueError, match="multiple of the downsample factor 4"):
            tokenizer.encode(golden_dir / "rgb_shapes.png", size=bad)


# ---- checkpoint layouts and strict keys ----


def test_chameleon_key_layout_on_meta(fixtures_dir):
    reference = json.loads((fixtures_dir / "chameleon_vqgan_keys.json").read_text())
    config = VQConfig.from_taming_params(reference["params"])
    assert config == VQConfig()  # our defaults are Chameleon's
    assert (config.downsample_factor, config.grid_size) == (16, 32)
    with torch.device("meta"):
        model = VQModel(config)
    layout = {name: list(tensor.shape) for name, tensor in model.state_dict().items()}
    assert list(layout.items()) == list(reference["keys"].items())  # names, shapes and order
    assert sum(p.numel() for p in model.parameters()) == reference["total_parameter_count"]


def test_save_pretrained_round_trip(tokenizer, golden, golden_dir, tmp_path):
    tokenizer.save_pretrained(tmp_path / "ours")
    assert {p.name for p in (tmp_path / "ours").iterdir()} == {NATIVE_CONFIG_NAME, NATIVE_WEIGHTS_NAME}
    reloaded = VQImageTokenizer.from_pretrained(tmp_path / "ours")
    assert reloaded.config == tokenizer.config
    for name in IMAGES:
        codes = reloaded.encode(golden_dir / f"{name}.png")
        assert torch.equal(codes.flatten(), golden[f"{name}.codes"])
        assert np.array_equal(np.asarray(reloaded.decode(codes)), np.asarray(tokenizer.decode(codes)))


def test_loss_keys_are_ignored_but_nothing_else(tokenizer, tmp_path):
    state_dict = dict(tokenizer.model.state_dict())
    state_dict["loss.discriminator.main.0.weight"] = torch.zeros(2, 3)
    state_dict["loss.logvar"] = torch.zeros(())
    _taming_folder(tmp_path / "ok", tokenizer.config, state_dict, image_key="image", monitor="val/rec_loss")
    VQImageTokenizer.from_pretrained(tmp_path / "ok")
    state_dict["ema.decoder.conv_out.bias"] = torch.zeros(3)
    _taming_folder(tmp_path / "extra", tokenizer.config, state_dict)
    with pytest.raises(ValueError, match=r"1 unexpected keys: ema\.decoder\.conv_out\.bias"):
        VQImageTokenizer.from_pretrained(tmp_path / "extra")


def test_strict_keys_missing_and_misshaped(tokenizer, tmp_path):
    state_dict = dict(tokenizer.model.state_dict())
    del state_dict["decoder.up.0.block.1.conv2.bias"]
    state_dict["quantize.embedding.weight"] = torch.zeros(65, 16)
    _taming_folder(tmp_path / "bad", tokenizer.config, state_dict)
    with pytest.raises(ValueError) as info:
        VQImageTokenizer.from_pretrained(tmp_path / "bad")
    message = str(info.value)
    assert "1 missing keys: decoder.up.0.block.1.conv2.bias" in message
    assert "quantize.embedding.weight (expected [64, 16], found [65, 16])" in message


def test_from_pretrained_errors(tmp_path, tokenizer):
    with pytest.raises(ValueError, match="holds no VQGAN tokenizer"):
        VQImageTokenizer.from_pretrained(tmp_path)
    _taming_folder(tmp_path / "remap", tokenizer.config, tokenizer.model.state_dict(), remap="used.npy")
    with pytest.raises(ValueError, match="remap"):
        VQImageTokenizer.from_pretrained(tmp_path / "remap")
    _taming_folder(tmp_path / "pickled", tokenizer.config, tokenizer.model.state_dict())
    lightning_like = {"state_dict": tokenizer.model.state_dict(), "callbacks": VQConfig()}  # a pickled object
    torch.save(lightning_like, tmp_path / "pickled" / "vqgan.ckpt")
    with pytest.raises(ValueError, match="weights_only=True"):
        VQImageTokenizer.from_pretrained(tmp_path / "pickled")


def test_from_pretrained_dtype_argument(golden_dir):
    tokenizer = VQImageTokenizer.from_pretrained(golden_dir, device="cpu", dtype=torch.bfloat16)
    assert tokenizer.dtype == torch.bfloat16
    assert tokenizer.encode(golden_dir / "gray_L.png").shape == (16, 16)
    assert tokenizer.decode(torch.zeros(4, 4, dtype=torch.long)).size == (16, 16)


@pytest.mark.gpu
def test_cuda_device_argument(golden, golden_dir):
    tokenizer = VQImageTokenizer.from_pretrained(golden_dir, device="cuda")
    assert tokenizer.device.type == "cuda"
    codes = tokenizer.encode(golden_dir / "rgb_shapes.png")
    assert codes.device.type == "cpu" and (codes.flatten() == golden["rgb_shapes.codes"]).float().mean() > 0.95
    assert tokenizer.partial_decode(codes.flatten()[:100], 16).size == (64, 64)


@pytest.mark.parametrize(
    "overrides",
    [
        dict(ch_mult=(1, 2), attn_resolutions=(8, 4), num_res_blocks=2),  # nin_shortcut, attn on two levels
        dict(ch_mult=(2, 1, 1), resamp_with_conv=False, attn_type="none", tanh_out=True, z_channels=4),
        dict(ch_mult=(1,), num_res_blocks=0),  # f = 1, no res-blocks in the encoder levels
    ],
)
def test_other_ddconfigs_round_trip_through_taming_layout(tmp_path, overrides):
    base = dict(embed_dim=8, n_embed=16, ch=32, ch_mult=(1, 1), num_res_blocks=1, z_channels=8, resolution=8)
    config = VQConfig(**{**base, **overrides})
    tokenizer = VQImageTokenizer.from_config(config, seed=3)
    keys = set(tokenizer.model.state_dict())
    if overrides.get("ch_mult") == (1, 2):
        assert {"encoder.down.1.block.0.nin_shortcut.weight", "decoder.up.0.block.0.nin_shortcut.weight"} <= keys
        assert {"encoder.down.0.attn.1.q.weight", "encoder.down.1.attn.1.q.weight"} <= keys
        assert "decoder.up.1.attn.2.k.weight" in keys
    elif overrides.get("ch_mult") == (2, 1, 1):
        assert not any("downsample" in k or "upsample" in k or ".attn" in k for k in keys)
    else:
        assert not any(k.startswith("encoder.down.0.block") for k in keys)
        assert "decoder.up.0.block.0.conv1.weight" in keys
    _taming_folder(tmp_path / "t", config, tokenizer.model.state_dict())
    reloaded = VQImageTokenizer.from_pretrained(tmp_path / "t")
    assert reloaded.config == config
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8))
    codes = tokenizer.encode(image)
    f = config.downsample_factor
    assert codes.shape == (8 // f, 8 // f)
    assert torch.equal(reloaded.encode(image), codes)
    assert reloaded.decode(codes).size == (8, 8)


def test_config_validation():
    with pytest.raises(ValueError, match="not divisible by 32"):
        VQConfig(ch=48)
    with pytest.raises(ValueError, match="ch_mult"):
        VQConfig(ch_mult=())
    with pytest.raises(ValueError, match="n_embed"):
        VQConfig(n_embed=0)
    with pytest.raises(ValueError, match="unknown VQ config fields"):
        VQConfig.from_dict({**VQConfig().to_dict(), "codebook": 3})
    params = VQConfig().to_taming_params()
    params["ddconfig"]["double_z"] = True
    with pytest.raises(ValueError, match="double_z"):
        VQConfig.from_taming_params(params)
    assert VQConfig.from_dict(VQConfig(ch_mult=[1, 2]).to_dict()) == VQConfig(ch_mult=(1, 2))


# ---- decode input validation ----


def test_decode_accepts_flat_square_and_grid_hw(tokenizer, golden):
    codes = golden["rgb_shapes.codes"]
    expected = np.asarray(tokenizer.decode(codes.view(16, 16)))
    assert np.array_equal(np.asarray(tokenizer.decode(codes)), expected)
    assert np.array_equal(np.asarray(tokenizer.decode(codes.tolist())), expected)
    assert tokenizer.decode(codes[:32], grid_hw=(2, 16)).size == (64, 8)


@pytest.mark.parametrize(
    ("codes", "kwargs", "error", "match"),
    [
        (torch.zeros(10, dtype=torch.long), {}, ValueError, "do not form a square grid"),
        (torch.zeros(12, dtype=torch.long), {"grid_hw": (4, 4)}, ValueError, "do not fill a 4x4 grid"),
        (torch.zeros(2, 4, 4, dtype=torch.long), {}, ValueError, "1-D .* or 2-D"),
        (torch.zeros(1, 1, 4, 4, dtype=torch.long), {}, ValueError, "1-D .* or 2-D"),
        (torch.full((4, 4), 64), {}, ValueError, r"outside \[0, 64\)"),
        (torch.full((4, 4), -1), {}, ValueError, r"outside \[0, 64\)"),
        (torch.zeros(4, 4), {}, TypeError, "integer dtype"),
        (torch.zeros(4, 4, dtype=torch.bool), {}, TypeError, "integer dtype"),
        (torch.zeros(0, dtype=torch.long), {}, ValueError, "square grid"),
        (torch.zeros(4, 4, dtype=torch.long), {"grid_hw": (2, 8)}, ValueError, "grid_hw"),
        ("abc", {}, TypeError, "integers"),
    ],
)
def test_decode_rejects_bad_codes(tokenizer, codes, kwargs, error, match):
    with pytest.raises(error, match=match):
        tokenizer.decode(codes, **kwargs)


def test_decode_batch_rejects_mixed_shapes(tokenizer):
    with pytest.raises(ValueError, match="one shape"):
        tokenizer.decode_batch([torch.zeros(4, 4, dtype=torch.long), torch.zeros(2, 2, dtype=torch.long)])
    with pytest.raises(ValueError, match=r"3-D \(B, h, w\)"):
        tokenizer.decode_batch(torch.zeros(4, 4, dtype=torch.long))


def test_patchwise_encoder_codes_depend_only_on_their_own_patch(tmp_path):
    config = VQConfig(embed_dim=8, n_embed=64, ch=64, ch_mult=(1, 1, 2), num_res_blocks=1, z_channels=8,
                      resolution=16, attn_type="none", patchwise_encoder=True)
    tokenizer = VQImageTokenizer.from_config(config, seed=0)
    rng = np.random.default_rng(0)
    pixels = torch.from_numpy(rng.uniform(-1, 1, (2, 3, 16, 16))).float()
    latents = tokenizer.model.encode_latent(pixels)
    assert latents.shape == (2, 8, 4, 4)
    # each 4x4 patch encoded on its own gives the same latent as inside the whole image
    patch = tokenizer.model.encode_latent(pixels[1:, :, 4:8, 8:12])
    torch.testing.assert_close(patch[0, :, 0, 0], latents[1, :, 1, 2], atol=1e-5, rtol=0)
    changed = pixels.clone()
    changed[:, :, 8:, :] = -changed[:, :, 8:, :]  # the bottom half only
    after = tokenizer.model.encode_latent(changed)
    torch.testing.assert_close(after[:, :, :2], latents[:, :, :2], atol=1e-5, rtol=0)
    assert not torch.allclose(after[:, :, 2:], latents[:, :, 2:])
    # the whole-image encoder of the same weights does mix patches (what the option is for)
    whole = VQImageTokenizer.from_config(dataclasses.replace(config, patchwise_encoder=False), seed=0)
    whole.model.load_state_dict(tokenizer.model.state_dict())
    assert not torch.allclose(whole.model.encode_latent(changed)[:, :, :2], whole.model.encode_latent(pixels)[:, :, :2])
    # the flag survives both serialised forms
    _taming_folder(tmp_path / "t", config, tokenizer.model.state_dict())
    assert VQImageTokenizer.from_pretrained(tmp_path / "t").config.patchwise_encoder is True
    tokenizer.save_pretrained(tmp_path / "n")
    reloaded = VQImageTokenizer.from_pretrained(tmp_path / "n")
    assert reloaded.config == config and torch.equal(reloaded.encode_pixels(pixels), tokenizer.encode_pixels(pixels))
    with pytest.raises(ValueError, match="patchwise_encoder must be a bool"):
        dataclasses.replace(config, patchwise_encoder="yes")


def test_input_box_and_resample_map_world_cells_to_whole_code_blocks():
    """The embedded tokenizer's geometry: canvas pixels 1-63 through a box filter to 36 px, so each of the
    world's 21-px cells is exactly 3x3 codes and an object's pixels (hence codes, with a patchwise encoder)
    are the same at every grid position, whatever its neighbours."""
    from unix_core.training.embedded import DEFAULT_VQ
    from unix_core.vq.preprocess import resize_and_crop
    from unix_core.world import render
    from unix_core.world.scene import POSITIONS, Obj, Scene

    assert DEFAULT_VQ.grid_size == 9
    box, size = DEFAULT_VQ.input_box, DEFAULT_VQ.resolution
    names = list(POSITIONS)
    for shape in ("circle", "square", "triangle"):
        for obj_size in ("small", "large"):
            blocks = []
            for index, position in enumerate(names):
                others = [q for q in names if q != position][index % 3 : index % 3 + 2]
                scene = Scene("white", (Obj(shape, "red", obj_size, position),
                                        *(Obj("square", "blue", "large", q) for q in others)))
                pixels = np.asarray(resize_and_crop(render(scene), size, box=box, resample=DEFAULT_VQ.resample))
                row, col = divmod(index, 3)
                blocks.append(pixels[12 * row : 12 * row + 12, 12 * col : 12 * col + 12])
            assert all(np.array_equal(b, blocks[0]) for b in blocks), (shape, obj_size)
            assert (blocks[0] != np.array([245, 245, 245])).any()  # the object is in its block
    # the official path is untouched: lanczos without a box equals resize + centre crop
    image = render(Scene("black", (Obj("circle", "red", "large", "center"),)))
    assert np.array_equal(np.asarray(resize_and_crop(image, 36)),
                          np.asarray(image.resize((36, 36), Image.LANCZOS)))
    assert not np.array_equal(np.asarray(resize_and_crop(image, 36, resample="box")),
                              np.asarray(resize_and_crop(image, 36)))
    with pytest.raises(ValueError, match="resample must be one of"):
        resize_and_crop(image, 36, resample="nearest")


def test_input_box_config_validation_and_round_trips(tmp_path):
    config = VQConfig(embed_dim=8, n_embed=16, ch=32, ch_mult=(1, 1), num_res_blocks=1, z_channels=8,
                      resolution=8, input_box=[0.25, 0, 1, 0.75], resample="box")
    assert config.input_box == (0.25, 0.0, 1.0, 0.75)
    assert VQConfig.from_dict(config.to_dict()) == config
    assert VQConfig.from_taming_params(config.to_taming_params()) == config
    tokenizer = VQImageTokenizer.from_config(config, seed=0)
    tokenizer.save_pretrained(tmp_path / "n")
    assert VQImageTokenizer.from_pretrained(tmp_path / "n").config == config
    # the tokenizer preprocesses through the box: only the box's pixels matter
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    outside = base.copy()
    outside[:, :4] = 0  # left quarter, outside the box
    outside[12:] = 255  # bottom quarter
    assert torch.equal(tokenizer.preprocess(Image.fromarray(base)), tokenizer.preprocess(Image.fromarray(outside)))
    inside = base.copy()
    inside[6, 8] = 255 - inside[6, 8]
    assert not torch.equal(tokenizer.preprocess(Image.fromarray(base)), tokenizer.preprocess(Image.fromarray(inside)))
    for bad, match in [((0, 0, 1), "4 numbers"), ((0.5, 0, 0.5, 1), "left < right"), ((0, 0, 1, 1.5), "left < right"),
                       ("0011", "fractions"), ((0, 0, True, 1), "4 numbers")]:
        with pytest.raises(ValueError, match=match):
            dataclasses.replace(config, input_box=bad)
    with pytest.raises(ValueError, match="resample must be one of"):
        dataclasses.replace(config, resample="bicubic")
