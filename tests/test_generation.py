"""Tests for unix_core.generation and unix_core.sampling on tiny random models."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import random_model
from unix_core.generation import generate_image_stream, generate_text_stream, write_plans
from unix_core.sampling import SamplingConfig, filter_top_k, filter_top_p, guide


@pytest.fixture(scope="module")
def model():
    return random_model(seed=11)


def _image_codes(model, seed, sampling, prompts=None, grid=(3, 4), unconditional=(5, 98)):
    cfg = model.config
    prompts = prompts or [[3, 17, 42, 8, cfg.vision_start_id]]
    gen = torch.Generator().manual_seed(seed)
    events = list(generate_image_stream(model, prompts, grid_hw=grid, sampling=sampling,
                                        unconditional=list(unconditional), generator=gen))
    return events


def test_image_stream_yields_exactly_the_grid_inside_the_codebook(model):
    events = _image_codes(model, 0, SamplingConfig(cfg_scale=3.0, top_k=20, top_p=0.9), prompts=[[1, 2, 98], [4, 98]])
    assert len(events) == 12
    grid = events[-1].grid
    assert grid.shape == (2, 3, 4) and bool((grid >= 0).all()) and bool((grid < model.config.vision_vocab_size).all())
    assert [e.position for e in events] == list(range(12))
    assert events[-1].progress == 1.0 and bool(events[-1].finished.all())
    assert all(bool((e.token_ids >= model.config.real_text_vocab_size).all()) for e in events)
    # the grid fills in raster order
    assert int((events[4].grid[0] >= 0).sum()) == 5 and int(events[4].grid[0, 1, 0]) == int(events[4].codes[0])


def test_same_seed_same_image_and_different_seed_differs(model):
    s = SamplingConfig(cfg_scale=2.0)
    a = _image_codes(model, 7, s)[-1].grid
    b = _image_codes(model, 7, s)[-1].grid
    c = _image_codes(model, 8, s)[-1].grid
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_cfg_one_equals_no_guidance(model):
    plain = _image_codes(model, 3, SamplingConfig(cfg_scale=1.0))[-1].grid
    # Guidance on but outside its window for every step: unconditional rows ride along in the batch and
    # must not change the conditional rows' result.
    windowed = _image_codes(model, 3, SamplingConfig(cfg_scale=4.0, cfg_window=(0.999, 1.0)))[-1].grid
    guided = _image_codes(model, 3, SamplingConfig(cfg_scale=4.0))[-1].grid
    assert torch.equal(plain, windowed)
    assert not torch.equal(plain, guided)
    c, u = torch.randn(2, 5), torch.randn(2, 5)
    torch.testing.assert_close(guide(c, u, 1.0), c)


def test_several_images_per_prompt_in_one_batch(model):
    cfg = model.config
    prompt = [3, 17, cfg.vision_start_id]
    grids = _image_codes(model, 5, SamplingConfig(cfg_scale=2.0), prompts=[prompt] * 3)[-1].grid
    assert grids.shape[0] == 3 and len({tuple(g.flatten().tolist()) for g in grids}) == 3


def test_closing_a_stream_stops_model_calls(model):
    calls = []
    hook = model.model.register_forward_hook(lambda *a: calls.append(1))
    try:
        stream = generate_image_stream(model, [[1, 98]], grid_hw=(4, 4), sampling=SamplingConfig(cfg_scale=2.0),
                                       unconditional=[5, 98], generator=torch.Generator().manual_seed(0))
        for i, _ in enumerate(stream):
            if i == 2:
                break
        stream.close()
        assert len(calls) == 3  # prefill + 2 steps; the 3rd event needed no further call
        with pytest.raises(StopIteration):
            next(stream)
        assert len(calls) == 3
    finally:
        hook.remove()


@torch.no_grad()
def test_greedy_text_stream_equals_argmax_of_full_sequence_logits(model):
    cfg = model.config
    prompt = [3, 17, cfg.vision_start_id, 120, 130, cfg.vision_end_id, 9]
    events = list(generate_text_stream(model, [prompt], max_new_tokens=8, end_ids={-1},
                                       banned_ids={cfg.vision_start_id}))
    tokens = [int(e.token_ids[0]) for e in events]
    assert len(tokens) == 8
    seq = list(prompt)
    for t in tokens:
        logits = model(torch.tensor([seq])).logits[0, -1, : cfg.real_text_vocab_size]
        logits[cfg.vision_start_id] = float("-inf")
        assert t == int(logits.argmax())
        seq.append(t)


def test_text_stream_stops_at_end_id_per_row(model):
    cfg = model.config
    first = list(generate_text_stream(model, [[1, 2, 3]], max_new_tokens=3, end_ids={-1}))
    end_id = int(first[1].token_ids[0])  # whatever greedy picks second becomes the end id
    events = list(generate_text_stream(model, [[1, 2, 3], [4, 5]], max_new_tokens=6, end_ids={end_id}))
    assert bool(events[1].finished[0])
    assert all(bool(e.token_ids[0] == 0) for e in events[2:])  # finished rows emit padding
    assert all(int(e.token_ids.max()) < cfg.real_text_vocab_size for e in events)


def test_sampled_text_is_seeded_and_text_only(model):
    cfg = model.config
    s = SamplingConfig(temperature=1.5)
    run = lambda seed: [int(e.token_ids[0]) for e in generate_text_stream(
        model, [[1, 2]], max_new_tokens=10, end_ids={-1}, sampling=s, banned_ids={cfg.vision_start_id},
        generator=torch.Generator().manual_seed(seed))]
    assert run(1) == run(1) and run(1) != run(2)
    assert all(t < cfg.real_text_vocab_size and t != cfg.vision_start_id for t in run(3))


def test_filters():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    assert torch.isinf(filter_top_k(logits, 2)[0, [0, 3]]).all() and torch.isfinite(filter_top_k(logits, 2)[0, [1, 2]]).all()
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    kept = torch.isfinite(filter_top_p(probs, 0.7))[0].tolist()
    assert kept == [True, True, False, False]  # 0.5 < 0.7, 0.8 exceeds: keep up to and including it
    assert torch.isfinite(filter_top_p(probs, 0.5))[0].tolist() == [True, False, False, False]


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(temperature=-0.1), "temperature"),
        (dict(temperature=float("nan")), "temperature"),
        (dict(top_k=-1), "top_k"),
        (dict(top_k=2.5), "top_k"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(cfg_scale=-1.0), "cfg_scale"),
        (dict(cfg_scale=100.0), "cfg_scale"),
        (dict(cfg_window=(0.5, 0.2)), "cfg_window"),
    ],
)
def test_invalid_sampling_settings_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        SamplingConfig(**kwargs)


def test_generation_trips_no_transformers_deprecation_warning(model, monkeypatch):
    """transformers 5.x warns (once per process) when a model output is built or read with the old
    ``past_key_values`` name; the hook records every call, so the test does not depend on test order."""
    from transformers.utils import generic

    said = []
    monkeypatch.setattr(generic.logger, "warning_once", lambda msg, *a, **k: said.append(str(msg)))
    _image_codes(model, 0, SamplingConfig(cfg_scale=2.0))
    list(generate_text_stream(model, [[3, 17, 42]], max_new_tokens=3, end_ids={0}))
    model(torch.tensor([[3, 17, 42]]), use_cache=True)
    assert not [m for m in said if "deprecated" in m], said


def test_plans_are_the_greedy_text_up_to_the_first_vision_start(model):
    """write_plans stops each row at its first <|vision_start|> (here: a token the greedy text is known to
    write), and appends it to a row that did not write it within the limit."""
    prompts = [[3, 17, 42, 8], [5, 9]]
    greedy = [[], []]
    for event in generate_text_stream(model, prompts, max_new_tokens=6, end_ids=set(),
                                      sampling=SamplingConfig(temperature=0.0)):
        for row in range(2):
            greedy[row].append(int(event.token_ids[row]))
    stop = greedy[0][2]
    plans = write_plans(model, prompts, vision_start_id=stop, max_new_tokens=6)
    assert plans[0] == greedy[0][: greedy[0].index(stop) + 1]
    if stop in greedy[1]:
        assert plans[1] == greedy[1][: greedy[1].index(stop) + 1]
    else:
        assert plans[1] == greedy[1] + [stop]
    banned = write_plans(model, prompts, vision_start_id=stop, banned_ids={greedy[0][0]}, max_new_tokens=6)
    assert greedy[0][0] not in banned[0][:-1]
