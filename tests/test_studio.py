"""Tests for the studio without a server: the Blocks app builds, handlers adapt streams, Stop ends a run,
inputs and run cards are validated, the routing view renders the trace, launch.py fails readably."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import gradio as gr
import pytest
import torch
from PIL import Image

import launch
from studio import routing_view as rv
from studio import run_card, streaming, validation
from studio.app import build_app
from studio.context import StopSignals, StudioContext
from studio.examples import EDIT, TEXT_TO_IMAGE_PROMPTS, UNDERSTAND, build_examples, picture
from studio.image_settings import ImageSettings
from studio.image_tab import card_updates, stream_run
from studio.routing_view import COLORS, build_view
from studio.tabs import few_shot, routing
from studio.tabs.model import model_info, model_markdown
from studio.text_tab import stream_answer
from tests.e2e.studio_server import paced
from tests.helpers import image_tokens
from unix_core import UniXPipeline
from unix_core.world import answer_question, apply_edit, parse_caption, scene_split

ROOT = Path(__file__).resolve().parent.parent
ENDPOINTS = {"text_to_image", "caption", "answer", "edit", "few_shot", "routing"}
PROMPT = "a large red circle at the center on a white background"
SETTINGS = ImageSettings(cfg_scale=3.0, temperature=1.0, top_k=0, top_p=1.0, num_images=1, candidates=1)


@pytest.fixture(scope="module")
def pipe():
    return UniXPipeline.from_pretrained()  # the embedded default model


@pytest.fixture(scope="module")
def ctx(pipe):
    return StudioContext(pipe, build_examples())


@pytest.fixture(scope="module")
def demo(pipe):
    return build_app(pipe, max_queue=3, concurrency=2)


def codes(pipe) -> int:
    return pipe.grid_hw[0] * pipe.grid_hw[1]


def layer_kinds(pipe) -> list[str]:
    cfg = pipe.model.config
    return ["split" if cfg.is_split_depth(d) else "shared" for d in range(cfg.num_hidden_layers)]


# --- the app ----------------------------------------------------------------------------------------
def test_app_builds_without_launching_and_names_its_endpoints(demo):
    assert isinstance(demo, gr.Blocks) and not demo.is_running
    public = {fn.api_name for fn in demo.fns.values() if fn.api_visibility == "public"}
    assert public == ENDPOINTS
    assert demo._queue.max_size == 3


def test_every_model_event_shares_one_concurrency_group(demo):
    model_fns = [fn for fn in demo.fns.values() if fn.api_name in ENDPOINTS]
    assert len(model_fns) == len(ENDPOINTS)
    assert {(fn.concurrency_id, fn.concurrency_limit) for fn in model_fns} == {("model@cpu", 2)}
    private_model_fns = [
        fn for fn in demo.fns.values() if fn.concurrency_id == "model@cpu" and fn.api_name not in ENDPOINTS
    ]
    assert private_model_fns, "routing links and the few-shot layout also run the model"


def test_build_app_rejects_bad_serving_settings(pipe):
    with pytest.raises(ValueError, match="max_queue"):
        build_app(pipe, max_queue=0)
    with pytest.raises(ValueError, match="concurrency"):
        build_app(pipe, concurrency=0)


# --- streaming handlers -------------------------------------------------------------------------------
def test_image_run_streams_previews_and_ends_with_carded_images(ctx, pipe):
    outputs = list(
        stream_run(
            ctx,
            entry_point="text_to_image",
            text=PROMPT,
            settings=SETTINGS,
            seed=3,
            start=lambda **kw: pipe.text_to_image_stream(PROMPT, **kw),
            title="t",
            stopped=lambda: False,
        )
    )
    *running, (preview, status, images, card_json, seed, record) = outputs
    assert running and all(o[1].startswith("Generating") for o in running)
    scale = streaming.PreviewComposer(pipe.grid_hw, pipe.image_size).scale
    assert status.startswith("Done") and seed == 3 and preview.size == (pipe.image_size * scale,) * 2
    card = json.loads(card_json)
    assert card["seed"] == 3 and card["prompt"] == PROMPT and json.loads(images[0].info[run_card.PNG_KEY]) == card
    direct = pipe.text_to_image(PROMPT, seed=3, cfg_scale=3.0, temperature=1.0, top_k=0, top_p=1.0, candidates=1)
    assert images[0].tobytes() == direct[0].tobytes()
    assert record.entry_point == "text_to_image" and len(record.sequence_ids) == len(
        pipe.trace(record.sequence_ids).token_ids
    )


def test_stop_signal_ends_an_image_run_within_one_step(ctx, pipe):
    steps = {"n": 0}

    def start(**kw):
        for event in pipe.text_to_image_stream(PROMPT, **kw):
            steps["n"] = event.step
            yield event

    calls = []
    with paced(pipe, 0.0, calls=calls):  # counts forward passes, adds no delay
        outputs = list(
            stream_run(
                ctx,
                entry_point="text_to_image",
                text=PROMPT,
                settings=SETTINGS,
                seed=1,
                start=start,
                title="t",
                stopped=lambda: steps["n"] >= 40,
            )
        )
    assert outputs[-1][1].startswith(f"Stopped at code 40/{codes(pipe)}")
    assert len(calls) <= 41, f"{len(calls)} forward passes for 40 codes: the stream was not closed at once"


def test_stop_signal_ends_a_text_run_and_closes_its_stream():
    from unix_core.pipeline import TextStreamEvent

    closed = []

    def start():
        def events():
            try:
                for step in range(1, 100):
                    yield TextStreamEvent(step, "word " * step, "word ", False, 0.01 * step, 7)
            finally:
                closed.append(True)

        return events()

    checks: list[int] = []

    def stopped() -> bool:  # checked once per token; Stop is pressed during the 6th
        checks.append(1)
        return len(checks) == 6

    outputs = list(stream_answer(start, entry_point="caption", title="c", stopped=stopped))
    assert outputs[-1][1] == "Stopped after 6 tokens · seed 7" and closed == [True]


def test_stop_signals_count_only_presses_during_a_run():
    stops = StopSignals()
    stops.request("s", "text_to_image")  # pressed while idle
    stopped = stops.watch("s", "text_to_image")
    assert not stopped()
    stops.request("other-session", "text_to_image")
    stops.request("s", "edit")
    assert not stopped()
    stops.request("s", "text_to_image")
    assert stopped()
    stops.done("s", "text_to_image")
    assert not stops.watch("s", "text_to_image")()


def test_preview_composer_shows_decoded_rows_over_the_mosaic(pipe):
    events = list(pipe.text_to_image_stream(PROMPT, seed=1, preview_every_rows=4, candidates=1))
    composer = streaming.PreviewComposer(pipe.grid_hw, pipe.image_size)
    w, size = pipe.grid_hw[1], pipe.image_size
    decoded_event = events[4 * w - 1]  # after 4 rows of codes: the first decoded preview
    assert decoded_event.decoded is not None
    composer.update(decoded_event)
    later = events[4 * w + 6]
    frame = composer.update(later).resize((size, size), Image.Resampling.NEAREST)
    f = size // pipe.grid_hw[0]
    top, rest = (0, 0, size, 4 * f), (0, 4 * f, size, size)
    assert frame.crop(top).tobytes() == decoded_event.decoded[0].crop(top).tobytes()
    assert frame.crop(rest).tobytes() == later.mosaics[0].crop(rest).tobytes()
    assert streaming.tile([frame] * 5).size == (4 * size + 3 * 2, 2 * size + 2)
    assert streaming.tile([frame] * 32).size == (6 * size + 5 * 2, 6 * size + 5 * 2)  # 2 images x 16 candidates
    # a self-check run previews all its candidates while drawing, then shows the one kept
    checked = list(pipe.text_to_image_stream(PROMPT, seed=1, preview_every_rows=0, candidates=4))
    composer = streaming.PreviewComposer(pipe.grid_hw, pipe.image_size)
    assert composer.update(checked[10]).size == ((4 * size + 3 * 2) * composer.scale, size * composer.scale)
    assert composer.update(checked[-1]).size == (size * composer.scale,) * 2


def test_throttle_limits_update_rate():
    throttle = streaming.Throttle(interval=60.0)
    assert throttle.ready() and not throttle.ready() and throttle.ready(force=True)


# --- validation and run cards --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: Image.new("RGB", (4, 40)).save(p, format="PNG"), "at least 8 pixels"),
        (lambda p: Image.new("L", (9000, 9)).save(p, format="PNG"), "at most 8192 pixels a side"),
        (lambda p: Image.new("RGB", (16, 16)).save(p, format="TIFF"), "allowed formats"),
        (lambda p: p.write_bytes(b"not an image"), "not a readable image"),
        (lambda p: None, "missing"),
    ],
)
def test_bad_images_are_rejected_with_clear_messages(tmp_path, make, message):
    path = tmp_path / "upload.img"
    make(path)
    with pytest.raises(gr.Error, match=message):
        validation.image("Image", str(path) if path.exists() else None)


def test_images_become_rgb_with_transparency_on_white(tmp_path):
    path = tmp_path / "rgba.png"
    Image.new("RGBA", (10, 10), (255, 0, 0, 0)).save(path)
    image = validation.image("Image", str(path))
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (255, 255, 255)


def test_text_and_number_checks():
    assert validation.text("Prompt", "  hi ") == "hi"
    with pytest.raises(gr.Error, match="at most 500"):
        validation.text("Prompt", "x" * 501)
    assert validation.integer("Top-k", 3.0, 0, 5) == 3
    with pytest.raises(gr.Error, match="whole number"):
        validation.integer("Top-k", 2.5, 0, 5)
    with pytest.raises(gr.Error, match="allowed: 0 to 20"):
        validation.number("CFG scale", 21, 0, 20)
    with pytest.raises(gr.Error, match="number"):
        validation.number("CFG scale", float("nan"), 0, 20)
    assert validation.seed(5, randomize=True) is None and validation.seed(None, False) is None
    with pytest.raises(gr.Error):
        ImageSettings.checked(1.0, 1.0, 0, 0.0, 1, codebook_size=64)


def test_run_card_round_trip_through_json_and_png(tmp_path, ctx):
    card = run_card.RunCard("m", "text_to_image", PROMPT, SETTINGS, 42)
    text = card.to_json()
    parsed = run_card.parse(text, entry_point="text_to_image", codebook_size=64)
    assert (parsed.text, parsed.settings, parsed.seed) == (PROMPT, SETTINGS, 42)
    from gradio.processing_utils import save_pil_to_cache

    png = save_pil_to_cache(run_card.with_card(picture(PROMPT), text), str(tmp_path), format="png")
    assert run_card.read_file(png) == text
    (tmp_path / "card.json").write_text(text)
    assert run_card.read_file(tmp_path / "card.json") == text
    with pytest.warns(UserWarning, match="made with model 'm'"):
        values = card_updates(ctx, text, entry_point="text_to_image")
    assert values[:9] == (PROMPT, 3.0, 1.0, 0, 1.0, 1, 1, 42, False) and "another model" in values[-1]


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: "{not json", "not valid JSON"),
        (lambda c: json.dumps({**c, "kind": "other"}), "not a Uni-X Studio run card"),
        (lambda c: json.dumps({**c, "entry_point": "edit", "instruction": "x"}), "for the Edit tab"),
        (lambda c: json.dumps({**c, "settings": {**c["settings"], "cfg_scale": 99}}), "CFG scale is 99"),
        (lambda c: json.dumps({**c, "settings": {"cfg_scale": 1}}), "settings lack"),
        (lambda c: json.dumps({**c, "seed": -1}), "seed is -1"),
        (lambda c: json.dumps({**c, "settings": {**c["settings"], "candidates": 0}}), "candidates is 0"),
        (lambda c: json.dumps({**c, "prompt": ""}), "prompt is empty"),
    ],
)
def test_bad_run_cards_are_rejected(edit, message):
    good = run_card.RunCard("m", "text_to_image", PROMPT, SETTINGS, 1).to_dict()
    with pytest.raises(gr.Error, match=message):
        run_card.parse(edit(good), entry_point="text_to_image", codebook_size=64)


def test_run_cards_from_before_the_self_check_draw_one_candidate_and_edit_cards_take_none():
    old = run_card.RunCard("m", "text_to_image", PROMPT, SETTINGS, 1).to_dict()
    del old["settings"]["candidates"]
    assert run_card.parse(json.dumps(old), entry_point="text_to_image", codebook_size=64).settings.candidates == 1
    edit = {**old, "entry_point": "edit", "instruction": "remove the circle"}
    del edit["prompt"]
    assert run_card.parse(json.dumps(edit), entry_point="edit", codebook_size=64).settings.candidates is None
    with pytest.raises(gr.Error, match="Text → Image only"):
        edit["settings"] = {**edit["settings"], "candidates": 2}
        run_card.parse(json.dumps(edit), entry_point="edit", codebook_size=64)


def test_png_without_card_is_rejected(tmp_path):
    path = tmp_path / "plain.png"
    picture(PROMPT).save(path)
    with pytest.raises(gr.Error, match="holds no run card"):
        run_card.read_file(path)


# --- routing, few-shot layout, model card ---------------------------------------------------------------
def test_routing_view_colours_each_token_by_branch(pipe):
    ids, title = routing.sequence_for(pipe, routing.MODE_GENERATE, PROMPT, picture(PROMPT))
    prompt_len = len(pipe.builder.render(pipe.templates.text_to_image, {"prompt": PROMPT}, []).ids)
    assert len(ids) == prompt_len + image_tokens(pipe)
    separator = pipe.model.config.separator
    image = [i for i in ids[prompt_len:] if not (separator and i == separator[0])]
    assert len(image) == codes(pipe) and min(image) >= pipe.model.config.real_text_vocab_size
    trace = pipe.trace(ids)
    view = build_view(trace, pipe.token_labels(ids), title=title)
    assert list(view.stats["layer"]) == layer_kinds(pipe)
    split = layer_kinds(pipe).index("split")  # the first split depth (0 unless the checkpoint splits only the end)
    assert view.stats["vision tok"][split] == image_tokens(pipe) + 1 and view.stats["text tok"][split] == prompt_len - 1
    assert set(view.norms["modality"]) == {"text", "vision"} and len(view.tokens) == len(ids)
    # Sample the cell centres of the first split depth and the first shared depth for a text and a vision token.
    shared = layer_kinds(pipe).index("shared")
    shown = len(ids)
    cell_w = max(3, min(14, 900 // shown))
    cell_h = max(8, min(32, 480 // len(trace.depths)))
    x_text, x_vision = rv.LEFT + cell_w // 2, rv.LEFT + (len(ids) - 1) * cell_w + cell_w // 2
    row = lambda d: rv.TOP + d * (cell_h + rv.ROW_GAP) + cell_h // 2  # noqa: E731
    assert view.heatmap.getpixel((x_text, row(split))) == COLORS["text"]
    assert view.heatmap.getpixel((x_vision, row(split))) == COLORS["vision"]
    assert view.heatmap.getpixel((x_vision, row(shared))) == COLORS["shared"]


def test_routing_view_clips_long_sequences_but_keeps_every_boundary(pipe):
    image = picture(PROMPT)
    ids = list(pipe.edit_stream(image, "make the circle blue", seed=1))[-1].sequence_ids  # image, text, image
    trace = pipe.trace(ids)
    view = build_view(trace, pipe.token_labels(ids), title="t", max_tokens=60)
    shown = rv.shown_tokens(trace.modalities, 60)
    assert len(view.tokens) == len(shown) <= 60 and shown == sorted(set(shown))
    text = [i for i, m in enumerate(trace.modalities) if m == "text"]
    assert set(text) <= set(shown) and {0, len(ids) - 1} <= set(shown)
    assert "the map shows" in view.summary and len(view.stats) == len(layer_kinds(pipe))  # the whole sequence
    assert rv.shown_tokens(["text"] * 100, 60) == list(range(30)) + list(range(70, 100))


def test_few_shot_layout_view_matches_the_pipeline(pipe):
    image = picture(PROMPT)
    _, layout = pipe.few_shot_layout([(image, "circle"), (image, "square")], image)
    spans, table, summary = few_shot.layout_view(layout)
    assert table["tokens"].sum() == layout.total_tokens and len(spans) == len(layout.segments)
    assert f"**{layout.total_tokens} tokens**" in summary and "3 images" in summary
    assert {label for _, label in spans} == {"text", "vision"}


def test_model_card_reports_split_and_branches(pipe):
    info = model_info(pipe)
    text = model_markdown(info)
    assert f"| Split (vision encode : vision decode of layers) | {info['split']} |" in text
    assert f"{info['parameters']['vision_branch']:,}" in text and "| 8-bit | no |" in text


def test_examples_come_from_the_training_split():
    for prompt in TEXT_TO_IMAGE_PROMPTS:
        assert scene_split(parse_caption(prompt)) == "train"
    for caption, question in UNDERSTAND:
        answer_question(parse_caption(caption), question)  # a supported question about that scene
    for caption, instruction in EDIT:
        scene = parse_caption(caption)
        assert scene_split(scene, apply_edit(scene, instruction)) == "train"
    assert all(1 <= len(e.examples) <= 4 for e in build_examples().few_shot)


# --- launch.py ------------------------------------------------------------------------------------------
def test_auth_parsing(tmp_path):
    assert launch.parse_auth("ann:secret") == [("ann", "secret")]
    path = tmp_path / "users.txt"
    path.write_text("# studio users\nann:a:b\n\nbob:pw\n")
    assert launch.parse_auth(str(path)) == [("ann", "a:b"), ("bob", "pw")]
    for bad in ("nopassword", ":pw", "ann:"):
        with pytest.raises(launch.StartupError):
            launch.parse_auth(bad)


def test_sharing_without_auth_warns():
    args = launch.parse_args(["--share"])
    assert any("--share" in note and "--auth" in note for note in launch.serving_warnings(args, None))
    assert launch.serving_warnings(args, [("a", "b")]) == []
    assert launch.serving_warnings(launch.parse_args([]), None) == []


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "/nonexistent/model"], "neither an existing folder nor a hub id"),
        (["--port", "0"], "not a TCP port"),
        (["--auth", "nobody"], "neither user:password"),
        (["--max-queue", "0"], "--max-queue must be at least 1"),
        (["--device", "toaster"], "not a device name"),
    ],
)
def test_startup_failures_end_with_one_readable_line(capsys, argv, message):
    assert launch.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("Uni-X Studio could not start:") and message in err and "Traceback" not in err
    assert len(err.splitlines()) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_device_map_without_a_gpu_is_a_readable_failure(capsys):
    assert launch.main(["--device-map", "auto"]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err


def test_8bit_where_unsupported_is_a_readable_failure(capsys, monkeypatch, tmp_path, fixtures_dir):
    import unix_core.loading as loading
    from tests.pipeline_fixture import build_checkpoint

    folder = build_checkpoint(tmp_path / "ck", fixtures_dir)
    monkeypatch.setattr(loading, "int8_support_error", lambda device: f"no int8 kernels for {device} (test)")
    assert launch.main(["--model", str(folder), "--load-8bit"]) == 2
    err = capsys.readouterr().err
    assert "8-bit loading is not possible here: no int8 kernels for cpu (test)" in err and "Traceback" not in err


def test_missing_embedded_model_is_a_readable_failure(capsys, monkeypatch, tmp_path):
    import unix_core.pipeline as pipeline

    monkeypatch.setattr(pipeline, "EMBEDDED_DEFAULT", tmp_path / "absent")
    assert launch.main([]) == 2
    err = capsys.readouterr().err
    assert "embedded default model is not installed" in err and "--model" in err


def test_launch_namespace_defaults():
    args = launch.parse_args([])
    assert isinstance(args, argparse.Namespace)
    assert (args.model, args.device, args.host, args.port, args.max_queue, args.concurrency) == (
        None,
        "cpu",
        "127.0.0.1",
        7860,
        16,
        1,
    )


def test_image_status_keeps_self_check_scores_readable_near_zero():
    """A confident captioner scores every candidate a few thousandths below zero; the status must still
    tell them apart (two decimals printed them all as -0.00)."""
    from unix_core.pipeline import ImageStreamEvent

    event = ImageStreamEvent(
        step=81, total=81, elapsed=1.0, seed=1, grids=torch.zeros(3, 9, 9, dtype=torch.long), mosaics=[],
        images=[], candidates=3, chosen=[1], scores=[[-0.0123, -0.00042, -2.5]],
    )
    text = streaming.image_status(event)
    assert "kept #2 of 3 (prompt log-prob -0.00042; candidates -2.5 to -0.00042)" in text, text


def test_image_status_leads_with_an_edits_written_plan():
    """Checkpoints that write the edited scene before drawing it show that plan while drawing and when done."""
    from unix_core.pipeline import ImageStreamEvent

    grids = torch.zeros(1, 9, 9, dtype=torch.long)
    drawing = ImageStreamEvent(step=9, total=81, elapsed=0.1, seed=1, grids=grids, mosaics=[], plan="a red circle")
    done = ImageStreamEvent(step=81, total=81, elapsed=1.0, seed=1, grids=grids, mosaics=[], images=[],
                            plan="a red circle")
    assert streaming.image_status(drawing).startswith("Plan: “a red circle” · Generating: code 9/81")
    assert streaming.image_status(done).startswith("Plan: “a red circle” · Done: 81 codes")
    no_plan = ImageStreamEvent(step=9, total=81, elapsed=0.1, seed=1, grids=grids, mosaics=[])
    assert streaming.image_status(no_plan).startswith("Generating:")
