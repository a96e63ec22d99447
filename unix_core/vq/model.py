"""The taming/Chameleon `VQModel`: encoder, decoder, quantiser and the two 1x1 convs.

Module registration order (encoder, decoder, quantize, quant_conv, post_quant_conv) equals
taming's, so `state_dict()` lists keys in the official order. Pixels are in [-1, 1],
channels first; codes are int64 (B, h, w) in raster order.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from unix_core.vq.autoencoder import Decoder, Encoder
from unix_core.vq.config import VQConfig
from unix_core.vq.quantizer import VectorQuantizer


class VQModel(nn.Module):
    """VQGAN autoencoder with a nearest-neighbour codebook."""

    def __init__(self, config: VQConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quantize = VectorQuantizer(config.n_embed, config.embed_dim)
        self.quant_conv = nn.Conv2d(config.z_channels, config.embed_dim, kernel_size=1)
        self.post_quant_conv = nn.Conv2d(config.embed_dim, config.z_channels, kernel_size=1)

    def encode_latent(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, S, S) -> (B, embed_dim, S/f, S/f) pre-quantisation latents."""
        if not self.config.patchwise_encoder:
            return self.quant_conv(self.encoder(pixels))
        # Each f x f patch is a batch item of its own: (B, C, h*f, w*f) -> (B*h*w, C, f, f) -> latents.
        f = self.config.downsample_factor
        batch, channels, height, width = pixels.shape
        h, w = height // f, width // f
        patches = pixels[:, :, : h * f, : w * f].reshape(batch, channels, h, f, w, f)
        patches = patches.permute(0, 2, 4, 1, 3, 5).reshape(batch * h * w, channels, f, f)
        latents = self.quant_conv(self.encoder(patches))  # (B*h*w, embed_dim, 1, 1)
        return latents.reshape(batch, h, w, -1).permute(0, 3, 1, 2).contiguous()

    def encode_codes(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, S, S) -> (B, S/f, S/f) int64 codes."""
        return self.quantize.codes_for(self.encode_latent(pixels))

    def decode_latent(self, quantized: torch.Tensor) -> torch.Tensor:
        """(B, embed_dim, h, w) quantised latents -> (B, out_ch, h*f, w*f) raw decoder output."""
        return self.decoder(self.post_quant_conv(quantized))

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, h, w) int64 codes -> (B, out_ch, h*f, w*f) raw (unclamped) decoder output."""
        return self.decode_latent(self.quantize.lookup(codes))


@torch.no_grad()
def init_weights(model: VQModel, generator: torch.Generator) -> None:
    """Fresh random weights drawn only from `generator` (never the global RNG).

    Convs get PyTorch's default init (kaiming-uniform with a=sqrt(5), bias U(+-1/sqrt(fan_in))),
    GroupNorms ones/zeros, the codebook taming's U(-1/n_embed, 1/n_embed). Works on a model
    materialised with `to_empty`.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
            fan_in = module.weight.shape[1] * module.weight.shape[2] * module.weight.shape[3]
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(module.bias, -bound, bound, generator=generator)
        elif isinstance(module, nn.GroupNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, VectorQuantizer):
            limit = 1.0 / module.n_embed
            nn.init.uniform_(module.embedding.weight, -limit, limit, generator=generator)


def build_random_model(
    config: VQConfig, *, seed: int = 0, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> VQModel:
    """A VQModel with random weights from `init_weights` (seeded, reproducible), in eval mode."""
    with torch.device("meta"):
        model = VQModel(config)
    model = model.to_empty(device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    init_weights(model, generator)
    return model.to(dtype=dtype).eval()
