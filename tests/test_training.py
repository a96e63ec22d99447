"""Tests for unix_core.training: tokenizer, task sequences and label masks, mix shares, batching, the training
loop (loss drops, deterministic resume) and the exported checkpoint folder."""

import dataclasses
import json
import shutil
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from unix_core.prompting import PromptBuilder
from unix_core.templates import SHAPES, SHAPES_LAYOUTS, load_templates
from unix_core.training.data import (
    EDIT_TEXT_SEED,
    IGNORE,
    BatchSchedule,
    MixConfig,
    SequenceBuilder,
    TrainingSequence,
    build_mix,
    collate,
    epoch_batches,
    load_sequences,
    save_sequences,
)
from unix_core.training.text_tokenizer import SPECIAL_TOKENS, train_text_tokenizer, world_text
from unix_core.world import caption_samples, edit_samples, fewshot_episodes, text_corpus, vqa_samples
from tests.helpers import load_script

N_CODES = 32


@pytest.fixture(scope="module")
def tokenizer():
    return train_text_tokenizer(world_text(300, seed=0))


@pytest.fixture(scope="module")
def builder(tokenizer):
    return SequenceBuilder(tokenizer)


def fake_codes(seed: int) -> torch.Tensor:
    return torch.randint(N_CODES, (8, 8), generator=torch.Generator().manual_seed(seed))


def fake_encoder(scenes):
    """Deterministic stand-in for the VQ encoder: codes derived from the scene's caption."""
    return torch.stack([fake_codes(sum(map(ord, s.caption())) % 9973) for s in scenes])


def encode(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def image(builder, codes):
    return [builder.vision_start_id, *(builder.real_text_vocab_size + codes.flatten()).tolist(), builder.vision_end_id]


def check_labels(seq: TrainingSequence, trained_from: int):
    """Labels are -100 before ``trained_from`` and equal to the ids from there on."""
    assert len(seq.labels) == len(seq.input_ids)
    assert seq.labels[:trained_from] == [IGNORE] * trained_from
    assert seq.labels[trained_from:] == seq.input_ids[trained_from:]


# --------------------------------------------------------------------------------------------------
def test_tokenizer_round_trips_world_text_and_specials_are_single_ids(tokenizer, tmp_path):
    from transformers import AutoTokenizer

    tokenizer.save_pretrained(str(tmp_path))
    loaded = AutoTokenizer.from_pretrained(str(tmp_path))
    assert len(loaded) == len(tokenizer) < 1024
    assert loaded.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == [0, 1, 2, 3]
    assert loaded.eos_token == loaded.pad_token == "<|endoftext|>"
    for token in SPECIAL_TOKENS:
        assert encode(loaded, token) == [loaded.convert_tokens_to_ids(token)]
    # typed by a user (special tokens split), a special's text is not the control token
    user = loaded("<|vision_start|>", add_special_tokens=False, split_special_tokens=True)["input_ids"]
    assert len(user) > 1 and loaded.convert_tokens_to_ids("<|vision_start|>") not in user
    lines = list(text_corpus(200, seed=5, split="heldout")) + ["what color is the circle?", "this is a red one."]
    for line in lines:
        ids = encode(loaded, line)
        assert loaded.decode(ids) == line
        assert len(ids) <= len(line.split()) * 3  # words are mostly single tokens
    assert len(encode(loaded, " background")) == 1 and len(encode(loaded, " triangle")) == 1


def test_text_to_image_and_unconditional_layouts(builder, tokenizer):
    codes = fake_codes(1)
    prompt = "a small red circle at the top left on a white background"
    seq = builder.text_to_image(prompt, codes)
    head = encode(tokenizer, prompt) + [builder.vision_start_id]
    assert seq.input_ids == head + image(builder, codes)[1:] + [builder.eos_id]
    check_labels(seq, len(head))  # codes, <|vision_end|> and eos are trained; prompt and <|vision_start|> not
    assert seq.task == "text_to_image"
    uncond = builder.text_to_image(None, codes)
    assert uncond.input_ids[:2] == [tokenizer.convert_tokens_to_ids("<unconditional>"), builder.vision_start_id]
    assert uncond.input_ids[2:] == seq.input_ids[len(head):]
    check_labels(uncond, 2)
    # the prompt part is exactly what the pipeline renders from the SHAPES template
    pb = PromptBuilder(tokenizer, real_text_vocab_size=len(tokenizer), vision_start_id=builder.vision_start_id,
                       vision_end_id=builder.vision_end_id)
    assert seq.input_ids[:len(head)] == pb.render(SHAPES.text_to_image, {"prompt": prompt}, []).ids


def test_caption_vqa_edit_text_layouts(builder, tokenizer):
    sample = next(caption_samples(1, seed=3))
    codes = fake_codes(2)
    seq = builder.caption(codes, sample.caption)
    head = image(builder, codes) + encode(tokenizer, "caption:")
    assert seq.input_ids == head + encode(tokenizer, " " + sample.caption) + [builder.eos_id]
    check_labels(seq, len(head))
    assert tokenizer.decode(seq.input_ids[len(head):-1]).strip() == sample.caption

    q = next(vqa_samples(1, seed=3))
    seq = builder.vqa(codes, q.question, q.answer)
    assert seq.input_ids[:66] == image(builder, codes)
    answer = encode(tokenizer, " " + q.answer) + [builder.eos_id]
    assert seq.input_ids[-len(answer):] == answer
    check_labels(seq, len(seq) - len(answer))  # image and question masked
    assert tokenizer.decode(seq.input_ids[66:-len(answer)]) == f"question: {q.question} answer:"

    e = next(edit_samples(1, seed=3))
    target = fake_codes(4)
    seq = builder.edit(codes, e.instruction, target)
    completion = image(builder, target)[1:] + [builder.eos_id]
    assert seq.input_ids[:66] == image(builder, codes)
    assert seq.input_ids[-len(completion) - 1] == builder.vision_start_id
    assert tokenizer.decode(seq.input_ids[66:-len(completion) - 1]) == f"edit: {e.instruction}"
    check_labels(seq, len(seq) - len(completion))
    uncond = builder.edit(codes, None, target)
    head = image(builder, codes) + encode(tokenizer, "edit:") + [builder.vision_start_id]
    assert uncond.input_ids == head + completion
    check_labels(uncond, len(uncond) - len(completion))

    text = builder.text("is there a square? yes")
    assert text.input_ids == encode(tokenizer, "is there a square? yes") + [builder.eos_id]
    check_labels(text, 0)


def test_planned_edits_write_the_target_caption_then_draw(tokenizer):
    """query-first-plan: the edit prompt ends at ``result:``; the caption of the target, <|vision_start|> and
    the target codes are all trained; the unconditional form stays as it was (no plan)."""
    templates = SHAPES.with_overrides(SHAPES_LAYOUTS["query-first-plan"])
    builder = SequenceBuilder(tokenizer, templates=templates)
    e = next(edit_samples(1, seed=3))
    source, target = fake_codes(2), fake_codes(4)
    seq = builder.edit(source, e.instruction, target, e.target.caption())
    head = builder.prompts.render(templates.edit_plan, {"instruction": e.instruction}, [source]).ids
    first = head.index(builder.vision_start_id)
    assert head[first : first + 66] == image(builder, source)
    assert tokenizer.decode(head[:first]).strip() == f"edit: {e.instruction}"
    assert tokenizer.decode(head[first + 66 :]) == "result:"
    plan = encode(tokenizer, " " + e.target.caption()) + [builder.vision_start_id]
    assert seq.input_ids == head + plan + image(builder, target)[1:] + [builder.eos_id]
    check_labels(seq, len(head))
    uncond = builder.edit(source, None, target, e.target.caption())
    bare = builder.prompts.render(templates.edit_unconditional, {}, [source]).ids
    assert bare[-1] == builder.vision_start_id
    assert uncond.input_ids == bare + image(builder, target)[1:] + [builder.eos_id]
    with pytest.raises(ValueError, match="target's caption"):
        builder.edit(source, e.instruction, target)
    for bad in ("edit: {instruction}<image><|vision_start|>", "edit:<image>result:", "edit: {instruction} result:"):
        with pytest.raises(ValueError, match="edit_plan"):
            SHAPES.with_overrides({"edit_plan": bad})


def test_caption_plans_caption_the_source_then_say_the_result(tokenizer):
    """query-first-caption-plan: the edit prompt ends as the caption prompt does; the plan is the source's caption,
    then ``result:`` and the target's caption, all trained; a text-only edit is the same sequence without the
    image and with only the result trained."""
    templates = SHAPES.with_overrides(SHAPES_LAYOUTS["query-first-caption-plan"])
    builder = SequenceBuilder(tokenizer, templates=templates)
    e = next(edit_samples(1, seed=3))
    src, tgt = e.source.caption(), e.target.caption()
    source, target = fake_codes(2), fake_codes(4)
    seq = builder.edit(source, e.instruction, target, tgt, src)
    head = builder.prompts.render(templates.edit_plan, {"instruction": e.instruction}, [source]).ids
    assert tokenizer.decode(head[head.index(builder.vision_end_id) + 1 :]) == "caption:"
    plan = seq.input_ids[len(head) : seq.input_ids.index(builder.vision_start_id, len(head)) + 1]
    assert tokenizer.decode(plan) == f" {src} result: {tgt}<|vision_start|>"
    assert plan == encode(tokenizer, f" {src} result: {tgt}") + [builder.vision_start_id]  # as the model writes it
    assert seq.input_ids == head + plan + image(builder, target)[1:] + [builder.eos_id]
    check_labels(seq, len(head))
    assert templates.read_plan(f"{src} result: {tgt}") == (src, tgt)
    assert templates.read_plan(src) == (src, "")  # no result written: the target is wrong, not the source

    text = builder.edit_text(e.instruction, src, tgt)
    image_ids = image(builder, source)
    at = head.index(builder.vision_start_id)
    assert text.task == "edit_text" and text.input_ids == head[:at] + head[at + len(image_ids) :] + plan
    result = encode(tokenizer, f" result: {tgt}") + [builder.vision_start_id]
    check_labels(text, len(text) - len(result))
    with pytest.raises(ValueError, match="source's captions"):
        builder.edit(source, e.instruction, target, tgt)
    with pytest.raises(ValueError, match="text-only edits need"):
        SequenceBuilder(tokenizer, templates=SHAPES.with_overrides(SHAPES_LAYOUTS["query-first-plan"])).edit_text(
            e.instruction, src, tgt)
    # the single-caption plan reads as before
    plain = SHAPES.with_overrides(SHAPES_LAYOUTS["query-first-plan"])
    assert plain.plan_text(src, tgt) == f" {tgt}" and plain.read_plan(f" {tgt} ") == ("", tgt)
    for bad in (" {source}", " {target} {source}", " {target} {target}", " {source} {target} {other}"):
        with pytest.raises(ValueError, match="edit_plan_text"):
            SHAPES.with_overrides({"edit_plan_text": bad})


def test_text_only_edits_join_the_mix_only_with_a_caption_plan(tokenizer):
    from unix_core.training.embedded import EmbeddedPlan

    templates = SHAPES.with_overrides(SHAPES_LAYOUTS["query-first-caption-plan"])
    builder = SequenceBuilder(tokenizer, templates=templates)
    mix = MixConfig(text_to_image=0, caption=0, vqa=0, edit=2, fewshot=0, text=0, edit_text=5,
                    edit_unconditional_share=0.0)
    seqs = build_mix(builder, lambda scenes: torch.stack([fake_codes(i) for i in range(len(scenes))]), mix)
    texts = [s for s in seqs if s.task == "edit_text"]
    assert len(texts) == 5 and Counter(s.task for s in seqs)["edit"] == 2
    own = [builder.edit_text(e.instruction, e.source.caption(), e.target.caption())
           for e in edit_samples(5, seed=EDIT_TEXT_SEED)]  # a stream apart from the image edits' (seed 0)
    assert sorted(s.input_ids for s in texts) == sorted(s.input_ids for s in own)
    assert MixConfig().scaled(2).edit_text == 0 and mix.scaled(2).edit_text == 10
    with pytest.raises(ValueError, match="edit_text"):
        EmbeddedPlan.from_dict({**tiny_plan().to_dict(), "mix": dataclasses.asdict(mix), "layout": "query-first"})
    EmbeddedPlan.from_dict({**tiny_plan().to_dict(), "mix": dataclasses.asdict(mix),
                            "layout": "query-first-caption-plan"})


@pytest.mark.parametrize("train_examples", [True, False])
def test_fewshot_layout_trains_answers_only(builder, tokenizer, train_examples):
    ep = next(e for e in fewshot_episodes(20, seed=0) if len(e.examples) >= 2)
    grids = [fake_codes(10 + i) for i in range(len(ep.examples) + 1)]
    seq = builder.fewshot(list(zip(grids, [t for _, t in ep.examples])), grids[-1], ep.answer,
                          train_examples=train_examples)
    expected, trained = [], []
    for i, (g, (_, text)) in enumerate(zip(grids, ep.examples)):
        expected += image(builder, g)
        trained += [False] * 66
        text_ids = encode(tokenizer, text) + [builder.eos_id]
        expected += text_ids
        trained += [train_examples and i > 0] * len(text_ids)
    expected += image(builder, grids[-1])
    trained += [False] * 66
    answer = encode(tokenizer, ep.answer) + [builder.eos_id]
    expected += answer
    trained += [True] * len(answer)
    assert seq.input_ids == expected
    assert seq.labels == [i if t else IGNORE for i, t in zip(expected, trained)]
    # no image code is ever a training target
    assert all(label < builder.real_text_vocab_size for label in seq.labels if label != IGNORE)


def test_mix_shares_are_as_configured_and_seeded(builder, tokenizer):
    mix = MixConfig(text_to_image=600, caption=5, vqa=5, edit=40, fewshot=3, text=7,
                    reverse_share=0.25, unconditional_share=0.2, edit_unconditional_share=0.5, seed=3)
    seqs = build_mix(builder, fake_encoder, mix)
    tasks = Counter(s.task for s in seqs)
    assert len(seqs) == 600 + 5 + 5 + 40 + 3 + 7
    reversed_ = tasks["caption"] - 5
    # 3-sigma binomial bounds (the mix is seeded, so this is one fixed draw)
    assert abs(reversed_ - 150) < 3 * (600 * 0.25 * 0.75) ** 0.5
    assert abs(tasks["unconditional"] - 0.2 * (600 - reversed_)) < 3 * ((600 - reversed_) * 0.16) ** 0.5
    assert tasks["text_to_image"] + tasks["unconditional"] + reversed_ == 600
    edit_uncond = sum(s.task == "edit" and s.input_ids[68] == builder.vision_start_id for s in seqs)
    assert 8 <= edit_uncond <= 32
    assert [s.input_ids for s in build_mix(builder, fake_encoder, mix)] == [s.input_ids for s in seqs]
    other = build_mix(builder, fake_encoder, dataclasses.replace(mix, seed=4))
    assert [s.input_ids for s in other] != [s.input_ids for s in seqs]
    none = Counter(s.task for s in build_mix(builder, fake_encoder, dataclasses.replace(
        mix, reverse_share=0.0, unconditional_share=0.0)))
    assert none["unconditional"] == 0 and none["caption"] == 5
    # the same-shape share reaches the edits: the mix's edit sequences are those of the world's generator
    same_shape = dataclasses.replace(mix, edit_same_shape_share=1.0, edit_unconditional_share=0.0)
    texts = [tokenizer.decode(s.input_ids) for s in build_mix(builder, fake_encoder, same_shape) if s.task == "edit"]
    assert sorted(t.split("edit: ")[1].split("<")[0].strip() for t in texts) == sorted(
        e.instruction for e in edit_samples(40, seed=3, same_shape_share=1.0))
    with pytest.raises(ValueError, match="edit_same_shape_share must be in"):
        MixConfig(edit_same_shape_share=-0.1)


def test_sequences_save_load_collate_and_batches(builder, tmp_path):
    mix = MixConfig(text_to_image=20, caption=5, vqa=5, edit=5, fewshot=3, text=10)
    seqs = build_mix(builder, fake_encoder, mix)
    save_sequences(tmp_path / "s.safetensors", seqs)
    assert load_sequences(tmp_path / "s.safetensors") == seqs
    batch = collate(seqs[:3], pad_id=builder.eos_id)
    for row, s in enumerate(seqs[:3]):
        n = len(s)
        assert batch.input_ids[row, :n].tolist() == s.input_ids and batch.labels[row, :n].tolist() == s.labels
        assert batch.attention_mask[row].tolist() == [1] * n + [0] * (batch.input_ids.shape[1] - n)
        assert (batch.labels[row, n:] == IGNORE).all()
    lengths = [len(s) for s in seqs]
    batches = epoch_batches(lengths, max_tokens=600, seed=1, epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(len(seqs)))
    assert all(len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 600 for b in batches)
    assert epoch_batches(lengths, max_tokens=600, seed=1, epoch=1) != batches
    schedule = BatchSchedule(lengths, max_tokens=600, seed=1)
    walked = [schedule.batch(s) for s in range(len(batches) + 2)]
    assert walked[: len(batches)] == batches
    assert BatchSchedule(lengths, max_tokens=600, seed=1).batch(len(batches) + 1) == walked[-1]


def test_training_loop_lowers_the_loss(builder, tmp_path):
    from accelerate import Accelerator

    from unix_core.convert import convert_qwen_to_unix
    from unix_core.training.embedded import EmbeddedPlan, LMShape, stage1_model
    from unix_core.training.train_lm import TrainConfig, eval_loss_by_task, train_lm

    seqs = build_mix(builder, fake_encoder, MixConfig(text_to_image=3, caption=1, vqa=1, edit=1, fewshot=0, text=2))
    plan = EmbeddedPlan(lm=LMShape(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1,
                                   intermediate_size=64, split=(1, 1)))
    model = convert_qwen_to_unix(stage1_model(plan, builder.tokenizer), num_vision_encode_layers=1,
                                 num_vision_decode_layers=1, vision_vocab_size=N_CODES, tokenizer=builder.tokenizer)
    before = eval_loss_by_task(model, seqs, pad_id=builder.eos_id, device="cpu")["all"]
    config = TrainConfig(steps=3, max_tokens=10_000, lr=1e-2, warmup_steps=1, log_every=1)  # one batch: all seqs
    log = train_lm(model.train(), seqs, config, work_dir=tmp_path, accelerator=Accelerator(cpu=True),
                   pad_id=builder.eos_id)
    after = eval_loss_by_task(model, seqs, pad_id=builder.eos_id, device="cpu")["all"]
    losses = [loss for _, loss in log.train_loss]
    assert len(losses) == 3 and losses[2] < losses[1] < losses[0]
    assert after < before - 0.5


def tiny_plan():
    from unix_core.training.embedded import EmbeddedPlan, LMShape
    from unix_core.training.train_lm import TrainConfig
    from unix_core.vq import VQConfig

    return EmbeddedPlan(
        tokenizer_lines=200,
        vq=VQConfig(embed_dim=8, n_embed=N_CODES, ch=32, ch_mult=(1, 1, 1, 1), num_res_blocks=1, z_channels=8,
                    resolution=64, attn_type="none"),
        vq_images=16, vq_steps=2, vq_batch_size=2, vq_eval_images=2,
        lm=LMShape(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64, split=(1, 1)),
        stage1_lines=30,
        stage1=TrainConfig(steps=2, max_tokens=256, lr=1e-2, warmup_steps=1),
        mix=MixConfig(text_to_image=6, caption=2, vqa=2, edit=2, fewshot=1, text=2),
        eval_mix=MixConfig(text_to_image=2, caption=1, vqa=1, edit=1, fewshot=1, text=1, split="heldout", seed=1),
        stage2=TrainConfig(steps=3, max_tokens=512, lr=1e-2, warmup_steps=1, checkpoint_every=2),
    )


def test_pipeline_writes_a_loadable_checkpoint_and_resumes_identically(tmp_path):
    from accelerate import Accelerator
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from unix_core.model import UniXForCausalLM
    from unix_core.training.embedded import copy_reusable_stages, run_plan
    from unix_core.vq import VQImageTokenizer

    plan = tiny_plan()
    accelerator = lambda: Accelerator(cpu=True)  # noqa: E731
    folder = run_plan(plan, tmp_path / "a", make_accelerator=accelerator, snapshot_steps=(2,))
    assert folder == tmp_path / "a" / "checkpoint"
    model = UniXForCausalLM.from_pretrained(str(folder))
    tok = AutoTokenizer.from_pretrained(str(folder))
    vq = VQImageTokenizer.from_pretrained(folder)
    assert load_templates(folder).family == "shapes"
    assert json.loads((folder / "prompt_templates.json").read_text()) == {"family": "shapes"}
    c = model.config
    assert (c.real_text_vocab_size, c.vision_vocab_size, c.vocab_size) == (len(tok), N_CODES, len(tok) + N_CODES)
    assert c.vision_start_id == tok.convert_tokens_to_ids("<|vision_start|>")
    assert (c.num_vision_encode_layers, c.num_vision_decode_layers) == (1, 1)
    assert vq.grid_size == 8 and vq.codebook_size == N_CODES
    report = json.loads((folder / "training_report.json").read_text())
    assert report["stage2"]["step"] == 3

    # same stages up to stage 2, which is interrupted after its first step and then resumed
    shutil.copytree(tmp_path / "a", tmp_path / "b", ignore=shutil.ignore_patterns("stage2", "checkpoint"))
    stopped = run_plan(plan, tmp_path / "b", make_accelerator=accelerator, time_limit_s=0.0)
    assert stopped.name == "stage2" and not (tmp_path / "b" / "checkpoint").exists()
    # a plan.json written before the stage-2 loss options existed still names the same plan
    saved = json.loads((tmp_path / "b" / "plan.json").read_text())
    for key in ("change_weight", "image_noise", "task_weights"):
        del saved["stage2"][key]
    del saved["vq_decoder_steps"], saved["vq_decoder_lr"]
    (tmp_path / "b" / "plan.json").write_text(json.dumps(saved))
    resumed = run_plan(plan, tmp_path / "b", make_accelerator=accelerator)
    a, b = load_file(str(folder / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # "a" kept a snapshot, "b" none

    # the step-2 snapshot scores in place of the checkpoint's weights; weights of another model are refused
    from unix_core.training.evaluate import load_checkpoint

    snapshot = tmp_path / "a" / "work" / "stage2" / "snapshots" / "step2.safetensors"
    snap_model = load_checkpoint(folder, weights=snapshot)[0]
    snap = load_file(str(snapshot))
    assert snap.keys() == a.keys() and all(torch.equal(snap_model.state_dict()[k], v) for k, v in snap.items())
    assert not torch.equal(snap["model.norm.weight"], a["model.norm.weight"])
    assert model.config.tie_word_embeddings and torch.equal(snap_model.lm_head.weight, snap["model.embed_tokens.weight"])
    with pytest.raises(ValueError, match="does not hold the weights"):
        load_checkpoint(folder, weights=tmp_path / "a" / "work" / "stage1" / "final" / "model.safetensors")
    with pytest.raises(ValueError, match="different plan"):
        run_plan(plan.replace(seed=1), tmp_path / "b", make_accelerator=accelerator)

    # the 0:0 baseline reuses tokenizers, data and the stage-1 model; a different seed reuses nothing
    baseline = plan.replace(lm=dataclasses.replace(plan.lm, split=(0, 0)))
    assert copy_reusable_stages(baseline, tmp_path / "a", tmp_path / "c") == ["tokenizer", "vq", "data", "stage1"]
    assert copy_reusable_stages(plan.replace(seed=1), tmp_path / "a", tmp_path / "d") == []


def test_decoder_stage_changes_only_the_decoder_and_the_palette_init_reads_it(tmp_path, monkeypatch):
    from accelerate import Accelerator
    from safetensors.torch import load_file

    from unix_core.training import embedded
    from unix_core.training.embedded import copy_reusable_stages, run_plan

    palette_decoders = []  # the decoder each stage-2 palette init read
    real_init = embedded.init_vision_embeddings_from_palette

    def spy(model, vq, **kwargs):
        palette_decoders.append(vq.model.decoder.conv_out.weight.detach().clone())
        return real_init(model, vq, **kwargs)

    monkeypatch.setattr(embedded, "init_vision_embeddings_from_palette", spy)
    accelerator = lambda: Accelerator(cpu=True)  # noqa: E731
    plain = run_plan(tiny_plan(), tmp_path / "a", make_accelerator=accelerator)
    plan = tiny_plan().replace(vq_decoder_steps=3)
    # the codes do not change, so the data carry over with every stage before them
    assert copy_reusable_stages(plan, tmp_path / "a", tmp_path / "b") == ["tokenizer", "vq", "data", "stage1"]
    tuned = run_plan(plan, tmp_path / "b", make_accelerator=accelerator)
    a, b = load_file(str(plain / "model.safetensors")), load_file(str(tuned / "model.safetensors"))
    assert not all(torch.equal(a[k], b[k]) for k in a)  # the LMs' palette inits read different decoders
    a, b = load_file(str(plain / "vq_model.safetensors")), load_file(str(tuned / "vq_model.safetensors"))
    # each run's palette init read the decoder it ships
    assert [torch.equal(d, w["decoder.conv_out.weight"]) for d, w in zip(palette_decoders, (a, b))] == [True, True]
    assert not torch.equal(*palette_decoders)
    for key in a:
        assert torch.equal(a[key], b[key]) != key.startswith(("decoder.", "post_quant_conv.")), key
    assert torch.equal(load_file(str(tmp_path / "b" / "work" / "vq" / "vq_model.safetensors"))["decoder.conv_out.weight"],
                       a["decoder.conv_out.weight"])
    report = json.loads((tuned / "training_report.json").read_text())
    assert report["vq_decoder"]["images"] == 2 and report["vq_decoder"]["log"][-1]["step"] == 3
    assert json.loads((plain / "training_report.json").read_text())["vq_decoder"] is None
    assert copy_reusable_stages(plan, tmp_path / "b", tmp_path / "c") == [
        "tokenizer", "vq", "vq_decoder", "data", "stage1"]
    with pytest.raises(ValueError, match="vq_decoder_steps"):
        tiny_plan().replace(vq_decoder_steps=-1)


def test_plan_with_row_separators_trains_and_serves_them(tmp_path):
    from accelerate import Accelerator

    from unix_core import UniXPipeline
    from unix_core.training.data import load_sequences
    from unix_core.training.embedded import copy_reusable_stages, run_plan
    from unix_core.training.text_tokenizer import SEPARATOR_TOKEN

    plan = tiny_plan().replace(vis_separators=True)
    folder = run_plan(plan, tmp_path / "s", make_accelerator=lambda: Accelerator(cpu=True))
    pipe = UniXPipeline.from_pretrained(folder)
    sep = pipe.tokenizer.convert_tokens_to_ids(SEPARATOR_TOKEN)
    cfg = pipe.model.config
    assert (cfg.add_sep_for_vis, cfg.vis_sep_tokens, cfg.separator) == (1, SEPARATOR_TOKEN, (sep, 8))
    for seq in load_sequences(tmp_path / "s" / "work" / "data" / "train.safetensors"):
        # every image, given or generated, starts with <|vision_start|> and has 8 rows
        assert seq.input_ids.count(sep) == 8 * sum(t == cfg.vision_start_id for t in seq.input_ids)
    last = list(pipe.text_to_image_stream("a red circle", seed=0, preview_every_rows=0))[-1]
    assert last.sequence_ids.count(sep) == 8 and last.images[0].size == (64, 64)
    # the separator changes the text tokenizer, so only the image tokenizer carries over to a plan without it
    assert copy_reusable_stages(tiny_plan(), tmp_path / "s", tmp_path / "t") == ["vq"]


def test_query_first_layout_is_trained_shipped_served_and_evaluated(tmp_path):
    """A plan's layout reaches every place a prompt is rendered: the training data, the checkpoint's
    prompt_templates.json, the pipeline and the evaluator; plans written before the field read as image-first."""
    from accelerate import Accelerator

    from unix_core import UniXPipeline
    from unix_core.training.data import load_sequences
    from unix_core.training.embedded import EmbeddedPlan, copy_reusable_stages, run_plan
    from unix_core.training.evaluate import folder_evaluator

    old = tiny_plan().to_dict()
    del old["layout"]
    assert EmbeddedPlan.from_dict(old).layout == "image-first"
    plan = tiny_plan().replace(layout="query-first")
    folder = run_plan(plan, tmp_path / "q", make_accelerator=lambda: Accelerator(cpu=True))
    pipe = UniXPipeline.from_pretrained(folder)
    start = pipe.model.config.vision_start_id
    rendered = pipe._render(pipe.templates.answer, {"question": "is there a red circle?"}, [torch.zeros(8, 8, dtype=torch.long)])
    first_image = rendered.ids.index(start)
    assert pipe.tokenizer.decode(rendered.ids[:first_image]) == "question: is there a red circle?"
    edit = pipe._render(pipe.templates.edit, {"instruction": "make the circle blue"}, [torch.zeros(8, 8, dtype=torch.long)])
    assert pipe.tokenizer.decode(edit.ids[:5]).startswith("edit: make")
    # the training data: every VQA and edit sequence starts with text, not with an image
    for seq in load_sequences(tmp_path / "q" / "work" / "data" / "train.safetensors"):
        if seq.task in ("vqa", "edit"):
            assert seq.input_ids[0] != start
    evaluator = folder_evaluator(folder)
    assert evaluator.templates.answer == pipe.templates.answer
    assert evaluator.run(2, tasks=("vqa",))["vqa"].total == 2
    # the data depend on the layout, so an image-first plan reuses only what comes before them (stage 1 too:
    # without text-only edits in it the layout plays no part there)
    reused = copy_reusable_stages(tiny_plan(), tmp_path / "q", tmp_path / "i")
    assert "data" not in reused and "stage1" in reused


@pytest.mark.parametrize("layout", ["query-first-plan", "query-first-caption-plan"])
def test_plan_layout_is_trained_served_with_its_plan_and_evaluated(tmp_path, monkeypatch, layout):
    """Plan layouts end to end: the edits of the training data carry a trained plan (and, for caption plans,
    text-only edits join them), the pipeline writes a plan before drawing (on every event, and in the sequence
    the routing view traces), the evaluator scores edits the same way, and the checkpoint's templates name the
    layout."""
    from accelerate import Accelerator
    from PIL import Image

    from unix_core import UniXPipeline
    from unix_core.training import embedded
    from unix_core.training.data import load_sequences
    from unix_core.training.embedded import copy_reusable_stages, run_plan
    from unix_core.training.evaluate import folder_evaluator
    from unix_core.world import text_corpus

    captioned = layout == "query-first-caption-plan"
    plan = tiny_plan().replace(layout=layout, stage1_extra_text=4)  # and more of the world's text in stage 1
    if captioned:  # text-only edits in stage 2 and, more of them from the same stream, in stage 1
        plan = plan.replace(mix=dataclasses.replace(plan.mix, edit_text=3), stage1_edit_text=5)
    corpora = []  # what each train_lm call trained on: stage 1, then stage 2
    real_train_lm = embedded.train_lm

    def train_lm(model, data, *args, **kwargs):
        corpora.append(data)
        return real_train_lm(model, data, *args, **kwargs)

    monkeypatch.setattr(embedded, "train_lm", train_lm)
    folder = run_plan(plan, tmp_path / "p", make_accelerator=lambda: Accelerator(cpu=True))
    stage1_edits = [s for s in corpora[0] if s.task == "edit_text"]
    stage1_text = [s for s in corpora[0] if s.task == "text"]
    assert len(stage1_edits) == plan.stage1_edit_text and len(corpora[0]) == len(stage1_text) + len(stage1_edits)
    assert len(stage1_text) == plan.stage1_lines + plan.stage1_extra_text
    stage2_edits = [s for s in corpora[1] if s.task == "edit_text"]
    # stage 2's text-only edits are the first of stage 1's (one stream); the mix shuffles them
    assert sorted(map(str, stage2_edits)) == sorted(map(str, stage1_edits[: plan.mix.edit_text]))
    if captioned:  # stage 1 learnt from the edits, so only a run with the same edits, layout and seed reuses it
        assert "stage1" in copy_reusable_stages(plan.replace(lm=dataclasses.replace(plan.lm, split=(0, 0))),
                                                tmp_path / "p", tmp_path / "twin")
        assert "stage1" not in copy_reusable_stages(plan.replace(stage1_edit_text=4), tmp_path / "p", tmp_path / "x")
    assert "stage1" not in copy_reusable_stages(plan.replace(stage1_extra_text=3), tmp_path / "p", tmp_path / "y")
    pipe = UniXPipeline.from_pretrained(folder)
    # stage 1's world text: the data stage's lines, then the same stream's next ones
    stream = list(text_corpus(plan.stage1_lines + plan.stage1_extra_text, seed=plan.seed + 2))
    assert [pipe.tokenizer.decode(s.input_ids, skip_special_tokens=True) for s in stage1_text] == stream
    assert [s.input_ids for s in stage1_text[: plan.stage1_lines]] == [
        s.input_ids for s in load_sequences(tmp_path / "p" / "work" / "data" / "text.safetensors")]
    assert pipe.templates.edit_plan == SHAPES_LAYOUTS[layout]["edit_plan"]
    assert pipe.templates.edit_plan_text == (" {source} result: {target}" if captioned else " {target}")
    start = pipe.model.config.vision_start_id
    data = load_sequences(tmp_path / "p" / "work" / "data" / "train.safetensors")
    planned = [s for s in data if s.task == "edit" and pipe.tokenizer.decode(s.input_ids).count("result:")]
    assert planned and sum(s.task == "edit_text" for s in data) == (3 if captioned else 0)
    for seq in planned:
        second_start = [i for i, t in enumerate(seq.input_ids) if t == start][1]
        assert seq.labels[second_start] == start and seq.labels[second_start - 1] != IGNORE
    events = list(pipe.edit_stream(Image.new("RGB", (64, 64), "white"), "make the circle blue", seed=1,
                                   preview_every_rows=0))
    assert all(isinstance(e.plan, str) for e in events) and events[-1].images
    prompt = pipe._render(pipe.templates.edit_plan, {"instruction": "make the circle blue"},
                          [pipe._encode_image("image", Image.new("RGB", (64, 64), "white"))]).ids
    sequence = events[-1].sequence_ids
    assert sequence[: len(prompt)] == prompt
    plan = sequence[len(prompt) : sequence.index(start, len(prompt)) + 1]
    assert pipe.tokenizer.decode(plan[:-1], skip_special_tokens=True).strip() == events[-1].plan
    assert len(plan) <= pipe.templates.defaults["text"]["max_new_tokens"] + 1
    edit = folder_evaluator(folder).run(2, tasks=("edit",))["edit"]
    for keys in (("right", "wrong"), ("source right", "source wrong")) if captioned else (("right", "wrong"),):
        tallies = [edit.plans.get(k, [0, 0]) for k in keys]
        assert edit.total == 2 == sum(n for _, n in tallies)
        assert sum(c for c, _ in tallies) == edit.correct == sum(edit.accepted)
    assert set(edit.plans) <= {"right", "wrong", "source right", "source wrong"}
    assert all("plan" in f for f in edit.failures)
    oracle = folder_evaluator(folder, oracle_plans=True).run(2, tasks=("edit",))["edit"]
    assert oracle.plans == ({"right": [oracle.correct, 2], "source right": [oracle.correct, 2]} if captioned
                            else {"right": [oracle.correct, 2]})
    plain = shutil.copytree(folder, tmp_path / "plain")
    (plain / "prompt_templates.json").write_text(json.dumps({"family": "shapes", **SHAPES_LAYOUTS["query-first"]}))
    with pytest.raises(ValueError, match="edit_plan"):
        folder_evaluator(plain, oracle_plans=True)
    probe = load_script("probe_plan_text")  # the plan's text step alone, on a fresh text LM
    if captioned:
        out = tmp_path / "probe.json"
        assert probe.main([str(folder), "--samples", "6", "--steps", "2", "--n", "3", "--hidden", "32",
                           "--layers", "2", "--intermediate", "64", "--json", str(out)]) == 0
        result = json.loads(out.read_text())
        assert result["n"] == 3 == sum(n for _, n in result["by_kind"].values()) and 0 <= result["right"] <= 3
        # or the stage-1 model, which learnt the step among the world's text
        stage1 = tmp_path / "p" / "work" / "stage1" / "final"
        assert probe.main([str(folder), "--model", str(stage1), "--n", "3", "--json", str(out)]) == 0
        result = json.loads(out.read_text())
        assert result["model"] == str(stage1) and result["steps"] is None and result["n"] == 3
        from transformers import AutoConfig, AutoModelForCausalLM

        other = AutoConfig.from_pretrained(str(stage1))
        other.vocab_size += 1
        AutoModelForCausalLM.from_config(other).save_pretrained(str(tmp_path / "other"))
        with pytest.raises(SystemExit):  # a model of another tokenizer
            probe.main([str(folder), "--model", str(tmp_path / "other"), "--n", "3"])
    else:
        with pytest.raises(SystemExit):
            probe.main([str(folder), "--samples", "6", "--steps", "2", "--n", "3"])


class _PatchColourTokenizer:
    """A perfectly local stand-in tokenizer: each 8x8 patch's code is the palette index of its top-left pixel."""

    grid_size = 8
    config = SimpleNamespace(input_box=None)  # its codes cover the whole canvas

    def encode_batch(self, images):
        import numpy as np

        from unix_core.world.scene import COLORS

        palette = np.array(list(COLORS.values()))
        out = []
        for image in images:
            corners = np.asarray(image.convert("RGB"), dtype=np.int32)[::8, ::8]
            out.append(torch.tensor(np.abs(corners[..., None, :] - palette).sum(-1).argmin(-1)).flatten())
        return torch.stack(out)


def test_flat_patch_entropy_is_zero_for_local_codes_and_high_for_a_whole_image_encoder():
    import dataclasses

    from unix_core.pipeline import EMBEDDED_DEFAULT
    from unix_core.training.embedded import flat_patch_code_entropy
    from unix_core.vq import VQImageTokenizer

    local = flat_patch_code_entropy(_PatchColourTokenizer(), 40, seed=0)
    assert local["mean_entropy_bits"] == 0 and all(v["codes"] == 1 for v in local["per_colour"].values())
    assert sum(v["patches"] for v in local["per_colour"].values()) > 40 * 30  # most patches are background
    shipped = VQImageTokenizer.from_pretrained(EMBEDDED_DEFAULT)
    # measured 0.16 here (0.13 on 300 scenes): only patches next to objects, blended by the 64 -> 32 px resize
    assert flat_patch_code_entropy(shipped, 40, seed=0)["mean_entropy_bits"] < 0.5
    # the same weights run as a whole-image encoder see their surroundings: measured 3.4 bits
    whole = VQImageTokenizer.from_config(dataclasses.replace(shipped.config, patchwise_encoder=False))
    whole.model.load_state_dict(shipped.model.state_dict())
    assert flat_patch_code_entropy(whole, 40, seed=0)["mean_entropy_bits"] > 2


def test_image_code_embeddings_start_from_what_the_codes_look_like(builder):
    from unix_core.convert import convert_qwen_to_unix
    from unix_core.training.embedded import EmbeddedPlan, LMShape, init_vision_embeddings_from_palette, stage1_model
    from unix_core.vq import VQConfig, VQImageTokenizer
    from unix_core.vq.preview import build_code_palette

    plan = EmbeddedPlan(lm=LMShape(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1,
                                   intermediate_size=64, split=(1, 1)))
    model = convert_qwen_to_unix(stage1_model(plan, builder.tokenizer), num_vision_encode_layers=1,
                                 num_vision_decode_layers=1, vision_vocab_size=N_CODES, tokenizer=builder.tokenizer)
    vq = VQImageTokenizer.from_config(VQConfig(embed_dim=8, n_embed=N_CODES, ch=32, ch_mult=(2, 2), num_res_blocks=1,
                                               z_channels=8, resolution=16, attn_type="none"), seed=0)
    codebook = vq.model.quantize.embedding.weight
    with torch.no_grad():
        codebook[1] = codebook[0]  # two codes that decode alike
    first = model.config.real_text_vocab_size
    weight = model.get_input_embeddings().weight
    before = weight.detach().clone()
    assert torch.equal(before[first], before[first + 2])  # the converter's rows: all the mean text row
    init_vision_embeddings_from_palette(model, vq, seed=0)
    rows = weight[first : first + N_CODES].detach()
    assert torch.equal(weight[:first], before[:first])  # text rows untouched
    assert torch.equal(model.get_output_embeddings().weight[first : first + N_CODES], rows)  # tied
    assert torch.allclose(rows[0], rows[1]) and not torch.allclose(rows[0], rows[2])
    centre = before[:first].mean(0)
    scale = (before[:first] - centre).norm(dim=1).mean()
    assert torch.allclose((rows - centre).norm(dim=1), scale.expand(N_CODES), rtol=1e-4)
    # the map is orthogonal: distances between rows follow distances between the codes' pictures
    pixels = build_code_palette(vq.model).patches.flatten(1).float() / 127.5 - 1
    pixels = pixels - pixels.mean(0)
    unit = pixels / pixels.norm(dim=1, keepdim=True)
    assert torch.allclose(torch.cdist(rows, rows) / scale, torch.cdist(unit, unit), atol=1e-3)
    with pytest.raises(ValueError, match="vision_init must be one of mean, palette"):
        EmbeddedPlan(vision_init="zeros")  # refused when the plan is built, before any stage runs
    with pytest.raises(ValueError, match="vq_restart_share"):
        EmbeddedPlan(vq_restart_share=1.5)


def test_to_canvas_upscales_exactly_when_it_can():
    import numpy as np
    from PIL import Image

    from unix_core.training.data import to_canvas

    small = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    assert np.array_equal(np.asarray(to_canvas(small)), np.asarray(small).repeat(2, 0).repeat(2, 1))
    odd = Image.fromarray(np.full((24, 24, 3), 200, dtype=np.uint8))
    assert to_canvas(odd).size == (64, 64) and (np.asarray(to_canvas(odd)) == 200).all()


def test_to_canvas_inverts_the_tokenizer_box_and_the_judge_reads_it():
    import numpy as np
    from PIL import Image

    from unix_core.training.data import to_canvas
    from unix_core.training.embedded import DEFAULT_VQ, flat_cells
    from unix_core.vq.preprocess import resize_and_crop
    from unix_core.world import caption_samples, judge, render

    box = DEFAULT_VQ.input_box
    small = Image.fromarray(np.arange(36 * 36 * 3, dtype=np.uint8).reshape(36, 36, 3))
    canvas = np.asarray(to_canvas(small, box))
    assert canvas.shape == (64, 64, 3)
    assert np.array_equal(canvas[0, 1:], canvas[1, 1:]) and np.array_equal(canvas[1:, 0], canvas[1:, 1])  # edge strips
    samples = list(caption_samples(60, seed=5, split="heldout"))
    accepted = sum(judge(to_canvas(resize_and_crop(render(s.scene), 36, box=box, resample="box"), box), s.caption).ok
                   for s in samples)
    assert accepted >= 59, accepted  # pure resampling there and back (measured 299/300 on another seed)
    # flat_cells follows the box: 9 cells of 7 px from pixel 1
    mask = np.ones((64, 64), dtype=bool)
    mask[8, 8] = False  # second cell of the second row (pixels 8-14)
    mask[0, 0] = False  # outside the box: no cell
    cells = flat_cells(mask, 9, box)
    assert (~cells).sum() == 1 and not cells[1, 1]


def test_budget_plan_overrides_and_the_card_command_repeats_them():
    from unix_core.training.embedded import DEFAULT_VQ, EmbeddedPlan, plan_for_budget

    base = plan_for_budget(70)
    assert base.vq == DEFAULT_VQ and base.vq_restart_share == 1.0
    plan = plan_for_budget(70, vq_steps=4200, vq_restart_share=0.7, stage2_steps=5000, separators=True)
    assert (plan.vq_steps, plan.vq_restart_share, plan.stage2.steps, plan.vis_separators) == (4200, 0.7, 5000, True)
    assert plan.replace(vq_steps=base.vq_steps, vq_restart_share=1.0, stage2=base.stage2, vis_separators=False) == base
    with pytest.raises(ValueError, match="vq_restart_share"):
        plan_for_budget(70, vq_restart_share=2)
    module = load_script("ship_embedded")
    assert module.steps_flag(base.to_dict(), 70) == ""
    assert module.steps_flag(plan.to_dict(), 70) == (
        " --vq-steps 4200 --vq-restart-share 0.7 --stage2-steps 5000 --separators")
    weighted = plan_for_budget(70, change_weight=3, edit_change_weight=4, edit_keep_weight=2, image_noise=0.1,
                               task_weights={"vqa": 8})
    assert (weighted.stage2.change_weight, weighted.stage2.edit_change_weight, weighted.stage2.edit_keep_weight,
            weighted.stage2.image_noise, weighted.stage2.task_weights) == (3, 4, 2, 0.1, {"vqa": 8})
    assert module.steps_flag(weighted.to_dict(), 70) == (
        " --change-weight 3 --edit-change-weight 4 --edit-keep-weight 2 --image-noise 0.1 --task-weight vqa=8")
    tuned = plan_for_budget(70, vq_steps=4200, vq_decoder_steps=1000)
    assert tuned.vq_decoder_steps == 1000 and base.vq_decoder_steps == 0
    assert module.steps_flag(tuned.to_dict(), 70) == " --vq-steps 4200 --vq-decoder-steps 1000"
    split = plan_for_budget(70, split=(1, 1), vq_steps=4200)
    assert module.steps_flag(split.to_dict(), 70) == " --split 1:1 --vq-steps 4200"
    assert module.steps_flag(split.to_dict(), 70, split=False) == " --vq-steps 4200"
    same_shape = plan_for_budget(70, edit_same_shape_share=0.5)
    assert same_shape.mix.edit_same_shape_share == 0.5 and base.mix.edit_same_shape_share == 0.0
    assert EmbeddedPlan.from_dict(same_shape.to_dict()) == same_shape
    assert module.steps_flag(same_shape.to_dict(), 70) == " --edit-same-shape-share 0.5"
    more_edits = plan_for_budget(70, mix_counts={"edit": 7875})
    assert more_edits.mix.edit == 7875 and more_edits.mix.vqa == base.mix.vqa  # others keep the budget's counts
    assert module.steps_flag(more_edits.to_dict(), 70) == " --mix edit=7875"
    averaged = plan_for_budget(70, ema_decay=0.999)
    assert averaged.stage2.ema_decay == 0.999 and base.stage2.ema_decay == 0.0
    assert EmbeddedPlan.from_dict(averaged.to_dict()) == averaged
    assert module.steps_flag(averaged.to_dict(), 70) == " --ema-decay 0.999"
    query_first = plan_for_budget(70, layout="query-first")
    assert module.steps_flag(query_first.to_dict(), 70) == " --layout query-first"
    with pytest.raises(ValueError, match="layout must be one of"):
        plan_for_budget(70, layout="sideways")
    taught = plan_for_budget(70, layout="query-first-caption-plan", stage1_steps=6000, stage1_edit_text=50600)
    assert (taught.stage1.steps, taught.stage1_edit_text, base.stage1_edit_text) == (6000, 50600, 0)
    assert taught.stage1.warmup_steps == base.stage1.warmup_steps and base.stage1.steps < 6000
    assert EmbeddedPlan.from_dict(taught.to_dict()) == taught
    assert module.steps_flag(taught.to_dict(), 70) == (
        " --stage1-steps 6000 --stage1-edit-text 50600 --layout query-first-caption-plan")
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="stage1_edit_text must be an integer"):
            plan_for_budget(70, layout="query-first-caption-plan", stage1_edit_text=bad)
    with pytest.raises(ValueError, match="stage1_edit_text .* captions the source"):
        plan_for_budget(70, layout="query-first-plan", stage1_edit_text=10)
    fresh = plan_for_budget(70, stage1_extra_text=1000)
    assert (fresh.stage1_extra_text, base.stage1_extra_text) == (1000, 0)
    assert EmbeddedPlan.from_dict(fresh.to_dict()) == fresh
    assert module.steps_flag(fresh.to_dict(), 70) == " --stage1-extra-text 1000"
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="stage1_extra_text must be an integer"):
            plan_for_budget(70, stage1_extra_text=bad)
    plastic = plan_for_budget(70, stage1_min_lr_ratio=1.0)
    assert (plastic.stage1.min_lr_ratio, base.stage1.min_lr_ratio) == (1.0, 0.1) and plastic.stage2 == base.stage2
    last = base.stage1.steps - 1  # the schedule holds the peak instead of decaying to a tenth of it
    assert (plastic.stage1.lr_factor(last), base.stage1.lr_factor(last)) == (1.0, pytest.approx(0.1, abs=1e-3))
    assert EmbeddedPlan.from_dict(plastic.to_dict()) == plastic
    assert module.steps_flag(plastic.to_dict(), 70) == " --stage1-min-lr-ratio 1"
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="stage1_min_lr_ratio .* must be in \\[0, 1\\], got"):
            plan_for_budget(70, stage1_min_lr_ratio=bad)
    no_base = module.scores_table({"caption": {"correct": 9, "total": 10, "score": 0.9}}, None, "1:1")
    assert "| 9/10 = 90% | - |" in no_base and "| **90.0%** | - |" in no_base

    # the card's scores must have been measured with the image sampling defaults that ship with the weights
    from unix_core.pipeline import EMBEDDED_DEFAULT

    sampling = module.shipped_sampling(EMBEDDED_DEFAULT)
    module.check_sampling(Path("run"), {"settings": {"image_sampling": sampling}}, sampling)
    stale = json.loads(json.dumps(sampling))
    stale["text_to_image"]["cfg_scale"] += 1
    for scores in ({"settings": {"image_sampling": stale}}, {}):
        with pytest.raises(SystemExit, match="rerun scripts/evaluate_embedded.py"):
            module.check_sampling(Path("run"), scores, sampling)
    sentence = module.sampling_sentence({"text_to_image": {"cfg_scale": 1.5, "temperature": 0.3, "top_k": 0, "top_p": 1.0},
                                         "edit": {"cfg_scale": 1.0, "temperature": 0.5, "top_k": 4, "top_p": 0.9}})
    assert "text → image CFG 1.5, temperature 0.3; edit no CFG, temperature 0.5, top-k 4, top-p 0.9" in sentence


def test_change_weights_mark_codes_that_differ_from_the_code_before():
    from unix_core.training.train_lm import image_code_weights

    ig, sep, eos = IGNORE, 3, 0  # codes are ids 5..9; one separator may sit between two codes
    labels = torch.tensor([[ig, ig, 5, 5, sep, 5, 6, 6, sep, 7, eos]])
    weights = image_code_weights(labels, (5, 10), 4.0)
    assert weights.tolist() == [[1, 1, 4, 1, 1, 1, 4, 1, 1, 4, 1]]
    assert image_code_weights(labels, (5, 10), 1.0).eq(1).all()


def test_edit_weights_mark_target_codes_that_differ_from_the_source_cell(builder):
    from unix_core.training.data import collate
    from unix_core.training.train_lm import edit_code_weights

    source = fake_codes(1)
    target = source.clone()
    target[2, 3] = (source[2, 3] + 1) % N_CODES  # a recolour: two cells change
    target[5, 0] = (source[5, 0] + 7) % N_CODES
    edit = builder.edit(source, "make the circle red", target)
    caption = builder.caption(source, "a red circle")
    batch = collate([edit, caption, builder.edit(source, None, target)], builder.eos_id)
    first = builder.real_text_vocab_size
    weights = edit_code_weights(batch.input_ids, batch.labels, (first, first + N_CODES), 5.0, [True, False, True])
    for row in (0, 2):
        heavy = torch.nonzero(weights[row] == 5.0).flatten()
        assert (batch.labels[row, heavy] - first).tolist() == [target[2, 3].item(), target[5, 0].item()]
        assert heavy.tolist() == sorted(heavy.tolist()) and (weights[row] != 5.0).sum() == weights.shape[1] - 2
    assert weights[1].eq(1).all()  # not an edit
    unchanged = collate([builder.edit(source, "keep it", source)], builder.eos_id)
    assert edit_code_weights(unchanged.input_ids, unchanged.labels, (first, first + N_CODES), 5.0, [True]).eq(1).all()


def test_edit_keep_weight_marks_copied_cells_that_are_not_the_source_background(builder):
    from unix_core.training.data import collate
    from unix_core.training.train_lm import edit_code_weights

    source = torch.full((6, 6), 3, dtype=torch.long)  # background code 3
    source[1, 1:3] = torch.tensor([10, 11])  # a kept object: two cells
    source[4, 4] = 20  # the edited object
    target = source.clone()
    target[4, 4] = 3  # removed: its cell turns to background (a changed cell)
    target[0, 0] = 30  # and one background cell changes
    batch = collate([builder.edit(source, "remove the square", target)], builder.eos_id)
    first = builder.real_text_vocab_size
    code_range = (first, first + N_CODES)
    weights = edit_code_weights(batch.input_ids, batch.labels, code_range, 5.0, [True], keep_weight=2.0)[0]
    trained = torch.nonzero((batch.labels[0] >= first) & (batch.labels[0] < first + N_CODES)).flatten()
    grid = weights[trained].view(6, 6)
    expected = torch.ones(6, 6)
    expected[1, 1:3] = 2.0
    expected[4, 4] = expected[0, 0] = 5.0
    assert torch.equal(grid, expected)
    assert weights[~torch.isin(torch.arange(len(weights)), trained)].eq(1).all()  # text and source untouched
    # keep_weight 1 (the default) is the change weight alone
    plain = edit_code_weights(batch.input_ids, batch.labels, code_range, 5.0, [True])[0]
    assert torch.equal(plain[trained].view(6, 6), torch.where(expected == 2.0, 1.0, expected))


def test_image_noise_changes_only_generated_codes_and_is_seeded():
    from unix_core.training.train_lm import noisy_image_inputs

    ids = torch.tensor([[1, 5, 6, 2, 7, 7, 7, 7, 7, 7, 7, 7, 0] * 20])
    labels = ids.clone()
    labels[:, :4] = IGNORE  # an input image (not trained) followed by generated codes
    labels[:, 12::13] = IGNORE
    noisy = noisy_image_inputs(ids, labels, (5, 10), 0.5, torch.Generator().manual_seed(0))
    changed = noisy != ids
    assert changed.any() and not changed[labels == IGNORE].any() and not changed[(labels < 5) | (labels >= 10)].any()
    assert ((noisy >= 5) & (noisy < 10))[changed].all()
    assert torch.equal(noisy, noisy_image_inputs(ids, labels, (5, 10), 0.5, torch.Generator().manual_seed(0)))
    assert torch.equal(noisy_image_inputs(ids, labels, (5, 10), 0.0, torch.Generator().manual_seed(0)), ids)


def tiny_unix_factory(builder):
    """A function that builds the same tiny 1:1 Uni-X (seeded) on every call."""
    from unix_core.convert import convert_qwen_to_unix
    from unix_core.training.embedded import EmbeddedPlan, LMShape, stage1_model

    plan = EmbeddedPlan(lm=LMShape(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1,
                                   intermediate_size=64, split=(1, 1)))

    def model():
        torch.manual_seed(0)
        return convert_qwen_to_unix(stage1_model(plan, builder.tokenizer), num_vision_encode_layers=1,
                                    num_vision_decode_layers=1, vision_vocab_size=N_CODES,
                                    tokenizer=builder.tokenizer).train()

    return model


def test_training_with_image_options_needs_the_code_range_and_resumes_identically(builder, tmp_path):
    from accelerate import Accelerator

    from unix_core.training.train_lm import TrainConfig, train_lm

    seqs = build_mix(builder, fake_encoder, MixConfig(text_to_image=4, caption=1, vqa=1, edit=2, fewshot=0, text=1))
    model = tiny_unix_factory(builder)

    first = len(builder.tokenizer)
    config = TrainConfig(steps=4, max_tokens=600, lr=1e-2, warmup_steps=1, log_every=1, checkpoint_every=2,
                         change_weight=4.0, edit_change_weight=3.0, edit_keep_weight=2.0, image_noise=0.2,
                         task_weights={"vqa": 8.0})
    with pytest.raises(ValueError, match="image-code id range"):
        train_lm(model(), seqs, config, work_dir=tmp_path / "x", accelerator=Accelerator(cpu=True),
                 pad_id=builder.eos_id)
    kwargs = dict(accelerator=Accelerator(cpu=True), pad_id=builder.eos_id, image_codes=(first, first + N_CODES))
    whole = train_lm(model(), seqs, config, work_dir=tmp_path / "a", **kwargs)
    assert all(torch.isfinite(torch.tensor(loss)) for _, loss in whole.train_loss)
    stopped = train_lm(model(), seqs, config, work_dir=tmp_path / "b", time_limit_s=0, **kwargs)
    assert stopped.step == 1
    resumed = train_lm(model(), seqs, config, work_dir=tmp_path / "b", **kwargs)
    assert [round(x, 5) for _, x in resumed.train_loss] == [round(x, 5) for _, x in whole.train_loss]
    with pytest.raises(ValueError, match="change_weight"):
        TrainConfig(steps=1, change_weight=0.0)
    with pytest.raises(ValueError, match="edit_change_weight"):
        TrainConfig(steps=1, edit_change_weight=-1.0)
    with pytest.raises(ValueError, match="edit_keep_weight"):
        TrainConfig(steps=1, edit_keep_weight=0.0)
    with pytest.raises(ValueError, match="task_weights"):
        TrainConfig(steps=1, task_weights={"vqa": 0.0})


def test_weight_average_ends_the_run_resumes_identically_and_keeps_the_last_weights(builder, tmp_path):
    from accelerate import Accelerator
    from safetensors.torch import load_file

    from unix_core.training.train_lm import STATE_DIR, TrainConfig, train_lm

    seqs = build_mix(builder, fake_encoder, MixConfig(text_to_image=4, caption=1, vqa=1, edit=2, fewshot=0, text=1))
    model = tiny_unix_factory(builder)

    def weights(m):
        return {k: v.detach().clone() for k, v in m.named_parameters()}

    # a constant learning rate, so a run of k steps walks the first k steps of a longer one
    config = TrainConfig(steps=4, max_tokens=600, lr=1e-2, warmup_steps=1, min_lr_ratio=1.0, log_every=1,
                         checkpoint_every=2)
    kwargs = dict(accelerator=Accelerator(cpu=True), pad_id=builder.eos_id)
    steps = []
    for k in range(1, 5):
        m = model()
        train_lm(m, seqs, dataclasses.replace(config, steps=k), work_dir=tmp_path / f"plain{k}", **kwargs)
        steps.append(weights(m))
    decay = 0.6
    expected = dict(steps[0])  # the average starts at the first step's weights
    for w in steps[1:]:
        expected = {k: decay * expected[k] + (1 - decay) * w[k] for k in w}
    averaged = dataclasses.replace(config, ema_decay=decay)
    m = model()
    log = train_lm(m, seqs, averaged, work_dir=tmp_path / "a", eval_sequences=seqs[:3], **kwargs)
    final = weights(m)
    assert all(torch.allclose(final[k], expected[k], atol=1e-6) for k in expected)
    assert not torch.allclose(final["model.embed_tokens.weight"], steps[-1]["model.embed_tokens.weight"])
    assert set(log.ema_eval_loss) == set(log.eval_loss[-1][1])  # both the average's and the last step's losses
    kept = load_file(str(tmp_path / "a" / STATE_DIR / "model.safetensors"))  # the last step's weights stay
    assert torch.allclose(kept["model.embed_tokens.weight"], steps[-1]["model.embed_tokens.weight"], atol=1e-6)
    # stopped after its first step (checkpointed with its average), then resumed: the same average
    stopped = model()
    assert train_lm(stopped, seqs, averaged, work_dir=tmp_path / "b", time_limit_s=0, **kwargs).step == 1
    assert torch.allclose(weights(stopped)["model.norm.weight"], steps[0]["model.norm.weight"])  # not averaged yet
    resumed = model()
    train_lm(resumed, seqs, averaged, work_dir=tmp_path / "b", **kwargs)
    assert all(torch.allclose(v, final[k], atol=1e-6) for k, v in weights(resumed).items())
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match="ema_decay"):
            TrainConfig(steps=1, ema_decay=bad)


def test_snapshots_keep_the_weights_of_earlier_steps_without_changing_the_run(builder, tmp_path):
    from accelerate import Accelerator
    from safetensors.torch import load_file

    from unix_core.training.train_lm import SNAPSHOT_DIR, TrainConfig, train_lm

    seqs = build_mix(builder, fake_encoder, MixConfig(text_to_image=4, caption=1, vqa=1, edit=2, fewshot=0, text=1))
    model = tiny_unix_factory(builder)
    # a constant learning rate, so a run of k steps walks the first k steps of a longer one
    config = TrainConfig(steps=4, max_tokens=600, lr=1e-2, warmup_steps=1, min_lr_ratio=1.0, log_every=1,
                         checkpoint_every=100)
    kwargs = dict(accelerator=Accelerator(cpu=True), pad_id=builder.eos_id)
    shorter = {}
    for k in (2, 3, 4):
        m = model()
        train_lm(m, seqs, dataclasses.replace(config, steps=k), work_dir=tmp_path / f"plain{k}", **kwargs)
        shorter[k] = {n: p.detach().clone() for n, p in m.named_parameters()}
    m = model()
    train_lm(m, seqs, config, work_dir=tmp_path / "a", snapshot_steps=(2, 3), **kwargs)
    assert sorted(p.name for p in (tmp_path / "a" / SNAPSHOT_DIR).iterdir()) == ["step2.safetensors",
                                                                                 "step3.safetensors"]
    for k in (2, 3):
        snap = load_file(str(tmp_path / "a" / SNAPSHOT_DIR / f"step{k}.safetensors"))
        assert "model.embed_tokens.weight" in snap
        assert all(torch.equal(v, shorter[k][n]) for n, v in snap.items())
    assert all(torch.equal(p, shorter[4][n]) for n, p in m.named_parameters())  # the run itself is unchanged
    assert not torch.equal(shorter[2]["model.norm.weight"], shorter[3]["model.norm.weight"])
    for bad in ((0,), (5,), (2.5,)):
        with pytest.raises(ValueError, match="snapshot_steps"):
            train_lm(model(), seqs, config, work_dir=tmp_path / "bad", snapshot_steps=bad, **kwargs)


def test_weighted_loss_is_a_weighted_mean_over_trained_positions():
    from unix_core.training.train_lm import weighted_lm_loss

    logits = torch.randn(2, 4, 7)
    labels = torch.tensor([[IGNORE, 1, 2, IGNORE], [IGNORE, IGNORE, 3, 4]])
    plain = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=IGNORE)
    assert torch.allclose(weighted_lm_loss(logits, labels, torch.ones(2, 4)), plain)
    rows = torch.tensor([[1.0], [3.0]]).expand(2, 4)  # a task weight of 3 on the second sequence
    each = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(),
                                             ignore_index=IGNORE, reduction="none").view(2, 3)
    expected = (each[0, :2].sum() + 3 * each[1, 1:].sum()) / 8
    assert torch.allclose(weighted_lm_loss(logits, labels, rows), expected)


def test_train_script_parses_mix_counts_and_rejects_bad_ones(capsys):
    import argparse
    module = load_script("train_embedded")
    assert module.parse_mix_count("edit=7875") == ("edit", 7875)
    for bad in ("edit", "edit=0", "edit=-3", "edit=2.5", "paint=10"):
        with pytest.raises(argparse.ArgumentTypeError, match="TASK=COUNT"):
            module.parse_mix_count(bad)
    assert module.parse_steps("16600,5600,11000,5600") == (5600, 11000, 16600)
    for bad in ("", "0", "5600,", "1e4", "-3", "2.5"):
        with pytest.raises(argparse.ArgumentTypeError, match="--snapshot-steps"):
            module.parse_steps(bad)
    with pytest.raises(SystemExit):  # past the plan's stage-2 steps: refused before anything trains
        module.main(["--out", "/nonexistent/never-made", "--stage2-steps", "10", "--snapshot-steps", "11"])
    assert "goes past stage 2's 10 steps" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # text-only edits without a plan that captions the source: a usage error
        module.main(["--out", "/nonexistent/never-made", "--mix", "edit_text=5", "--layout", "query-first"])
    assert "query-first-caption-plan" in capsys.readouterr().err
