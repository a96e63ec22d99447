"""Visual question answering in the shapes world: question generator and a reference answerer.

Question kinds (`VQA_KINDS`) and templates; the first five are the spec's:

    color        what color is the {shape}?                 -> {color}
                 what color is the {shape} at the {position}?  (used when the shape occurs twice)
    count        how many shapes are there?                 -> one | two | three
    has_shape    is there a {shape}?                        -> yes | no
    where        where is the {color} {shape}?              -> {position}
    background   what is the background color?              -> {color}
    has_object   is there a {color} {shape}?                -> yes | no
    shape_at     what shape is at the {position}?           -> {shape}
    size         what size is the {color} {shape}?          -> small | large

Invariants: every generated question refers to exactly one object when it refers to one (a shape
that occurs more than once is qualified, a (color, shape) pair that occurs more than once is never
asked about); kinds are uniform; yes/no answers are drawn 50/50; `answer_question(scene, q)`
reproduces every generated answer from the scene alone.
"""

from __future__ import annotations

import dataclasses
import random
import re
from collections.abc import Iterator

from PIL import Image

from .render import render
from .scene import COLOR_RE, COLORS, COUNT_WORDS, POSITION_RE, SHAPE_RE, SHAPES, Obj, Scene, normalize_whitespace
from .split import sample_scene
from .tasks import check_count, make_rng

VQA_KINDS: tuple[str, ...] = ("color", "count", "has_shape", "where", "background", "has_object", "shape_at", "size")


@dataclasses.dataclass(frozen=True)
class VQASample:
    """An image, a question about it and the expected short answer."""

    scene: Scene
    question: str
    answer: str
    kind: str

    @property
    def image(self) -> Image.Image:
        return render(self.scene)


def _unique(scene: Scene, **attrs: str) -> Obj | None:
    found = [o for o in scene.objects if all(getattr(o, k) == v for k, v in attrs.items())]
    return found[0] if len(found) == 1 else None


def _ask(kind: str, scene: Scene, rng: random.Random, want_yes: bool) -> tuple[str, str] | None:
    """One (question, answer) of `kind` about `scene`, or None when the scene cannot support it."""
    objects = scene.objects
    if kind == "color":
        obj = rng.choice(objects)
        if _unique(scene, shape=obj.shape):
            return f"what color is the {obj.shape}?", obj.color
        return f"what color is the {obj.shape} at the {obj.position}?", obj.color
    if kind == "count":
        return "how many shapes are there?", COUNT_WORDS[len(objects)]
    if kind == "background":
        return "what is the background color?", scene.background
    if kind == "has_shape":
        present = sorted({o.shape for o in objects}, key=SHAPES.index)
        pool = present if want_yes else [s for s in SHAPES if s not in present]
        if not pool:
            return None
        return f"is there a {rng.choice(pool)}?", "yes" if want_yes else "no"
    if kind == "has_object":
        if want_yes:
            obj = rng.choice(objects)
            return f"is there a {obj.color} {obj.shape}?", "yes"
        present = {(o.color, o.shape) for o in objects}
        absent = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in present]
        color, shape = rng.choice(absent)
        return f"is there a {color} {shape}?", "no"
    if kind == "shape_at":
        obj = rng.choice(objects)
        return f"what shape is at the {obj.position}?", obj.shape
    if kind in ("where", "size"):
        candidates = [o for o in objects if _unique(scene, color=o.color, shape=o.shape)]
        if not candidates:
            return None
        obj = rng.choice(candidates)
        if kind == "where":
            return f"where is the {obj.color} {obj.shape}?", obj.position
        return f"what size is the {obj.color} {obj.shape}?", obj.size
    raise AssertionError(f"unhandled kind {kind}")


def vqa_samples(n: int, *, seed: int = 0, split: str = "train") -> Iterator[VQASample]:
    """`n` VQA samples: kind uniform over `VQA_KINDS`, yes/no 50/50, scenes from `split`."""
    rng = make_rng(seed, split, "vqa")
    for _ in range(check_count(n)):
        kind = rng.choice(VQA_KINDS)
        want_yes = rng.random() < 0.5
        while True:
            scene = sample_scene(rng, split)
            qa = _ask(kind, scene, rng, want_yes)
            if qa is not None:
                break
        yield VQASample(scene=scene, question=qa[0], answer=qa[1], kind=kind)


_REF = rf"(?:({COLOR_RE}) )?({SHAPE_RE})(?: at the ({POSITION_RE}))?"
_QUESTIONS: tuple[tuple[str, re.Pattern], ...] = tuple(
    (kind, re.compile(pattern))
    for kind, pattern in (
        ("count", r"how many shapes are there\?"),
        ("background", r"what is the background color\?"),
        ("color", rf"what color is the {_REF}\?"),
        ("where", rf"where is the {_REF}\?"),
        ("size", rf"what size is the {_REF}\?"),
        ("shape_at", rf"what shape is at the ({POSITION_RE})\?"),
        ("has_object", rf"is there a (?:({COLOR_RE}) )?({SHAPE_RE})\?"),
    )
)


def resolve_reference(scene: Scene, color: str | None, shape: str, position: str | None) -> Obj:
    """The single object matching the given attributes; ValueError when none or several match."""
    attrs = {k: v for k, v in (("color", color), ("shape", shape), ("position", position)) if v is not None}
    found = [o for o in scene.objects if all(getattr(o, k) == v for k, v in attrs.items())]
    words = " ".join(v for v in (color, shape) if v) + (f" at the {position}" if position else "")
    if not found:
        raise ValueError(f"there is no {words} in the scene")
    if len(found) > 1:
        raise ValueError(f"'the {words}' is ambiguous: {len(found)} objects match; qualify it by colour")
    return found[0]


def answer_question(scene: Scene, question: str) -> str:
    """The reference answer to any question of the templates above, computed from `scene`.

    Raises ValueError for a question outside the templates or one whose reference is ambiguous or absent.
    """
    question = normalize_whitespace(question)
    for kind, pattern in _QUESTIONS:
        m = pattern.fullmatch(question)
        if m is None:
            continue
        if kind == "count":
            return COUNT_WORDS[len(scene.objects)]
        if kind == "background":
            return scene.background
        if kind == "shape_at":
            obj = scene.object_at(m.group(1))
            if obj is None:
                raise ValueError(f"there is no shape at the {m.group(1)}")
            return obj.shape
        if kind == "has_object":
            color, shape = m.groups()
            hit = any(o.shape == shape and color in (None, o.color) for o in scene.objects)
            return "yes" if hit else "no"
        obj = resolve_reference(scene, *m.groups())
        return {"color": obj.color, "where": obj.position, "size": obj.size}[kind]
    raise ValueError(f"unsupported question {question!r}; supported kinds: {', '.join(VQA_KINDS)}")
