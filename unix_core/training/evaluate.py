"""Held-out evaluation of an embedded shapes-world checkpoint, one score per task.

- text to image: sample an image for each held-out prompt (the pipeline's defaults for CFG, temperature,
  top-k, top-p and self-check candidates: the checkpoint's ``prompt_templates.json`` over the SHAPES
  built-ins) and count the images the pixel judge accepts for the prompt (``partial=True``: attributes a
  prompt leaves out are free). The self-check picks among candidates with the model's own captioner
  (:mod:`unix_core.selfcheck`), never with the judge;
- caption: greedy caption, exact match with the canonical caption (``caption_match``);
- VQA: greedy answer, ``vqa_match``;
- edit: sample the edited image (the pipeline's edit defaults, likewise) and judge it against the target
  scene's caption;
- few-shot: greedy answer after the examples, ``fewshot_match`` (the episode's wording is required).

Prompts are rendered with the checkpoint's templates (SHAPES under its ``prompt_templates.json``) through
the same :class:`SequenceBuilder` as training, and generation uses the streaming samplers of
:mod:`unix_core.generation` with per-call seeded generators.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from unix_core.config import resolve_separator
from unix_core.generation import generate_image_stream, generate_text_stream, write_plans
from unix_core.sampling import SamplingConfig
from unix_core.selfcheck import caption_scores
from unix_core.templates import SHAPES, PromptTemplates

from .data import SequenceBuilder, to_canvas, vq_scene_encoder

logger = logging.getLogger(__name__)

EVAL_TASKS: tuple[str, ...] = ("text_to_image", "caption", "vqa", "edit", "fewshot")


@dataclass
class TaskScore:
    task: str
    correct: int
    total: int
    failures: list[dict] = field(default_factory=list)  # a few (input, expected, got) examples
    by_kind: dict[str, list[int]] = field(default_factory=dict)  # kind -> [correct, total]
    # edits with a written plan: "right" / "wrong" (the plan's target caption is the target's or not) -> [accepted,
    # total]; plans that first caption the source also "source right" / "source wrong"
    plans: dict[str, list[int]] = field(default_factory=dict)
    accepted: list[bool] = field(default_factory=list, repr=False)  # judged tasks: each sample's verdict

    def count(self, ok: bool, kind: str | None) -> None:
        self.correct += ok
        if kind is not None:
            tally = self.by_kind.setdefault(kind, [0, 0])
            tally[0] += ok
            tally[1] += 1

    @property
    def score(self) -> float:
        return self.correct / self.total if self.total else float("nan")


def _drain_text(events, rows: int) -> list[list[int]]:
    out: list[list[int]] = [[] for _ in range(rows)]
    done = [False] * rows
    for event in events:
        for row in range(rows):
            if not done[row]:
                out[row].append(int(event.token_ids[row]))
                done[row] = bool(event.finished[row])
    return out


def _drain_image(events) -> torch.Tensor:
    grid = None
    for event in events:
        grid = event.grid
    return grid


IMAGE_ENTRIES: tuple[str, ...] = ("text_to_image", "edit")


def resolve_image_sampling(defaults: dict[str, dict], overrides: dict[str, dict] | None = None) -> dict[str, SamplingConfig]:
    """The sampling of each image entry: a templates' ``defaults``, overridden per entry by ``overrides``."""
    unknown = sorted(set(overrides or {}) - set(IMAGE_ENTRIES))
    if unknown:
        raise ValueError(f"image_sampling entries {unknown} are not sampled; allowed: {', '.join(IMAGE_ENTRIES)}")
    return {entry: SamplingConfig(**{**defaults[entry], **(overrides or {}).get(entry, {})}) for entry in IMAGE_ENTRIES}


def sampling_record(sampling: dict[str, SamplingConfig]) -> dict:
    """``sampling`` as plain JSON values, the form eval.json records (and the model card compares)."""
    return json.loads(json.dumps({entry: asdict(config) for entry, config in sampling.items()}))


class Evaluator:
    """Scores a Uni-X model with its text and image tokenizers on world samples of one split."""

    def __init__(self, model, tokenizer, vq, *, batch_size: int = 16, seed: int = 0,
                 image_sampling: dict[str, dict] | None = None, templates: PromptTemplates | None = None,
                 oracle_plans: bool = False) -> None:
        """``templates``: the checkpoint's prompt layouts and sampling defaults (the SHAPES built-ins when None);
        ``image_sampling`` overrides the defaults per entry ("text_to_image", "edit"), for tuning.
        ``oracle_plans`` (a probe, layouts with ``edit_plan``): edits draw after the target's true caption
        instead of the plan the model writes, which measures the drawing alone."""
        self.oracle_plans = oracle_plans
        self.model = model.eval()
        self.templates = SHAPES if templates is None else templates
        self.image_sampling = resolve_image_sampling(self.templates.defaults, image_sampling)
        self.tokenizer = tokenizer
        self.vq = vq
        resolve_separator(model.config, tokenizer)
        self.builder = SequenceBuilder(tokenizer, real_text_vocab_size=model.config.real_text_vocab_size,
                                       templates=self.templates, separator=model.config.separator)
        self.encode = vq_scene_encoder(vq)
        self.batch_size = batch_size
        self.seed = seed
        self.grid_hw = (vq.grid_size, vq.grid_size)
        b = self.builder
        self.eos = b.eos_id
        self.banned = {b.vision_start_id, b.vision_end_id, tokenizer.convert_tokens_to_ids("<unconditional>")}

    # ----------------------------------------------------------------------------------------------
    def _codes(self, scenes) -> list[torch.Tensor]:
        return list(self.encode(scenes))

    def _render(self, template: str, fields: dict, images) -> list[int]:
        return self.builder.prompts.render(template, fields, images).ids

    def _text(self, prompts: list[list[int]], max_new_tokens: int) -> list[str]:
        answers = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = prompts[start : start + self.batch_size]
            events = generate_text_stream(
                self.model, chunk, max_new_tokens=max_new_tokens, end_ids={self.eos}, banned_ids=self.banned,
                sampling=SamplingConfig(temperature=0.0), pad_id=self.eos,
            )
            for ids in _drain_text(events, len(chunk)):
                answers.append(self.tokenizer.decode([i for i in ids if i != self.eos]).strip())
        return answers

    def _images(self, prompts: list[list[int]], unconditional: list[list[int]] | None, sampling: SamplingConfig,
                checks: list[str] | None = None):
        """Sample one image per prompt; ``unconditional`` holds each row's unconditional prompt (for CFG).
        With ``checks`` (text to image) and ``sampling.candidates`` k > 1, draw k candidates per prompt and keep
        the one the self-check scores highest for its check text, as the pipeline does."""
        k = sampling.candidates if checks is not None else 1
        if k > 1:
            prompts = [p for p in prompts for _ in range(k)]
            unconditional = None if unconditional is None else [u for u in unconditional for _ in range(k)]
        grids = []
        generator = torch.Generator(device=self.model.device).manual_seed(self.seed)
        groups: list[list[int]] = []  # rows that share an unconditional prompt go into one batch
        for i in range(len(prompts)):
            if groups and len(groups[-1]) < self.batch_size * k and (
                unconditional is None or unconditional[i] == unconditional[groups[-1][0]]
            ):
                groups[-1].append(i)
            else:
                groups.append([i])
        for rows in groups:
            uncond = None if unconditional is None or not sampling.uses_guidance else unconditional[rows[0]]
            grids.append(_drain_image(generate_image_stream(
                self.model, [prompts[i] for i in rows], grid_hw=self.grid_hw, sampling=sampling,
                unconditional=uncond, generator=generator, pad_id=self.eos)).cpu())
        grid = torch.cat(grids)
        if k > 1:
            picks = [caption_scores(self.model, self.builder.prompts, self.templates.caption, grid[i * k : (i + 1) * k], text)
                     .argmax().item() + i * k for i, text in enumerate(checks)]
            grid = grid[picks]
        return [to_canvas(im, self.vq.config.input_box) for im in self.vq.decode_batch(grid)]

    # ----------------------------------------------------------------------------------------------
    def text_to_image(self, n: int, split: str) -> TaskScore:
        from unix_core.world import prompt_samples

        samples = list(prompt_samples(n, seed=self.seed, split=split))
        prompts = [self._render(self.templates.text_to_image, {"prompt": s.prompt}, []) for s in samples]
        uncond = self._render(self.templates.unconditional, {}, [])
        images = self._images(prompts, [uncond] * len(prompts), self.image_sampling["text_to_image"],
                              checks=[s.prompt for s in samples])
        return self._judged("text_to_image", images, [s.prompt for s in samples],
                            [{"prompt": s.prompt} for s in samples], partial=True,
                            kinds=[f"{len(s.scene.objects)} object(s)" for s in samples])

    def caption(self, n: int, split: str) -> TaskScore:
        from unix_core.world import caption_match, caption_samples

        samples = list(caption_samples(n, seed=self.seed, split=split))
        codes = self._codes([s.scene for s in samples])
        got = self._text([self._render(self.templates.caption, {}, [c]) for c in codes], 48)
        return self._score("caption", [s.caption for s in samples], got, caption_match)

    def vqa(self, n: int, split: str) -> TaskScore:
        from unix_core.world import vqa_match, vqa_samples

        samples = list(vqa_samples(n, seed=self.seed, split=split))
        codes = self._codes([s.scene for s in samples])
        prompts = [self._render(self.templates.answer, {"question": s.question}, [c]) for s, c in zip(samples, codes)]
        got = self._text(prompts, 8)
        return self._score("vqa", [s.answer for s in samples], got, vqa_match,
                           inputs=[s.question for s in samples], kinds=[s.kind for s in samples])

    def edit(self, n: int, split: str) -> TaskScore:
        from unix_core.world import caption_match, edit_samples

        samples = list(edit_samples(n, seed=self.seed, split=split))
        sources = self._codes([s.source for s in samples])
        if self.templates.edit_plan:  # the model writes the edited scene first, then draws it (as the pipeline)
            prompts = [self._render(self.templates.edit_plan, {"instruction": s.instruction}, [c])
                       for s, c in zip(samples, sources)]
            if self.oracle_plans:
                plans = [self.builder.plan_ids(s.source.caption(), s.target.caption()) for s in samples]
            else:
                plans = [plan for start in range(0, len(prompts), self.batch_size)
                         for plan in write_plans(self.model, prompts[start : start + self.batch_size],
                                                 vision_start_id=self.builder.vision_start_id,
                                                 banned_ids=self.banned | {self.eos},
                                                 max_new_tokens=self.templates.max_text_tokens, pad_id=self.eos)]
            prompts = [p + plan for p, plan in zip(prompts, plans)]
            plans = [self.tokenizer.decode(plan[:-1], skip_special_tokens=True).strip() for plan in plans]
        else:
            plans = None
            prompts = [self._render(self.templates.edit, {"instruction": s.instruction}, [c])
                       for s, c in zip(samples, sources)]
        sampling = self.image_sampling["edit"]
        uncond = [self._render(self.templates.edit_unconditional, {}, [c]) for c in sources] if sampling.uses_guidance else None
        images = self._images(prompts, uncond, sampling)
        inputs = [{"instruction": s.instruction} for s in samples]
        if plans is not None:
            inputs = [{**given, "plan": plan} for given, plan in zip(inputs, plans)]
        score = self._judged("edit", images, [s.target.caption() for s in samples], inputs,
                             kinds=[s.kind for s in samples])
        if plans is not None:
            for s, plan, ok in zip(samples, plans, score.accepted):
                source, target = self.templates.read_plan(plan)
                keys = ["right" if caption_match(target, s.target.caption()) else "wrong"]
                if self.templates.plan_captions_source:  # did the plan caption the source right (its first part)?
                    keys.append("source " + ("right" if caption_match(source, s.source.caption()) else "wrong"))
                for key in keys:
                    tally = score.plans.setdefault(key, [0, 0])
                    tally[0] += ok
                    tally[1] += 1
        return score

    def fewshot(self, n: int, split: str) -> TaskScore:
        from unix_core.world import fewshot_episodes, fewshot_match

        episodes = list(fewshot_episodes(n, seed=self.seed, split=split))
        prompts = []
        for ep in episodes:
            codes = self._codes([s for s, _ in ep.examples] + [ep.query])
            ids: list[int] = []
            for c, (_, text) in zip(codes, ep.examples):
                ids += self._render(self.templates.few_shot_example, {"text": text}, [c])
            prompts.append(ids + self._render(self.templates.few_shot_query, {}, [codes[-1]]))
        got = self._text(prompts, 12)
        return self._score("fewshot", [ep.answer for ep in episodes], got, fewshot_match,
                           inputs=[ep.wording for ep in episodes])

    @staticmethod
    def _judged(task, images, captions, inputs: list[dict], *, partial: bool = False, kinds=None) -> TaskScore:
        """Images the pixel judge accepts for their captions; up to 5 failures (the input and why); with
        ``kinds`` (one label per sample) also the score per kind."""
        from unix_core.world import judge

        score = TaskScore(task, 0, len(captions))
        for i, (image, caption, given) in enumerate(zip(images, captions, inputs)):
            verdict = judge(image, caption, partial=partial)
            score.count(verdict.ok, kinds[i] if kinds else None)
            score.accepted.append(verdict.ok)
            if not verdict.ok and len(score.failures) < 5:
                score.failures.append({**given, "why": verdict.reason})
        return score

    @staticmethod
    def _score(task, expected, got, match, inputs=None, kinds=None) -> TaskScore:
        score = TaskScore(task, 0, len(expected))
        for i, (want, have) in enumerate(zip(expected, got)):
            ok = match(have, want)
            score.count(ok, kinds[i] if kinds else None)
            if not ok and len(score.failures) < 5:
                score.failures.append({"input": inputs[i] if inputs else "", "expected": want, "got": have})
        return score

    def run(self, n: int, *, split: str = "heldout", tasks=EVAL_TASKS) -> dict[str, TaskScore]:
        unknown = sorted(set(tasks) - set(EVAL_TASKS))
        if unknown:
            raise ValueError(f"unknown evaluation tasks {unknown}; allowed: {list(EVAL_TASKS)}")
        out = {}
        for task in tasks:
            out[task] = getattr(self, task)(n, split)
            logger.info("%s %s: %d/%d", split, task, out[task].correct, out[task].total)
        return out


def load_checkpoint(folder, device: str | torch.device = "cpu", weights=None):
    """(model, text tokenizer, image tokenizer) from a checkpoint folder written by the training script.

    ``weights``: a safetensors file with the same keys as the folder's ``model.safetensors`` (a stage-2
    snapshot of the same run) to use instead of the folder's weights."""
    from transformers import AutoTokenizer

    from unix_core.model import UniXForCausalLM
    from unix_core.vq import VQImageTokenizer

    model = UniXForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    if weights is not None:
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(Path(folder) / "model.safetensors"), "pt") as f:
            expected = set(f.keys())
        state = load_file(str(weights))
        if set(state) != expected:
            raise ValueError(f"{weights} does not hold the weights of {folder}'s model: missing "
                             f"{sorted(expected - set(state))[:5]}, unexpected {sorted(set(state) - expected)[:5]}")
        model.load_state_dict(state, strict=False)  # a tied LM head is in neither file; the keys are checked above
    model = model.to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    resolve_separator(model.config, tokenizer)
    return model, tokenizer, VQImageTokenizer.from_pretrained(folder, device=device)


def evaluate_folder(folder, n: int, *, split: str = "heldout", tasks=EVAL_TASKS, seed: int = 0,
                    device: str | torch.device = "cpu", image_sampling: dict[str, dict] | None = None,
                    weights=None) -> dict[str, TaskScore]:
    """Scores with the sampling defaults the pipeline would use for ``folder`` (its ``prompt_templates.json``
    over the SHAPES built-ins), overridden by ``image_sampling``; ``weights`` as in :func:`load_checkpoint`."""
    evaluator = folder_evaluator(folder, seed=seed, device=device, image_sampling=image_sampling, weights=weights)
    return evaluator.run(n, split=split, tasks=tasks)


def folder_evaluator(folder, *, seed: int = 0, device: str | torch.device = "cpu",
                     image_sampling: dict[str, dict] | None = None, weights=None, oracle_plans: bool = False) -> Evaluator:
    """An :class:`Evaluator` for a checkpoint folder, sampling images with the folder's defaults."""
    from unix_core.templates import load_templates

    model, tokenizer, vq = load_checkpoint(folder, device, weights=weights)
    templates = load_templates(folder, default_family="shapes")
    if oracle_plans and not templates.edit_plan:
        raise ValueError(f"oracle_plans needs a checkpoint whose edits write a plan (edit_plan); {folder} has none")
    return Evaluator(model, tokenizer, vq, seed=seed, templates=templates, image_sampling=image_sampling,
                     oracle_plans=oracle_plans)


def format_scores(scores: dict[str, TaskScore]) -> str:
    names = {"text_to_image": "text-to-image (judge accepts)", "caption": "caption exact match",
             "vqa": "VQA accuracy", "edit": "edit success (judge)", "fewshot": "few-shot accuracy"}
    lines = []
    for task, s in scores.items():
        lines.append(f"{names.get(task, task):32s} {s.correct:4d}/{s.total:<4d} = {s.score:.3f}")
        if s.by_kind:
            lines.append("    by kind: " + ", ".join(f"{k} {c}/{n}" for k, (c, n) in sorted(s.by_kind.items())))
        if s.plans:
            lines.append("    accepted by written plan: " + ", ".join(
                f"plan {k} {c}/{n}" for k, (c, n) in sorted(s.plans.items())))
        lines += [f"    failure: {f}" for f in s.failures[:3]]
    return "\n".join(lines)
