"""Latency of the embedded shapes-world model against issue 5's targets, measured in one run:

- one text-to-image sample with classifier-free guidance (scale 3: every step runs the conditional and the
  unconditional row), prompt to decoded PIL image, target <= 2 s; and one with the pipeline's default
  settings for the model (which may leave guidance off). Both use the model's default number of self-check
  candidates (the sample is the one the model's captioner picks among them); ``text_to_image_1`` times the
  defaults with a single candidate, for comparison;
- one caption (greedy, to end of text), image to string, target <= 0.5 s;
- for reference: a VQA answer and one edit.

Each figure is the median of ``--rounds`` calls after one warm-up call; the ratio column is median / target
(<= 1 meets it). Run: ``python -m bench.bench_embedded [--model FOLDER] [--threads 2] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from bench.timing import median_time
from unix_core import UniXPipeline
from unix_core.world import render, sample_scene

TARGETS = {"text_to_image_cfg": 2.0, "caption": 0.5}
GUIDANCE = 3.0
PROMPT = "a large red circle at the top left and a small blue square at the center on a white background"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint folder or hub id (default: the embedded model)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = UniXPipeline.from_pretrained(args.model)
    import random

    image = render(sample_scene(random.Random(0), "heldout"))
    calls = {
        "text_to_image_cfg": lambda: pipe.text_to_image(PROMPT, seed=0, cfg_scale=GUIDANCE),
        "text_to_image": lambda: pipe.text_to_image(PROMPT, seed=0),
        "text_to_image_1": lambda: pipe.text_to_image(PROMPT, seed=0, candidates=1),
        "caption": lambda: pipe.caption(image, seed=0),
        "vqa": lambda: pipe.answer(image, "what is the background color?", seed=0),
        "edit": lambda: pipe.edit(image, "change the background to black", seed=0),
    }
    results = {name: median_time(fn, args.rounds, warmup=1) for name, fn in calls.items()}
    info = pipe.describe()
    candidates = pipe.templates.defaults.get("text_to_image", {}).get("candidates", 1)
    print(f"model {info['model']} · {info['parameters']['total'] / 1e6:.2f} M parameters · "
          f"{info['image_grid'][0]}x{info['image_grid'][1]} codes · {torch.get_num_threads()} threads · "
          f"text to image: {candidates} self-check candidate(s) per sample by default")
    print(f"{'call':<16}{'median s':>10}{'target s':>10}{'ratio':>8}")
    for name, seconds in results.items():
        target = TARGETS.get(name)
        ratio = f"{seconds / target:8.2f}" if target else f"{'-':>8}"
        print(f"{name:<16}{seconds:10.3f}{target or float('nan'):10.2f}{ratio}")
    if args.json:
        args.json.write_text(json.dumps({"threads": torch.get_num_threads(), "rounds": args.rounds,
                                         "candidates": candidates, "median_s": results, "targets_s": TARGETS},
                                        indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
