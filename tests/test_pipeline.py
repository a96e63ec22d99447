"""Tests for unix_core.pipeline on a tiny random checkpoint (word-level tokenizer + golden tiny VQGAN)."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from tests.pipeline_fixture import build_checkpoint
from unix_core import UniXPipeline
from unix_core.pipeline import ImageStreamEvent, TextStreamEvent


@pytest.fixture(scope="module")
def pipe(tmp_path_factory, fixtures_dir):
    folder = build_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", fixtures_dir)
    return UniXPipeline.from_pretrained(folder)


@pytest.fixture(scope="module")
def image(fixtures_dir):
    return Image.open(fixtures_dir / "vqgan_tiny" / "rgb_shapes.png").convert("RGB")


def test_describe_reports_split_and_parameters(pipe):
    info = pipe.describe()
    assert info["split"] == "1:1 of 4" and info["family"] == "shapes" and info["image_grid"] == [16, 16]
    p = info["parameters"]
    assert p["text_branch"] == p["vision_branch"] == p["shared_layers"] > 0
    assert info["load_in_8bit"] is False and info["device"] == "cpu"


def test_text_to_image_stream_fills_in_code_by_code(pipe):
    events = list(pipe.text_to_image_stream("a red circle", seed=3, num_images=2, cfg_scale=2.0, preview_every_rows=4))
    adaptive = list(pipe.text_to_image_stream("a red circle", seed=3, num_images=1, cfg_scale=2.0))
    assert adaptive[15].decoded is not None  # adaptive: the first decoded preview comes after row 1
    assert len(events) == 256 and all(isinstance(e, ImageStreamEvent) for e in events)
    assert [e.step for e in events] == list(range(1, 257)) and events[-1].progress == 1.0
    assert all(len(e.mosaics) == 2 and e.mosaics[0].size == (64, 64) for e in events)
    decoded_at = [e.step for e in events if e.decoded is not None]
    assert decoded_at == [64, 128, 192]  # every 4 rows of 16 codes, final image separate
    assert all(e.images is None for e in events[:-1])
    final = events[-1]
    assert len(final.images) == 2 and final.images[0].size == (64, 64)
    assert bool((final.grids >= 0).all()) and bool((final.grids < 64).all())
    assert len(final.sequence_ids) == len(pipe._render(pipe.templates.text_to_image, {"prompt": "a red circle"}, []).ids) + 256
    # mosaics change as codes arrive
    assert events[10].mosaics[0].tobytes() != events[200].mosaics[0].tobytes()


def test_self_check_keeps_the_candidate_the_captioner_scores_highest(pipe):
    from unix_core.selfcheck import caption_scores

    prompt = "a red circle"
    events = list(pipe.text_to_image_stream(prompt, seed=4, num_images=2, candidates=3, preview_every_rows=0))
    final = events[-1]
    assert final.candidates == 3 and final.grids.shape[0] == 6 and all(len(e.mosaics) == 6 for e in events)
    assert len(final.images) == 2 and len(final.chosen) == 2 and all(len(s) == 3 for s in final.scores)
    for i, chosen in enumerate(final.chosen):
        scores = caption_scores(pipe.model, pipe.builder, pipe.templates.caption, final.grids[3 * i : 3 * i + 3], prompt)
        assert torch.allclose(scores, torch.tensor(final.scores[i]), atol=1e-4)
        assert chosen == int(scores.argmax())
    kept = torch.stack([final.grids[3 * i + c] for i, c in enumerate(final.chosen)])
    assert [im.tobytes() for im in final.images] == [im.tobytes() for im in pipe.image_tokenizer.decode_batch(kept)]
    codes = pipe.builder.code_ids(final.grids[final.chosen[0]])
    assert final.sequence_ids[-len(codes) :] == codes
    # Candidates are drawn like plain images: the first candidate is what one image per request would be.
    plain = list(pipe.text_to_image_stream(prompt, seed=4, num_images=6, preview_every_rows=0))[-1]
    assert torch.equal(plain.grids, final.grids)
    one = list(pipe.text_to_image_stream(prompt, seed=4, candidates=1, preview_every_rows=0))[-1]
    assert one.chosen is None and one.scores is None and one.candidates == 1


def test_caption_scores_equal_a_full_forward_over_the_text_vocabulary(pipe):
    from unix_core.selfcheck import caption_scores

    grids = torch.randint(0, 64, (2, 16, 16))
    got = caption_scores(pipe.model, pipe.builder, pipe.templates.caption, grids, "a blue square")
    target = pipe.builder.text_ids(" a blue square", user=True)
    for grid, score in zip(grids, got):
        ids = pipe.builder.render(pipe.templates.caption, {}, [grid]).ids + target
        with torch.no_grad():
            logits = pipe.model(torch.tensor([ids])).logits[0, :, : pipe.model.config.real_text_vocab_size]
        logp = logits.float().log_softmax(-1)[len(ids) - len(target) - 1 : -1]
        assert float(score) == pytest.approx(float(logp.gather(-1, torch.tensor(target)[:, None]).sum()), abs=1e-4)


def test_adaptive_preview_schedule_keeps_decoding_within_budget():
    from unix_core.pipeline import PreviewSchedule

    schedule = PreviewSchedule(None, budget=0.1)
    decodes, decode_time, generation_time = 0, 0.0, 0.0
    for row in range(1, 201):
        schedule.generated(0.05)  # one row of codes takes 50 ms
        generation_time += 0.05
        if schedule.due(row):
            schedule.decoded(0.2)  # a decode takes 200 ms: due about every 40 rows
            decodes += 1
            decode_time += 0.2
    assert decodes >= 5 and decode_time <= 0.1 * generation_time + 0.2  # first decode is immediate
    fixed = PreviewSchedule(4)
    assert [r for r in range(1, 13) if fixed.due(r)] == [4, 8, 12] and not PreviewSchedule(0).due(4)


def test_same_seed_reproduces_and_final_equals_decode(pipe):
    a = pipe.text_to_image("a blue square", seed=5)
    b = pipe.text_to_image("a blue square", seed=5)
    c = pipe.text_to_image("a blue square", seed=6)
    assert a[0].tobytes() == b[0].tobytes() and a[0].tobytes() != c[0].tobytes()


def test_closing_an_image_stream_stops_generation(pipe):
    calls = []
    hook = pipe.model.model.register_forward_hook(lambda *a: calls.append(1))
    try:
        stream = pipe.text_to_image_stream("a red circle", seed=1)
        for i, _ in enumerate(stream):
            if i == 4:
                break
        stream.close()
        assert len(calls) == 5
    finally:
        hook.remove()


def test_caption_answer_and_few_shot_stream_text(pipe, image):
    events = list(pipe.caption_stream(image, max_new_tokens=5))
    assert all(isinstance(e, TextStreamEvent) for e in events) and events[-1].done
    assert events[-1].text == pipe.caption(image, max_new_tokens=5)  # greedy by default: deterministic
    assert "".join(e.delta for e in events).replace(" ", "") == events[-1].text.replace(" ", "")
    assert isinstance(pipe.answer(image, "what color is the circle ?", max_new_tokens=4), str)
    assert isinstance(pipe.few_shot([(image, "two"), (image, "three")], image, max_new_tokens=3), str)


def test_edit_returns_an_image(pipe, image):
    out = pipe.edit(image, "make the circle red", seed=2)
    assert isinstance(out, Image.Image) and out.size == (64, 64)


def test_few_shot_layout_routes_markers(pipe, image):
    rendered, layout = pipe.few_shot_layout([(image, "this is a red one ."), (image, "two")], image)
    assert layout.total_tokens == len(rendered.ids) == 3 * 258 + 6 + 1 + 1 + 1
    assert layout.vision_tokens == 3 * 257
    trace = pipe.trace(rendered.ids)
    ids = rendered.ids
    starts = [i for i, t in enumerate(ids) if t == pipe.vision_start_id]
    ends = [i for i, t in enumerate(ids) if t == pipe.vision_end_id]
    assert len(starts) == len(ends) == 3
    split_depth = trace.depths[0]
    assert all(split_depth.routes[i] == "vision" for i in starts)
    assert all(split_depth.routes[i] == "text" for i in ends)
    assert all(split_depth.routes[i] == "vision" for i in range(starts[0] + 1, ends[0]))
    labels = pipe.token_labels(ids[:3])
    assert labels[0] == "<|vision_start|>" and labels[1].startswith("#")


def test_user_text_cannot_inject_special_tokens(pipe):
    rendered = pipe._render(pipe.templates.text_to_image, {"prompt": "a <|vision_start|> circle"}, [])
    assert rendered.ids.count(pipe.vision_start_id) == 1 and rendered.ids[-1] == pipe.vision_start_id


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda p, im: p.text_to_image(""), "prompt must not be empty"),
        (lambda p, im: p.text_to_image("   "), "prompt must not be empty"),
        (lambda p, im: p.text_to_image(3), "prompt must be a string"),
        (lambda p, im: p.text_to_image("a " * 1500), "at most 2000"),
        (lambda p, im: p.text_to_image("a " * 900), "exceeds the model's context of 1024 tokens"),
        (lambda p, im: p.text_to_image("a", cfg_scale=-2.0), "cfg_scale"),
        (lambda p, im: p.text_to_image("a", temperature=20.0), "temperature"),
        (lambda p, im: p.text_to_image("a", top_k=-3), "top_k"),
        (lambda p, im: p.text_to_image("a", top_p=0.0), "top_p"),
        (lambda p, im: p.text_to_image("a", num_images=0), "num_images"),
        (lambda p, im: p.text_to_image("a", candidates=0), "candidates must be an integer in \\[1, 16\\]"),
        (lambda p, im: p.text_to_image("a", candidates=2.0), "candidates"),
        (lambda p, im: p.text_to_image("a", seed=-1), "seed"),
        (lambda p, im: p.caption(b"not an image"), "image is not a usable image"),
        (lambda p, im: p.caption(Image.new("RGB", (0, 0))), "image is not a usable image"),
        (lambda p, im: p.answer(im, ""), "question must not be empty"),
        (lambda p, im: p.caption(im, max_new_tokens=0), "max_new_tokens"),
        (lambda p, im: p.edit(im, "x", top_p=2.0), "top_p"),
        (lambda p, im: p.few_shot([], im), "examples"),
        (lambda p, im: p.few_shot([(im, "")], im), "example 1 text"),
        (lambda p, im: p.few_shot([(im, "two")], "missing.png"), "query image"),
    ],
)
def test_invalid_arguments_raise_clear_value_errors(pipe, image, call, match):
    with pytest.raises(ValueError, match=match):
        call(pipe, image)


def test_truncated_image_file_is_rejected(pipe, image):
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    with pytest.raises(ValueError, match="not a usable image"):
        pipe.caption(buf.getvalue()[:60])


def test_missing_pieces_are_clear_errors(tmp_path, fixtures_dir):
    folder = build_checkpoint(tmp_path / "ck", fixtures_dir)
    (folder / "vqgan.ckpt").unlink()
    with pytest.raises(ValueError, match="no image tokenizer found"):
        UniXPipeline.from_pretrained(folder)
    with pytest.raises(ValueError, match="neither an existing folder nor a hub id"):
        UniXPipeline.from_pretrained(str(tmp_path / "nowhere" / "deeper" / "x"))


def test_missing_embedded_default_is_a_clear_error(tmp_path, monkeypatch):
    import unix_core.pipeline as pipeline

    monkeypatch.setattr(pipeline, "EMBEDDED_DEFAULT", tmp_path / "absent")
    with pytest.raises(ValueError, match="embedded default model is not installed"):
        UniXPipeline.from_pretrained()


def test_hub_id_resolves_through_huggingface_hub_offline(tmp_path, fixtures_dir, monkeypatch):
    import huggingface_hub.constants as hub_constants

    revision = "89abcdef0123456789abcdef0123456789abcdef"
    repo = tmp_path / "hub" / "models--uni-x-studio--tiny"
    build_checkpoint(repo / "snapshots" / revision, fixtures_dir)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    pipe = UniXPipeline.from_pretrained("uni-x-studio/tiny")
    assert pipe.describe()["split"] == "1:1 of 4"
    with pytest.raises(ValueError, match="could not fetch hub model"):
        UniXPipeline.from_pretrained("uni-x-studio/absent")


def test_code_palette_is_cached_and_reused(tmp_path, fixtures_dir, monkeypatch):
    from unix_core.pipeline import find_vq_folder, load_or_build_palette
    from unix_core.vq import VQImageTokenizer

    monkeypatch.setenv("UNIX_STUDIO_CACHE", str(tmp_path / "cache"))
    folder = build_checkpoint(tmp_path / "ck", fixtures_dir)
    vq = VQImageTokenizer.from_pretrained(find_vq_folder(folder))
    first = load_or_build_palette(vq, folder)
    cached = list((tmp_path / "cache").glob("palette-*.safetensors"))
    assert len(cached) == 1
    def no_rebuild(self):
        raise AssertionError("the palette was rebuilt instead of read from the cache")

    monkeypatch.setattr(VQImageTokenizer, "code_palette", property(no_rebuild))
    again = load_or_build_palette(VQImageTokenizer.from_pretrained(folder), folder)
    assert torch.equal(first.patches, again.patches)
