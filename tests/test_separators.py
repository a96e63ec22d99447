"""Row separators (the official ``add_sep_for_vis`` variant): config, vision mask, prompt layout, generation,
and a pipeline on a checkpoint that uses them."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import random_model, tiny_config
from unix_core import UniXConfig, resolve_separator, vision_token_mask
from unix_core.generation import generate_image_stream
from unix_core.modality import config_vision_mask
from unix_core.prompting import PromptBuilder
from unix_core.sampling import SamplingConfig

SEP = 97  # a text-range id of tiny_config (vision_start 98, vision_end 99)


def _sep_model(seed=5, every=4):
    return random_model(seed, add_sep_for_vis=1, vis_sep_tokens="<|vision_pad|>", vis_sep_lens=str(every),
                        vis_sep_token_id=SEP)


def test_config_reads_the_official_fields_and_checks_them():
    cfg = tiny_config(add_sep_for_vis=1, vis_sep_tokens="<|vision_pad|>", vis_sep_lens="8", vis_sep_token_id=SEP)
    assert cfg.separator == (SEP, 8) and cfg.vis_sep_lens == 8
    assert tiny_config().separator is None  # the golden configs: add_sep_for_vis 0, vis_sep_lens 0, tokens ""
    assert UniXConfig.from_dict(cfg.to_dict()).separator == (SEP, 8)
    with pytest.raises(ValueError, match="vis_sep_lens"):
        tiny_config(add_sep_for_vis=1, vis_sep_tokens="<|vision_pad|>", vis_sep_lens=0)
    with pytest.raises(ValueError, match="exactly one token"):
        tiny_config(add_sep_for_vis=1, vis_sep_tokens="<a>,<b>", vis_sep_lens=8)
    with pytest.raises(ValueError, match="text-range id"):
        tiny_config(add_sep_for_vis=1, vis_sep_tokens="<|vision_pad|>", vis_sep_lens=8, vis_sep_token_id=120)
    unresolved = tiny_config(add_sep_for_vis=1, vis_sep_tokens="<|vision_pad|>", vis_sep_lens=8)
    with pytest.raises(ValueError, match="resolve_separator"):
        unresolved.separator


def test_resolve_separator_looks_the_token_up():
    class Tok:
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": {"<|vision_pad|>": [SEP], "two words": [3, 4]}[text]}

    cfg = tiny_config(add_sep_for_vis=1, vis_sep_tokens="<|vision_pad|>", vis_sep_lens=8)
    resolve_separator(cfg, Tok())
    assert cfg.separator == (SEP, 8)
    clash = tiny_config(add_sep_for_vis=1, vis_sep_tokens="<|vision_pad|>", vis_sep_lens=8, vis_sep_token_id=SEP - 1)
    with pytest.raises(ValueError, match="tokenizer gives"):
        resolve_separator(clash, Tok())
    several = tiny_config(add_sep_for_vis=1, vis_sep_tokens="two words", vis_sep_lens=8)
    with pytest.raises(ValueError, match="2 tokens"):
        resolve_separator(several, Tok())


def test_separator_is_a_vision_token():
    cfg = _sep_model().config
    ids = torch.tensor([[3, cfg.vision_start_id, 120, SEP, 121, SEP, cfg.vision_end_id, SEP - 1]])
    assert config_vision_mask(ids, cfg).tolist() == [[False, True, True, True, True, True, False, False]]
    assert not bool(vision_token_mask(ids, cfg.real_text_vocab_size, cfg.vision_start_id)[0, 3])


def test_prompt_builder_writes_a_separator_after_every_row():
    builder = PromptBuilder(None, real_text_vocab_size=100, vision_start_id=98, vision_end_id=99, separator=(SEP, 3))
    codes = torch.arange(6).reshape(2, 3)
    assert builder.image_ids(codes) == [98, 100, 101, 102, SEP, 103, 104, 105, SEP, 99]
    with pytest.raises(ValueError, match="rows of 3"):
        builder.code_ids(torch.arange(4))


def test_greedy_image_stream_with_separators_equals_argmax_of_the_full_sequence():
    """Codes come from the KV-cached stream with separators fed in; a plain forward over the whole sequence,
    separators included, must predict each code as the argmax over the codebook rows."""
    model = _sep_model()
    cfg = model.config
    first = cfg.real_text_vocab_size
    prompt = [3, 17, 42, cfg.vision_start_id]
    events = list(generate_image_stream(model, [prompt], grid_hw=(3, 4), sampling=SamplingConfig(temperature=0.0)))
    assert len(events) == 12 and [e.position for e in events] == list(range(12))
    codes = events[-1].grid[0].flatten().tolist()
    seq = list(prompt)
    for i, code in enumerate(codes):
        logits = model(torch.tensor([seq])).logits[0, -1, first : first + cfg.vision_vocab_size]
        assert code == int(logits.argmax())
        seq.append(code + first)
        if (i + 1) % 4 == 0:
            seq.append(SEP)
    plain = random_model(5)  # same weights, no separators: a different image
    events = list(generate_image_stream(plain, [prompt], grid_hw=(3, 4), sampling=SamplingConfig(temperature=0.0)))
    assert events[-1].grid[0].flatten().tolist() != codes


def test_guided_stream_with_separators_runs_and_checks_the_grid():
    model = _sep_model(every=4)
    cfg = model.config
    events = list(generate_image_stream(model, [[3, cfg.vision_start_id]], grid_hw=(2, 4),
                                        sampling=SamplingConfig(cfg_scale=3.0), unconditional=[5, cfg.vision_start_id],
                                        generator=torch.Generator().manual_seed(0)))
    assert len(events) == 8
    with pytest.raises(ValueError, match="rows of 4"):
        next(generate_image_stream(model, [[3, cfg.vision_start_id]], grid_hw=(3, 3)))


def test_pipeline_on_a_checkpoint_with_separators(fixtures_dir, tmp_path):
    from tests.pipeline_fixture import build_checkpoint
    from unix_core import UniXPipeline

    folder = build_checkpoint(tmp_path / "sep", fixtures_dir, add_sep_for_vis=1, vis_sep_tokens="<unk>",
                              vis_sep_lens=16)  # the grid is 16x16
    pipe = UniXPipeline.from_pretrained(folder)
    sep = pipe.tokenizer.convert_tokens_to_ids("<unk>")
    assert pipe.model.config.separator == (sep, 16)
    last = list(pipe.text_to_image_stream("a red circle", seed=1, cfg_scale=1.0, preview_every_rows=0))[-1]
    h, w = pipe.grid_hw
    codes = last.sequence_ids[-(h * (w + 1)):]
    assert codes[w :: w + 1] == [sep] * h  # a separator closes every row
    trace = pipe.trace(last.sequence_ids)
    assert trace.modalities[-1] == "vision" and trace.route_grid()[0][-1] == "vision"  # the last separator
    assert isinstance(pipe.caption(last.images[0]), str)
    assert pipe.describe()["row_separator"] == "<unk> after every 16 codes"


@pytest.mark.parametrize("separators", [True, False])
def test_given_codes_are_fed_and_sampling_continues_after_them(separators):
    model = _sep_model() if separators else random_model(5)
    prompt = [3, 17, model.config.vision_start_id]
    greedy = SamplingConfig(temperature=0.0)
    full = list(generate_image_stream(model, [prompt], grid_hw=(3, 4), sampling=greedy))[-1].grid
    given = full[0].flatten()[:5].tolist()  # crosses the first row's separator
    events = list(generate_image_stream(model, [prompt], grid_hw=(3, 4), sampling=greedy, given=given))
    assert [e.position for e in events] == list(range(5, 12))
    assert torch.equal(events[-1].grid, full)
    with pytest.raises(ValueError, match="given"):
        next(generate_image_stream(model, [prompt], grid_hw=(3, 4), given=[0] * 12))
