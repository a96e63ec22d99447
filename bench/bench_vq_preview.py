"""Cost of streaming image previews: per-code mosaic vs partial decoder passes (CPU, random weights).

Run: python -m bench.bench_vq_preview [--threads N] [--palette-sample K] [--repeats R]

For each config it prints: palette build time (one-off; extrapolated from K codes when the
codebook is larger than K), the per-token cost of `StreamingPreview.add`, the cost of rendering
a mosaic image, and the cost of one partial decode (= one full decoder pass) - also divided by
the grid width, i.e. per token when the studio re-decodes once per generated row.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import torch

from bench.timing import median_time
from unix_core.vq import CodePalette, StreamingPreview, VQConfig, VQImageTokenizer
from unix_core.vq.preview import build_code_palette

CONFIGS = {
    "chameleon-512 (f16, 32x32, 8192 codes)": VQConfig(),
    "embedded-64 (f8, 8x8, ch 64)": VQConfig(embed_dim=64, n_embed=4096, ch=64, ch_mult=(1, 1, 2, 2),
                                             num_res_blocks=1, attn_resolutions=(8,), z_channels=64, resolution=64),
    "embedded-64 (f4, 16x16, ch 32)": VQConfig(embed_dim=32, n_embed=4096, ch=32, ch_mult=(1, 2, 2),
                                               num_res_blocks=1, attn_resolutions=(16,), z_channels=32,
                                               resolution=64),
}


@dataclass
class Row:
    name: str
    params_m: float
    palette_s: float
    palette_note: str
    add_us: float
    mosaic_ms: float
    stateless_mosaic_ms: float
    partial_decode_ms: float
    per_token_row_ms: float


def bench_config(name: str, config: VQConfig, palette_sample: int, repeats: int) -> Row:
    tokenizer = VQImageTokenizer.from_config(config, seed=0)
    n, side = config.n_embed, config.grid_size
    params_m = sum(p.numel() for p in tokenizer.model.parameters()) / 1e6
    if n > palette_sample:
        start = time.perf_counter()
        partial = build_code_palette(tokenizer.model, code_ids=torch.arange(palette_sample))
        palette_s = (time.perf_counter() - start) * n / palette_sample
        note = f"extrapolated from {palette_sample}"
        reps = -(-n // palette_sample)
        # the mosaic cost does not depend on the patch contents: tile the sample to the full codebook
        tiled = CodePalette(partial.patches.repeat(reps, 1, 1, 1)[:n], partial.colours.repeat(reps, 1)[:n])
        tokenizer.set_code_palette(tiled)
    else:
        start = time.perf_counter()
        tokenizer.set_code_palette(build_code_palette(tokenizer.model))
        palette_s, note = time.perf_counter() - start, "measured"
    codes = torch.randint(0, n, (side * side,), generator=torch.Generator().manual_seed(1)).tolist()

    stream = StreamingPreview(tokenizer, side)
    start = time.perf_counter()
    for code in codes:
        stream.add(code)
    add_us = (time.perf_counter() - start) / len(codes) * 1e6
    mosaic_ms = median_time(stream.mosaic, max(repeats, 20)) * 1e3
    stateless_ms = median_time(lambda: tokenizer.mosaic_preview(codes, side), max(repeats, 20)) * 1e3

    half = codes[: len(codes) // 2]
    tokenizer.partial_decode(half, side)  # warm-up (allocator, kernels)
    decode_s = median_time(lambda: tokenizer.partial_decode(half, side), repeats)
    return Row(name, params_m, palette_s, note, add_us, mosaic_ms, stateless_ms, decode_s * 1e3, decode_s * 1e3 / side)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--palette-sample", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, CPU, float32, {torch.get_num_threads()} threads, random weights")
    rows = []
    with torch.inference_mode():
        for name, config in CONFIGS.items():
            rows.append(bench_config(name, config, args.palette_sample, args.repeats))
    header = ("config", "params", "palette build (once)", "StreamingPreview.add / token", ".mosaic()",
              "mosaic_preview (stateless)", "partial decode", "decode once per row, per token")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print(f"| {r.name} | {r.params_m:.1f} M | {r.palette_s:.1f} s ({r.palette_note}) | {r.add_us:.1f} us | "
              f"{r.mosaic_ms:.2f} ms | {r.stateless_mosaic_ms:.2f} ms | {r.partial_decode_ms:.0f} ms | "
              f"{r.per_token_row_ms:.1f} ms |")


if __name__ == "__main__":
    main()
