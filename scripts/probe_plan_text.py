"""Probe: how well can a plain text LM of the embedded model's shape learn an edit plan's text-to-text step?

    python scripts/probe_plan_text.py runs/cap/checkpoint --samples 12650 --steps 3000 [--n 300] [--threads 2]
    python scripts/probe_plan_text.py runs/cap/checkpoint --model runs/s1cap/work/stage1/final [--n 300]

For checkpoints whose edit plan first captions the source (``--layout query-first-caption-plan``): trains a
fresh plain Qwen-style LM (the stage-1 model's shape, no images) on ``--samples`` text-only edits of the
training split (``SequenceBuilder.edit_text``: instruction and the source's caption given, `` result: {target}``
trained), then writes, greedily, the result for ``--n`` held-out edits given their instruction and true source
caption, and prints how many are the edited scene's exact caption, overall and by edit kind. It separates the
plan's text step from everything images add, so a low score here says the step itself is hard for this shape
and data, not the image. Uses the checkpoint's text tokenizer and prompt templates; writes nothing there.
``--model`` scores a plain text LM trained elsewhere instead (a stage-1 model trained with ``--stage1-edit-text``:
did stage 1 learn the step?); it must use the checkpoint's text tokenizer.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="a checkpoint folder whose edit plan captions the source")
    parser.add_argument("--samples", type=int, default=12650, help="distinct text-only training edits")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--max-tokens", type=int, default=2048, help="padded tokens per batch")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--intermediate", type=int, default=336)
    parser.add_argument("--n", type=int, default=300, help="held-out edits to score")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="also write the scores here")
    parser.add_argument("--model", type=Path, default=None,
                        help="score this plain text LM (e.g. OUT/work/stage1/final) instead of training one")
    args = parser.parse_args(argv)
    for name in ("samples", "steps", "n"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    import torch
    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from unix_core.templates import load_templates
    from unix_core.training.data import IGNORE, SequenceBuilder
    from unix_core.training.embedded import LMShape, stage1_model
    from unix_core.training.train_lm import TrainConfig, train_lm
    from unix_core.world import edit_samples

    torch.set_num_threads(args.threads)
    templates = load_templates(args.checkpoint, default_family="shapes")
    if not templates.plan_captions_source:
        parser.error(f"{args.checkpoint}'s edit plan does not caption the source first (edit_plan_text "
                     f"{templates.edit_plan_text!r}); train it with --layout query-first-caption-plan")
    tokenizer = AutoTokenizer.from_pretrained(str(args.checkpoint))
    builder = SequenceBuilder(tokenizer, templates=templates)
    if args.model is not None:
        model = AutoModelForCausalLM.from_pretrained(str(args.model), dtype=torch.float32)
        if model.config.vocab_size != len(tokenizer):
            parser.error(f"{args.model} has {model.config.vocab_size} token embeddings; {args.checkpoint}'s text "
                         f"tokenizer has {len(tokenizer)}: score a model trained with that tokenizer")
        args.samples = args.steps = tokens = None  # trained elsewhere
    else:
        train = builder.edit_texts(args.samples, seed=args.seed)
        shape = LMShape(hidden_size=args.hidden, num_layers=args.layers, num_heads=args.heads, num_kv_heads=1,
                        intermediate_size=args.intermediate, split=(0, 0))
        model = stage1_model(SimpleNamespace(lm=shape, seed=args.seed), tokenizer)
        config = TrainConfig(steps=args.steps, max_tokens=args.max_tokens, lr=args.lr, warmup_steps=30,
                             checkpoint_every=args.steps, seed=args.seed)
        with tempfile.TemporaryDirectory() as work:
            tokens = train_lm(model, train, config, work_dir=work, accelerator=Accelerator(cpu=True),
                              pad_id=builder.eos_id).tokens
    model.eval()

    samples = list(edit_samples(args.n, seed=args.seed, split="heldout"))
    right, total = Counter(), Counter()
    failures = []
    for e in samples:
        seq = builder.edit_text(e.instruction, e.source.caption(), e.target.caption())
        given = next(i for i, label in enumerate(seq.labels) if label != IGNORE)  # where the trained result starts
        with torch.inference_mode():
            out = model.generate(torch.tensor([seq.input_ids[:given]]), max_new_tokens=templates.max_text_tokens,
                                 do_sample=False, eos_token_id=builder.vision_start_id, pad_token_id=builder.eos_id)
        written = tokenizer.decode(out[0, given:], skip_special_tokens=True)
        target = templates.read_plan(e.source.caption() + written)[1]
        ok = target == e.target.caption()
        right[e.kind] += ok
        total[e.kind] += 1
        if not ok and len(failures) < 5:
            failures.append({"instruction": e.instruction, "source": e.source.caption(),
                             "expected": e.target.caption(), "got": target})
    result = {"model": None if args.model is None else str(args.model), "samples": args.samples,
              "steps": args.steps, "tokens": tokens, "n": args.n, "right": sum(right.values()),
              "by_kind": {k: [right[k], total[k]] for k in sorted(total)}, "failures": failures}
    trained = (str(args.model) if args.model is not None else
               f"after {args.steps} steps on {args.samples} text-only edits ({tokens:,} tokens)")
    print(f"text step right {result['right']}/{args.n} = {result['right'] / args.n:.3f}: {trained}")
    print("    by kind: " + ", ".join(f"{k} {c}/{n}" for k, (c, n) in result["by_kind"].items()))
    for f in failures[:3]:
        print(f"    failure: {f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
