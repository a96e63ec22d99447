"""VQA by question kind for an embedded shapes-world checkpoint, and whether the weak kinds can be learned.

    python scripts/probe_vqa.py assets/unix-shapes [--n 400] [--seed 21] [--kinds has_shape,has_object]
    python scripts/probe_vqa.py runs/x/checkpoint --finetune-steps 300 [--finetune-kinds has_shape,has_object]

The first form scores the pipeline's answers (its default, greedy text sampling) on ``vqa_samples(n, seed,
split)`` and prints the right answers per question kind, and for yes/no kinds the (expected, answered) counts.

``--finetune-steps`` then asks whether a kind the model misses is beyond it or only under-trained: it
fine-tunes a copy of the weights in memory (AdamW, batches of ``--batch`` sequences, constant ``--lr``) on
training-split questions of ``--finetune-kinds`` only, in the checkpoint's own prompt layout, and scores again
every ``--score-every`` steps on the same held-out questions and on training-split ones. Nothing is written
back; it is a diagnostic, not a training recipe. The figures are in the shipped model's card.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

YES_NO = ("has_shape", "has_object")
DEFAULT_KINDS = ("has_shape", "has_object", "color", "where", "size")  # the kinds that name an object


def score(pipe, samples) -> dict:
    """Right answers per kind, and (kind, expected, answered) counts for the yes/no kinds."""
    right: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    yes_no: collections.Counter = collections.Counter()
    for s in samples:
        answer = pipe.answer(s.image, s.question)
        right[s.kind][0] += answer == s.answer
        right[s.kind][1] += 1
        if s.kind in YES_NO:
            yes_no[f"{s.kind} {s.answer}->{answer}"] += 1
    return {"by_kind": {k: tuple(v) for k, v in sorted(right.items())}, "yes_no": dict(sorted(yes_no.items()))}


def line(tag: str, result: dict) -> str:
    parts = [f"{k} {r}/{t}" for k, (r, t) in result["by_kind"].items()]
    total = sum(r for r, _ in result["by_kind"].values()), sum(t for _, t in result["by_kind"].values())
    return f"{tag}: {total[0]}/{total[1]}  " + ", ".join(parts)


def finetune_sequences(pipe, kinds: set[str], n: int, seed: int):
    from unix_core.training.data import (
        SequenceBuilder,
        encode_scene_set,
        vq_scene_encoder,
    )
    from unix_core.world import vqa_samples

    builder = SequenceBuilder(pipe.tokenizer, real_text_vocab_size=pipe.model.config.real_text_vocab_size,
                              templates=pipe.templates, separator=pipe.model.config.separator)
    samples = [s for s in vqa_samples(n, seed=seed, split="train") if s.kind in kinds]
    codes = encode_scene_set([s.scene for s in samples], vq_scene_encoder(pipe.image_tokenizer))
    return [builder.vqa(codes[s.scene], s.question, s.answer) for s in samples]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--n", type=int, default=400, help="questions drawn (all kinds) before --kinds filters them")
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--split", default="heldout", choices=["train", "heldout"])
    parser.add_argument("--kinds", default=",".join(DEFAULT_KINDS),
                        help="comma-separated question kinds scored (default: the ones that name an object)")
    parser.add_argument("--finetune-steps", type=int, default=0)
    parser.add_argument("--finetune-kinds", default="has_shape,has_object")
    parser.add_argument("--finetune-samples", type=int, default=8000,
                        help="training-split questions drawn (all kinds) before --finetune-kinds filters them")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--score-every", type=int, default=150)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    import torch

    from unix_core import UniXPipeline
    from unix_core.training.data import collate
    from unix_core.world import VQA_KINDS, vqa_samples

    kinds = {k for k in args.kinds.split(",") if k}
    tuned = {k for k in args.finetune_kinds.split(",") if k}
    unknown = (kinds | tuned) - set(VQA_KINDS)
    if unknown:
        parser.error(f"unknown question kinds {sorted(unknown)}; allowed: {', '.join(VQA_KINDS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = UniXPipeline.from_pretrained(str(args.folder))
    test = [s for s in vqa_samples(args.n, seed=args.seed, split=args.split) if s.kind in kinds]
    report: dict = {"folder": str(args.folder), "n": args.n, "seed": args.seed, "split": args.split, "steps": {}}
    report["steps"][0] = {args.split: score(pipe, test)}
    print(line(f"{args.split}, as trained", report["steps"][0][args.split]))
    print("  yes/no:", report["steps"][0][args.split]["yes_no"])
    if args.finetune_steps:
        sequences = finetune_sequences(pipe, tuned, args.finetune_samples, seed=args.seed + 1)
        train_test = [s for s in vqa_samples(args.n, seed=args.seed + 2, split="train") if s.kind in tuned]
        print(f"fine-tuning on {len(sequences)} training-split questions of {sorted(tuned)}")
        model = pipe.model
        optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
        rng = random.Random(args.seed)
        torch.manual_seed(args.seed)
        for step in range(1, args.finetune_steps + 1):
            model.train()
            batch = collate(rng.sample(sequences, min(args.batch, len(sequences))), pipe.tokenizer.pad_token_id)
            loss = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if step % args.score_every == 0 or step == args.finetune_steps:
                model.eval()
                result = {args.split: score(pipe, [s for s in test if s.kind in tuned]),
                          "train": score(pipe, train_test)}
                report["steps"][step] = result
                print(f"step {step} (loss {float(loss.detach()):.4f}) " + line(args.split, result[args.split])
                      + " | " + line("train", result["train"]))
        model.eval()
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
