"""The shipped embedded default model (`assets/unix-shapes`): complete, small, loadable with no arguments,
and trained: on held-out scenes it reads images as a random model cannot (thresholds a little under what
the shipped weights measured, so that rounding differences between machines do not flip them). Its
drawing test asks for a little under what the shipped weights measured on its 32 held-out prompts (the card's
100 prompts: 92%, issue 5's bar 90%)."""

from __future__ import annotations

import json
import random

import pytest

from unix_core import UniXPipeline
from unix_core.pipeline import EMBEDDED_DEFAULT, PALETTE_FILE
from unix_core.world import caption_samples, parse_caption, render, sample_scene
from tests.helpers import load_script

FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vq_config.json",
         "vq_model.safetensors", "prompt_templates.json", PALETTE_FILE, "README.md")


@pytest.fixture(scope="module")
def pipe():
    return UniXPipeline.from_pretrained()


def test_assets_are_complete_and_under_40_mb():
    sizes = {f.name: f.stat().st_size for f in EMBEDDED_DEFAULT.iterdir()}
    assert set(FILES) <= set(sizes), f"missing: {set(FILES) - set(sizes)}"
    assert sum(sizes.values()) <= 40 * 10**6
    from unix_core.templates import SHAPES_LAYOUTS

    # the shipped model was trained with its VQA and edit prompts query-first (model card)
    templates = json.loads((EMBEDDED_DEFAULT / "prompt_templates.json").read_text())
    assert templates == {"family": "shapes", **SHAPES_LAYOUTS["query-first"]}
    config = json.loads((EMBEDDED_DEFAULT / "config.json").read_text())
    assert config["model_type"] == "qwen3" and "num_vision_encode_layers" in config  # the official layout


def test_loads_with_no_argument_using_the_shipped_palette(monkeypatch, tmp_path):
    monkeypatch.setenv("UNIX_STUDIO_CACHE", str(tmp_path))
    info = UniXPipeline.from_pretrained().describe()
    assert info["family"] == "shapes" and info["image_grid"] == [9, 9] and info["parameters"]["vision_branch"] > 0
    assert not list(tmp_path.iterdir()), "the palette was built instead of read from the shipped file"


@pytest.fixture(scope="module")
def scenes():
    rng = random.Random(11)
    return [sample_scene(rng, "heldout") for _ in range(12)]


def test_answers_background_and_count_questions_on_held_out_scenes(pipe, scenes):
    # Measured when shipped: 12/12 and 12/12; a model that guesses
    # gets about 1.5 and 4.
    right = sum(pipe.answer(render(s), "what is the background color?") == s.background for s in scenes)
    assert right >= 10, f"{right}/12 background colours right"
    words = {1: "one", 2: "two", 3: "three"}
    counted = sum(pipe.answer(render(s), "how many shapes are there?") == words[len(s.objects)] for s in scenes)
    assert counted >= 10, f"{counted}/12 counts right"


def test_answers_existence_questions_on_held_out_scenes(pipe):
    """"is there a …?" questions, the kind every split model answered at chance before the VQA loss weight
    (model card). Measured 21/24 on these (16 of 16 yes, 5 of 8 no); a model that always says one word gets 16
    at most and 0 of the other answer."""
    from unix_core.world import vqa_samples

    questions = [s for s in vqa_samples(120, seed=8, split="heldout") if s.kind in ("has_shape", "has_object")][:24]
    answers = [pipe.answer(s.image, s.question) for s in questions]
    right = {word: sum(a == s.answer == word for a, s in zip(answers, questions)) for word in ("yes", "no")}
    assert sum(right.values()) >= 19 and min(right.values()) >= 4, (right, answers)


def test_captions_follow_the_grammar_and_name_the_background(pipe):
    # Measured when shipped: 12/12 parse and name the right background, 12/12 exact (100/100 on the model card's
    # held-out set).
    samples = list(caption_samples(12, seed=5, split="heldout"))
    captions = [pipe.caption(render(s.scene)) for s in samples]
    parsed = [_parses(c) for c in captions]
    assert sum(parsed) >= 10, f"only {sum(parsed)}/12 captions are valid scene descriptions: {captions}"
    right = sum(c.endswith(f" on a {s.scene.background} background") for c, s in zip(captions, samples))
    assert right >= 10, f"{right}/12 captions name the right background"
    exact = sum(c == s.caption for c, s in zip(captions, samples))
    assert exact >= 9, f"{exact}/12 captions exact: {captions}"


def test_image_codes_are_local(pipe):
    """The shipped tokenizer's codes depend only on their own cell: cells away from the objects get the
    code of a plain canvas of the background colour (with a whole-image encoder they did not; model card)."""
    import numpy as np
    from PIL import Image

    from unix_core.training.embedded import flat_cells
    from unix_core.world.scene import CANVAS_SIZE, COLORS

    vq = pipe.image_tokenizer
    rng = random.Random(3)
    for scene in [sample_scene(rng, "heldout") for _ in range(6)]:
        codes = vq.encode(render(scene)).flatten()
        plain = vq.encode(Image.new("RGB", (CANVAS_SIZE, CANVAS_SIZE), COLORS[scene.background])).flatten()
        pixels = np.asarray(render(scene).convert("RGB")).astype(int)
        flat = flat_cells(np.abs(pixels - pixels[0, 0]).sum(-1) == 0, vq.grid_size, vq.config.input_box)
        # "away": the cell and its 8 neighbours are all background (the resize blends neighbouring pixels
        # into a cell's border)
        padded = np.pad(flat, 1, constant_values=True)
        away = np.stack([padded[i : i + flat.shape[0], j : j + flat.shape[1]] for i in range(3) for j in range(3)])
        away = away.all(0).flatten()
        assert away.any() and (codes[away] == plain[away]).all()


def test_image_tokenizer_reconstructions_pass_the_judge(pipe):
    """Issue 5's tokenizer bar (the judge accepts >= 99% of reconstructions). Measured when shipped on these
    200 held-out scenes: 199/200 with the fine-tuned decoder, 190/200 before it (991/1000 on the card's set)."""
    from unix_core.training.embedded import vq_judge_acceptance

    report = vq_judge_acceptance(pipe.image_tokenizer, 200, seed=31)
    assert report["accepted"] >= 197, report


def _parses(caption: str) -> bool:
    try:
        parse_caption(caption)
    except ValueError:
        return False
    return True


def test_generation_probe_script(pipe):
    """`scripts/probe_generation.py` splits teacher-forced code accuracy by kind of patch (model card figures)."""
    from unix_core.pipeline import EMBEDDED_DEFAULT as folder

    module = load_script("probe_generation")
    result = module.probe(folder, 4, "heldout")
    assert result["first_code"]["total"] == 4
    grid = pipe.image_tokenizer.grid_size
    assert result["background_codes"]["total"] + result["object_codes"]["total"] == 4 * (grid * grid - 1)
    # measured on 40 prompts: background 99.8%, objects 96.8%, first code 23/40
    assert result["background_codes"]["accuracy"] > 0.9
    assert result["oracle_first_code_greedy_accepted"]["total"] == 4
    objects = result["objects"]
    # a held-out scene has at least one object with a held-out key
    assert objects["heldout_key"]["objects"] >= 4
    for o in objects.values():
        assert 0 <= o["whole_object_right"] <= o["first_patch_right"] <= o["objects"]
        assert o["later_patches_right"] <= o["later_patches"]


def test_edit_probe_script_splits_changed_and_copied_cells(pipe, tmp_path):
    """`scripts/probe_edit.py` (model card figures): every target code of every edit is either a changed or a
    copied cell, each copy error is located once, and the shipped model copies almost every kept cell."""
    from unix_core.pipeline import EMBEDDED_DEFAULT as folder

    module = load_script("probe_edit")
    out = tmp_path / "edit.json"
    assert module.main([str(folder), "--n", "6", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    grid = pipe.image_tokenizer.grid_size
    assert result["edits"] == 6
    assert result["changed"]["total"] + result["copied"]["total"] == 6 * grid * grid
    assert result["changed"]["total"] > 0 and result["copied"]["total"] > 0
    kinds = [k for k in result if k.endswith(" copied")]
    assert sum(result[k]["total"] for k in kinds) == result["copied"]["total"]
    errors = result["copied"]["total"] - result["copied"]["right"]
    where = ("object first row", "object later rows", "background")
    assert sum(result.get(f"copy errors: {w}", 0) for w in where) == errors
    assert result.get("copy errors: predicted background", 0) <= errors
    assert result["targets all right"] <= result["changed cells all right"] <= 6
    likeness = [k.split(": ", 1)[1] for k in result if k.startswith("kept objects: ")]
    assert likeness and set(likeness) <= {"same shape and colour", "same shape", "same colour",
                                          "shape and colour differ", "no object edited"}
    for k in likeness:
        assert 0 <= result.get(f"kept objects with a copy error: {k}", 0) <= result[f"kept objects: {k}"]
    # measured on 300 held-out edits (seed 7): copied 99.7%, changed 99.6%
    assert result["copied"]["accuracy"] > 0.95 and result["changed"]["accuracy"] > 0.9


def test_vqa_probe_script_trains_in_the_checkpoints_layout(pipe, tmp_path):
    """`scripts/probe_vqa.py` (model card figures): its fine-tuning sequences are the pipeline's own VQA prompt
    (the checkpoint's layout) followed by the answer, and a run reports per-kind counts of what it scored."""
    import json

    from unix_core.pipeline import EMBEDDED_DEFAULT as folder
    from unix_core.world import vqa_samples

    module = load_script("probe_vqa")
    sequences = module.finetune_sequences(pipe, {"has_shape"}, 40, seed=3)
    samples = [s for s in vqa_samples(40, seed=3, split="train") if s.kind == "has_shape"]
    assert len(sequences) == len(samples) > 0
    for seq, s in zip(sequences, samples):
        prompt = pipe._render(pipe.templates.answer, {"question": s.question}, [pipe._encode_image("image", s.image)])
        assert seq.input_ids[: len(prompt.ids)] == prompt.ids
        trained = [t for t in seq.labels if t != -100]
        assert pipe.tokenizer.decode(trained).strip() == s.answer + pipe.tokenizer.eos_token
    out = tmp_path / "probe.json"
    assert module.main([str(folder), "--n", "24", "--finetune-steps", "1", "--finetune-samples", "40",
                        "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    scored = [s.kind for s in vqa_samples(24, seed=21, split="heldout") if s.kind in module.DEFAULT_KINDS]
    assert sum(t for _, t in report["steps"]["0"]["heldout"]["by_kind"].values()) == len(scored)
    assert set(report["steps"]["1"]["heldout"]["by_kind"]) <= {"has_shape", "has_object"}


def test_object_cells_are_the_cells_an_object_touches():
    from unix_core.world.scene import Obj, Scene

    module = load_script("probe_generation")
    scene = Scene("white", (Obj("square", "red", "large", "top left"), Obj("circle", "blue", "small", "center")))
    (_, big), (_, small) = module.object_cells(scene, 8)
    # a large square at (11, 11) spans pixels 2..20: rows and columns 0..2 of 8-pixel cells
    assert big == [r * 8 + c for r in range(3) for c in range(3)]
    # a small circle at (32, 32) spans pixels 27..37: rows and columns 3..4
    assert small == [r * 8 + c for r in (3, 4) for c in (3, 4)]
    # the cell-aligned grid (9 cells of 7 px from pixel 1): every object lies in its own 3x3 block of cells
    box = (1 / 64, 1 / 64, 1.0, 1.0)
    (_, big), (_, small) = module.object_cells(scene, 9, box)
    assert big == [r * 9 + c for r in range(3) for c in range(3)]
    # pixels 27..37 touch cells 3 (22-28), 4 and 5 (36-42); the circle leaves the corner cells empty
    assert small == [r * 9 + c for r in (3, 4, 5) for c in (3, 4, 5) if (r, c) not in {(3, 3), (3, 5), (5, 3), (5, 5)}]


def test_evaluation_samples_images_with_the_checkpoint_defaults(tmp_path):
    import shutil

    from unix_core.sampling import SamplingConfig
    from unix_core.training.evaluate import folder_evaluator

    shutil.copytree(EMBEDDED_DEFAULT, tmp_path / "ckpt")
    shipped = folder_evaluator(tmp_path / "ckpt").image_sampling
    templates = UniXPipeline.from_pretrained().templates
    for entry in ("text_to_image", "edit"):  # the pipeline's defaults for the shipped folder
        assert shipped[entry] == SamplingConfig(**templates.defaults[entry])
    (tmp_path / "ckpt" / "prompt_templates.json").write_text(json.dumps(
        {"family": "shapes", "defaults": {"text_to_image": {"cfg_scale": 2.5, "temperature": 0.5}}}))
    tuned = folder_evaluator(tmp_path / "ckpt", image_sampling={"edit": {"cfg_scale": 7.0}}).image_sampling
    assert (tuned["text_to_image"].cfg_scale, tuned["text_to_image"].temperature) == (2.5, 0.5)
    assert tuned["edit"].cfg_scale == 7.0 and tuned["edit"].temperature == shipped["edit"].temperature
    with pytest.raises(ValueError, match="allowed: text_to_image, edit"):
        folder_evaluator(tmp_path / "ckpt", image_sampling={"caption": {"temperature": 1.0}})


def test_draws_held_out_prompts_the_judge_accepts_with_the_default_sampling(pipe):
    """With its default sampling (16 candidates, the model's own captioner keeps one) the shipped model draws
    held-out prompts correctly: measured 31/32 here, and 31/32 from the first candidate alone (the same
    draw: candidates are sampled like separate images); on other draws the self-check may lose a prompt or two
    the first candidate had (an earlier model: 31 against 32). Issue 5's bar is 90%."""
    from unix_core.training.data import to_canvas
    from unix_core.world import judge, prompt_samples

    assert pipe.templates.defaults["text_to_image"]["candidates"] == 16
    box = pipe.image_tokenizer.config.input_box
    samples = list(prompt_samples(32, seed=5, split="heldout"))
    checked = one = 0
    for i, s in enumerate(samples):
        final = list(pipe.text_to_image_stream(s.prompt, seed=i, preview_every_rows=0))[-1]
        first = pipe.image_tokenizer.decode(final.grids[0])
        checked += judge(to_canvas(final.images[0], box), s.prompt, partial=True).ok
        one += judge(to_canvas(first, box), s.prompt, partial=True).ok
    assert checked >= 28 and checked >= one - 2, f"the judge accepts {checked}/32 (first candidate alone {one}/32)"


def test_evaluation_reports_scores_per_kind_and_runs_the_self_check():
    from unix_core.training.evaluate import folder_evaluator, format_scores

    evaluator = folder_evaluator(EMBEDDED_DEFAULT, image_sampling={"text_to_image": {"candidates": 2}})
    assert evaluator.image_sampling["text_to_image"].candidates == 2
    scores = evaluator.run(4, tasks=("text_to_image", "vqa", "edit"))
    for score in scores.values():
        assert sum(n for _, n in score.by_kind.values()) == score.total == 4
        assert sum(c for c, _ in score.by_kind.values()) == score.correct
    assert all(kind.endswith("object(s)") for kind in scores["text_to_image"].by_kind)
    assert "by kind: " in format_scores(scores)
