"""Tests for unix_core.world.judge: exact reading of rendered scenes, rejection of wrong captions,
robustness to VQ-like degradations (noise, blur, 2x nearest-neighbour round trip), failure reasons."""

import dataclasses
import itertools
import random

import numpy as np
import pytest
from PIL import Image, ImageFilter

from unix_core.world import COLORS, SHAPES, SIZES, Obj, Scene, caption_samples, judge, render
from unix_core.world import make_prompt, read_scene, read_scene_detailed, render_array
from unix_core.world.split import sample_scene


def scenes(n: int, seed: int) -> list[Scene]:
    """n scenes, a quarter of them held-out compositions."""
    train = [s.scene for s in caption_samples(n - n // 4, seed=seed)]
    return train + [s.scene for s in caption_samples(n // 4, seed=seed, split="heldout")]


def add_noise(image: Image.Image, sigma: float, rng: np.random.Generator) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0.0, sigma, (64, 64, 3))
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))


def box_blur(image: Image.Image) -> Image.Image:
    return image.filter(ImageFilter.BoxBlur(1))  # 3x3 box


def down_up(image: Image.Image) -> Image.Image:
    return image.resize((32, 32), Image.Resampling.NEAREST).resize((64, 64), Image.Resampling.NEAREST)


def test_reads_every_rendered_scene_exactly():
    for scene in scenes(300, seed=21):
        result = judge(render(scene), scene.caption())
        assert result.ok and result.reason == "" and result.scene_read == scene, scene.caption()


def test_reports_shape_measurements_of_rendered_objects():
    scene = Scene("black", (Obj("square", "red", "large", "top left"), Obj("circle", "blue", "large", "center"),
                            Obj("triangle", "white", "small", "bottom right")))
    blobs = {b.shape: b for b in read_scene_detailed(render(scene)).blobs}
    assert blobs["square"].fill == 1.0 and blobs["square"].bbox == (2, 2, 20, 20)
    assert 0.65 < blobs["circle"].fill < 0.75 and abs(blobs["triangle"].fill - 0.5) < 0.02
    assert blobs["triangle"].top_fraction < 0.3 and blobs["circle"].top_fraction == 0.5
    assert all(b.iou == 1.0 for b in blobs.values())


def mutations(scene: Scene, rng: random.Random) -> dict[str, Scene]:
    """One valid scene per attribute, differing from `scene` in that attribute only."""
    objects = list(scene.objects)
    i = rng.randrange(len(objects))
    obj = objects[i]
    used = {scene.background, *(o.color for o in objects)}

    def with_object(new: Obj) -> Scene:
        return Scene(scene.background, (*objects[:i], new, *objects[i + 1 :]))

    out = {
        "color": with_object(dataclasses.replace(obj, color=rng.choice([c for c in COLORS if c not in used]))),
        "shape": with_object(dataclasses.replace(obj, shape=rng.choice([s for s in SHAPES if s != obj.shape]))),
        "size": with_object(dataclasses.replace(obj, size=next(s for s in SIZES if s != obj.size))),
        "position": with_object(dataclasses.replace(obj, position=rng.choice(scene.free_positions()))),
        "background": Scene(rng.choice([c for c in COLORS if c not in used]), scene.objects),
    }
    if len(objects) < 3:
        extra = Obj(rng.choice(SHAPES), rng.choice([c for c in COLORS if c != scene.background]),
                    rng.choice(list(SIZES)), rng.choice(scene.free_positions()))
        out["extra object"] = Scene(scene.background, (*objects, extra))
    if len(objects) > 1:
        out["missing object"] = Scene(scene.background, (*objects[:i], *objects[i + 1 :]))
    return out


def test_rejects_captions_wrong_in_one_attribute():
    rng = random.Random(5)
    seen = set()
    for scene in scenes(60, seed=22):
        image = render(scene)
        for kind, wrong in mutations(scene, rng).items():
            seen.add(kind)
            result = judge(image, wrong.caption())
            assert not result.ok and result.scene_read == scene, (kind, wrong.caption())
            assert result.reason, kind
    assert len(seen) == 7


def test_failure_reasons_name_the_difference():
    scene = Scene("white", (Obj("circle", "red", "small", "top"), Obj("square", "blue", "large", "center")))
    image = render(scene)
    wrong_size = Scene("white", (Obj("circle", "red", "large", "top"), Obj("square", "blue", "large", "center")))
    assert judge(image, wrong_size.caption()).reason == "top: expected a large red circle, read a small red circle"
    wrong_background = Scene("black", scene.objects)
    assert judge(image, wrong_background.caption()).reason == "background: expected black, read white"
    missing = Scene("white", scene.objects[:1])
    assert judge(image, missing.caption()).reason == "center: expected nothing, read a large blue square"


DEGRADATIONS = {
    "noise": lambda image, rng: add_noise(image, 12.0, rng),
    "blur": lambda image, rng: box_blur(image),
    "blur+noise": lambda image, rng: add_noise(box_blur(image), 8.0, rng),
    "down-up": lambda image, rng: down_up(image),
    "down-up+noise": lambda image, rng: add_noise(down_up(image), 8.0, rng),
    "blur+down-up": lambda image, rng: down_up(box_blur(image)),
}


@pytest.mark.parametrize("name", DEGRADATIONS)
def test_reads_degraded_images(name):
    rng = np.random.default_rng(list(DEGRADATIONS).index(name))
    for scene in scenes(100, seed=23):
        degraded = DEGRADATIONS[name](render(scene), rng)
        assert np.abs(np.asarray(degraded, dtype=int) - render_array(scene)).max() > 0
        result = judge(degraded, scene.caption())
        assert result.ok, (scene.caption(), result.reason)


def test_every_colour_pair_survives_blur_and_noise():
    # Blends of two palette colours can snap to a third (red/yellow -> orange, black/white -> purple).
    rng = np.random.default_rng(0)
    for background, color in itertools.permutations(COLORS, 2):
        scene = Scene(background, tuple(Obj(shape, color, size, position) for shape, size, position in
                                        [("triangle", "small", "top"), ("square", "large", "center"),
                                         ("circle", "small", "bottom right")]))
        assert read_scene(add_noise(box_blur(render(scene)), 8.0, rng)) == scene, (background, color)


def _canvas(background: str) -> np.ndarray:
    pixels = np.empty((64, 64, 3), dtype=np.uint8)
    pixels[:] = COLORS[background]
    return pixels


def test_unreadable_images_give_reasons():
    blank = _canvas("white")
    assert read_scene(blank) is None
    assert "no object" in read_scene_detailed(blank).reason
    assert "no object" in judge(blank, "a small red circle at the center on a white background").reason

    off_grid = _canvas("white")
    off_grid[17:28, 17:28] = COLORS["red"]  # a small square centred at (22, 22), between four cells
    assert "not near any grid centre" in read_scene_detailed(off_grid).reason

    crowded = _canvas("white")
    for x, y in [(4, 4), (30, 4), (4, 30), (30, 30)]:
        crowded[y : y + 10, x : x + 10] = COLORS["blue"]
    assert "at most 3" in read_scene_detailed(crowded).reason

    line = _canvas("white")
    line[31:34, 10:54] = COLORS["green"]  # a long bar through the centre: no shape fits it
    assert "matches no shape" in read_scene_detailed(line).reason

    specks = _canvas("black")
    specks[::9, ::9] = COLORS["white"]  # isolated pixels are noise, not objects
    assert "no object" in read_scene_detailed(specks).reason


def test_partial_prompts_leave_unspecified_attributes_free():
    rng = random.Random(3)
    for _ in range(30):
        scene = sample_scene(rng, "train")
        image = render(scene)
        for variant in ("no_size", "no_background", "no_size_no_background", "no_position"):
            assert judge(image, make_prompt(scene, variant), partial=True).ok
        wrong = mutations(scene, rng)
        assert not judge(image, make_prompt(wrong["color"], "no_size"), partial=True).ok
        assert not judge(image, make_prompt(wrong["shape"], "no_position"), partial=True).ok
        assert not judge(image, make_prompt(wrong["position"], "no_size_no_background"), partial=True).ok
        assert not judge(image, make_prompt(wrong["background"], "no_size"), partial=True).ok
    scene = Scene("white", (Obj("circle", "red", "small", "top"), Obj("square", "blue", "large", "center")))
    image = render(scene)
    assert judge(image, "a blue square and a red circle", partial=True).ok
    assert judge(image, "a red circle", partial=True).reason == "expected 1 objects, read 2"


def test_bad_input_raises():
    image = render(Scene("white", (Obj("circle", "red", "small", "center"),)))
    with pytest.raises(ValueError, match="64x64"):
        judge(image.resize((32, 32)), "a small red circle at the center on a white background")
    with pytest.raises(ValueError, match="PIL image"):
        read_scene([[0, 0, 0]])
    with pytest.raises(ValueError, match="background"):
        judge(image, "a red circle at the center")  # strict mode wants a canonical caption
    assert judge(image.convert("RGBA"), "a small red circle at the center on a white background").ok
    assert judge(np.asarray(image), "a small red circle at the center on a white background").ok
