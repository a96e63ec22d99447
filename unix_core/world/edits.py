"""Image editing in the shapes world: (source scene, instruction, target scene) triples.

Edit kinds (`EDIT_KINDS`) and templates (the spec's five):

    recolor     make the {ref} {color}
    move        move the {ref} to the {position}
    remove      remove the {ref}                          (only when the scene has >= 2 objects)
    add         add a {size} {color} {shape} at the {position}   (only when it has < 3 objects)
    background  change the background to {color}

`{ref}` is the bare shape when the shape occurs once, else `{color} {shape}` (spec: qualify by
colour); objects that even colour cannot single out are never edited.

Invariants of generated triples: the target is a valid scene (colour != background, free cell,
1-3 objects), differs from the source, differs only as the instruction says, and
`apply_edit(source, instruction) == target`. A "train" triple has both scenes in train; a
"heldout" triple has a held-out key in the source or the target.
"""

from __future__ import annotations

import dataclasses
import random
import re
from collections.abc import Iterator

from PIL import Image

from .render import render
from .scene import COLOR_RE, COLORS, MAX_OBJECTS, POSITION_RE, SHAPE_RE, SHAPES, SIZE_RE, SIZES, Obj, Scene
from .scene import normalize_whitespace
from .split import sample_scene, scene_split
from .tasks import check_count, make_rng
from .vqa import resolve_reference

EDIT_KINDS: tuple[str, ...] = ("recolor", "move", "remove", "add", "background")


@dataclasses.dataclass(frozen=True)
class EditSample:
    """A source scene, an edit instruction and the scene it should produce."""

    source: Scene
    instruction: str
    target: Scene
    kind: str

    @property
    def source_image(self) -> Image.Image:
        return render(self.source)

    @property
    def target_image(self) -> Image.Image:
        return render(self.target)


def reference(scene: Scene, obj: Obj) -> str | None:
    """How an instruction names `obj`: its shape, or colour + shape when the shape repeats.

    None when even colour + shape does not single it out.
    """
    same_shape = [o for o in scene.objects if o.shape == obj.shape]
    if len(same_shape) == 1:
        return obj.shape
    if sum(o.color == obj.color for o in same_shape) == 1:
        return f"{obj.color} {obj.shape}"
    return None


def _without(scene: Scene, obj: Obj) -> tuple[Obj, ...]:
    return tuple(o for o in scene.objects if o != obj)


def _propose(kind: str, scene: Scene, rng: random.Random) -> tuple[str, Scene] | None:
    """One (instruction, target) of `kind` for `scene`, or None when the scene cannot support it."""
    if kind == "background":
        used = {scene.background, *(o.color for o in scene.objects)}
        color = rng.choice([c for c in COLORS if c not in used])
        return f"change the background to {color}", Scene(color, scene.objects)
    if kind == "add":
        if len(scene.objects) >= MAX_OBJECTS:
            return None
        obj = Obj(
            shape=rng.choice(SHAPES),
            color=rng.choice([c for c in COLORS if c != scene.background]),
            size=rng.choice(list(SIZES)),
            position=rng.choice(scene.free_positions()),
        )
        return f"add a {obj.size} {obj.color} {obj.shape} at the {obj.position}", Scene(
            scene.background, (*scene.objects, obj)
        )
    nameable = [(o, ref) for o in scene.objects if (ref := reference(scene, o)) is not None]
    if not nameable or (kind == "remove" and len(scene.objects) < 2):
        return None
    obj, ref = rng.choice(nameable)
    if kind == "remove":
        return f"remove the {ref}", Scene(scene.background, _without(scene, obj))
    if kind == "recolor":
        color = rng.choice([c for c in COLORS if c not in (obj.color, scene.background)])
        recolored = dataclasses.replace(obj, color=color)
        return f"make the {ref} {color}", Scene(scene.background, (*_without(scene, obj), recolored))
    if kind == "move":
        position = rng.choice(scene.free_positions())
        moved = dataclasses.replace(obj, position=position)
        return f"move the {ref} to the {position}", Scene(scene.background, (*_without(scene, obj), moved))
    raise AssertionError(f"unhandled kind {kind}")


NAMING_KINDS: tuple[str, ...] = ("recolor", "move", "remove")
"""The edit kinds whose instruction names an object of the source."""


def names_by_colour(instruction: str) -> bool:
    """Whether an instruction names its object by colour and shape (another object of the source has its shape)."""
    kind, groups = _parse_edit(instruction)
    return kind in NAMING_KINDS and groups[0] is not None


def edit_samples(n: int, *, seed: int = 0, split: str = "train", same_shape_share: float = 0.0) -> Iterator[EditSample]:
    """`n` edit triples, kind uniform over `EDIT_KINDS`, source and target in `split` (see module doc).

    `same_shape_share` of the recolour, move and remove edits are drawn from sources where another object
    has the named object's shape, so that only the colour word tells the two apart; the rest, as all edits
    at the default 0, are drawn as they come (about 31% of them name their object by colour then). At 0 the
    stream is the same as without the option."""
    if not 0.0 <= same_shape_share <= 1.0:
        raise ValueError(f"same_shape_share must be in [0, 1], got {same_shape_share!r}")
    rng = make_rng(seed, split, "edit")
    for _ in range(check_count(n)):
        kind = rng.choice(EDIT_KINDS)
        by_colour = kind in NAMING_KINDS and same_shape_share > 0 and rng.random() < same_shape_share
        while True:
            source = sample_scene(rng, split)
            proposal = _propose(kind, source, rng)
            if (proposal is not None and scene_split(source, proposal[1]) == split
                    and (not by_colour or names_by_colour(proposal[0]))):
                break
        instruction, target = proposal
        yield EditSample(source=source, instruction=instruction, target=target, kind=kind)


_REF = rf"(?:({COLOR_RE}) )?({SHAPE_RE})"
_EDITS: tuple[tuple[str, re.Pattern], ...] = tuple(
    (kind, re.compile(pattern))
    for kind, pattern in (
        ("recolor", rf"make the {_REF} ({COLOR_RE})"),
        ("move", rf"move the {_REF} to the ({POSITION_RE})"),
        ("remove", rf"remove the {_REF}"),
        ("add", rf"add a ({SIZE_RE}) ({COLOR_RE}) ({SHAPE_RE}) at the ({POSITION_RE})"),
        ("background", rf"change the background to ({COLOR_RE})"),
    )
)


def _parse_edit(instruction: str) -> tuple[str, tuple[str | None, ...]]:
    """(kind, the template's groups) of an instruction of the templates above; ValueError otherwise."""
    instruction = normalize_whitespace(instruction)
    for kind, pattern in _EDITS:
        if match := pattern.fullmatch(instruction):
            return kind, match.groups()
    raise ValueError(f"unsupported instruction {instruction!r}; supported kinds: {', '.join(EDIT_KINDS)}")


def parse_edit_kind(instruction: str) -> str:
    """The kind of an instruction of the templates above; ValueError otherwise."""
    return _parse_edit(instruction)[0]


def apply_edit(scene: Scene, instruction: str) -> Scene:
    """The scene after `instruction` (reference implementation of the edit task).

    Raises ValueError for an instruction outside the templates, a reference that is absent or
    ambiguous, or a result that is not a valid scene (e.g. removing the last object, moving onto
    an occupied cell, colouring an object like the background).
    """
    kind, groups = _parse_edit(instruction)
    if kind == "background":
        return Scene(groups[0], scene.objects)
    if kind == "add":
        size, color, shape, position = groups
        if scene.object_at(position) is not None:
            raise ValueError(f"cannot add at the {position}: that cell is occupied")
        return Scene(scene.background, (*scene.objects, Obj(shape, color, size, position)))
    obj = resolve_reference(scene, groups[0], groups[1], None)
    others = _without(scene, obj)
    if kind == "remove":
        if not others:
            raise ValueError("cannot remove the only object: a scene has at least one object")
        return Scene(scene.background, others)
    if kind == "recolor":
        return Scene(scene.background, (*others, dataclasses.replace(obj, color=groups[2])))
    position = groups[2]
    occupant = scene.object_at(position)
    if occupant is not None and occupant != obj:
        raise ValueError(f"cannot move to the {position}: that cell is occupied")
    return Scene(scene.background, (*others, dataclasses.replace(obj, position=position)))

