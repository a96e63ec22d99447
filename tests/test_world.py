"""Tests for unix_core.world: scene model, captions, prompts, renderer, task generators, split, metrics."""

import ast
import dataclasses
from collections import Counter
import itertools
import pathlib
import random
import re
import sys

import numpy as np
import pytest

from unix_core.world import (
    COLORS,
    EDIT_KINDS,
    FEWSHOT_WORDINGS,
    POSITIONS,
    PROMPT_VARIANTS,
    SHAPES,
    SIZES,
    VQA_KINDS,
    Obj,
    Scene,
    accuracy,
    answer_question,
    apply_edit,
    caption_match,
    caption_samples,
    edit_samples,
    fewshot_answer,
    fewshot_episodes,
    fewshot_match,
    is_heldout_key,
    make_prompt,
    parse_caption,
    parse_prompt,
    prompt_samples,
    read_scene,
    render,
    render_array,
    sample_scene,
    scene_split,
    text_corpus,
    vocabulary,
    vqa_match,
    vqa_samples,
    words,
)
from unix_core.world.render import shape_mask
from unix_core.world.split import heldout_keys

GENERATORS = [caption_samples, prompt_samples, vqa_samples, edit_samples, fewshot_episodes, text_corpus]

# The canonical grammar, written out independently of the implementation.
_ALT = lambda names: "|".join(sorted(names, key=len, reverse=True))  # noqa: E731
OBJECT_RE = rf"a (?:{_ALT(SIZES)}) (?:{_ALT(COLORS)}) (?:{_ALT(SHAPES)}) at the (?:{_ALT(POSITIONS)})"
CAPTION_RE = re.compile(rf"{OBJECT_RE}(?: and {OBJECT_RE}){{0,2}} on a (?:{_ALT(COLORS)}) background")

RED_CIRCLE = Obj("circle", "red", "small", "center")


def scenes_of(sample) -> list[Scene]:
    """Every scene a generated sample involves."""
    if hasattr(sample, "source"):
        return [sample.source, sample.target]
    if hasattr(sample, "query"):
        return [scene for scene, _ in sample.examples] + [sample.query]
    return [sample.scene]


# --- scene model and captions -------------------------------------------------------------------


def test_spec_constants():
    assert COLORS["red"] == (220, 40, 40) and COLORS["black"] == (25, 25, 25) and len(COLORS) == 8
    assert SIZES == {"small": 5, "large": 9}
    assert list(POSITIONS)[:3] == ["top left", "top", "top right"]
    assert POSITIONS["bottom right"] == (53, 53) and POSITIONS["left"] == (11, 32)


def test_scene_stores_objects_in_reading_order():
    a = Obj("square", "blue", "large", "bottom right")
    b = Obj("triangle", "green", "small", "top")
    scene = Scene("white", [a, b])
    assert scene.objects == (b, a) and scene == Scene("white", (b, a))
    assert scene.caption() == (
        "a small green triangle at the top and a large blue square at the bottom right on a white background"
    )


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: Obj("hexagon", "red", "small", "top"), "unknown shape"),
        (lambda: Obj("circle", "pink", "small", "top"), "unknown color"),
        (lambda: Obj("circle", "red", "medium", "top"), "unknown size"),
        (lambda: Obj("circle", "red", "small", "middle"), "unknown position"),
        (lambda: Scene("red", (RED_CIRCLE,)), "background"),
        (lambda: Scene("white", ()), "1 to 3 objects"),
        (lambda: Scene("white", tuple(Obj("circle", "red", "small", p) for p in list(POSITIONS)[:4])), "1 to 3"),
        (lambda: Scene("white", (RED_CIRCLE, dataclasses.replace(RED_CIRCLE, shape="square"))), "one object per"),
        (lambda: Scene("mauve", (RED_CIRCLE,)), "unknown background color"),
    ],
)
def test_invalid_scenes_raise(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_captions_follow_grammar_and_round_trip():
    for sample in itertools.chain(caption_samples(300, seed=1), caption_samples(100, seed=1, split="heldout")):
        assert CAPTION_RE.fullmatch(sample.caption), sample.caption
        assert parse_caption(sample.caption) == sample.scene
        positions = [list(POSITIONS).index(o.position) for o in sample.scene.objects]
        assert positions == sorted(positions)
    assert parse_caption("  a small red circle   at the center on a white background ") == Scene("white", (RED_CIRCLE,))


@pytest.mark.parametrize(
    "text",
    [
        "a red circle at the center on a white background",  # no size
        "a small red circle at the center",  # no background
        "a small red circle on a white background",  # no position
        "a small red circle at the center on a white background.",
        "A small red circle at the center on a white background",
        "a small pink circle at the center on a white background",
        "a small red circle at the center on a red background",  # colour == background
        "a small red circle at the center and a large blue square at the top on a white background",  # order
        "a small red circle at the top and a large blue square at the top on a white background",
        "",
    ],
)
def test_parse_caption_rejects_non_canonical_text(text):
    with pytest.raises(ValueError):
        parse_caption(text)


# --- prompts --------------------------------------------------------------------------------------


def test_prompt_variants_parse_and_match_their_scene():
    samples = list(prompt_samples(200, seed=2))
    assert {s.variant for s in samples} == set(PROMPT_VARIANTS)
    for sample in samples:
        spec = parse_prompt(sample.prompt)
        assert spec.matches(sample.scene) and parse_prompt(spec.text()) == spec
        assert ("on a" in sample.prompt) == ("no_background" not in sample.variant)
        assert any(size in sample.prompt.split() for size in SIZES) == ("no_size" not in sample.variant)


def test_prompt_leaves_attributes_free_but_not_given_ones():
    scene = Scene("white", (Obj("circle", "red", "small", "top"), Obj("square", "blue", "large", "center")))
    for text in ["a blue square and a red circle", "a red circle and a blue square on a white background",
                 "a large blue square at the center and a red circle", make_prompt(scene, "no_size")]:
        assert parse_prompt(text).matches(scene), text
    for text in ["a red circle", "a red circle and a blue circle", "a small blue square and a red circle",
                 "a red circle at the center and a blue square",
                 "a red circle and a blue square on a black background"]:
        assert not parse_prompt(text).matches(scene), text
    with pytest.raises(ValueError, match="is not of the form"):
        parse_prompt("a red blob")
    with pytest.raises(ValueError, match="background"):
        parse_prompt("a white circle on a white background")


# --- renderer -------------------------------------------------------------------------------------


def test_shape_masks_follow_the_geometry():
    assert shape_mask("square", 5).sum() == 121 and shape_mask("circle", 5).sum() == 81
    triangle = shape_mask("triangle", 9)
    assert triangle.shape == (19, 19)
    assert triangle[0].sum() == 1 and triangle[0, 9] and triangle[-1].all()  # apex top-centre, base bottom row
    assert (triangle == triangle[:, ::-1]).all()
    assert abs(triangle.mean() - 0.5) < 0.03 and abs(shape_mask("circle", 9).mean() - 0.70) < 0.01


def test_render_is_crisp_deterministic_and_exact():
    for sample in caption_samples(150, seed=4):
        pixels = render_array(sample.scene)
        assert pixels.shape == (64, 64, 3) and pixels.dtype == np.uint8
        assert render(sample.scene).tobytes() == pixels.tobytes()
        colours = {tuple(c) for c in pixels.reshape(-1, 3).tolist()}
        assert colours == {COLORS[sample.scene.background]} | {COLORS[o.color] for o in sample.scene.objects}
        for obj in sample.scene.objects:  # each object is drawn whole and nothing else is inside its box
            r, (cx, cy) = SIZES[obj.size], POSITIONS[obj.position]
            box = pixels[cy - r : cy + r + 1, cx - r : cx + r + 1]
            drawn = (box == COLORS[obj.color]).all(axis=-1)
            assert (drawn == shape_mask(obj.shape, r)).all()
            assert ((box == COLORS[sample.scene.background]).all(axis=-1) | drawn).all()


def test_neighbouring_large_objects_keep_a_two_pixel_gap():
    for a, b in [("top left", "top"), ("top", "top right"), ("top left", "left"), ("center", "bottom")]:
        scene = Scene("white", (Obj("square", "red", "large", a), Obj("square", "blue", "large", b)))
        background = (render_array(scene) == COLORS["white"]).all(axis=-1)  # (64, 64)
        horizontal = POSITIONS[a][1] == POSITIONS[b][1]
        line = background[POSITIONS[a][1]] if horizontal else background[:, POSITIONS[a][0]]
        start = (POSITIONS[a][0] if horizontal else POSITIONS[a][1]) + 9
        assert line[start + 1 : start + 3].all() and not line[start] and not line[start + 3]


def test_render_rejects_non_scenes():
    with pytest.raises(ValueError, match="Scene"):
        render("a small red circle at the center on a white background")


# --- generators: determinism, arguments -----------------------------------------------------------


@pytest.mark.parametrize("generator", GENERATORS, ids=lambda g: g.__name__)
def test_generators_are_deterministic(generator):
    first, again, other = (list(generator(30, seed=s)) for s in (7, 7, 8))
    assert first == again and first != other and len(first) == 30


def test_images_are_byte_identical_across_runs():
    a = [s.image.tobytes() for s in caption_samples(20, seed=5)]
    b = [s.image.tobytes() for s in caption_samples(20, seed=5)]
    assert a == b
    edits = [(e.source_image.tobytes(), e.target_image.tobytes()) for e in edit_samples(10, seed=5)]
    assert edits == [(e.source_image.tobytes(), e.target_image.tobytes()) for e in edit_samples(10, seed=5)]


def test_generators_reject_bad_arguments():
    with pytest.raises(ValueError, match="unknown split"):
        list(caption_samples(1, split="test"))
    with pytest.raises(ValueError, match="non-negative"):
        list(vqa_samples(-1))
    with pytest.raises(ValueError, match="seed"):
        list(edit_samples(1, seed="x"))


# --- VQA ------------------------------------------------------------------------------------------


def test_vqa_answers_are_correct_and_read_back_from_pixels():
    samples = list(vqa_samples(160, seed=3)) + list(vqa_samples(40, seed=3, split="heldout"))
    assert {s.kind for s in samples} == set(VQA_KINDS)
    for s in samples:
        assert answer_question(s.scene, s.question) == s.answer  # also: the reference is unambiguous
        assert answer_question(read_scene(s.image), s.question) == s.answer


def test_vqa_covers_spec_templates_and_balances_yes_no():
    samples = list(vqa_samples(1200, seed=9))
    questions = {s.question for s in samples}
    for template in [r"what color is the (circle|square|triangle)\?", r"how many shapes are there\?",
                     r"is there a (circle|square|triangle)\?", r"where is the \w+ (circle|square|triangle)\?",
                     r"what is the background color\?"]:
        assert any(re.fullmatch(template, q) for q in questions), template
    yes_no = [s.answer for s in samples if s.answer in ("yes", "no")]
    assert 0.42 < yes_no.count("yes") / len(yes_no) < 0.58
    assert {s.answer for s in samples if s.kind == "count"} == {"one", "two", "three"}
    # A shape that occurs twice is qualified by its position.
    assert any(re.fullmatch(r"what color is the \w+ at the [a-z ]+\?", q) for q in questions)


def test_answer_question_rejects_ambiguous_and_unknown_questions():
    scene = Scene("white", (Obj("circle", "red", "small", "top"), Obj("circle", "blue", "small", "center")))
    assert answer_question(scene, "what color is the circle at the top?") == "red"
    assert answer_question(scene, "where is the blue circle?") == "center"
    with pytest.raises(ValueError, match="ambiguous"):
        answer_question(scene, "what color is the circle?")
    with pytest.raises(ValueError, match="no green circle"):
        answer_question(scene, "where is the green circle?")
    with pytest.raises(ValueError, match="unsupported question"):
        answer_question(scene, "why is the circle red?")


# --- edits ----------------------------------------------------------------------------------------


def _changed(source: Scene, target: Scene) -> tuple[set, set]:
    return set(source.objects) - set(target.objects), set(target.objects) - set(source.objects)


def test_edits_are_valid_and_change_what_the_instruction_says():
    samples = list(edit_samples(300, seed=6)) + list(edit_samples(60, seed=6, split="heldout"))
    assert {s.kind for s in samples} == set(EDIT_KINDS)
    for s in samples:
        assert apply_edit(s.source, s.instruction) == s.target != s.source
        assert parse_caption(s.target.caption()) == s.target
        gone, new = _changed(s.source, s.target)
        said = s.instruction.split()
        if s.kind == "background":
            assert not gone and not new and s.target.background == said[-1] != s.source.background
            continue
        assert s.target.background == s.source.background
        if s.kind == "remove":
            assert len(gone) == 1 and not new and len(s.source.objects) >= 2 and said[-1] == gone.pop().shape
        elif s.kind == "add":
            assert not gone and len(new) == 1 and len(s.source.objects) < 3
            assert s.instruction == "add a {size} {color} {shape} at the {position}".format(**vars(new.pop()))
        else:
            (old,), (changed,) = gone, new
            field = {"recolor": "color", "move": "position"}[s.kind]
            assert dataclasses.replace(old, **{field: getattr(changed, field)}) == changed
            assert said[2 if said[2] in SHAPES else 3] == old.shape
            if said[2] in COLORS:  # qualified by colour only when the shape occurs more than once
                assert sum(o.shape == old.shape for o in s.source.objects) > 1
    assert any(s.instruction.split()[2] in COLORS for s in samples if s.kind != "add")


def _named_object(s):
    gone, _ = _changed(s.source, s.target)
    return gone.pop()


def test_same_shape_share_draws_edits_that_only_the_colour_word_resolves():
    from unix_core.world.edits import NAMING_KINDS, names_by_colour

    assert names_by_colour("make the red square blue") and names_by_colour("remove the  green circle")
    assert not names_by_colour("move the square to the top")
    assert not names_by_colour("add a small red square at the top")
    assert not names_by_colour("change the background to red")
    plain = list(edit_samples(600, seed=2))
    assert [e.instruction for e in edit_samples(600, seed=2, same_shape_share=0.0)] == [e.instruction for e in plain]

    def share(samples):
        named = [e for e in samples if e.kind in NAMING_KINDS]
        by_colour = [e for e in named if names_by_colour(e.instruction)]
        for e in by_colour:  # another object of the source has the named object's shape, and it is kept
            obj = _named_object(e)
            twins = [o for o in e.source.objects if o.shape == obj.shape and o != obj]
            assert twins and all(o in e.target.objects for o in twins) and all(o.color != obj.color for o in twins)
        for e in named:
            if e not in by_colour:
                assert sum(o.shape == _named_object(e).shape for o in e.source.objects) == 1
        return len(by_colour) / len(named)

    natural, half, every = share(plain), share(edit_samples(600, seed=2, same_shape_share=0.5)), share(
        edit_samples(600, seed=2, same_shape_share=1.0))
    assert 0.2 < natural < 0.45 and every == 1.0
    assert abs(half - (0.5 + 0.5 * natural)) < 0.1  # forced half plus the natural share of the rest
    heldout = list(edit_samples(200, seed=2, split="heldout", same_shape_share=1.0))
    assert share(heldout) == 1.0 and all(apply_edit(e.source, e.instruction) == e.target for e in heldout)
    assert Counter(e.kind for e in heldout).keys() == set(EDIT_KINDS)  # other kinds are drawn as before
    with pytest.raises(ValueError, match=r"same_shape_share must be in \[0, 1\]"):
        list(edit_samples(1, same_shape_share=1.5))


def test_apply_edit_rejects_impossible_instructions():
    one = Scene("white", (RED_CIRCLE,))
    two = Scene("white", (RED_CIRCLE, Obj("circle", "blue", "small", "top")))
    with pytest.raises(ValueError, match="only object"):
        apply_edit(one, "remove the circle")
    with pytest.raises(ValueError, match="ambiguous"):
        apply_edit(two, "make the circle green")
    with pytest.raises(ValueError, match="occupied"):
        apply_edit(two, "move the red circle to the top")
    with pytest.raises(ValueError, match="background"):
        apply_edit(two, "change the background to red")
    with pytest.raises(ValueError, match="unsupported instruction"):
        apply_edit(two, "rotate the circle")
    assert apply_edit(two, "remove the blue circle") == one


# --- few-shot -------------------------------------------------------------------------------------


def test_fewshot_episodes_use_one_wording_determined_by_the_image():
    episodes = list(fewshot_episodes(120, seed=4)) + list(fewshot_episodes(30, seed=4, split="heldout"))
    assert {e.wording for e in episodes} == set(FEWSHOT_WORDINGS)
    assert {len(e.examples) for e in episodes} == {1, 2, 3, 4}
    for i, e in enumerate(episodes):
        pattern = re.escape(FEWSHOT_WORDINGS[e.wording])
        pattern = re.sub(r"\\\{\w+\\\}", "[a-z ]+", pattern)
        for _, text in (*e.examples, (e.query, e.answer)):
            assert re.fullmatch(pattern, text), (e.wording, text)
        assert e.answer == fewshot_answer(read_scene(e.query_image), e.wording)
        assert [text for _, text in e.examples] == [fewshot_answer(scene, e.wording) for scene, _ in e.examples]
        if i % 4 == 0:  # reading back costs ~3 ms an image
            read = [fewshot_answer(read_scene(image), e.wording) for image in e.example_images]
            assert [text for _, text in e.examples] == read
    with pytest.raises(ValueError, match="one-object"):
        fewshot_answer(Scene("white", (RED_CIRCLE, Obj("circle", "blue", "small", "top"))), "shape_name")


# --- split ----------------------------------------------------------------------------------------


def test_heldout_keys_keep_every_attribute_and_pair_in_training():
    train = [k for k in itertools.product(SHAPES, COLORS, POSITIONS) if not is_heldout_key(*k)]
    assert len(heldout_keys()) == 31 and len(train) == 216 - 31
    for i, j in itertools.combinations(range(3), 2):
        pairs = {(k[i], k[j]) for k in train}
        assert len(pairs) == len((SHAPES, COLORS, POSITIONS)[i]) * len((SHAPES, COLORS, POSITIONS)[j])


@pytest.mark.parametrize("generator", GENERATORS[:5], ids=lambda g: g.__name__)
def test_train_and_heldout_are_disjoint_by_composition(generator):
    train = list(generator(150, seed=11))
    heldout = list(generator(60, seed=11, split="heldout"))
    train_keys = {(o.shape, o.color, o.position) for s in train for sc in scenes_of(s) for o in sc.objects}
    assert not train_keys & set(heldout_keys())
    assert all(scene_split(*scenes_of(s)) == "train" for s in train)
    assert all(scene_split(*scenes_of(s)) == "heldout" for s in heldout)


def test_heldout_text_never_appears_in_training_text():
    phrase = re.compile(rf"({_ALT(COLORS)}) ({_ALT(SHAPES)}) at the ({_ALT(POSITIONS)})")
    heldout_phrases = {f"{c} {s} at the {p}" for s, c, p in heldout_keys()}
    train_text = " | ".join(text_corpus(3000, seed=2))
    assert not {m.group(0) for m in phrase.finditer(train_text)} & heldout_phrases
    heldout_text = list(caption_samples(50, seed=2, split="heldout"))
    assert all(any(p in s.caption for p in heldout_phrases) for s in heldout_text)


def test_sample_scene_respects_split_and_count():
    rng = random.Random(0)
    for n in (1, 2, 3):
        scene = sample_scene(rng, "heldout", n)
        assert len(scene.objects) == n and scene_split(scene) == "heldout"
    with pytest.raises(ValueError, match="n_objects"):
        sample_scene(rng, "train", 4)


# --- text-only data -------------------------------------------------------------------------------


def test_text_corpus_covers_exactly_the_vocabulary():
    corpus = list(text_corpus(2500, seed=1))
    used = {w for line in corpus for w in words(line)}
    assert used == vocabulary()
    assert any(line.endswith("?" + " yes") or line.endswith("? no") for line in corpus)
    assert any(line.startswith("move the") for line in corpus) and any(line.startswith("this is a") for line in corpus)


# --- metrics --------------------------------------------------------------------------------------


def test_metrics():
    caption = "a small red circle at the center on a white background"
    assert caption_match("  a small red circle at the  center on a white background\n", caption)
    assert not caption_match("a small red circle at the center on a white background.", caption)
    assert vqa_match("Red.", "red") and vqa_match(" top  left ", "top left") and not vqa_match("re d", "red")
    assert fewshot_match("this is a red one. ", "this is a red one.")
    assert not fewshot_match("red", "this is a red one.")
    assert not fewshot_match("this is a red one", "this is a red one.")
    assert accuracy([("a", "a"), ("b", "c")], caption_match) == 0.5
    with pytest.raises(ValueError, match="at least one"):
        accuracy([], vqa_match)


def test_world_modules_import_only_stdlib_numpy_and_pil():
    # No torch, no gradio. (unix_core/__init__.py imports torch for the model; the world does not need it.)
    package = pathlib.Path(__file__).resolve().parents[1] / "unix_core" / "world"
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = [node.module.split(".")[0]]
            else:
                continue
            for root in roots:
                assert root in sys.stdlib_module_names or root in ("numpy", "PIL"), (path.name, root)
