"""Train the embedded shapes-world Uni-X end to end: one command, fixed seed, resumable, CPU or GPU.

    python scripts/train_embedded.py --out runs/embedded [--budget-minutes 90] [--resume]

Writes ``OUT/checkpoint`` (model + text tokenizer + image tokenizer + prompt_templates.json, loadable with
``UniXForCausalLM.from_pretrained``, ``AutoTokenizer.from_pretrained`` and ``VQImageTokenizer.from_pretrained``),
``OUT/plan.json`` (every hyper-parameter) and ``OUT/work/`` (stage outputs and resumable training states).
``--budget-minutes`` picks step counts and data sizes from throughput measured on a 2-core CPU with one
thread; the counts (not the clock) decide when training ends, so runs are deterministic.
``--split 0:0 --reuse-from runs/embedded`` trains the shared-transformer baseline with the same tokenizers,
data, stage-1 model and stage-2 budget.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from unix_core.templates import SHAPES_LAYOUTS  # noqa: E402  (light: no torch before the thread settings)


def parse_split(text: str) -> tuple[int, int]:
    try:
        a, b = (int(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--split must look like A:B (e.g. 2:2), got {text!r}") from None
    return a, b


def parse_task_weight(text: str) -> tuple[str, float]:
    from unix_core.training.data import TASKS

    task, _, weight = text.partition("=")
    try:
        value = float(weight)
    except ValueError:
        value = None
    if task not in TASKS or value is None or value <= 0:
        raise argparse.ArgumentTypeError(
            f"--task-weight must look like TASK=WEIGHT with TASK one of {', '.join(TASKS)} and WEIGHT > 0, got {text!r}")
    return task, value


def parse_mix_count(text: str) -> tuple[str, int]:
    from unix_core.training.data import MIX_TASKS

    task, _, count = text.partition("=")
    if task not in MIX_TASKS or not count.isdigit() or int(count) < 1:
        raise argparse.ArgumentTypeError(
            f"--mix must look like TASK=COUNT with TASK one of {', '.join(MIX_TASKS)} and COUNT >= 1, got {text!r}")
    return task, int(count)


def parse_steps(text: str) -> tuple[int, ...]:
    parts = text.split(",")
    if not all(p.strip().isdigit() and int(p) >= 1 for p in parts):
        raise argparse.ArgumentTypeError(f"--snapshot-steps must be comma-separated steps >= 1, e.g. 11000,16600, "
                                         f"got {text!r}")
    return tuple(sorted({int(p) for p in parts}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="run folder (created)")
    parser.add_argument("--budget-minutes", type=float, default=90.0, help="planned wall time on a 2-core CPU")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", type=parse_split, default=None, help="vision encode:decode layers (default 2:2; the shipped model uses 0:1)")
    parser.add_argument("--hidden", type=int, default=None, help="LM width")
    parser.add_argument("--layers", type=int, default=None, help="LM depth")
    parser.add_argument("--stage1-steps", type=int, default=None, help="override the planned stage-1 steps")
    parser.add_argument("--stage1-edit-text", type=int, default=None,
                        help="text-only edits added to stage 1's text corpus (default 0; needs --layout "
                             "query-first-caption-plan)")
    parser.add_argument("--stage1-extra-text", type=int, default=None,
                        help="more lines of the world's text for stage 1 alone, after the data stage's 20,000 "
                             "(default 0)")
    parser.add_argument("--stage1-min-lr-ratio", type=float, default=None,
                        help="where stage 1's cosine learning-rate schedule ends, as a share of its peak (default 0.1; "
                             "1 keeps the peak after warmup)")
    parser.add_argument("--stage2-steps", type=int, default=None, help="override the planned stage-2 steps")
    parser.add_argument("--vq-steps", type=int, default=None, help="override the planned image-tokenizer steps")
    parser.add_argument("--vq-restart-share", type=float, default=None,
                        help="stop the tokenizer's dead-code restarts after this share of its steps (default 1.0)")
    parser.add_argument("--vq-decoder-steps", type=int, default=None,
                        help="then fine-tune the image tokenizer's decoder on its frozen codes this many steps (default 0)")
    parser.add_argument("--separators", action="store_true",
                        help="a row-separator token after every row of image codes (official add_sep_for_vis)")
    parser.add_argument("--change-weight", type=float, default=None,
                        help="stage-2 loss weight of image codes that differ from the code before them (default 1)")
    parser.add_argument("--edit-change-weight", type=float, default=None,
                        help="stage-2 loss weight of edit target codes that differ from the source's code at the same "
                             "cell (default 1)")
    parser.add_argument("--edit-keep-weight", type=float, default=None,
                        help="stage-2 loss weight of edit target codes that copy a non-background source cell (the "
                             "objects an edit keeps; default 1)")
    parser.add_argument("--edit-same-shape-share", type=float, default=None,
                        help="share of the stage-2 mix's recolour, move and remove edits whose source keeps another "
                             "object of the named object's shape, named apart only by colour (default 0: as drawn)")
    parser.add_argument("--image-noise", type=float, default=None,
                        help="stage 2: share of generated image codes replaced by random ones in the input (default 0)")
    parser.add_argument("--ema-decay", type=float, default=None,
                        help="stage 2 ends with an exponential moving average of its weights with this decay per step "
                             "(default 0: the last step's weights)")
    parser.add_argument("--task-weight", type=parse_task_weight, action="append", default=None,
                        help="stage-2 loss weight of one task's trained tokens, e.g. vqa=8 (repeatable)")
    parser.add_argument("--mix", type=parse_mix_count, action="append", default=None,
                        help="training samples of one task in the stage-2 mix, e.g. edit=7875 (repeatable; "
                        "default: the budget's mix; edit_text, text-only edits, needs --layout "
                        "query-first-caption-plan)")
    parser.add_argument("--layout", choices=list(SHAPES_LAYOUTS), default=None,
                        help="prompt layout of VQA and edit: the image first (default, as the official templates), "
                             "the question / instruction first, or that with edits that first write the edited "
                             "scene's caption, then draw it (query-first-plan), or that with a plan that first "
                             "captions the source image (query-first-caption-plan)")
    parser.add_argument("--plan", type=Path, default=None, help="a plan.json to use instead of the budget plan")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1 on a shared machine)")
    parser.add_argument("--cpu", action="store_true", help="stay on the CPU even when a GPU is present")
    parser.add_argument("--mixed-precision", default="no", choices=["no", "bf16", "fp16"])
    parser.add_argument("--time-limit-minutes", type=float, default=None,
                        help="stop stage 2 early (checkpointed, resumable) after this long; for probes")
    parser.add_argument("--snapshot-steps", type=parse_steps, default=(),
                        help="keep stage 2's weights after these steps in OUT/work/stage2/snapshots (does not change "
                             "the run; score one with evaluate_embedded.py OUT/checkpoint --weights FILE)")
    parser.add_argument("--reuse-from", type=Path, default=None,
                        help="copy finished stages with equal inputs from another run (e.g. for the 0:0 baseline)")
    parser.add_argument("--evaluate", type=int, default=0, help="afterwards, score N held-out samples per task")
    args = parser.parse_args(argv)

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    import torch
    from accelerate import Accelerator

    from unix_core.training.embedded import EmbeddedPlan, copy_reusable_stages, plan_for_budget, run_plan

    torch.set_num_threads(args.threads)
    if args.plan is not None:
        overrides = [f"--{k.replace('_', '-')}" for k in ("split", "hidden", "layers", "stage1_steps",
                                                           "stage1_edit_text", "stage1_extra_text",
                                                           "stage1_min_lr_ratio", "stage2_steps", "vq_steps",
                                                           "vq_restart_share", "vq_decoder_steps",
                                                           "change_weight", "edit_change_weight", "edit_keep_weight",
                                                           "edit_same_shape_share", "image_noise", "task_weight",
                                                           "mix", "layout", "ema_decay") if getattr(args, k) is not None]
        overrides += ["--separators"] if args.separators else []
        if overrides:
            parser.error(f"--plan fixes every setting; drop {', '.join(overrides)} or edit the plan file")
        plan = EmbeddedPlan.from_dict(json.loads(args.plan.read_text()))
    else:
        try:
            plan = plan_for_budget(args.budget_minutes, seed=args.seed, split=args.split, hidden=args.hidden,
                                   layers=args.layers, stage2_steps=args.stage2_steps, vq_steps=args.vq_steps,
                                   vq_restart_share=args.vq_restart_share, vq_decoder_steps=args.vq_decoder_steps,
                                   separators=args.separators,
                                   change_weight=args.change_weight, edit_change_weight=args.edit_change_weight,
                                   edit_keep_weight=args.edit_keep_weight,
                                   edit_same_shape_share=args.edit_same_shape_share,
                                   image_noise=args.image_noise,
                                   task_weights=None if args.task_weight is None else dict(args.task_weight),
                                   mix_counts=None if args.mix is None else dict(args.mix),
                                   layout=args.layout, ema_decay=args.ema_decay,
                                   stage1_steps=args.stage1_steps, stage1_edit_text=args.stage1_edit_text,
                                   stage1_min_lr_ratio=args.stage1_min_lr_ratio,
                                   stage1_extra_text=args.stage1_extra_text)
        except ValueError as err:  # a combination of options the plan refuses
            parser.error(str(err))
    if (args.out / "plan.json").exists() and not args.resume:
        parser.error(f"{args.out} already holds a run; pass --resume to continue it or choose another --out")

    if args.reuse_from is not None:
        copied = copy_reusable_stages(plan, args.reuse_from, args.out)
        logging.getLogger("train_embedded").info("reused stages %s from %s", copied, args.reuse_from)

    def make_accelerator():
        return Accelerator(cpu=args.cpu, mixed_precision=args.mixed_precision)

    time_limit = None if args.time_limit_minutes is None else args.time_limit_minutes * 60
    if any(step > plan.stage2.steps for step in args.snapshot_steps):
        parser.error(f"--snapshot-steps {args.snapshot_steps} goes past stage 2's {plan.stage2.steps} steps")
    checkpoint = run_plan(plan, args.out, make_accelerator=make_accelerator, time_limit_s=time_limit,
                          snapshot_steps=args.snapshot_steps)
    print(f"checkpoint: {checkpoint}")
    if args.evaluate and checkpoint.name == "checkpoint":
        from unix_core.training.evaluate import evaluate_folder, format_scores

        print(format_scores(evaluate_folder(checkpoint, args.evaluate, device=make_accelerator().device)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
