"""Tests for unix_core.routing.trace_routing."""

from __future__ import annotations

import json

import torch

from tests.helpers import mixed_ids, random_model
from unix_core.routing import describe_split, trace_routing


def _sequence(model):
    return mixed_ids(model.config, [("text", 4), ("start", 1), ("image", 6), ("end", 1), ("text", 3)])


def test_routes_follow_the_x_shape():
    model = random_model(seed=3)  # 6 layers, split 2:1
    ids = _sequence(model)
    trace = trace_routing(model, ids)
    start, end = 4, 11  # <|vision_start|> and <|vision_end|> positions
    assert trace.modalities[start] == "vision" and trace.modalities[end] == "text"
    kinds = [d.kind for d in trace.depths]
    assert kinds == ["split", "split", "shared", "shared", "shared", "split"]
    for d in trace.depths:
        if d.kind == "split":
            assert d.routes == trace.modalities
            assert set(d.branch_divergence) == {"text", "vision"}
            assert all(v > 0.05 for v in d.branch_divergence.values())  # random twins differ
        else:
            assert d.routes == ["shared"] * ids.shape[1]
            for m in ("text", "vision"):
                assert abs(d.attention_same[m] + d.attention_other[m] - 1) < 1e-5
                assert 0 <= d.attention_same[m] <= 1
    assert len(trace.route_grid()) == 6 and len(trace.route_grid()[0]) == ids.shape[1]
    json.dumps(trace.to_dict())


@torch.no_grad()
def test_trace_final_hidden_equals_model_forward():
    model = random_model(seed=4)
    ids = _sequence(model)
    trace = trace_routing(model, ids[0].tolist())
    torch.testing.assert_close(trace.final_hidden, model.model(ids).last_hidden_state[0], atol=1e-5, rtol=0)


def test_copied_twins_have_zero_divergence():
    model = random_model(seed=5)
    inner = model.model
    with torch.no_grad():
        for j, twin in enumerate(inner.vision_encode_layers):
            twin.load_state_dict(inner.layers[j].state_dict())
        for j, twin in enumerate(inner.vision_decode_layers):
            twin.load_state_dict(inner.layers[model.config.first_decode_depth + j].state_dict())
    trace = trace_routing(model, _sequence(model))
    for d in trace.depths:
        assert all(v < 1e-5 for v in d.branch_divergence.values())


def test_single_modality_and_shared_model():
    model = random_model(seed=6, num_vision_encode_layers=0, num_vision_decode_layers=0)
    trace = trace_routing(model, [1, 2, 3])
    assert all(d.kind == "shared" for d in trace.depths)
    assert trace.depths[0].attention_same == {"text": 1.0} and "vision" not in trace.depths[0].hidden_norm


def test_describe_split_names_the_separated_layers():
    assert describe_split(0, 1) == "the last layer has separate text and vision branches, the others are shared"
    assert describe_split(2, 0) == "the first 2 layers have separate text and vision branches, the others are shared"
    assert describe_split(2, 1).startswith("the first 2 and last 1 layers have separate")
    assert describe_split(0, 0) == "no layer is separated; every layer is shared"
