"""Score an embedded shapes-world checkpoint on held-out data, per task.

    python scripts/evaluate_embedded.py runs/embedded/checkpoint [--n 100] [--split heldout] [--json out.json]

Prints text-to-image judge acceptance, caption exact match, VQA accuracy, edit success (judge accepts the
target scene) and few-shot accuracy, with a few failures per task. Images are sampled with the defaults the
pipeline uses for the checkpoint (its ``prompt_templates.json``); ``--sampling text_to_image.cfg_scale=5``
(repeatable) overrides one, for tuning. Tune on another ``--seed`` than the one you report.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


SAMPLING_KEYS = {"cfg_scale": float, "temperature": float, "top_k": int, "top_p": float, "candidates": int}


def parse_sampling(text: str) -> tuple[str, str, float | int]:
    """``ENTRY.KEY=VALUE`` with ENTRY text_to_image or edit and KEY one of SAMPLING_KEYS."""
    name, sep, value = text.partition("=")
    entry, dot, key = name.partition(".")
    if not sep or not dot or entry not in ("text_to_image", "edit") or key not in SAMPLING_KEYS:
        raise argparse.ArgumentTypeError(
            f"expected ENTRY.KEY=VALUE with ENTRY text_to_image or edit and KEY one of {sorted(SAMPLING_KEYS)}, "
            f"got {text!r}")
    if key == "candidates" and entry != "text_to_image":
        raise argparse.ArgumentTypeError("candidates (the self-check) applies to text_to_image only")
    try:
        return entry, key, SAMPLING_KEYS[key](value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{key} needs a {SAMPLING_KEYS[key].__name__}, got {value!r}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--n", type=int, default=100, help="samples per task")
    parser.add_argument("--split", default="heldout", choices=["heldout", "train"])
    parser.add_argument("--tasks", default="text_to_image,caption,vqa,edit,fewshot")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, default=None, help="also write the scores here")
    parser.add_argument("--weights", type=Path, default=None,
                        help="score these weights instead of the checkpoint's (a stage-2 snapshot of the same run, "
                             "train_embedded.py --snapshot-steps)")
    parser.add_argument("--sampling", type=parse_sampling, action="append", default=[],
                        help="override one image sampling default, e.g. text_to_image.cfg_scale=5 (repeatable)")
    parser.add_argument("--oracle-plans", action="store_true",
                        help="probe, for checkpoints whose edits write a plan: draw each edit after the target's true "
                             "caption instead of the model's plan (measures the drawing alone)")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    import torch

    from unix_core.training.evaluate import folder_evaluator, format_scores, sampling_record

    torch.set_num_threads(args.threads)
    if not args.checkpoint.is_dir():
        parser.error(f"{args.checkpoint} is not a checkpoint folder")
    if args.weights is not None and not args.weights.is_file():
        parser.error(f"--weights {args.weights} is not a file")
    overrides: dict[str, dict] = {}
    for entry, key, value in args.sampling:
        overrides.setdefault(entry, {})[key] = value
    evaluator = folder_evaluator(args.checkpoint, seed=args.seed, device=args.device, image_sampling=overrides,
                                 weights=args.weights, oracle_plans=args.oracle_plans)
    scores = evaluator.run(args.n, split=args.split, tasks=args.tasks.split(","))
    print(format_scores(scores))
    sampling = sampling_record(evaluator.image_sampling)
    print("image sampling: " + "; ".join(f"{entry} {config}" for entry, config in sampling.items()))
    if args.json:
        out = {k: {"correct": v.correct, "total": v.total, "score": v.score, "failures": v.failures, "by_kind": v.by_kind,
                   **({"plans": v.plans} if v.plans else {})}
               for k, v in scores.items()}
        out["settings"] = {"n": args.n, "split": args.split, "seed": args.seed, "image_sampling": sampling,
                           **({"weights": str(args.weights)} if args.weights else {}),
                           **({"oracle_plans": True} if args.oracle_plans else {})}
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
