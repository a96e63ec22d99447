"""The embedded model's recipe: a plan (all hyper-parameters, one JSON file) and its resumable stages.

Stages, each writing under ``OUT/work/<stage>`` and skipped when its output exists:

1. ``tokenizer``  byte-level BPE on the world's text (:mod:`.text_tokenizer`);
2. ``vq``         a taming VQGAN trained with ``unix_core.vq.train_vq`` on world images; its held-out
                  reconstructions are scored with the judge (``vq/report.json``);
   ``vq_decoder`` (when ``plan.vq_decoder_steps``) its decoder fine-tuned on its frozen codes
                  (``unix_core.vq.finetune_decoder``), scored the same way; the codes do not change, so the
                  data are the same with either, and every later stage (the palette init reads its decoder)
                  and the export use the fine-tuned one;
3. ``data``       task sequences (:mod:`.data`) for stage 2, held-out sequences for loss curves, text
                  sequences for stage 1, as safetensors;
4. ``stage1``     a plain ``Qwen3ForCausalLM`` trained on the world's text (and ``plan.stage1_edit_text``
                  text-only edits, for a plan whose edits caption their source first);
5. ``stage2``     ``convert_qwen_to_unix`` with the plan's a:b split, trained on the multimodal mix
                  (``split = (0, 0)`` gives the shared-transformer baseline with the same data and budget);
6. export        ``OUT/checkpoint``: config.json + model.safetensors, tokenizer files, vq_config.json +
                  vq_model.safetensors, prompt_templates.json ``{"family": "shapes"}`` plus the
                  plan's layout (``unix_core.templates.SHAPES_LAYOUTS``).

Everything is seeded from ``plan.seed``; step counts are fixed by the plan (never by the clock), so a run
is deterministic and a resumed run ends where an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from unix_core.templates import SHAPES, SHAPES_LAYOUTS, TEMPLATES_FILE, PromptTemplates
from unix_core.vq import VQConfig

from .data import MixConfig, SequenceBuilder, build_mix, load_sequences, save_sequences, to_canvas, vq_scene_encoder
from .train_lm import TrainConfig, train_lm

logger = logging.getLogger(__name__)

STAGE1_LOG = "train_log.json"
CHECKPOINT_LIMIT_BYTES = 40 * 10**6

# 8x8 = 64 codes per image. The tokenizer works at 32 px (f = 4): at 64 px (f = 8) a taming VQGAN with
# 64 full-resolution channels costs 4x more per step and did not learn in a CPU budget (issue-5 report).
# The encoder sees one 4x4 patch at a time, so a code depends only on its own pixels: with a whole-image
# encoder a flat background patch got one of 55-96 codes depending on its surroundings (4-5 bits the LM
# could never predict, and no text-to-image sample was ever accepted); patchwise it is 0.13 bits (1-7 codes
# per colour: only patches that the 64 -> 32 px resize blends with a neighbouring object differ).
# A 3x3 grid (24 px, f = 8: one code per object cell) was tried on 2026-12-01 and not kept: its tokenizer
# reached 132/200 judge acceptance in 4,000 steps and the LM predicted 1-4% of its object codes after 2,000
# stage-2 steps (this grid: 12.5%), with caption exact 0/30.
# Cell-aligned 9x9 grid (2026-12-01): the tokenizer resizes canvas pixels 1-63 (the three 21-px cells) to
# 36 px with a box filter, so each cell is exactly 3x3 codes and an object's codes are the same wherever it
# sits (bit-identical pixels per cell, checked in tests); the 8x8 grid at 32 px cut every object differently
# at each position, so a held-out (shape, colour, position) asked for codes the LM had rarely produced.
# Measured: each flat background colour gets exactly one code (0 bits); judge acceptance of reconstructions
# 184/200 after 2,800 steps, 192/200 after 4,200 with restarts stopping at 70% (all failures: the shape of a
# small object); teacher-forced object codes after 4,000 stage-2 steps 82% (8x8 grid, full run: 43%).
DEFAULT_VQ = VQConfig(
    embed_dim=32, n_embed=512, ch=64, ch_mult=(1, 1, 2), num_res_blocks=1, z_channels=64,
    resolution=36, attn_type="none", patchwise_encoder=True, input_box=(1 / 64, 1 / 64, 1.0, 1.0), resample="box",
)


@dataclass(frozen=True)
class LMShape:
    """The LM's size (chosen by the issue-5 probes: width 128 learned fastest per CPU minute)."""

    hidden_size: int = 128
    num_layers: int = 6
    num_heads: int = 2
    num_kv_heads: int = 1
    intermediate_size: int = 336
    split: tuple[int, int] = (2, 2)  # vision-encode : vision-decode layers

    @classmethod
    def of_width(cls, width: int, layers: int = 6, split: tuple[int, int] = (2, 2)) -> "LMShape":
        """Heads of 64 dims, one KV head per 128 dims, MLP ~2.7x wide (the probes' family)."""
        return cls(hidden_size=width, num_layers=layers, num_heads=max(1, width // 64),
                   num_kv_heads=max(1, width // 128), intermediate_size=int(width * 2.6875) // 16 * 16, split=split)

    def __post_init__(self) -> None:
        object.__setattr__(self, "split", tuple(self.split))
        if sum(self.split) > self.num_layers or min(self.split) < 0:
            raise ValueError(f"split {self.split} must be two numbers >= 0 summing to at most {self.num_layers}")


VISION_INITS = ("mean", "palette")  # EmbeddedPlan.vision_init
STAGE1_TEXT_SEED = 2  # the world's text stream of stage 1 (and the data stage's share of it): plan.seed + this


@dataclass(frozen=True)
class EmbeddedPlan:
    seed: int = 0
    tokenizer_lines: int = 20000
    vq: VQConfig = DEFAULT_VQ
    vq_images: int = 4000
    vq_steps: int = 300
    vq_batch_size: int = 8
    vq_lr: float = 2e-4
    vq_recon: str = "l2"
    vq_foreground_weight: float = 24.0
    vq_cosine_lr: bool = True
    vq_dense_share: float = 0.7
    vq_autoencoder_share: float = 0.0  # of vq_steps: autoencoder warm-up, then a k-means codebook (train_vq)
    vq_restart_share: float = 1.0  # of vq_steps: dead-code restarts stop after this share (train_vq restart_until)
    vq_eval_images: int = 200
    # decoder-only fine-tune after the tokenizer (finetune_decoder): 0 = none. Measured on the shipped tokenizer
    # (2026-12-01): judge acceptance 968/1000 -> 991/1000 after 1,000 steps at lr 6e-4.
    vq_decoder_steps: int = 0
    vq_decoder_lr: float = 6e-4
    lm: LMShape = LMShape()
    stage1_lines: int = 20000
    # Text-only edits (SequenceBuilder.edit_text, the stream mix.edit_text draws from) added to stage 1's text
    # corpus, for layouts whose edit plan captions the source: the plan's text-to-text step (instruction and
    # source caption -> result caption) is learnt before images arrive; 0 = none. Measured (2026-12-07,
    # scripts/probe_plan_text.py, 300 held-out edits): a plain LM of this shape trained on 50,600 of them alone
    # writes 272 results right after 6,000 steps; stage 1, where the world's text shares the batches, 72 after
    # 6,000 steps (its loss still falling) and 282 after 12,000.
    stage1_edit_text: int = 0
    # More lines of the world's text for stage 1 alone: the data stage's text is the first ``stage1_lines`` of
    # the world's text stream, stage 1 then also reads the next ``stage1_extra_text`` (stage 2's text mix is
    # unchanged); 0 = none. The data stage's 20,000 lines hold 8,458 distinct ones of about 10.5 tokens, so a
    # long stage 1 reads each many times (12,000 steps, 17.5 M tokens: about 76 times). Measured (2026-12-07,
    # model card): 900,000 more lines with 200,000 text-only edits, 12,000 steps, under one pass over each line:
    # stage 2 lagged as after the repeated text, and stage 1 did not learn the edit plan's text step (0 of 300).
    stage1_extra_text: int = 0
    stage1: TrainConfig = TrainConfig(steps=300, max_tokens=2048, lr=2e-3, warmup_steps=30)
    mix: MixConfig = MixConfig(text_to_image=12000, caption=3000, vqa=6000, edit=3000, fewshot=1200, text=3000)
    eval_mix: MixConfig = MixConfig(
        text_to_image=100, caption=50, vqa=100, edit=50, fewshot=30, text=50, split="heldout", seed=1
    )
    stage2: TrainConfig = TrainConfig(steps=2000, max_tokens=2048, lr=1e-3, warmup_steps=100, eval_every=250)
    # image-code embeddings after conversion: "mean" (the converter's, as the official expand_vocabulary.py) or
    # "palette" (init_vision_embeddings_from_palette). Same data, 2,000 steps, held-out n = 100, mean -> palette:
    # caption 1 -> 6, VQA 56 -> 54, few-shot 59 -> 67; teacher-forced object codes 12.5% -> 12.7% (2026-12-01).
    vision_init: str = "palette"
    # Row separators (the official add_sep_for_vis layout): a <|vision_pad|> token after every row of codes,
    # counted as vision and forced during generation, so the LM sees where each row of the grid starts. Off by
    # default (on the 8x8 grid, 2,000 steps at lr 2e-3, without -> with: caption 6 -> 4, VQA 58 -> 56,
    # few-shot 71 -> 69); the shipped model turns them on (`train_embedded.py --separators`) with the 9x9
    # grid and the 4,200-step tokenizer: 1/81/72/0/95 -> 0/98/78/0/98 held out (both changed at once).
    vis_separators: bool = False
    # Prompt layout of VQA and edit (unix_core.templates.SHAPES_LAYOUTS): "image-first" as the official Uni-X
    # templates or "query-first" (question or instruction, then the image, so that the image's tokens can
    # read it in the shared layers), or "query-first-plan" (query-first, and an edit first writes the caption of
    # the edited scene, trained, then draws it), or "query-first-caption-plan" (the plan first captions the source,
    # then says the result; with text-only edits, mix.edit_text). Written into the checkpoint's
    # prompt_templates.json, so the pipeline renders what the model was trained on.
    layout: str = "image-first"

    def __post_init__(self) -> None:
        if self.layout not in SHAPES_LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(SHAPES_LAYOUTS)}, got {self.layout!r}")
        if self.mix.edit_text and not plan_templates(self).plan_captions_source:
            raise ValueError(f"mix.edit_text (text-only edits) needs a layout whose edit plan captions the source "
                             f"first (query-first-caption-plan), not {self.layout!r}")
        for name in ("stage1_edit_text", "stage1_extra_text", "vq_decoder_steps"):  # counts
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if self.stage1_edit_text and not plan_templates(self).plan_captions_source:
            raise ValueError(f"stage1_edit_text (text-only edits in stage 1) needs a layout whose edit plan captions "
                             f"the source first (query-first-caption-plan), not {self.layout!r}")
        if self.vision_init not in VISION_INITS:
            raise ValueError(f"vision_init must be one of {', '.join(VISION_INITS)}, got {self.vision_init!r}")
        if not 0 <= self.vq_restart_share <= 1:
            raise ValueError(f"vq_restart_share must be in [0, 1], got {self.vq_restart_share!r}")
        if not self.vq_decoder_lr > 0:
            raise ValueError(f"vq_decoder_lr must be > 0, got {self.vq_decoder_lr!r}")

    def to_dict(self) -> dict:
        out = asdict(self)
        out["vq"] = self.vq.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "EmbeddedPlan":
        data = dict(data)
        # plans written before these fields: no separators, restarts throughout
        data.setdefault("vis_separators", False)
        data.setdefault("vq_restart_share", 1.0)
        data.setdefault("vq_decoder_steps", 0)
        data.setdefault("vq_decoder_lr", 6e-4)
        data.setdefault("layout", "image-first")
        data.setdefault("stage1_edit_text", 0)
        data.setdefault("stage1_extra_text", 0)
        data["vq"] = VQConfig.from_dict(data["vq"])
        data["lm"] = LMShape(**data["lm"])
        for name in ("stage1", "stage2"):
            data[name] = TrainConfig(**data[name])
        for name in ("mix", "eval_mix"):
            data[name] = MixConfig(**data[name])
        return cls(**data)

    def replace(self, **changes) -> "EmbeddedPlan":
        return dataclasses.replace(self, **changes)


# --------------------------------------------------------------------------------------------------
@dataclass
class Artifacts:
    tokenizer: object = None
    vq: object = None
    train: list = field(default_factory=list)
    heldout: list = field(default_factory=list)
    text: list = field(default_factory=list)


def stage_tokenizer(plan: EmbeddedPlan, work: Path):
    from transformers import AutoTokenizer

    from .text_tokenizer import save_text_tokenizer, train_text_tokenizer, world_text

    folder = work / "tokenizer"
    if not (folder / "tokenizer.json").is_file():
        tokenizer = train_text_tokenizer(world_text(plan.tokenizer_lines, seed=plan.seed),
                                         separator=plan.vis_separators)
        save_text_tokenizer(tokenizer, folder)
    return AutoTokenizer.from_pretrained(str(folder))


def vq_training_images(n: int, seed: int, dense_share: float) -> list:
    """Renders (64x64 PIL images) of ``n`` random training scenes; ``dense_share`` of them have 3 objects.

    Objects cover little of the canvas, so an L2 objective is mostly background; object-dense scenes give
    the shapes more of the gradient (measured: 39% -> 62% judge acceptance after 1200 steps).
    """
    import random

    from unix_core.world import render, sample_scene

    rng = random.Random(f"vq/{seed}")
    return [render(sample_scene(rng, "train", 3 if rng.random() < dense_share else None)) for _ in range(n)]


def vq_judge_acceptance(vq, n: int, *, seed: int, split: str = "heldout") -> dict:
    """Encode and decode ``n`` world images; the share the judge accepts for their canonical captions."""
    from unix_core.world import caption_samples, judge

    samples = list(caption_samples(n, seed=seed, split=split))
    encode = vq_scene_encoder(vq)
    accepted, reasons = 0, {}
    for start in range(0, n, 50):
        chunk = samples[start : start + 50]
        for s, image in zip(chunk, vq.decode_batch(encode([c.scene for c in chunk]))):
            verdict = judge(to_canvas(image, vq.config.input_box), s.caption)
            accepted += verdict.ok
            if not verdict.ok:
                key = verdict.reason.split(":")[0]
                reasons[key] = reasons.get(key, 0) + 1
    return {"split": split, "images": n, "accepted": accepted, "acceptance": accepted / max(n, 1),
            "failures": reasons}


def flat_cells(background, grid: int, box=None):
    """(grid, grid) bool: which cells of a code grid over a boolean (H, W) background mask are all background.
    Cell i spans pixels round(i * H / grid) to round((i + 1) * H / grid), so the grid need not divide the
    canvas (3 cells of 64 px: 0-21, 21-43, 43-64). With the tokenizer's ``input_box`` (fractions left, top,
    right, bottom) the grid covers only that box: (1/64, 1/64, 1, 1) with 9 cells gives 1-8, 8-15, ..., 57-64."""
    import numpy as np

    left, top, right, bottom = box if box is not None else (0.0, 0.0, 1.0, 1.0)
    height, width = background.shape
    rows = [round(top * height + i * (bottom - top) * height / grid) for i in range(grid + 1)]
    cols = [round(left * width + i * (right - left) * width / grid) for i in range(grid + 1)]
    return np.array([[background[rows[i] : rows[i + 1], cols[j] : cols[j + 1]].all() for j in range(grid)]
                     for i in range(grid)])


def flat_patch_code_entropy(vq, n: int, *, seed: int, split: str = "train") -> dict:
    """How predictable the codes of flat background patches are: for ``n`` scenes, every code-grid patch
    whose 64x64 pixels are all background colour is counted under that colour; per colour, the number of
    distinct codes used and the entropy (bits) of their histogram. A tokenizer whose codes are local gives
    each flat colour one code (0 bits); the LM has to predict whatever entropy is left."""
    import math
    import random
    from collections import Counter

    import numpy as np

    from unix_core.world import render, sample_scene
    from unix_core.world.scene import COLORS

    rng = random.Random(f"flat/{seed}")
    scenes = [sample_scene(rng, split) for _ in range(n)]
    counts: dict[str, Counter] = {}
    for scene, codes in zip(scenes, vq_scene_encoder(vq)(scenes)):
        pixels = np.asarray(render(scene).convert("RGB"), dtype=np.int32)
        flat = flat_cells(np.abs(pixels - np.array(COLORS[scene.background])).sum(-1) < 10, vq.grid_size,
                          vq.config.input_box).flatten()
        counter = counts.setdefault(scene.background, Counter())
        counter.update(int(c) for c, f in zip(codes.flatten().tolist(), flat.tolist()) if f)

    def entropy(counter: Counter) -> float:
        total = sum(counter.values())
        return -sum(v / total * math.log2(v / total) for v in counter.values())

    per_colour = {colour: {"patches": sum(c.values()), "codes": len(c), "entropy_bits": entropy(c)}
                  for colour, c in sorted(counts.items()) if c}
    mean = sum(v["entropy_bits"] for v in per_colour.values()) / max(len(per_colour), 1)
    return {"scenes": n, "split": split, "mean_entropy_bits": mean, "per_colour": per_colour}


def stage_vq(plan: EmbeddedPlan, work: Path, device: torch.device | str = "cpu"):
    from unix_core.vq import VQImageTokenizer, train_vq

    folder = work / "vq"
    if not (folder / "vq_model.safetensors").is_file():
        started = time.perf_counter()
        images = vq_training_images(plan.vq_images, plan.seed, plan.vq_dense_share)
        vq, stats = train_vq(
            images, plan.vq, steps=plan.vq_steps, batch_size=plan.vq_batch_size, lr=plan.vq_lr,
            recon=plan.vq_recon, foreground_weight=plan.vq_foreground_weight, cosine_lr=plan.vq_cosine_lr,
            autoencoder_steps=int(plan.vq_steps * plan.vq_autoencoder_share),
            restart_until=None if plan.vq_restart_share >= 1 else int(plan.vq_steps * plan.vq_restart_share),
            seed=plan.seed, log_every=25, device=device,
        )
        vq.model.to("cpu")
        train_s = time.perf_counter() - started
        report = vq_judge_acceptance(vq, plan.vq_eval_images, seed=plan.seed + 1)
        report["flat_patch_codes"] = flat_patch_code_entropy(vq, 300, seed=plan.seed)
        report.update(train_s=train_s, log=[asdict(e) for e in stats.log])
        vq.save_pretrained(folder)
        (folder / "report.json").write_text(json.dumps(report, indent=1))
        logger.info("vq: judge accepts %d/%d held-out reconstructions", report["accepted"], report["images"])
    return VQImageTokenizer.from_pretrained(folder)


def stage_vq_decoder(plan: EmbeddedPlan, work: Path, vq, device: torch.device | str = "cpu"):
    """The ``vq`` tokenizer with its decoder fine-tuned (``plan.vq_decoder_steps`` steps on the ``vq`` stage's
    training images); ``vq`` itself when the plan has none. Its codes equal ``vq``'s."""
    from unix_core.vq import VQImageTokenizer, finetune_decoder

    if not plan.vq_decoder_steps:
        return vq
    folder = work / "vq_decoder"
    if not (folder / "vq_model.safetensors").is_file():
        started = time.perf_counter()
        images = vq_training_images(plan.vq_images, plan.seed, plan.vq_dense_share)
        tuned, stats = finetune_decoder(
            vq, images, steps=plan.vq_decoder_steps, batch_size=16, lr=plan.vq_decoder_lr, recon=plan.vq_recon,
            foreground_weight=plan.vq_foreground_weight, seed=plan.seed, log_every=50, device=device,
        )
        train_s = time.perf_counter() - started
        with torch.no_grad():
            report = vq_judge_acceptance(tuned, plan.vq_eval_images, seed=plan.seed + 1)
        report.update(train_s=train_s, log=[asdict(e) for e in stats.log])
        tuned.save_pretrained(folder)
        (folder / "report.json").write_text(json.dumps(report, indent=1))
        logger.info("vq decoder: judge accepts %d/%d held-out reconstructions", report["accepted"], report["images"])
    return VQImageTokenizer.from_pretrained(folder)


def stage_data(plan: EmbeddedPlan, work: Path, tokenizer, vq) -> Artifacts:
    from unix_core.world import text_corpus

    folder = work / "data"
    folder.mkdir(parents=True, exist_ok=True)
    builder = sequence_builder(plan, tokenizer, vq)
    encode = vq_scene_encoder(vq)
    files = {"train": plan.mix, "heldout": plan.eval_mix}
    out = {}
    for name, mix in files.items():
        path = folder / f"{name}.safetensors"
        if not path.is_file():
            started = time.perf_counter()
            save_sequences(path, build_mix(builder, encode, mix))
            logger.info("data %s built in %.0f s", name, time.perf_counter() - started)
        out[name] = load_sequences(path)
    text_path = folder / "text.safetensors"
    if not text_path.is_file():
        save_sequences(text_path, [builder.text(line) for line in text_corpus(plan.stage1_lines,
                                                                              seed=plan.seed + STAGE1_TEXT_SEED)])
    return Artifacts(tokenizer, vq, out["train"], out["heldout"], load_sequences(text_path))


def sequence_builder(plan: EmbeddedPlan, tokenizer, vq) -> SequenceBuilder:
    """The plan's sequence builder: its layout's templates, its row separators."""
    separator = row_separator(plan, vq)
    if separator is not None:
        separator = (tokenizer.convert_tokens_to_ids(separator[0]), separator[1])
    return SequenceBuilder(tokenizer, templates=plan_templates(plan), separator=separator)


def stage1_corpus(plan: EmbeddedPlan, art: Artifacts) -> list:
    """Stage 1's training sequences: the world's text (the data stage's, then the stream's next
    ``plan.stage1_extra_text`` lines), then ``plan.stage1_edit_text`` text-only edits of the training split from
    the stream that ``mix.edit_text`` draws from (its samples are a prefix of these)."""
    from itertools import islice

    from unix_core.world import text_corpus

    if not plan.stage1_edit_text and not plan.stage1_extra_text:
        return art.text
    builder = sequence_builder(plan, art.tokenizer, art.vq)
    extra = []
    if plan.stage1_extra_text:
        stream = text_corpus(plan.stage1_lines + plan.stage1_extra_text, seed=plan.seed + STAGE1_TEXT_SEED)
        extra = [builder.text(line) for line in islice(stream, plan.stage1_lines, None)]
    return art.text + extra + builder.edit_texts(plan.stage1_edit_text, seed=plan.mix.seed)


def row_separator(plan: EmbeddedPlan, vq) -> tuple[str, int] | None:
    """(separator token, codes per row) when the plan has row separators, else None."""
    from .text_tokenizer import SEPARATOR_TOKEN

    return (SEPARATOR_TOKEN, vq.grid_size) if plan.vis_separators else None


def stage1_model(plan: EmbeddedPlan, tokenizer):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    lm = plan.lm
    config = Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=lm.hidden_size, intermediate_size=lm.intermediate_size,
        num_hidden_layers=lm.num_layers, num_attention_heads=lm.num_heads, num_key_value_heads=lm.num_kv_heads,
        head_dim=lm.hidden_size // lm.num_heads, max_position_embeddings=2048, tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
        attention_dropout=0.0, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )
    torch.manual_seed(plan.seed)
    return Qwen3ForCausalLM(config).float()


def stage_text_lm(plan: EmbeddedPlan, work: Path, art: Artifacts, make_accelerator):
    from transformers import Qwen3ForCausalLM

    folder = work / "stage1"
    final = folder / "final"
    if not (final / "config.json").is_file():
        model = stage1_model(plan, art.tokenizer)
        heldout_text = [s for s in art.heldout if s.task == "text"]
        log = train_lm(model, stage1_corpus(plan, art), plan.stage1, work_dir=folder, accelerator=make_accelerator(),
                       pad_id=art.tokenizer.pad_token_id, eval_sequences=heldout_text)
        model.to("cpu").save_pretrained(str(final))
        art.tokenizer.save_pretrained(str(final))
        (final / STAGE1_LOG).write_text(json.dumps(asdict(log)))
    return Qwen3ForCausalLM.from_pretrained(str(final), dtype=torch.float32)


def stage_unix(plan: EmbeddedPlan, work: Path, art: Artifacts, text_lm, make_accelerator, time_limit_s=None,
               snapshot_steps=()):
    from unix_core.convert import convert_qwen_to_unix

    folder = work / "stage2"
    a, b = plan.lm.split
    model = convert_qwen_to_unix(
        text_lm, num_vision_encode_layers=a, num_vision_decode_layers=b,
        vision_vocab_size=art.vq.codebook_size, tokenizer=art.tokenizer,
        row_separator=row_separator(plan, art.vq),
    ).float().train()
    if plan.vision_init == "palette":
        init_vision_embeddings_from_palette(model, art.vq, seed=plan.seed)
    first = model.config.real_text_vocab_size
    log = train_lm(model, art.train, plan.stage2, work_dir=folder, accelerator=make_accelerator(),
                   pad_id=art.tokenizer.pad_token_id, eval_sequences=art.heldout, time_limit_s=time_limit_s,
                   image_codes=(first, first + art.vq.codebook_size), snapshot_steps=snapshot_steps)
    return model.to("cpu").eval(), log


@torch.no_grad()
def init_vision_embeddings_from_palette(model, vq, *, seed: int = 0) -> None:
    """Give each image code an embedding that describes what it looks like.

    The converter (like the official ``expand_vocabulary.py``) starts every new row at the mean text row, so
    all codes begin identical and a tiny LM must learn 512 embeddings from scratch, each from the few
    sequences that use it. Here row ``c`` becomes the mean text row plus the code's decoded pixels (its
    palette patch, centred over codes) through a fixed random orthogonal map, scaled to the typical distance
    of a text row from the mean: codes of the same colour or shape start close, and colour is a linear
    read-out from the start. The output rows are the same tensor when embeddings are tied.
    """
    from unix_core.vq.preview import build_code_palette

    first = model.config.real_text_vocab_size
    n = vq.codebook_size
    weight = model.get_input_embeddings().weight
    text = weight[:first]
    centre = text.mean(0)
    scale = (text - centre).norm(dim=1).mean()
    pixels = build_code_palette(vq.model).patches.flatten(1).float() / 127.5 - 1  # (n, f*f*3)
    pixels = pixels - pixels.mean(0)
    generator = torch.Generator().manual_seed(seed)
    wide = max(pixels.shape[1], weight.shape[1])
    basis, _ = torch.linalg.qr(torch.randn(wide, wide, generator=generator))
    features = pixels @ basis[: pixels.shape[1], : weight.shape[1]]
    features = features / features.norm(dim=1, keepdim=True).clamp(min=1e-6) * scale
    weight[first : first + n] = (centre + features).to(weight.dtype)


def plan_templates(plan: EmbeddedPlan) -> PromptTemplates:
    """The SHAPES templates in the plan's layout (what the data is built and the checkpoint rendered with)."""
    return SHAPES.with_overrides(SHAPES_LAYOUTS[plan.layout])


def export_checkpoint(model, tokenizer, vq, folder: str | Path, extra: dict | None = None,
                      layout: str = "image-first") -> Path:
    """Write the studio's checkpoint folder (model, text tokenizer, image tokenizer, templates)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    vq.save_pretrained(folder)
    (folder / TEMPLATES_FILE).write_text(json.dumps({"family": "shapes", **SHAPES_LAYOUTS[layout]}) + "\n")
    if extra:
        (folder / "training_report.json").write_text(json.dumps(extra, indent=1))
    return folder


def run_plan(plan: EmbeddedPlan, out: str | Path, *, make_accelerator, time_limit_s: float | None = None,
             snapshot_steps: Sequence[int] = ()) -> Path:
    """Run (or resume) every stage of ``plan`` under ``out``; returns the checkpoint folder.

    ``snapshot_steps``: stage-2 steps after which to keep the weights in ``work/stage2/snapshots`` (they do not
    change the run; score one with ``evaluate_embedded.py CHECKPOINT --weights SNAPSHOT``)."""
    out = Path(out)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    plan_path = out / "plan.json"
    if plan_path.is_file():
        saved = EmbeddedPlan.from_dict(json.loads(plan_path.read_text())).to_dict()  # fills fields added since
        if json.loads(json.dumps(saved)) != json.loads(json.dumps(plan.to_dict())):
            raise ValueError(f"{plan_path} holds a different plan; resume with the same arguments or use a new --out")
    else:
        plan_path.write_text(json.dumps(plan.to_dict(), indent=1))
    torch.manual_seed(plan.seed)
    timings = {}
    started = time.perf_counter()
    tokenizer = stage_tokenizer(plan, work)
    timings["tokenizer_s"] = time.perf_counter() - started
    vq = stage_vq(plan, work, device=make_accelerator().device)
    timings["vq_s"] = time.perf_counter() - started - sum(timings.values())
    export_vq = stage_vq_decoder(plan, work, vq, device=make_accelerator().device)
    timings["vq_decoder_s"] = time.perf_counter() - started - sum(timings.values())
    art = stage_data(plan, work, tokenizer, export_vq)  # same codes as vq; the palette init reads its decoder
    timings["data_s"] = time.perf_counter() - started - sum(timings.values())
    text_lm = stage_text_lm(plan, work, art, make_accelerator)
    timings["stage1_s"] = time.perf_counter() - started - sum(timings.values())
    model, log = stage_unix(plan, work, art, text_lm, make_accelerator, time_limit_s, snapshot_steps)
    timings["stage2_s"] = time.perf_counter() - started - sum(timings.values())
    if log.step < plan.stage2.steps:
        logger.warning("stage 2 stopped at step %d of %d (time limit); resume to finish", log.step, plan.stage2.steps)
        return work / "stage2"
    report = {
        "timings_this_session_s": timings,
        "stage1": _read_json(work / "stage1" / "final" / STAGE1_LOG),
        "stage2": asdict(log),
        "vq": _read_json(work / "vq" / "report.json"),
        "vq_decoder": _read_json(work / "vq_decoder" / "report.json"),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    folder = export_checkpoint(model, tokenizer, export_vq, out / "checkpoint", extra=report,
                               layout=plan.layout)
    size = sum(f.stat().st_size for f in folder.iterdir())
    if size > CHECKPOINT_LIMIT_BYTES:
        logger.warning("checkpoint is %.1f MB, over the %.0f MB target", size / 1e6, CHECKPOINT_LIMIT_BYTES / 1e6)
    return folder


def _read_json(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


# --------------------------------------------------------------------------------------------------
# Throughput measured on the shared 2-core CPU, one thread, other jobs running (issue-5 report). Used only to
# turn a minute budget into fixed step counts; the counts, not the clock, end each stage.
VQ_STEPS_PER_MINUTE = 160  # DEFAULT_VQ (patchwise encoder), batch 8: 0.33 s/step beside another job (2026-11-30)
STAGE2_TOKENS_PER_SECOND = 6000  # width 128, 6 layers, 2:2: 6,100 beside the baseline's run (2026-11-30)
STAGE1_TOKENS_PER_SECOND = 4000
ENCODED_IMAGES_PER_MINUTE = 8000  # render + encode_batch + sequence building
TOKENS_PER_STEP = 1850  # real tokens in a 2048-token padded batch of the mix
MIX_IMAGES = 32000  # images the default mix encodes
SHARES = {"vq": 0.25, "data": 0.05, "stage1": 0.03}  # of the budget; stage 2 gets the rest


def plan_for_budget(
    minutes: float,
    *,
    seed: int = 0,
    split: tuple[int, int] | None = None,
    hidden: int | None = None,
    layers: int | None = None,
    stage2_steps: int | None = None,
    vq_steps: int | None = None,
    vq_restart_share: float | None = None,
    vq_decoder_steps: int | None = None,
    separators: bool = False,
    change_weight: float | None = None,
    edit_change_weight: float | None = None,
    edit_keep_weight: float | None = None,
    edit_same_shape_share: float | None = None,
    image_noise: float | None = None,
    task_weights: dict[str, float] | None = None,
    mix_counts: dict[str, int] | None = None,
    layout: str | None = None,
    ema_decay: float | None = None,
    stage1_steps: int | None = None,
    stage1_edit_text: int | None = None,
    stage1_min_lr_ratio: float | None = None,
    stage1_extra_text: int | None = None,
) -> EmbeddedPlan:
    """A plan whose stages should fit ``minutes`` on the 2-core CPU (one thread); deterministic in its args.
    ``mix_counts`` sets the number of training samples of some tasks (after the budget's scaling of the mix);
    ``edit_same_shape_share`` the mix's ``MixConfig.edit_same_shape_share``; ``stage1_min_lr_ratio`` where stage 1's
    cosine schedule ends, as a share of its peak (``TrainConfig.min_lr_ratio``; 1 keeps the peak after warmup)."""
    if minutes <= 0:
        raise ValueError(f"budget must be positive minutes, got {minutes}")
    if stage1_min_lr_ratio is not None and not 0 <= stage1_min_lr_ratio <= 1:
        raise ValueError(f"stage1_min_lr_ratio (stage 1's last learning rate as a share of its peak) must be in "
                         f"[0, 1], got {stage1_min_lr_ratio}")
    base = EmbeddedPlan(seed=seed)
    lm = base.lm
    if hidden is not None or layers is not None or split is not None:
        lm = LMShape.of_width(hidden or lm.hidden_size, layers or lm.num_layers, split or lm.split)
    vq_steps = vq_steps or max(50, int(minutes * SHARES["vq"] * VQ_STEPS_PER_MINUTE))
    stage1_steps = stage1_steps or max(20, int(minutes * SHARES["stage1"] * 60 * STAGE1_TOKENS_PER_SECOND
                                               / TOKENS_PER_STEP))
    stage2_minutes = minutes * (1 - sum(SHARES.values()))
    steps = stage2_steps or max(20, int(stage2_minutes * 60 * STAGE2_TOKENS_PER_SECOND / TOKENS_PER_STEP))
    # smaller budgets get a proportionally smaller mix
    mix_factor = min(1.0, minutes * SHARES["data"] * ENCODED_IMAGES_PER_MINUTE / MIX_IMAGES)
    if edit_same_shape_share is None:
        edit_same_shape_share = base.mix.edit_same_shape_share
    return base.replace(
        lm=lm,
        vq_steps=vq_steps,
        vq_restart_share=base.vq_restart_share if vq_restart_share is None else vq_restart_share,
        vq_decoder_steps=base.vq_decoder_steps if vq_decoder_steps is None else vq_decoder_steps,
        vis_separators=separators or base.vis_separators,
        layout=base.layout if layout is None else layout,
        stage1_edit_text=base.stage1_edit_text if stage1_edit_text is None else stage1_edit_text,
        stage1_extra_text=base.stage1_extra_text if stage1_extra_text is None else stage1_extra_text,
        stage1=dataclasses.replace(base.stage1, steps=stage1_steps, seed=seed, warmup_steps=min(30, stage1_steps // 5),
                                   min_lr_ratio=base.stage1.min_lr_ratio if stage1_min_lr_ratio is None
                                   else stage1_min_lr_ratio),
        stage2=dataclasses.replace(
            base.stage2, steps=steps, seed=seed, warmup_steps=min(100, steps // 10),
            eval_every=max(25, steps // 8), checkpoint_every=max(25, min(200, steps // 5)),
            change_weight=base.stage2.change_weight if change_weight is None else change_weight,
            edit_change_weight=base.stage2.edit_change_weight if edit_change_weight is None else edit_change_weight,
            edit_keep_weight=base.stage2.edit_keep_weight if edit_keep_weight is None else edit_keep_weight,
            image_noise=base.stage2.image_noise if image_noise is None else image_noise,
            task_weights=base.stage2.task_weights if task_weights is None else dict(task_weights),
            ema_decay=base.stage2.ema_decay if ema_decay is None else ema_decay,
        ),
        mix=dataclasses.replace(base.mix.scaled(mix_factor), seed=seed, **(mix_counts or {}),
                                edit_same_shape_share=edit_same_shape_share),
    )


_TOKENIZER_INPUTS = ("seed", "tokenizer_lines", "vis_separators")
_VQ_INPUTS = ("seed", "vq", "vq_images", "vq_steps", "vq_batch_size", "vq_lr", "vq_recon", "vq_foreground_weight",
              "vq_cosine_lr", "vq_dense_share", "vq_autoencoder_share", "vq_restart_share")
_STAGE_INPUTS = {
    "tokenizer": _TOKENIZER_INPUTS,
    "vq": _VQ_INPUTS,
    "vq_decoder": (*_VQ_INPUTS, "vq_decoder_steps", "vq_decoder_lr"),
    # the task data is tokenized with both tokenizers, so it depends on everything they depend on
    "data": (*_TOKENIZER_INPUTS, *_VQ_INPUTS, "mix", "eval_mix", "stage1_lines", "layout"),
    "stage1": (*_TOKENIZER_INPUTS, "stage1_lines", "stage1", "lm_without_split", "stage1_edit_text",
               "stage1_extra_text", "stage1_edit_layout"),
}


def copy_reusable_stages(plan: EmbeddedPlan, source_out: str | Path, out: str | Path) -> list[str]:
    """Copy the finished stages of another run whose inputs equal this plan's (e.g. for the 0:0 baseline,
    which differs only in the split: same tokenizers, data and stage-1 model). Returns the stages copied."""
    import shutil

    source_out, out = Path(source_out), Path(out)
    other = EmbeddedPlan.from_dict(json.loads((source_out / "plan.json").read_text())).to_dict()
    mine = plan.to_dict()
    for d in (other, mine):
        d["lm_without_split"] = {k: v for k, v in d["lm"].items() if k != "split"}
        # the layout shapes stage 1's text-only edits (and the mix seed picks them); without them it plays no part
        d["stage1_edit_layout"] = (d["layout"], d["mix"]["seed"]) if d["stage1_edit_text"] else None
    copied = []
    for stage, inputs in _STAGE_INPUTS.items():
        src, dst = source_out / "work" / stage, out / "work" / stage
        if dst.exists() or not src.exists() or any(other[k] != mine[k] for k in inputs):
            continue
        if stage == "stage1" and not (src / "final" / "config.json").is_file():
            continue
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("state", "state.*"))
        copied.append(stage)
    return copied
