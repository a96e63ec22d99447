"""Prompt templates per checkpoint family, as data.

A template is a string with ``{field}`` placeholders for user text and ``<image>`` where an image is spliced
in as ``<|vision_start|>`` codes ``<|vision_end|>``. Rendering keeps literal template text (which may hold
special tokens such as ``<|vision_start|>``) apart from user text, which is tokenized with special tokens
split, so a user cannot inject control tokens.

Built-in families: ``uni-x`` (the official Uni-X layouts, see ``tests/fixtures`` and the official
``data_collator.py``/``gen_img.py``) and ``shapes`` (our embedded default model). A checkpoint folder may
override any entry with a ``prompt_templates.json`` file holding a subset of :class:`PromptTemplates`' fields.
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

IMAGE_PLACEHOLDER = "<image>"
TEMPLATES_FILE = "prompt_templates.json"


@dataclass(frozen=True)
class PromptTemplates:
    family: str
    text_to_image: str
    unconditional: str
    caption: str
    answer: str
    edit: str
    edit_unconditional: str
    few_shot_example: str
    few_shot_query: str
    # Optional: edit with a written plan. The prompt up to where the model writes the edited scene as text; the
    # model's text ends with <|vision_start|> and the image codes follow (empty: the model draws at once, `edit`).
    edit_plan: str = ""
    # What that plan says: {target} the edited scene's caption, optionally after {source} the source's caption
    # (the model first captions the image it edits, then writes the result).
    edit_plan_text: str = " {target}"
    end_tokens: tuple[str, ...] = ()
    image_size: int | None = None  # pixels; None: the image tokenizer's own resolution
    defaults: dict[str, Any] = field(default_factory=dict)  # default sampling settings per entry point

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "str" and not isinstance(value, str):
                raise ValueError(f"prompt template {f.name!r} must be a string, got {type(value).__name__}")
        for name in ("text_to_image", "edit"):
            if not getattr(self, name).endswith("<|vision_start|>"):
                raise ValueError(f"prompt template {name!r} must end with <|vision_start|> (the image follows)")
        if self.edit_plan and (self.edit_plan.endswith("<|vision_start|>") or "{instruction}" not in self.edit_plan
                               or self.edit_plan.count(IMAGE_PLACEHOLDER) != 1):
            raise ValueError("prompt template 'edit_plan' must hold {instruction} and one <image> and end where the "
                             "model writes its plan (not with <|vision_start|>)")
        fields_used = re.findall(r"{([^{}]*)}", self.edit_plan_text)
        if fields_used.count("target") != 1 or set(fields_used) - {"source", "target"} or fields_used.count("source") > 1 \
                or ("source" in fields_used and fields_used.index("source") > fields_used.index("target")):
            raise ValueError("prompt template 'edit_plan_text' must hold {target} once, optionally after one {source}, "
                             f"and no other fields; got {self.edit_plan_text!r}")

    @property
    def plan_captions_source(self) -> bool:
        """Whether an edit's plan first captions its source (``{source}`` in ``edit_plan_text``)."""
        return "{source}" in self.edit_plan_text

    def plan_text(self, source: str, target: str) -> str:
        """The plan an edit writes (``edit_plan``) for these captions of the source and the edited scene."""
        return self.edit_plan_text.replace("{source}", source).replace("{target}", target)

    def plan_parts(self, source: str, target: str) -> tuple[str, str]:
        """``plan_text`` split where the plan starts to say something the source's caption does not: (the
        source's part, the rest). The first part is empty when the plan does not hold ``{source}``."""
        text = self.plan_text(source, target)
        if not self.plan_captions_source:
            return "", text
        head = self.edit_plan_text.split("{source}")[0] + source
        return head, text[len(head):]

    def read_plan(self, plan: str) -> tuple[str, str]:
        """(the source's caption, the edited scene's caption) as a written plan says them; "" for a part it
        lacks. The target is the text after the plan's own words before ``{target}`` (e.g. "result:")."""
        before = self.edit_plan_text.split("{target}")[0]  # validated: {source}, if any, comes before {target}
        has_source = self.plan_captions_source
        lead, _, marker = before.rpartition("{source}")  # the words before the source's caption, and after it
        marker = marker.strip()
        if not marker:
            return "", plan.strip()
        head, found, tail = plan.rpartition(marker)
        if not found:
            return (plan.strip(), "") if has_source else ("", plan.strip())
        return (head.strip().removeprefix(lead.strip()).strip() if has_source else ""), tail.strip()

    @property
    def max_text_tokens(self) -> int:
        """How many tokens a text answer (or an edit's written plan) may take by default."""
        return self.defaults.get("text", {}).get("max_new_tokens", 64)

    def with_overrides(self, overrides: dict[str, Any]) -> "PromptTemplates":
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown prompt template fields {unknown}; allowed: {sorted(known)}")
        values = dict(overrides)
        if "end_tokens" in values:
            values["end_tokens"] = tuple(values["end_tokens"])
        if "defaults" in values:  # per entry, a checkpoint's keys over the family's
            if not isinstance(values["defaults"], dict) or not all(isinstance(v, dict) for v in values["defaults"].values()):
                raise ValueError('prompt template "defaults" must map entry names to objects of sampling settings')
            values["defaults"] = {**self.defaults, **{entry: {**self.defaults.get(entry, {}), **settings}
                                                      for entry, settings in values["defaults"].items()}}
        return replace(self, **values)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["end_tokens"] = list(self.end_tokens)
        return out


UNI_X = PromptTemplates(
    family="uni-x",
    text_to_image="{prompt} Generate an image based on this description.<|vision_start|>",
    unconditional="<unconditional><|vision_start|>",
    caption="<image>The caption of this image is:",
    answer="<image>\n{question}\n",
    edit="<image>\n{instruction}\n<|vision_start|>",
    edit_unconditional="<unconditional><|vision_start|>",
    few_shot_example="<image>{text}\n",
    few_shot_query="<image>",
    end_tokens=("<|endoftext|>", "<|im_end|>"),
    image_size=512,
    defaults={
        "text_to_image": {"cfg_scale": 4.0, "temperature": 1.0, "top_k": 4096, "top_p": 0.96},
        "edit": {"cfg_scale": 4.0, "temperature": 1.0, "top_k": 4096, "top_p": 0.96},
        "text": {"temperature": 0.0, "max_new_tokens": 256},
    },
)

SHAPES = PromptTemplates(
    family="shapes",
    text_to_image="{prompt}<|vision_start|>",
    unconditional="<unconditional><|vision_start|>",
    caption="<image>caption:",
    answer="<image>question: {question} answer:",
    edit="<image>edit: {instruction}<|vision_start|>",
    edit_unconditional="<image>edit:<|vision_start|>",
    few_shot_example="<image>{text}<|endoftext|>",
    few_shot_query="<image>",
    end_tokens=("<|endoftext|>",),
    # Image defaults tuned on held-out prompts of other seeds than the reported evaluation (seeds 1 and 2, not 0;
    # `scripts/evaluate_embedded.py --seed 1 --sampling text_to_image.cfg_scale=1.5 ...`), 9,126-step 1:1 model.
    # Text to image, one image per prompt, judge accepts (seed 1, n=100): CFG 3 at temperature 1 (the first
    # default) 6, CFG 1 24, CFG 2 25, CFG >= 5 0-2; CFG 1.5 at temperature 0.5 49, at 0.3 53 (seed 2, n=200: 44%
    # and 47%). With the self-check (16 candidates, the model's captioner keeps one; unix_core/selfcheck.py):
    # seed 1 CFG 1.5 at temperature 0.3 / 0.45 / 0.6 / 0.8: 70 / 74 / 72 / 60, CFG 1 or 2.5 at 0.6: 72 / 29;
    # seed 2 (n=200) CFG 1.5 at 0.45 / 0.6: 67% / 70.5%, CFG 1 at 0.6: 68.5%. Candidates at 0.6, seed 1: 1 / 2 /
    # 4 / 8 / 16 give 42 / 51 / 57 / 60 / 72 (the oracle, any candidate accepted: 42 / 51 / 58 / 65 / 74).
    # Edit: temperature 1 18, 0.5 29, 0.3 30 (seed 2, n=200: 19% and 21%); CFG 2-3 2-9.
    # Likely reason strong guidance hurts: the tiny model learned its unconditional branch from 10% of conditions.
    defaults={
        "text_to_image": {"cfg_scale": 1.5, "temperature": 0.6, "top_k": 0, "top_p": 1.0, "candidates": 16},
        "edit": {"cfg_scale": 1.0, "temperature": 0.3, "top_k": 0, "top_p": 1.0},
        "text": {"temperature": 0.0, "max_new_tokens": 48},
    },
)

FAMILIES = {t.family: t for t in (UNI_X, SHAPES)}

# Prompt layouts the embedded model can be trained with (``train_embedded.py --layout``), as overrides over
# SHAPES written into its checkpoint's prompt_templates.json: "image-first" as the official Uni-X templates
# (image, then the question or instruction); "query-first" puts the question or instruction before the image;
# "query-first-plan" is query-first with edits that first write the edited scene's caption, then draw it;
# "query-first-caption-plan" edits that first caption the source, then write the edited scene's caption.
_QUERY_FIRST = {
    "answer": "question: {question}<image>answer:",
    "edit": "edit: {instruction}<image><|vision_start|>",
    "edit_unconditional": "edit:<image><|vision_start|>",
}
SHAPES_LAYOUTS: dict[str, dict[str, Any]] = {
    "image-first": {},
    "query-first": _QUERY_FIRST,
    "query-first-plan": {**_QUERY_FIRST, "edit_plan": "edit: {instruction}<image>result:"},
    # The edit prompt ends as the caption prompt does, so the model first captions the source (a task it gets
    # right 99-100%), then writes the result's caption (text to text, taught in bulk by text-only edits), then
    # draws. Two captions take up to 66 tokens of the world's tokenizer: room for the plan.
    "query-first-caption-plan": {**_QUERY_FIRST, "edit_plan": "edit: {instruction}<image>caption:",
                                 "edit_plan_text": " {source} result: {target}",
                                 "defaults": {"text": {"max_new_tokens": 96}}},
}


def load_templates(folder: str | Path | None, default_family: str = "uni-x") -> PromptTemplates:
    """The templates for a checkpoint folder: its ``prompt_templates.json`` over the family's built-ins."""
    overrides: dict[str, Any] = {}
    path = None if folder is None else Path(folder) / TEMPLATES_FILE
    if path is not None and path.is_file():
        try:
            overrides = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from err
        if not isinstance(overrides, dict):
            raise ValueError(f"{path} must hold a JSON object of template fields")
    family = overrides.get("family", default_family)
    if family not in FAMILIES:
        raise ValueError(f"unknown prompt template family {family!r}; allowed: {sorted(FAMILIES)}")
    return FAMILIES[family].with_overrides(overrides)


def template_parts(template: str) -> list[tuple[str, str]]:
    """Split a template into ("literal", text), ("field", name) and ("image", "") parts, in order."""
    parts: list[tuple[str, str]] = []
    for i, chunk in enumerate(template.split(IMAGE_PLACEHOLDER)):
        if i:
            parts.append(("image", ""))
        for literal, name, spec, conversion in string.Formatter().parse(chunk):
            if literal:
                parts.append(("literal", literal))
            if name is not None:
                if spec or conversion or not name.isidentifier():
                    raise ValueError(f"template field {{{name}}} must be a plain {{name}} placeholder")
                parts.append(("field", name))
    return parts
