"""Score an embedded shapes-world checkpoint on held-out data, per task.

    python scripts/evaluate_embedded.py runs/embedded/checkpoint [--n 100] [--split heldout] [--json out.json]

Prints text-to-image judge acceptance, caption exact match, VQA accuracy, edit success (judge accepts the
target scene) and few-shot accuracy, with a few failures per task.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


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
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    import torch

    from unix_core.training.evaluate import evaluate_folder, format_scores

    torch.set_num_threads(args.threads)
    if not args.checkpoint.is_dir():
        parser.error(f"{args.checkpoint} is not a checkpoint folder")
    scores = evaluate_folder(args.checkpoint, args.n, split=args.split, tasks=args.tasks.split(","),
                             seed=args.seed, device=args.device)
    print(format_scores(scores))
    if args.json:
        args.json.write_text(json.dumps({k: {"correct": v.correct, "total": v.total, "score": v.score,
                                             "failures": v.failures} for k, v in scores.items()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
