"""Image-token decode step time: Uni-X split implementation vs the official both-branches computation vs a
shared transformer of the same width and depth, measured side by side in one run.

The batch is 2 rows as with classifier-free guidance (a conditional prompt and a left-padded unconditional
one). The "both branches" variant is the official inference computation expressed with the same kernels as
ours: at split depths the text layer and its vision twin both run on every token, each with a full-length
KV cache and keys of the other modality masked, and each token keeps its own modality's output. The three
variants differ only in what they compute, not in how.

Run: ``python -m bench.bench_model [--hidden 512 --layers 16 --encode 5 --decode 3 --steps 64]``
Targets (issue 2): Uni-X <= 1.05x the shared transformer's step time, >= 1.3x faster than both branches.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from unix_core import UniXConfig, UniXForCausalLM, vision_token_mask
from unix_core.cache import KVBuffer
from unix_core.model import output_cache

TEXT_VOCAB, VISION_VOCAB = 4096, 8192


def build(hidden: int, layers: int, encode: int, decode: int, seed: int = 0) -> UniXForCausalLM:
    torch.manual_seed(seed)
    config = UniXConfig(
        vocab_size=TEXT_VOCAB + VISION_VOCAB, real_text_vocab_size=TEXT_VOCAB, vision_vocab_size=VISION_VOCAB,
        vision_start_id=TEXT_VOCAB - 2, vision_end_id=TEXT_VOCAB - 1, hidden_size=hidden,
        intermediate_size=hidden * 11 // 4, num_hidden_layers=layers, num_attention_heads=hidden // 64,
        num_key_value_heads=max(1, hidden // 128), num_vision_encode_layers=encode, num_vision_decode_layers=decode,
        max_position_embeddings=4096,
    )
    return UniXForCausalLM(config).eval()


class BothBranches:
    """The official inference computation (both twins on all tokens, masked), with our kernels."""

    def __init__(self, model: UniXForCausalLM) -> None:
        self.model = model
        self.buffers = {(d, b): KVBuffer() for d in range(model.config.num_hidden_layers) for b in ("text", "vision")}
        self.seen = None

    @torch.inference_mode()
    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        inner, cfg = self.model.model, self.model.config
        T = input_ids.shape[1]
        valid = attention_mask[:, -T:].bool()
        seen = torch.zeros(input_ids.shape[0], dtype=torch.long) if self.seen is None else self.seen
        positions = (seen[:, None] + valid.cumsum(1) - 1).clamp(min=0)
        self.seen = seen + valid.sum(1)
        h = inner.embed_tokens(input_ids)
        cos, sin = inner.rotary_emb(positions, h.dtype)
        vis = vision_token_mask(input_ids, cfg.real_text_vocab_size, cfg.vision_start_id)
        for d in range(cfg.num_hidden_layers):
            if d in inner.split_depths:
                text = inner.branch_layer(d, "text")(h, cos, sin, positions, valid & ~vis, None, self.buffers[(d, "text")])
                vision = inner.branch_layer(d, "vision")(h, cos, sin, positions, valid & vis, None, self.buffers[(d, "vision")])
                h = torch.where(vis[..., None], vision, text)
            else:
                h = inner.layers[d](h, cos, sin, positions, valid, None, self.buffers[(d, "text")])
        return self.model.lm_head(inner.norm(h))


def cfg_prompt(prompt_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    cond = torch.randint(0, TEXT_VOCAB - 2, (prompt_len,))
    cond[-1] = TEXT_VOCAB - 2
    ids = torch.zeros(2, prompt_len, dtype=torch.long)
    mask = torch.zeros(2, prompt_len, dtype=torch.long)
    ids[0], mask[0] = cond, 1
    ids[1, -2:] = torch.tensor([7, TEXT_VOCAB - 2])  # "<unconditional><|vision_start|>", left padded
    mask[1, -2:] = 1
    return ids, mask


@torch.inference_mode()
def time_decode_interleaved(variants: dict, prompt_len: int, steps: int) -> dict[str, list[float]]:
    """Prefill a CFG pair in every variant, then feed ``steps`` image tokens one at a time, alternating
    between the variants at every step (rotating the order) so machine noise hits them alike."""
    ids, mask = cfg_prompt(prompt_len)
    for step_fn in variants.values():
        step_fn(ids, mask, prefill=True)
    names = list(variants)
    times = {name: [] for name in names}
    for i in range(steps):
        token = torch.full((2, 1), TEXT_VOCAB + (i * 37) % VISION_VOCAB)
        mask = torch.cat([mask, torch.ones(2, 1, dtype=torch.long)], 1)
        for name in names[i % len(names) :] + names[: i % len(names)]:
            t0 = time.perf_counter()
            variants[name](token, mask, prefill=False)
            times[name].append(time.perf_counter() - t0)
    return times


def ours(model: UniXForCausalLM):
    state = {}

    def step(ids, mask, prefill):
        out = model(ids, mask, past_key_values=None if prefill else state["cache"], use_cache=True, logits_to_keep=1)
        state["cache"] = output_cache(out)

    return step


def both(model: UniXForCausalLM):
    state = {}

    def step(ids, mask, prefill):
        if prefill:
            state["oracle"] = BothBranches(model)
        state["oracle"](ids, mask)[:, -1:]

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--encode", type=int, default=5)
    parser.add_argument("--decode", type=int, default=3)
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    unix = build(args.hidden, args.layers, args.encode, args.decode)
    shared = build(args.hidden, args.layers, 0, 0)
    variants = {"uni-x (split)": ours(unix), "both branches (official)": both(unix), "shared transformer": ours(shared)}
    time_decode_interleaved(variants, args.prompt, 8)  # warm-up
    per_step = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, times in time_decode_interleaved(variants, args.prompt, args.steps).items():
            per_step[name].extend(times)
    med = {name: statistics.median(v) * 1e3 for name, v in per_step.items()}
    print(f"config: hidden {args.hidden}, {args.layers} layers, split {args.encode}:{args.decode}, batch 2 (CFG), "
          f"prompt {args.prompt}, {args.rounds}x{args.steps} image-token decode steps, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name, ms in med.items():
        print(f"  {name:<28} {ms:8.3f} ms/step (median)")
    u, b, s = med["uni-x (split)"], med["both branches (official)"], med["shared transformer"]
    print(f"uni-x / shared transformer   = {u / s:.3f}  (target <= 1.05)")
    print(f"both branches / uni-x        = {b / u:.3f}  (target >= 1.30)")


if __name__ == "__main__":
    main()
