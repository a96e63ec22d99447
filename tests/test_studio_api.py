"""The studio's named API endpoints through `gradio_client`, against an app launched on 127.0.0.1.

One app per module on the embedded default model (`tests/e2e/studio_server.py`). The tests check shapes,
streaming, reproducibility, stopping, isolation between sessions, the bounded queue and error messages; runs
that must be watched or stopped mid-way are `paced`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from studio.app import build_app  # noqa: E402
from studio.examples import picture  # noqa: E402
from studio.run_card import PNG_KEY  # noqa: E402
from tests.e2e.studio_server import launched, paced  # noqa: E402
from tests.helpers import image_tokens  # noqa: E402
from unix_core import UniXPipeline  # noqa: E402

PROMPT = "a large red circle at the center on a white background"
ENDPOINTS = {"/text_to_image", "/caption", "/answer", "/edit", "/few_shot", "/routing"}
MODE_UNDERSTAND = "Image + question (the Understand prompt)"
MODE_GENERATE = "Prompt + image codes (a finished Text → Image sequence)"


@pytest.fixture(scope="module")
def pipe():
    return UniXPipeline.from_pretrained()  # the embedded default model


@pytest.fixture(scope="module")
def server(pipe):
    demo = build_app(pipe, max_queue=1)
    with launched(demo) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    return Client(server, verbose=False, download_files=False)


@pytest.fixture(scope="module")
def shape_png(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("studio-images") / "scene.png"
    picture(PROMPT).save(path)
    return str(path)


def t2i_args(
    prompt=PROMPT, *, cfg=3.0, temperature=1.0, top_k=0, top_p=1.0, num_images=1, candidates=1, seed=7, randomize=False
):
    return (prompt, cfg, temperature, top_k, top_p, num_images, candidates, seed, randomize)


def image_path(value) -> Path:
    """The server-side file of an image output (the app runs in this process)."""
    if isinstance(value, dict):
        value = value.get("path") or value.get("image", {}).get("path")
    return Path(value)


def wait_for_status(job, *codes: str, timeout: float = 120) -> None:
    """Block until the server reports `job` in one of `codes` (gradio_client Status names, e.g. IN_QUEUE)."""
    deadline = time.monotonic() + timeout
    while job.status().code.name not in codes:
        assert time.monotonic() < deadline, f"job never reached {codes}; last status {job.status().code.name}"
        time.sleep(0.02)


def wait_for_preview(job, count: int = 1, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while len([o for o in job.outputs() if o[1].startswith("Generating")]) < count:
        assert time.monotonic() < deadline, "no preview update arrived"
        time.sleep(0.02)


def test_named_endpoints_are_listed(client):
    assert ENDPOINTS <= set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])


def test_text_to_image_returns_images_with_run_card_and_reproduces(client, pipe):
    _, status, gallery, card_json, seed = client.predict(*t2i_args(), api_name="/text_to_image")
    assert status.startswith("Done") and seed == 7 and len(gallery) == 1
    card = json.loads(card_json)
    assert card["prompt"] == PROMPT and card["seed"] == 7 and card["entry_point"] == "text_to_image"
    assert card["settings"] == {
        "cfg_scale": 3.0, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "num_images": 1, "candidates": 1
    }
    first = image_path(gallery[0]["image"])
    with Image.open(first) as png:
        assert png.format == "PNG" and png.size == (pipe.image_size,) * 2
        assert json.loads(png.text[PNG_KEY])["seed"] == 7
    pixels = lambda out: Image.open(image_path(out[2][0]["image"])).tobytes()  # noqa: E731
    again = client.predict(*t2i_args(), api_name="/text_to_image")
    assert pixels(again) == Image.open(first).tobytes()
    # the seed reaches the sampler: at temperature 1 the trained model draws this prompt the same under
    # most seeds, so compare two seeds where sampling is nearly flat
    hot = lambda seed: pixels(client.predict(*t2i_args(temperature=2.5, seed=seed), api_name="/text_to_image"))  # noqa: E731
    assert hot(8) != hot(9)


def test_self_check_keeps_one_image_per_result_and_says_which(client, pipe):
    _, status, gallery, card_json, _ = client.predict(*t2i_args(candidates=3, num_images=2), api_name="/text_to_image")
    assert len(gallery) == 2 and status.count("of 3 (prompt log-prob") == 2, status
    assert json.loads(card_json)["settings"]["candidates"] == 3
    again = client.predict(*t2i_args(candidates=3, num_images=2), api_name="/text_to_image")
    assert again[1].split("self-check")[1] == status.split("self-check")[1]  # same seed, same choice and scores


def test_randomized_seed_is_reported(client):
    *_, card_json, seed = client.predict(*t2i_args(seed=0, randomize=True), api_name="/text_to_image")
    assert json.loads(card_json)["seed"] == seed


def test_text_to_image_streams_previews_before_the_result(client, pipe):
    with paced(pipe):
        job = client.submit(*t2i_args(num_images=2), api_name="/text_to_image")
        job.result(timeout=120)
    outputs = job.outputs()
    running = [o for o in outputs if o[1].startswith("Generating")]
    assert len(running) >= 2, f"expected several preview updates, got {len(running)}"
    assert len({image_path(o[0]).name if isinstance(o[0], str) else json.dumps(o[0]) for o in running}) >= 2
    assert outputs[-1][1].startswith("Done") and len(outputs[-1][2]) == 2


def test_cancel_stops_generation(client, pipe):
    calls = []
    with paced(pipe, calls=calls):
        job = client.submit(*t2i_args(num_images=4), api_name="/text_to_image")
        wait_for_preview(job, count=2)
        job.cancel()
        time.sleep(0.5)
        settled = len(calls)
        time.sleep(0.5)
        assert len(calls) == settled, "the model kept running after the job was cancelled"
        assert settled < pipe.grid_hw[0] * pipe.grid_hw[1], "the run finished instead of stopping"
    assert client.predict(*t2i_args(), api_name="/text_to_image")[1].startswith("Done")  # the studio still works


def test_sessions_do_not_see_each_others_results(server, pipe):
    a, b = (Client(server, verbose=False, download_files=False) for _ in range(2))
    with paced(pipe):
        job_a = a.submit(
            *t2i_args("a small blue square at the top left on a white background", seed=1), api_name="/text_to_image"
        )
        wait_for_preview(job_a)  # a runs; b takes the single waiting place (max_queue=1) and overlaps with it
        job_b = b.submit(*t2i_args(PROMPT, seed=2), api_name="/text_to_image")
        card_a, card_b = json.loads(job_a.result(timeout=120)[3]), json.loads(job_b.result(timeout=120)[3])
    assert (card_a["prompt"], card_a["seed"]) == ("a small blue square at the top left on a white background", 1)
    assert (card_b["prompt"], card_b["seed"]) == (PROMPT, 2)


def test_uploads_are_capped_and_no_arbitrary_file_is_served(server):
    import httpx

    from studio.validation import MAX_UPLOAD_BYTES

    big = httpx.post(f"{server}gradio_api/upload", files={"files": ("big.png", b"\x89PNG" + bytes(MAX_UPLOAD_BYTES))})
    assert big.status_code == 413 and "maximum allowed size" in big.text
    small = httpx.post(f"{server}gradio_api/upload", files={"files": ("ok.png", b"\x89PNG" + bytes(100))})
    assert small.status_code == 200
    for path in ("/etc/passwd", str(Path(__file__).resolve())):
        assert httpx.get(f"{server}gradio_api/file={path}").status_code == 403


def test_full_queue_answers_busy(server, pipe):
    from gradio_client.utils import QueueError

    c = Client(server, verbose=False, download_files=False)
    with paced(pipe, 0.05):
        running = c.submit(*t2i_args(num_images=4), api_name="/text_to_image")
        wait_for_preview(running)
        waiting = c.submit(*t2i_args(), api_name="/text_to_image")  # the one place in the queue (max_queue=1)
        wait_for_status(waiting, "IN_QUEUE")
        with pytest.raises(QueueError, match="[Qq]ueue is full"):
            c.predict(*t2i_args(), api_name="/text_to_image")
        running.cancel()
    assert waiting.result(timeout=120)[1].startswith("Done")


def test_caption_and_answer_stream_text(client, shape_png):
    answer, status = client.predict(handle_file(shape_png), 0.0, 12, 3, api_name="/caption")
    assert isinstance(answer, str) and status.startswith("Done")
    job = client.submit(handle_file(shape_png), "what color is the circle?", 0.0, 12, 3, api_name="/answer")
    answer, status = job.result(timeout=60)
    assert isinstance(answer, str) and status.startswith("Done") and "seed 3" in status


def test_edit_returns_an_edited_image_and_card(client, shape_png):
    preview, status, gallery, card_json, seed = client.predict(
        handle_file(shape_png), "make the circle blue", 1.0, 1.0, 0, 1.0, 1, 4, False, api_name="/edit"
    )
    card = json.loads(card_json)
    assert status.startswith("Done") and len(gallery) == 1
    assert (
        card["entry_point"] == "edit"
        and card["instruction"] == "make the circle blue"
        and len(card["input_image_sha256"]) == 64
    )


def test_few_shot_answers(client, shape_png):
    rows = [handle_file(shape_png), "circle", handle_file(shape_png), "circle", None, "", None, ""]
    answer, status = client.predict(2, *rows, handle_file(shape_png), 0.0, 8, 1, api_name="/few_shot")
    assert isinstance(answer, str) and status.startswith("Done")


def test_routing_traces_an_input(client, shape_png, pipe):
    summary, heatmap, norms, stats, tokens, raw = client.predict(
        MODE_GENERATE, PROMPT, handle_file(shape_png), api_name="/routing"
    )
    layers = pipe.model.config.num_hidden_layers
    cfg = pipe.model.config
    a, b = cfg.num_vision_encode_layers, cfg.num_vision_decode_layers
    assert len(raw["depths"]) == layers and raw["modalities"].count("vision") == image_tokens(pipe) + 1
    assert f"Layers: {layers} = first {a} split · {layers - a - b} shared · last {b} split" in summary
    kinds = ["split" if cfg.is_split_depth(d) else "shared" for d in range(layers)]
    assert [row[1] for row in stats["data"]] == kinds
    with Image.open(image_path(heatmap)) as img:
        assert img.width > 300
    summary, *_ = client.predict(MODE_UNDERSTAND, "", handle_file(shape_png), api_name="/routing")
    assert "Image + caption prompt" in summary


@pytest.mark.parametrize(
    "api_name, args, message",
    [
        ("/text_to_image", t2i_args("   "), "Prompt is empty"),
        ("/text_to_image", t2i_args("x" * 501), "at most 500"),
        ("/text_to_image", t2i_args(cfg=99.0), "greater than maximum"),
        ("/text_to_image", t2i_args(top_p=0.0), "less than minimum"),
        ("/text_to_image", t2i_args(candidates=17), "greater than maximum"),
        ("/caption", (None, 0.0, 8, None), "Image is missing"),
        ("/answer", ("TINY", "what?", 0.0, 8, None), "at least 8 pixels"),
        ("/answer", ("NOTIMAGE", "what?", 0.0, 8, None), r"^Image is not a readable image file \(UnidentifiedImageError\); allowed formats: PNG"),
        ("/few_shot", (1, "SHAPE", "", None, "", None, "", None, "", "SHAPE", 0.0, 8, None), "Example 1 text is empty"),
        ("/routing", (MODE_GENERATE, "", None), "Prompt is empty"),
    ],
)
def test_bad_inputs_come_back_as_clear_errors(client, shape_png, tmp_path, api_name, args, message):
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (4, 4)).save(tiny)
    text_file = tmp_path / "notes.png"
    text_file.write_text("not an image")
    files = {"TINY": str(tiny), "NOTIMAGE": str(text_file), "SHAPE": shape_png}
    args = [handle_file(files[a]) if isinstance(a, str) and a in files else a for a in args]
    with pytest.raises(AppError, match=message) as caught:
        client.predict(*args, api_name=api_name)
    assert "/tmp" not in str(caught.value) and "Traceback" not in str(caught.value)
