"""Streaming image generation cost, measured side by side in one run:

- image tokens/s of the bare sampler (no previews) vs the pipeline stream with a cheap mosaic preview every
  token, and with real decoded previews as well (adaptive by default, as in the studio; ``--rows N`` fixes
  the interval);
- the decoded-preview overhead at that interval (target <= 10% of generation time);
- time to first preview (prefill + first code + its mosaic).

The model is a random Uni-X of the embedded size with the golden tiny VQGAN (64 px, 16x16 codes) unless
``--model`` names a checkpoint folder. Run: ``python -m bench.bench_generation``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from unix_core import UniXPipeline
from unix_core.generation import generate_image_stream
from unix_core.sampling import SamplingConfig

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"


def load(model: str | None, workdir: Path) -> UniXPipeline:
    if model:
        return UniXPipeline.from_pretrained(model)
    from tests.pipeline_fixture import build_checkpoint

    folder = build_checkpoint(
        workdir / "bench", FIXTURES, hidden_size=256, intermediate_size=704, num_hidden_layers=8,
        num_vision_encode_layers=2, num_vision_decode_layers=2, num_attention_heads=4, num_key_value_heads=2,
    )
    return UniXPipeline.from_pretrained(folder)


def bare(pipe: UniXPipeline, seed: int) -> float:
    """Seconds for the sampler alone (no previews, no final decode)."""
    ids = pipe._render(pipe.templates.text_to_image, {"prompt": "a red circle"}, []).ids
    uncond = pipe._render(pipe.templates.unconditional, {}, []).ids
    t0 = time.perf_counter()
    for _ in generate_image_stream(
        pipe.model, [ids], grid_hw=pipe.grid_hw, sampling=SamplingConfig(cfg_scale=3.0), unconditional=uncond,
        generator=torch.Generator().manual_seed(seed), pad_id=pipe.pad_id,
    ):
        pass
    return time.perf_counter() - t0


def streamed(pipe: UniXPipeline, seed: int, rows: int) -> tuple[float, float]:
    """(seconds for the whole stream incl. final decode, seconds to the first preview)."""
    t0 = time.perf_counter()
    first = None
    for event in pipe.text_to_image_stream("a red circle", seed=seed, cfg_scale=3.0, preview_every_rows=rows):
        if first is None:
            first = time.perf_counter() - t0
    return time.perf_counter() - t0, first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="checkpoint folder (default: random embedded-size model)")
    parser.add_argument(
        "--rows", type=int, default=None, help="decoded preview every N rows (default: adaptive, the studio's default)"
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        pipe = load(args.model, Path(tmp))
        n = pipe.grid_hw[0] * pipe.grid_hw[1]
        bare(pipe, 0), streamed(pipe, 0, args.rows)  # warm-up
        results = {"bare": [], "mosaic": [], "mosaic+decoded": [], "first": []}
        for r in range(args.rounds):  # interleaved: noise hits every variant alike
            results["bare"].append(bare(pipe, r))
            results["mosaic"].append(streamed(pipe, r, 0)[0])
            total, first = streamed(pipe, r, args.rows)
            results["mosaic+decoded"].append(total)
            results["first"].append(first)
    med = {k: statistics.median(v) for k, v in results.items()}
    info = pipe.describe()
    print(f"model: {info['model']} ({info['parameters']['total'] / 1e6:.2f} M parameters, split {info['split']}), "
          f"{n} codes per image ({pipe.grid_hw[0]}x{pipe.grid_hw[1]}), CFG batch 2, {args.rounds} rounds, "
          f"{torch.get_num_threads()} threads")
    for name in ("bare", "mosaic", "mosaic+decoded"):
        print(f"  {name:<16} {med[name]:7.3f} s/image  {n / med[name]:8.1f} image tokens/s")
    print(f"mosaic preview overhead (vs bare)         = {100 * (med['mosaic'] / med['bare'] - 1):5.1f} %")
    interval = "adaptively" if args.rows is None else f"every {args.rows} rows"
    print(f"decoded preview overhead ({interval:<14}) = "
          f"{100 * (med['mosaic+decoded'] / med['mosaic'] - 1):5.1f} %  (target <= 10 %)")
    print(f"time to first preview                     = {1e3 * med['first']:7.1f} ms")


if __name__ == "__main__":
    main()
