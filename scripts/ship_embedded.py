"""Copy a trained embedded run into ``assets/unix-shapes/`` and write its model card from measured files.

    python scripts/ship_embedded.py --unix runs/embedded --baseline runs/embedded-0x0 \
        [--bench runs/bench_embedded.json] [--notes runs/card_notes.md] [--log runs/card_log.md] [--out assets/unix-shapes]

Each run folder must hold ``checkpoint/`` (from ``scripts/train_embedded.py``) and ``eval.json`` (from
``scripts/evaluate_embedded.py CKPT --json RUN/eval.json``, which records the image sampling settings it
used; they must be the shipped checkpoint's defaults, or shipping stops). The card's figures come only from
those files (training reports, plan, evaluation, optional benchmark JSON from ``bench/bench_embedded.py``); ``--notes``
adds free text to the training section (e.g. how the run was scheduled on the machine), ``--log`` after the speed
table (status against the bar, failures, the experiment log). Without ``--baseline`` the card's baseline
column stays empty (say in the notes where the baseline's figures are).
Also builds the streaming-preview code palette beside the weights, so the studio never builds it at start.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SHIPPED = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vq_config.json",
           "vq_model.safetensors", "prompt_templates.json", "training_report.json")
BARS = {"text_to_image": 0.90, "caption": 0.90, "vqa": 0.90, "edit": 0.80, "fewshot": 0.80}
TASK_NAMES = {"text_to_image": "Text → image (judge accepts)", "caption": "Caption (exact match)",
              "vqa": "VQA (accuracy)", "edit": "Edit (judge accepts target)", "fewshot": "Few-shot (accuracy)"}
LIMIT_BYTES = 40 * 10**6


def read_json(path: Path):
    if not path.is_file():
        raise SystemExit(f"missing {path}")
    return json.loads(path.read_text())


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def minutes(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds / 60:.1f} min"


def run_summary(run: Path) -> dict:
    report = read_json(run / "checkpoint" / "training_report.json")
    plan = read_json(run / "plan.json")
    scores = read_json(run / "eval.json")
    vq = read_json(run / "work" / "vq" / "report.json")
    decoder = run / "work" / "vq_decoder" / "report.json"
    return {"report": report, "plan": plan, "scores": scores, "vq": vq,
            "vq_decoder": read_json(decoder) if decoder.is_file() else None}


def shipped_sampling(folder: Path) -> dict:
    """The image sampling settings the pipeline uses for ``folder``, as ``evaluate_embedded`` records them."""
    from unix_core.templates import load_templates
    from unix_core.training.evaluate import resolve_image_sampling, sampling_record

    return sampling_record(resolve_image_sampling(load_templates(folder, default_family="shapes").defaults))


def check_sampling(run: Path, scores: dict, sampling: dict) -> None:
    """Stop unless ``run``'s eval.json was measured with the shipped sampling defaults ``sampling``."""
    used = (scores.get("settings") or {}).get("image_sampling")
    if used != sampling:
        raise SystemExit(f"{run / 'eval.json'} was measured with image sampling {used}, but the shipped defaults "
                         f"are {sampling}; rerun scripts/evaluate_embedded.py on {run / 'checkpoint'}")


def sampling_sentence(sampling: dict) -> str:
    def one(entry: str) -> str:
        c = sampling[entry]
        guidance = f"CFG {c['cfg_scale']:g}" if c["cfg_scale"] != 1 else "no CFG"
        extra = (f", top-k {c['top_k']}" if c["top_k"] else "") + (f", top-p {c['top_p']:g}" if c["top_p"] < 1 else "")
        check = c.get("candidates", 1)
        extra += (f", {check} candidates per image of which the model's own captioner keeps the one it finds the "
                  "prompt most likely for (the self-check, `unix_core/selfcheck.py`)") if check > 1 else ""
        return f"{guidance}, temperature {c['temperature']:g}{extra}"

    return (f"Images are sampled with the pipeline's defaults for this model: text → image {one('text_to_image')}; "
            f"edit {one('edit')}. Text answers are greedy.")


def describe(folder: Path) -> dict:
    from unix_core import UniXPipeline

    return UniXPipeline.from_pretrained(str(folder)).describe()


def scores_table(unix: dict, base: dict | None, unix_split: str) -> str:
    """Per-task scores and their average; without ``base`` the baseline column holds "-"."""
    rows = [f"| Task (held-out) | Bar | Uni-X {unix_split} | Shared 0:0 baseline |", "|---|---|---|---|"]
    base = base if base is not None else {}
    means = []
    for task, bar in BARS.items():
        cells = []
        for scores in (unix, base):
            s = scores.get(task)
            cells.append("-" if s is None else f"{s['correct']}/{s['total']} = {s['score']:.0%}")
        rows.append(f"| {TASK_NAMES[task]} | ≥ {bar:.0%} | {cells[0]} | {cells[1]} |")
    for scores in (unix, base):
        present = [scores[t]["score"] for t in BARS if t in scores]
        means.append(sum(present) / len(present) if present else float("nan"))
    average = [f"**{m:.1%}**" if m == m else "-" for m in means]
    rows.append(f"| **Average** | | {average[0]} | {average[1]} |")
    return "\n".join(rows)


def params_table(info: dict) -> str:
    p = info["parameters"]
    names = {"text_branch": "Text branch (separated layers)", "vision_branch": "Vision branch (separated layers)",
             "shared_layers": "Shared middle layers", "embeddings_and_head": "Embeddings, final norm, LM head (tied)",
             "total": "**Total**"}
    return "\n".join(["| Part | Parameters |", "|---|---|"] + [f"| {names[k]} | {p[k]:,} |" for k in names])


def stage_times(summary: dict) -> str:
    report, vq = summary["report"], summary["vq"]
    s1, s2 = report.get("stage1") or {}, report.get("stage2") or {}
    rows = ["| Stage | Measured time | Size |", "|---|---|---|",
            f"| Image tokenizer (VQGAN) | {minutes(vq.get('train_s'))} | {summary['plan']['vq_steps']} steps |",
            *([f"| Image tokenizer: decoder fine-tune | {minutes(summary['vq_decoder'].get('train_s'))} | "
               f"{summary['plan']['vq_decoder_steps']} steps |"] if summary.get("vq_decoder") else []),
            f"| Stage 1: text LM | {minutes(s1.get('elapsed_s'))} | {s1.get('step')} steps, "
            f"{s1.get('tokens', 0):,} tokens |",
            f"| Stage 2: multimodal | {minutes(s2.get('elapsed_s'))} | {s2.get('step')} steps, "
            f"{s2.get('tokens', 0):,} tokens |"]
    return "\n".join(rows)


def steps_flag(plan: dict, budget: float, split: bool = True) -> str:
    """The overrides (``--split`` unless ``split`` is false, ``--vq-steps``, ``--vq-restart-share``, ``--vq-decoder-steps``,
    ``--stage1-steps``, ``--stage1-edit-text``, ``--stage1-extra-text``, ``--stage1-min-lr-ratio``,
    ``--stage2-steps``, ``--separators``, the stage-2 loss options and ``--layout``) that turn the budget's plan
    into the run's, or nothing."""
    from unix_core.training.data import MIX_TASKS
    from unix_core.training.embedded import plan_for_budget

    planned = plan_for_budget(budget, seed=plan["seed"])
    flags = ""
    if split and list(plan["lm"]["split"]) != list(planned.lm.split):
        flags += " --split {}:{}".format(*plan["lm"]["split"])
    if plan["vq_steps"] != planned.vq_steps:
        flags += f" --vq-steps {plan['vq_steps']}"
    if plan.get("vq_restart_share", 1.0) != planned.vq_restart_share:
        flags += f" --vq-restart-share {plan['vq_restart_share']:g}"
    if plan.get("vq_decoder_steps", 0) != planned.vq_decoder_steps:
        flags += f" --vq-decoder-steps {plan['vq_decoder_steps']}"
    if plan["stage1"]["steps"] != planned.stage1.steps:
        flags += f" --stage1-steps {plan['stage1']['steps']}"
    if plan.get("stage1_edit_text", 0) != planned.stage1_edit_text:
        flags += f" --stage1-edit-text {plan['stage1_edit_text']}"
    if plan.get("stage1_extra_text", 0) != planned.stage1_extra_text:
        flags += f" --stage1-extra-text {plan['stage1_extra_text']}"
    if plan["stage1"].get("min_lr_ratio", 0.1) != planned.stage1.min_lr_ratio:
        flags += f" --stage1-min-lr-ratio {plan['stage1']['min_lr_ratio']:g}"
    if plan["stage2"]["steps"] != planned.stage2.steps:
        flags += f" --stage2-steps {plan['stage2']['steps']}"
    if plan.get("vis_separators", False) != planned.vis_separators:
        flags += " --separators"
    stage2 = plan["stage2"]
    if stage2.get("change_weight", 1.0) != planned.stage2.change_weight:
        flags += f" --change-weight {stage2['change_weight']:g}"
    if stage2.get("edit_change_weight", 1.0) != planned.stage2.edit_change_weight:
        flags += f" --edit-change-weight {stage2['edit_change_weight']:g}"
    if stage2.get("edit_keep_weight", 1.0) != planned.stage2.edit_keep_weight:
        flags += f" --edit-keep-weight {stage2['edit_keep_weight']:g}"
    if stage2.get("ema_decay", 0.0) != planned.stage2.ema_decay:
        flags += f" --ema-decay {stage2['ema_decay']:g}"
    if stage2.get("image_noise", 0.0) != planned.stage2.image_noise:
        flags += f" --image-noise {stage2['image_noise']:g}"
    mix = plan["mix"]
    if mix.get("edit_same_shape_share", 0.0) != planned.mix.edit_same_shape_share:
        flags += f" --edit-same-shape-share {mix['edit_same_shape_share']:g}"
    flags += "".join(f" --mix {task}={mix[task]}" for task in MIX_TASKS
                  if mix.get(task, 0) != getattr(planned.mix, task))
    if stage2.get("task_weights", {}) != planned.stage2.task_weights:
        flags += "".join(f" --task-weight {task}={weight:g}" for task, weight in stage2.get("task_weights", {}).items())
    if plan.get("layout", "image-first") != planned.layout:
        flags += f" --layout {plan['layout']}"
    return flags


def vq_encoder_sentence(plan: dict) -> str:
    vq = plan["vq"]
    if vq.get("patchwise_encoder"):
        warmup = plan.get("vq_autoencoder_share", 0)
        warmup = (f" The first {warmup:.0%} of its {plan['vq_steps']} steps train it as a plain autoencoder; then "
                  "k-means over the encoder's latents sets the codebook (without this the quantiser merged "
                  "the rare object cells onto a few codes).") if warmup else ""
        return ("its encoder reads every patch on its own (`patchwise_encoder`), so a code depends only on the "
                "pixels it covers; trained with object pixels weighted "
                f"{plan.get('vq_foreground_weight', 1):g}x in the L2 loss." + warmup)
    return "a whole-image taming encoder."


def resize_phrase(plan: dict, info: dict) -> str:
    box, size = plan["vq"].get("input_box"), info["image_size"]
    if box is None:
        return f"downscaled to {size} px"
    pixels = [round(v * 64) for v in box]
    return (f"cropped to pixels {pixels[0]}–{pixels[2] - 1}, resampled to {size} px with a "
            f"{plan['vq'].get('resample', 'lanczos')} filter,")


def vision_init_sentence(plan: dict) -> str:
    if plan.get("vision_init", "mean") == "palette":
        return ("; the image codes' embedding rows then start from what each code looks like, its decoded pixels "
                "through a fixed random orthogonal map (`vision_init: palette`), instead of all at the mean text row")
    return ""


def decoder_sentence(summary: dict) -> str:
    if not summary.get("vq_decoder"):
        return ""
    before = summary["vq"]
    return (f" Then only its decoder was trained, {summary['plan']['vq_decoder_steps']} more steps on the frozen codes "
            "(`finetune_decoder`: every image keeps its codes, so the LM's data is unchanged); before that the judge "
            f"accepted {before.get('accepted')}/{before.get('images')} of the same held-out reconstructions.")


def flat_sentence(vq_report: dict) -> str:
    flat = vq_report.get("flat_patch_codes")
    if not flat:
        return ""
    codes = [v["codes"] for v in flat["per_colour"].values()]
    count = "1 distinct code" if max(codes) == 1 else f"{min(codes)}–{max(codes)} distinct codes"
    return (f"Flat background patches: {flat['mean_entropy_bits']:.2f} bits of code entropy per patch, "
            f"{count} per background colour ({flat['scenes']} training scenes).")


def bench_table(bench: dict) -> str:
    rows = ["| Call | Median | Target |", "|---|---|---|"]
    for name, seconds in bench["median_s"].items():
        target = bench["targets_s"].get(name)
        rows.append(f"| {name} | {seconds:.3f} s | {'≤ %.1f s' % target if target else '-'} |")
    return "\n".join(rows) + f"\n\n({bench['threads']} torch thread{'s' if bench['threads'] != 1 else ''}, median of {bench['rounds']} calls.)"


def failures(scores: dict, per_task: int = 2) -> str:
    lines = []
    for task in BARS:
        for f in (scores.get(task) or {}).get("failures", [])[:per_task]:
            lines.append(f"- {task}: `{json.dumps(f)}`")
    return "\n".join(lines)


def write_card(out: Path, unix_run: Path, base_run: Path | None, bench: dict | None, notes: str, budget: float,
               log: str = "") -> str:
    unix = run_summary(unix_run)
    base = run_summary(base_run) if base_run is not None else None
    info = describe(out)
    base_info = describe(base_run / "checkpoint") if base_run is not None else None
    sampling = shipped_sampling(out)
    for run, summary in ((unix_run, unix), (base_run, base)):
        if summary is not None:
            check_sampling(run, summary["scores"], sampling)
    from unix_core.routing import describe_split

    split = info["split"].split(" ")[0]
    plan = unix["plan"]
    branches = describe_split(*plan["lm"]["split"])
    lm = plan["lm"]
    vq_report = unix["vq_decoder"] or unix["vq"]
    card = f"""# unix-shapes: the embedded Uni-X of Uni-X Studio

A tiny Uni-X (Qwen3 backbone, {info['layers']} layers, split {info['split']}: {branches}) trained from scratch
on the synthetic shapes world (`unix_core/world`, spec in the repository's issue 5). Images are 64×64 scenes
{resize_phrase(plan, info)} and tokenized by a small taming VQGAN into {info['image_grid'][0]}×{info['image_grid'][1]}
codes from a codebook of {info['codebook_size']}; the text tokenizer is a byte-level BPE of {info['text_vocab_size']}
tokens trained on the world's text. Load it with `UniXPipeline.from_pretrained()` or run `python launch.py`.

## Scores (held-out scenes and phrasings, pipeline defaults)

{scores_table(unix['scores'], base['scores'] if base else None, split)}

{sampling_sentence(sampling)}

{"Both models share" if base else "The baseline (trained by the second command below) would share"} the tokenizers, data, stage-1 text model and stage-2 budget ({plan['stage2']['steps']} steps);
they differ only in the split.{"" if base else " Its run is not part of this card: see the notes under Training."} Evaluate with
`python scripts/evaluate_embedded.py assets/unix-shapes --n 100`.

Image tokenizer: {vq_encoder_sentence(plan)}{decoder_sentence(unix)} The judge accepts {vq_report.get('accepted')}/{vq_report.get('images')}
= {vq_report.get('acceptance', 0):.1%} of held-out reconstructions (bar ≥ 99%: {'met' if vq_report.get('acceptance', 0) >= 0.99 else 'missed'});
failures by object position: `{json.dumps(vq_report.get('failures'))}`. Text-to-image and edit scores are capped by this.
{flat_sentence(unix["vq"])}

A few failures of the Uni-X model:

{failures(unix['scores'])}

## Parameters

{params_table(info)}

{f"Baseline (0:0, same width and depth): {base_info['parameters']['total']:,} parameters." if base_info else ""}

## Training

Command (fresh clone, CPU):

```bash
python scripts/train_embedded.py --out runs/embedded --budget-minutes {budget:g}{steps_flag(plan, budget)} --evaluate 100
python scripts/train_embedded.py --out runs/embedded-0x0 --budget-minutes {budget:g}{steps_flag(plan, budget, split=False)} --split 0:0 --reuse-from runs/embedded
```

LM: width {lm['hidden_size']}, {lm['num_layers']} layers, {lm['num_heads']} heads ({lm['num_kv_heads']} KV),
MLP {lm['intermediate_size']}, tied embeddings. Stage 1 trains the plain text LM on the world's text; stage 2
converts it with `convert_qwen_to_unix` (vision twins copied from the text layers, vocabulary extended by the
codebook{vision_init_sentence(plan)}) and trains on the mix `{json.dumps({k: v for k, v in plan['mix'].items() if k not in ('seed', 'split')})}`
with the paper's choices: loss only on the answer / image codes, a share of text-to-image pairs reversed into
captions, 10% unconditional conditions for guidance, text-only data kept.
Hardware: {cpu_name()}, torch {_torch_version()}, seed {plan['seed']}.

Measured stage times of the shipped run:

{stage_times(unix)}

{notes}

## Speed (`python -m bench.bench_embedded`)

{bench_table(bench) if bench else "(not measured)"}
{chr(10) + log if log else ""}"""
    (out / "README.md").write_text(card)
    return card


def _torch_version() -> str:
    import torch

    return torch.__version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unix", type=Path, required=True, help="the Uni-X run folder to ship")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="the 0:0 baseline run folder (without it the card's baseline column is empty)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "assets" / "unix-shapes")
    parser.add_argument("--bench", type=Path, default=None, help="JSON from bench/bench_embedded.py --json")
    parser.add_argument("--budget-minutes", type=float, default=60.0, help="the --budget-minutes both runs used")
    parser.add_argument("--notes", type=Path, default=None, help="markdown added to the card's training section")
    parser.add_argument("--log", type=Path, default=None,
                        help="markdown added after the speed table (status against the bar, failures, experiment log)")
    args = parser.parse_args(argv)

    from unix_core.config import UniXConfig, unix_to_official_config_dict
    from unix_core.pipeline import PALETTE_FILE
    from unix_core.vq import VQImageTokenizer

    source = args.unix / "checkpoint"
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    for name in SHIPPED:
        shutil.copy2(source / name, args.out / name)
    # config.json in the official layout (model_type qwen3 + the Uni-X keys), as the issue asks
    config = UniXConfig.from_pretrained(args.out)
    (args.out / "config.json").write_text(json.dumps(unix_to_official_config_dict(config), indent=2, sort_keys=True) + "\n")
    VQImageTokenizer.from_pretrained(args.out).code_palette.save(args.out / PALETTE_FILE)
    bench = read_json(args.bench) if args.bench else None
    notes = args.notes.read_text() if args.notes else ""
    log = args.log.read_text() if args.log else ""
    write_card(args.out, args.unix, args.baseline, bench, notes, args.budget_minutes, log)
    size = sum(f.stat().st_size for f in args.out.iterdir())
    print(f"shipped {args.out} ({size / 1e6:.1f} MB)")
    if size > LIMIT_BYTES:
        print(f"warning: over the {LIMIT_BYTES / 1e6:.0f} MB limit")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
