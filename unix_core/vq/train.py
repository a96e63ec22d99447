"""Training a small VQGAN tokenizer of the taming architecture on our own images.

Objective per step (no perceptual or GAN loss):
    recon (L1 or L2 of decoder output vs input, object pixels optionally weighted up) + |sg(z) - e|^2
    + beta * |z - sg(e)|^2
with the straight-through estimator (gradients of the decoder flow to the encoder through the
quantiser) and beta = 0.25 by default (the commitment weight on the encoder side - not taming's
"legacy" placement on the codebook side).

Codebook health: after step 1 and then every `restart_every` steps, codes that were not picked
since the previous check are "dead" and are re-initialised from randomly chosen encoder outputs of
the latest batch; their Adam moments are reset. (The check after step 1 acts as a data-dependent
codebook initialisation: taming's U(-1/n, 1/n) init leaves nearly every code unused.) Usage is
reported as perplexity (exp of the entropy of the code histogram) and the fraction of codes used,
both over each logging window.

Sizing note: GroupNorm(32) with one channel per group (ch * ch_mult[0] == 32) normalises every
channel on its own, so the decoder's final norm erases flat colours; give the full-resolution
level at least 64 channels (e.g. ch 32 with ch_mult[0] = 2).

All randomness comes from one `torch.Generator(seed)` (weights, batches, restarts); dropout, if
configured, uses the global RNG.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Iterable, Literal

import torch

from unix_core.vq.config import VQConfig
from unix_core.vq.image_io import ImageSource, load_image, to_rgb8
from unix_core.vq.model import VQModel, init_weights
from unix_core.vq.preprocess import image_to_tensor, resize_and_crop
from unix_core.vq.tokenizer import VQImageTokenizer

logger = logging.getLogger(__name__)


@dataclass
class VQTrainLogEntry:
    """Means over the steps since the previous entry; `step` is 1-based."""

    step: int
    loss: float
    recon_loss: float
    codebook_loss: float
    commitment_loss: float
    perplexity: float
    used_fraction: float
    restarted_codes: int


@dataclass
class VQTrainStats:
    log: list[VQTrainLogEntry] = field(default_factory=list)
    total_restarted_codes: int = 0


class _CodeUsage:
    """Code histograms over the current restart window and logging window."""

    def __init__(self, n_embed: int, device: torch.device):
        self.restart_window = torch.zeros(n_embed, dtype=torch.int64, device=device)
        self.log_window = torch.zeros(n_embed, dtype=torch.int64, device=device)

    def add(self, codes: torch.Tensor) -> None:
        counts = torch.bincount(codes.flatten(), minlength=self.restart_window.numel())
        self.restart_window += counts
        self.log_window += counts

    def log_summary(self) -> tuple[float, float]:
        """(perplexity, used fraction) of the logging window; resets it."""
        probs = self.log_window.double() / max(int(self.log_window.sum()), 1)
        entropy = -(probs[probs > 0] * probs[probs > 0].log()).sum()
        used = float((self.log_window > 0).double().mean())
        self.log_window.zero_()
        return math.exp(float(entropy)), used


def train_vq(
    images: torch.Tensor | Iterable[ImageSource],
    config: VQConfig,
    *,
    steps: int = 1000,
    batch_size: int = 16,
    lr: float = 2e-4,
    seed: int = 0,
    log_every: int = 50,
    beta: float = 0.25,
    recon: Literal["l1", "l2"] = "l1",
    restart_every: int = 20,
    foreground_weight: float = 1.0,
    cosine_lr: bool = False,
    autoencoder_steps: int = 0,
    restart_until: int | None = None,
    device: torch.device | str = "cpu",
) -> tuple[VQImageTokenizer, VQTrainStats]:
    """Train a fresh tokenizer of `config` on `images`; returns it (eval mode, float32) and statistics.

    `images`: a float tensor (N, 3, S, S) in [-1, 1] with S = config.resolution, a uint8 tensor
    (N, 3, S, S), or an iterable of image sources (PIL images, paths, bytes, ...) which are
    preprocessed like `VQImageTokenizer.encode` at `config.resolution`. The set is held in memory.

    `foreground_weight`: the reconstruction loss weight of pixels that differ from the image's top-left
    pixel (for flat-background images: the objects), relative to 1 for the rest. Small objects are a few
    percent of the pixels; a uniform loss spends the codebook on background and blurs their shapes.
    `cosine_lr`: anneal the learning rate to a tenth of `lr` over the steps (torch's `CosineAnnealingLR`).
    `restart_until`: dead-code restarts happen up to this step (default: all steps), so the last steps
    train codebook and decoder on a settled code assignment. The shapes-world tokenizer (2026-12-01, judge
    acceptance of 200 held-out reconstructions): 2,800 steps with restarts throughout 187 (shipped), with
    restarts until 70% 180; 4,200 steps with restarts until 70% 194 (one thread) and 192 (two).
    `autoencoder_steps`: the first this many of `steps` train encoder and decoder without the quantiser;
    then the codebook is set by k-means over the encoder's latents of every training image
    (`kmeans_codebook`), and dead-code restarts are off for the rest (a code whose content is rare would be
    "dead" in a window and lose it). With few distinct patches (shapes-world cells) the quantiser otherwise
    collapses them onto a few codes: a 3x3-cell shapes tokenizer at 24 px had 0/200 reconstructions accepted by
    the judge after 1,500 steps with restarts, 53/200 after 1,200 steps with a 600-step warm-up.
    """
    for name, value in (("steps", steps), ("batch_size", batch_size), ("log_every", log_every),
                        ("restart_every", restart_every)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if isinstance(autoencoder_steps, bool) or not isinstance(autoencoder_steps, int) \
            or not 0 <= autoencoder_steps < steps:
        raise ValueError(f"autoencoder_steps must be an integer in [0, steps), got {autoencoder_steps!r}")
    if restart_until is not None and (isinstance(restart_until, bool) or not isinstance(restart_until, int)
                                      or restart_until < 0):
        raise ValueError(f"restart_until must be None or an integer >= 0, got {restart_until!r}")
    if not foreground_weight > 0:
        raise ValueError(f"foreground_weight must be > 0, got {foreground_weight!r}")
    if not lr > 0 or not beta >= 0:
        raise ValueError(f"lr must be > 0 and beta >= 0, got lr={lr}, beta={beta}")
    if recon not in ("l1", "l2"):
        raise ValueError(f"recon must be 'l1' or 'l2', got {recon!r}")
    data = training_tensor(images, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        model = VQModel(config)
    model = model.to_empty(device="cpu")
    init_weights(model, generator)
    model = model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.5, 0.9))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps, eta_min=lr / 10) if cosine_lr else None
    codebook = model.quantize.embedding.weight
    usage = _CodeUsage(config.n_embed, codebook.device)
    stats = VQTrainStats()
    sums = torch.zeros(4, dtype=torch.float64)
    window_steps, window_restarts = 0, 0
    for step in range(1, steps + 1):
        batch = data[torch.randint(data.shape[0], (batch_size,), generator=generator)].to(device)
        if step <= autoencoder_steps:  # warm-up: no quantiser
            quantized = None
            reconstruction = model.decode_latent(model.encode_latent(batch))
        else:
            quantized = model.quantize(model.encode_latent(batch))
            reconstruction = model.decode_latent(quantized.quantized)
        recon_loss = reconstruction_loss(reconstruction, batch, recon, foreground_weight)
        loss = recon_loss if quantized is None else (
            recon_loss + quantized.codebook_loss + beta * quantized.commitment_loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()
        window_steps += 1
        if quantized is None:
            sums[:2] += float(recon_loss.detach())
            if step == autoencoder_steps:
                codebook.data.copy_(kmeans_codebook(model, data, config.n_embed, generator, device))
                optimizer.state.pop(codebook, None)
        else:
            usage.add(quantized.codes)
            parts = (loss, recon_loss, quantized.codebook_loss, quantized.commitment_loss)
            sums += torch.tensor([float(p.detach()) for p in parts], dtype=torch.float64)
            restarting = not autoencoder_steps and (restart_until is None or step <= restart_until)
            if restarting and (step == 1 or step % restart_every == 0):
                window_restarts += restart_dead_codes(codebook, optimizer, usage.restart_window,
                                                      quantized.flat_latents, generator)
                usage.restart_window.zero_()
        if step % log_every == 0 or step == steps:
            perplexity, used = usage.log_summary()
            means = (sums / window_steps).tolist()
            entry = VQTrainLogEntry(step, *means, perplexity=perplexity, used_fraction=used,
                                    restarted_codes=window_restarts)
            stats.log.append(entry)
            stats.total_restarted_codes += window_restarts
            logger.info("vq train %s", entry)
            sums.zero_()
            window_steps, window_restarts = 0, 0
    return VQImageTokenizer(model.float().eval()), stats


def finetune_decoder(
    tokenizer: VQImageTokenizer,
    images: torch.Tensor | Iterable[ImageSource],
    *,
    steps: int = 1000,
    batch_size: int = 16,
    lr: float = 1e-3,
    seed: int = 0,
    log_every: int = 50,
    recon: Literal["l1", "l2"] = "l2",
    foreground_weight: float = 1.0,
    cosine_lr: bool = True,
    device: torch.device | str = "cpu",
) -> tuple[VQImageTokenizer, VQTrainStats]:
    """Train only the decoder side (``post_quant_conv`` and ``decoder``) of a trained tokenizer on its own codes.

    The encoder, ``quant_conv`` and codebook are frozen and each image's codes are computed once, so every image
    encodes to the same codes afterwards: a language model trained on the tokenizer's codes stays valid, and
    only what the codes decode to gets sharper. Returns a new tokenizer (eval mode, float32; `tokenizer` itself is
    not changed) and statistics whose codebook and commitment losses are 0 and whose perplexity and used
    fraction describe the fixed codes of the batches. Arguments as in `train_vq`.

    Measured on the shapes-world tokenizer (2026-12-01; 4,000 training scenes, batch 16, L2 with object pixels
    weighted 24x, cosine schedule): judge acceptance of held-out reconstructions went from 968/1000 to 981/1000
    after 1,000 steps at lr 2e-4 and 991/1000 at lr 6e-4 (the tokenizer's own training used lr 2e-4 with the
    quantiser's codes still moving).
    """
    import copy

    for name, value in (("steps", steps), ("batch_size", batch_size), ("log_every", log_every)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not lr > 0 or not foreground_weight > 0:
        raise ValueError(f"lr and foreground_weight must be > 0, got lr={lr}, foreground_weight={foreground_weight}")
    if recon not in ("l1", "l2"):
        raise ValueError(f"recon must be 'l1' or 'l2', got {recon!r}")
    config = tokenizer.config
    data = training_tensor(images, config)
    model = copy.deepcopy(tokenizer.model).to(device=device, dtype=torch.float32).eval()
    with torch.no_grad():
        codes = torch.cat([model.encode_codes(chunk.to(device)) for chunk in data.split(256)])
    model.requires_grad_(False)
    trained = [*model.post_quant_conv.parameters(), *model.decoder.parameters()]
    for parameter in trained:
        parameter.requires_grad_(True)
    model.decoder.train()
    optimizer = torch.optim.Adam(trained, lr=lr, betas=(0.5, 0.9))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps, eta_min=lr / 10) if cosine_lr else None
    generator = torch.Generator().manual_seed(seed)
    usage = _CodeUsage(config.n_embed, codes.device)
    stats = VQTrainStats()
    total, window_steps = 0.0, 0
    for step in range(1, steps + 1):
        pick = torch.randint(data.shape[0], (batch_size,), generator=generator)
        batch_codes = codes[pick.to(codes.device)]
        loss = reconstruction_loss(model.decode_codes(batch_codes), data[pick].to(device), recon, foreground_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()
        usage.add(batch_codes)
        total += float(loss.detach())
        window_steps += 1
        if step % log_every == 0 or step == steps:
            perplexity, used = usage.log_summary()
            mean = total / window_steps
            entry = VQTrainLogEntry(step, mean, mean, 0.0, 0.0, perplexity=perplexity, used_fraction=used,
                                    restarted_codes=0)
            stats.log.append(entry)
            logger.info("vq decoder %s", entry)
            total, window_steps = 0.0, 0
    model.requires_grad_(True)
    return VQImageTokenizer(model.to("cpu").float().eval()), stats


@torch.no_grad()
def kmeans_codebook(
    model: VQModel, data: torch.Tensor, n_embed: int, generator: torch.Generator, device, iterations: int = 25
) -> torch.Tensor:
    """(n_embed, embed_dim) centres of k-means over the encoder latents of every image in `data`.

    Each distinct latent counts once (repeats of a flat background would otherwise take most centres), the
    start is k-means++ (seeded by `generator`), and a centre left empty takes the latent farthest from its
    centre. With no more distinct latents than codes, every latent becomes a code of its own.
    """
    latents = torch.cat([model.encode_latent(chunk.to(device)).permute(0, 2, 3, 1).reshape(-1, model.config.embed_dim)
                         for chunk in data.split(256)]).float().cpu()
    points = torch.unique(latents.round(decimals=3), dim=0)
    if points.shape[0] <= n_embed:
        extra = points[torch.randint(points.shape[0], (n_embed - points.shape[0],), generator=generator)]
        return torch.cat([points, extra])
    centres = points[torch.randint(points.shape[0], (1,), generator=generator)]
    nearest = torch.cdist(points, centres).squeeze(1).square()
    for _ in range(n_embed - 1):
        pick = torch.multinomial(nearest / nearest.sum(), 1, generator=generator)
        centres = torch.cat([centres, points[pick]])
        nearest = torch.minimum(nearest, (points - points[pick]).square().sum(1))
    for _ in range(iterations):
        distances = torch.cdist(points, centres)
        assign = distances.argmin(1)
        counts = torch.bincount(assign, minlength=n_embed)
        sums = torch.zeros_like(centres).index_add_(0, assign, points)
        centres = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centres)
        empty = torch.nonzero(counts == 0).flatten()
        if empty.numel():
            far = distances.gather(1, assign[:, None]).squeeze(1).topk(empty.numel()).indices
            centres[empty] = points[far]
    return centres


def reconstruction_loss(
    reconstruction: torch.Tensor, target: torch.Tensor, kind: str, foreground_weight: float = 1.0
) -> torch.Tensor:
    """Mean L1 or L2 error; pixels unlike the top-left one weigh `foreground_weight` (see `train_vq`)."""
    error = (reconstruction - target).abs() if kind == "l1" else (reconstruction - target).square()
    if foreground_weight == 1.0:
        return error.mean()
    foreground = (target - target[:, :, :1, :1]).abs().amax(dim=1, keepdim=True) > 0.05
    weights = torch.where(foreground, foreground_weight, 1.0)
    return (error * weights).sum() / (weights.sum() * error.shape[1])


@torch.no_grad()
def restart_dead_codes(
    codebook: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    window_counts: torch.Tensor,
    recent_latents: torch.Tensor,
    generator: torch.Generator,
) -> int:
    """Re-initialise codes with zero count from random rows of `recent_latents` (N, C); returns how many.

    Distinct latents are drawn when there are enough, with replacement otherwise. The Adam moments
    of the restarted rows are zeroed so that stale momentum does not drag them away.
    """
    dead = torch.nonzero(window_counts == 0).flatten()
    if dead.numel() == 0:
        return 0
    n_latents = recent_latents.shape[0]
    if n_latents >= dead.numel():
        picks = torch.randperm(n_latents, generator=generator)[: dead.numel()]
    else:
        picks = torch.randint(n_latents, (dead.numel(),), generator=generator)
    codebook[dead.to(codebook.device)] = recent_latents[picks.to(recent_latents.device)].to(codebook.dtype)
    state = optimizer.state.get(codebook, {})
    for key in ("exp_avg", "exp_avg_sq"):
        if key in state:
            state[key][dead.to(codebook.device)] = 0
    return int(dead.numel())


def training_tensor(images: torch.Tensor | Iterable[ImageSource], config: VQConfig) -> torch.Tensor:
    """Training images -> (N, 3, S, S) float32 CPU tensor in [-1, 1], S = config.resolution."""
    size = config.resolution
    if isinstance(images, torch.Tensor):
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] != size or images.shape[3] != size:
            raise ValueError(f"training images must have shape (N, 3, {size}, {size}), got {tuple(images.shape)}")
        if images.dtype == torch.uint8:
            return images.float() / 255.0 * 2 - 1
        if not images.is_floating_point():
            raise ValueError(f"training images must be float in [-1, 1] or uint8, got {images.dtype}")
        if images.numel() and (images.min() < -1 or images.max() > 1):
            raise ValueError("float training images must lie in [-1, 1]")
        return images.detach().to("cpu", torch.float32)
    tensors = [image_to_tensor(resize_and_crop(to_rgb8(load_image(item)), size, box=config.input_box,
                                               resample=config.resample)) for item in images]
    if not tensors:
        raise ValueError("no training images")
    return torch.cat(tensors)
