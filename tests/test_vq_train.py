"""Training a tiny VQGAN tokenizer: the loss drops, dead codes restart, runs are reproducible."""

import numpy as np
import pytest
import torch
from PIL import Image

from unix_core.vq import VQConfig, VQImageTokenizer, train_vq
from unix_core.vq.train import restart_dead_codes, training_tensor

# 16 px images, 64 channels at full resolution (2 per GroupNorm group: with 1 per group the final
# norm erases flat colours), f = 2 -> 8x8 codes; small enough for ~60 CPU steps in seconds.
CONFIG = VQConfig(embed_dim=8, n_embed=32, ch=32, ch_mult=(2, 2), num_res_blocks=1, z_channels=8,
                  resolution=16, attn_type="none")


def squares_dataset(n: int = 64, size: int = 16, seed: int = 0) -> torch.Tensor:
    """(n, 3, size, size) in [-1, 1]: a random flat colour with one random flat-coloured square."""
    generator = torch.Generator().manual_seed(seed)
    images = (torch.rand(n, 3, 1, 1, generator=generator) * 2 - 1).expand(n, 3, size, size).clone()
    for image in images:
        side = int(torch.randint(size // 5, size // 2, (1,), generator=generator))
        x, y = torch.randint(0, size - side, (2,), generator=generator).tolist()
        image[:, y : y + side, x : x + side] = torch.rand(3, 1, 1, generator=generator) * 2 - 1
    return images


def test_loss_drops_and_dead_codes_restart():
    data = squares_dataset()
    tokenizer, stats = train_vq(data, CONFIG, steps=60, batch_size=8, lr=1e-3, seed=0, log_every=10,
                                restart_every=10, recon="l2")
    assert [entry.step for entry in stats.log] == [10, 20, 30, 40, 50, 60]
    first, last = stats.log[0], stats.log[-1]
    # taming's tiny uniform init leaves almost every code unused after step 1: they are restarted
    assert first.restarted_codes >= CONFIG.n_embed // 2
    assert stats.total_restarted_codes == sum(entry.restarted_codes for entry in stats.log)
    baseline = float(data.var())  # L2 loss of predicting the mean colour everywhere
    assert last.recon_loss < 0.75 * first.recon_loss and last.recon_loss < 0.8 * baseline
    assert last.used_fraction >= 0.5 and last.perplexity > 4
    assert all(np.isfinite([e.loss, e.codebook_loss, e.commitment_loss]).all() for e in stats.log)
    assert isinstance(tokenizer, VQImageTokenizer) and not tokenizer.model.training
    codes = tokenizer.encode_pixels(data[:4])
    assert codes.shape == (4, 8, 8) and codes.unique().numel() > 1
    assert tokenizer.decode(codes[0]).size == (16, 16)


def test_restart_dead_codes_replaces_only_unused_rows():
    codebook = torch.nn.Parameter(torch.zeros(6, 2))
    optimizer = torch.optim.Adam([codebook])
    codebook.grad = torch.ones(6, 2)
    optimizer.step()  # creates non-zero moments
    before = codebook.data.clone()
    counts = torch.tensor([3, 0, 1, 0, 0, 2])
    latents = torch.arange(20.0).view(10, 2) + 100
    restarted = restart_dead_codes(codebook, optimizer, counts, latents, torch.Generator().manual_seed(0))
    assert restarted == 3
    dead, alive = torch.tensor([1, 3, 4]), torch.tensor([0, 2, 5])
    assert (codebook.data[dead] >= 100).all() and codebook.data[dead].unique(dim=0).shape[0] == 3
    for row in codebook.data[dead]:
        assert any(torch.equal(row, latent) for latent in latents)
    assert torch.equal(codebook.data[alive], before[alive])  # untouched by the restart
    state = optimizer.state[codebook]
    assert (state["exp_avg"][dead] == 0).all() and (state["exp_avg"][alive] != 0).all()
    assert restart_dead_codes(codebook, optimizer, torch.ones(6), latents, torch.Generator()) == 0


def test_same_seed_same_result():
    data = squares_dataset(16)
    runs = [train_vq(data, CONFIG, steps=3, batch_size=4, seed=seed, log_every=1) for seed in (5, 5, 6)]
    (tok_a, stats_a), (tok_b, stats_b), (tok_c, stats_c) = runs
    assert stats_a == stats_b and stats_a != stats_c
    for (name, a), b in zip(tok_a.model.state_dict().items(), tok_b.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_training_inputs():
    images = [Image.fromarray(np.full((20, 24, 3), 40 * i, dtype=np.uint8)) for i in range(3)]
    tensor = training_tensor(images, CONFIG)
    assert tensor.shape == (3, 3, 16, 16) and tensor.dtype == torch.float32
    assert torch.allclose(tensor[1], torch.full((3, 16, 16), 40 / 255 * 2 - 1))
    uint8 = torch.full((2, 3, 16, 16), 255, dtype=torch.uint8)
    assert torch.equal(training_tensor(uint8, CONFIG), torch.ones(2, 3, 16, 16))
    with pytest.raises(ValueError, match=r"\(N, 3, 16, 16\)"):
        training_tensor(torch.zeros(2, 3, 32, 32), CONFIG)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        training_tensor(torch.full((2, 3, 16, 16), 2.0), CONFIG)
    with pytest.raises(ValueError, match="no training images"):
        training_tensor([], CONFIG)
    for bad in (dict(steps=0), dict(batch_size=-1), dict(lr=0.0), dict(recon="l3")):
        with pytest.raises(ValueError):
            train_vq(uint8, CONFIG, **bad)


def test_foreground_weight_and_cosine_schedule():
    from unix_core.vq.train import reconstruction_loss

    target = torch.zeros(1, 3, 4, 4)
    target[:, :, 1, 1] = 1.0  # one "object" pixel on a flat background
    reconstruction = target.clone()
    reconstruction[:, :, 1, 1] = 0.0  # the object is lost: error 1 on 1 of 16 pixels
    assert float(reconstruction_loss(reconstruction, target, "l2")) == pytest.approx(1 / 16)
    assert float(reconstruction_loss(reconstruction, target, "l2", foreground_weight=5.0)) == pytest.approx(5 / 20)
    reconstruction = target.clone()
    reconstruction[:, :, 0, 0] = 1.0  # a background pixel wrong: weight 1 of 20
    assert float(reconstruction_loss(reconstruction, target, "l1", foreground_weight=5.0)) == pytest.approx(1 / 20)
    with pytest.raises(ValueError, match="foreground_weight"):
        train_vq(squares_dataset(8), CONFIG, steps=1, foreground_weight=0)
    _, flat = train_vq(squares_dataset(16), CONFIG, steps=4, batch_size=4, seed=0, log_every=2)
    _, annealed = train_vq(squares_dataset(16), CONFIG, steps=4, batch_size=4, seed=0, log_every=2, cosine_lr=True)
    assert flat.log[0].loss == annealed.log[0].loss != annealed.log[1].loss
    assert flat.log[1].loss != annealed.log[1].loss


class _IdentityEncoder(torch.nn.Module):
    """Stand-in model for `kmeans_codebook`: the 'latent' of a (B, 2, 1, 1) batch is the batch itself."""

    config = VQConfig(embed_dim=2, n_embed=4, ch=32, ch_mult=(2,), num_res_blocks=1, z_channels=2, resolution=1,
                      attn_type="none")

    def encode_latent(self, pixels):
        return pixels


def test_kmeans_codebook_gives_each_distinct_latent_a_code_and_separates_clusters():
    from unix_core.vq.train import kmeans_codebook

    model, generator = _IdentityEncoder(), torch.Generator().manual_seed(0)
    # 3 distinct latents, one repeated 100 times: each gets a code (repeats do not claim extra centres)
    few = torch.tensor([[0.0, 0.0]] * 100 + [[5.0, 0.0], [0.0, 5.0]]).view(-1, 2, 1, 1)
    centres = kmeans_codebook(model, few, 4, generator, "cpu")
    assert centres.shape == (4, 2)
    for point in ([0.0, 0.0], [5.0, 0.0], [0.0, 5.0]):
        assert (centres - torch.tensor(point)).norm(dim=1).min() < 1e-6
    # 4 tight clusters of 50 distinct points, 4 codes: one centre per cluster, at its mean
    means = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    points = (means.repeat_interleave(50, 0) + 0.1 * torch.randn(200, 2, generator=generator)).view(-1, 2, 1, 1)
    centres = kmeans_codebook(model, points, 4, generator, "cpu")
    order = torch.cdist(means, centres).argmin(1)
    assert sorted(order.tolist()) == [0, 1, 2, 3]
    assert torch.allclose(centres[order], points.view(4, 50, 2).mean(1), atol=1e-3)  # latents rounded to 1e-3


def test_autoencoder_warmup_then_kmeans_codes():
    data = squares_dataset()
    with pytest.raises(ValueError, match="autoencoder_steps"):
        train_vq(data, CONFIG, steps=10, autoencoder_steps=10)
    tokenizer, stats = train_vq(data, CONFIG, steps=60, batch_size=8, lr=1e-3, seed=0, log_every=10,
                                recon="l2", autoencoder_steps=30)
    warm, quantised = stats.log[:3], stats.log[3:]
    # no quantiser (no codebook terms, no codes counted) while warming up; no restarts afterwards
    assert all(e.codebook_loss == 0 and e.used_fraction == 0 for e in warm)
    assert all(e.codebook_loss > 0 and e.used_fraction > 0 for e in quantised)
    assert stats.total_restarted_codes == 0
    # the k-means codebook spreads the images' patches over the codes from the first quantised step
    assert quantised[0].perplexity > 8 and quantised[-1].recon_loss < warm[0].recon_loss
    assert tokenizer.encode_pixels(data[:8]).unique().numel() > 4


def test_restarts_stop_after_restart_until():
    data = squares_dataset()
    with pytest.raises(ValueError, match="restart_until"):
        train_vq(data, CONFIG, steps=10, restart_until=-1)
    _, stats = train_vq(data, CONFIG, steps=60, batch_size=8, lr=1e-3, seed=0, log_every=10, restart_every=10,
                        recon="l2", restart_until=30)
    assert stats.log[0].restarted_codes > 0  # the uniform init leaves most codes dead: restarted at step 1
    assert all(entry.restarted_codes == 0 for entry in stats.log[3:])  # steps 31-60: none


def test_finetune_decoder_keeps_every_code_and_lowers_the_reconstruction_error():
    from unix_core.vq import finetune_decoder
    from unix_core.vq.train import reconstruction_loss

    data = squares_dataset()
    tokenizer, _ = train_vq(data, CONFIG, steps=20, batch_size=8, lr=1e-3, seed=0, recon="l2")
    before = {k: v.clone() for k, v in tokenizer.model.state_dict().items()}
    codes = tokenizer.encode_pixels(data)
    tuned, stats = finetune_decoder(tokenizer, data, steps=40, batch_size=8, lr=1e-3, seed=0, log_every=10)
    assert [e.step for e in stats.log] == [10, 20, 30, 40] and all(e.codebook_loss == 0 for e in stats.log)
    # the input tokenizer is untouched; the copy has the same encoder side and so the same codes
    for name, value in tokenizer.model.state_dict().items():
        assert torch.equal(value, before[name]), name
    for name, value in tuned.model.state_dict().items():
        frozen = not name.startswith(("decoder.", "post_quant_conv."))
        assert torch.equal(value, before[name]) == frozen, name
    assert torch.equal(tuned.encode_pixels(data), codes)
    assert not tuned.model.training and all(p.requires_grad for p in tuned.model.parameters())
    with torch.no_grad():
        errors = [float(reconstruction_loss(t.model.decode_codes(codes), data, "l2")) for t in (tokenizer, tuned)]
    assert errors[1] < 0.9 * errors[0], errors
    # seeded: the same call gives the same decoder
    again, _ = finetune_decoder(tokenizer, data, steps=40, batch_size=8, lr=1e-3, seed=0, log_every=10)
    assert all(torch.equal(a, b) for a, b in zip(tuned.model.parameters(), again.model.parameters()))
    for bad in (dict(steps=0), dict(lr=0.0), dict(foreground_weight=0.0), dict(recon="l3")):
        with pytest.raises(ValueError):
            finetune_decoder(tokenizer, data, **bad)
