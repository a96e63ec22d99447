"""The language-model training loop shared by stage 1 (plain Qwen3 on text) and stage 2 (Uni-X on the mix).

Built on ``accelerate.Accelerator`` so the same loop runs on a CPU or a GPU. Determinism and resumption:
the batch of step ``s`` is a pure function of ``(seed, s)`` (:class:`unix_core.training.data.BatchSchedule`),
the model has no dropout, and every ``checkpoint_every`` steps the model, optimizer, LR schedule and RNG
states are written with ``Accelerator.save_state`` together with ``trainer_state.json`` (step and logs), into
a temporary folder that then replaces the previous one. A resumed run therefore follows the same
trajectory as an uninterrupted one (bit for bit on the same device and thread count).

Logged: mean training loss per ``log_every`` steps, and held-out loss per task every ``eval_every`` steps.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from .data import IGNORE, BatchSchedule, TrainingSequence, collate

logger = logging.getLogger(__name__)

STATE_DIR = "state"
TRAINER_STATE = "trainer_state.json"
EMA_FILE = "ema.pt"  # the weight average beside the accelerate state
SNAPSHOT_DIR = "snapshots"  # train_lm(snapshot_steps=...): work_dir/snapshots/step{N}.safetensors


@dataclass(frozen=True)
class TrainConfig:
    steps: int
    max_tokens: int = 2048  # padded tokens per batch
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 50
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    seed: int = 0
    log_every: int = 25
    eval_every: int = 0  # 0: only at the end
    checkpoint_every: int = 200
    # Image-code targets (ids in ``train_lm``'s ``image_codes`` range that carry a label), two options against
    # a tiny LM learning to copy its left neighbour instead of reading the prompt (see image_code_weights):
    # ``change_weight``: the loss weight of a target code that differs from the code before it (the first
    # code of an image, where an object starts or ends); ``image_noise``: the share of target codes replaced
    # by a random code in the input (their labels stay), so the next code cannot always be copied.
    # Measured (2026-12-01, 2:2, 2,500 steps): neither made the first image code read the prompt's background
    # (teacher-forced 10% with change_weight 4, 7.5% with image_noise 0.15); the 0:0, 1:0 and 0:1 splits did (53-60%).
    change_weight: float = 1.0
    image_noise: float = 0.0
    # ``edit_change_weight``: the loss weight of an edit target's code that differs from the source image's code
    # at the same cell (the codes that carry the edit; in the shipped mix 28.8% of edit target codes, the rest
    # copy the source). Measured (2026-12-05, 0:1, weight 4 beside vqa=3): edits 76% -> 81% on seed 0 and
    # 76.0% -> 80.0% on seed 3 and 73.0% -> 76.3% on seed 5 (n = 300 each), the other tasks as good or better.
    # Larger weights edit worse: 6 gave 68.0% and 8 47.9% of edits over 800 samples (8 also VQA 77% on seed 0;
    # model card).
    edit_change_weight: float = 1.0
    # ``edit_keep_weight``: the loss weight of an edit target's code that copies the source's code at the same
    # cell where that code is not the source image's most common code (its background): the cells of the objects
    # an edit keeps. probe_edit.py found most copy errors at a kept object's first code row, most often on an
    # object of the edited one's shape (the model erases or changes the wrong object). Measured (2026-12-06, 0:1,
    # 4 beside edit_change_weight 4, seeds 0 and 1 paired with runs without it): copied cells wrong 48 -> 38 and
    # 129 -> 55, but more changed cells wrong; edits -10.0 and +8.3 points over 800 samples, text-to-image and VQA
    # down in both (model card). Not used by the shipped model.
    edit_keep_weight: float = 1.0
    # Loss weight per task name (TrainingSequence.task; 1 for tasks not named), multiplying the weights above.
    # The loss is a mean over trained tokens, so a task with short answers (VQA: 1-2 tokens after a whole
    # image) gets almost no gradient beside 81-code images: 0.9% of the trained tokens in the default mix.
    task_weights: dict[str, float] = field(default_factory=dict)
    # ``ema_decay``: keep an exponential moving average of the weights (torch's ``AveragedModel``, updated after
    # every optimizer step) and end the run with it instead of the last step's weights; 0 turns it off. The
    # last step's weights stay in ``work_dir/state`` (the accelerate state), the average beside them.
    # Measured (2026-12-06, 0.999 on the shipped plan, two runs, averaged minus last step): edits +0.4 and +2.5
    # points over 800 samples, text-to-image -1.0 and -2.5; no clear effect (model card). Not used by the shipped model.
    ema_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.max_tokens < 1:
            raise ValueError(f"steps and max_tokens must be >= 1, got {self.steps} and {self.max_tokens}")
        if not 0 < self.lr < 1 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"lr must be in (0, 1) and min_lr_ratio in [0, 1], got {self.lr}, {self.min_lr_ratio}")
        if self.change_weight <= 0 or not 0 <= self.image_noise < 1:
            raise ValueError(f"change_weight must be > 0 and image_noise in [0, 1), got {self.change_weight}, "
                             f"{self.image_noise}")
        if self.edit_change_weight <= 0 or self.edit_keep_weight <= 0:
            raise ValueError(f"edit_change_weight and edit_keep_weight must be > 0, got {self.edit_change_weight}, "
                             f"{self.edit_keep_weight}")
        if any(not w > 0 for w in self.task_weights.values()):
            raise ValueError(f"task_weights must be > 0, got {self.task_weights}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1) (0: no average), got {self.ema_decay!r}")

    @property
    def uses_image_options(self) -> bool:
        return (self.change_weight != 1.0 or self.image_noise > 0 or self.edit_change_weight != 1.0
                or self.edit_keep_weight != 1.0)

    @property
    def weighted(self) -> bool:
        return self.uses_image_options or any(w != 1 for w in self.task_weights.values())

    def lr_factor(self, step: int) -> float:
        """Linear warmup, then cosine from 1 to ``min_lr_ratio`` at the last step."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps)
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


@dataclass
class TrainLog:
    """What a run measured; saved as trainer_state.json."""

    step: int = 0
    elapsed_s: float = 0.0
    tokens: int = 0
    train_loss: list[tuple[int, float]] = field(default_factory=list)  # (step, mean loss since last entry)
    eval_loss: list[tuple[int, dict[str, float]]] = field(default_factory=list)  # (step, {task: loss})
    # with ``ema_decay``: the held-out losses of the averaged weights the run ends with (eval_loss's last entry
    # is the last step's weights)
    ema_eval_loss: dict[str, float] = field(default_factory=dict)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only (not norms, biases; embeddings are matrices and decay)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def image_code_weights(labels: torch.Tensor, image_codes: tuple[int, int], change_weight: float) -> torch.Tensor:
    """(B, T) float loss weights: ``change_weight`` where the label is an image code that differs from the
    previous code of the sequence (one row separator may sit between them; the first code of an image has
    ``<|vision_start|>`` before it, so it counts as changed), 1 elsewhere.

    Most codes of a shapes scene repeat their left neighbour, so the plain loss is mostly paid for copying;
    the codes a model can only get from the prompt (the background's first code, each object's start) are a
    few per image and their gradient is diluted."""
    lo, hi = image_codes
    is_code = (labels >= lo) & (labels < hi)
    prev = torch.full_like(labels, -1)
    prev[:, 1:] = labels[:, :-1]
    before_prev = torch.full_like(labels, -1)
    before_prev[:, 2:] = labels[:, :-2]
    prev_is_code = (prev >= lo) & (prev < hi)
    prev = torch.where(prev_is_code, prev, before_prev)  # skip one separator (or another non-code)
    changed = is_code & (labels != prev)
    return torch.where(changed, torch.full_like(labels, change_weight, dtype=torch.float), 1.0)


def edit_code_weights(input_ids: torch.Tensor, labels: torch.Tensor, image_codes: tuple[int, int],
                      weight: float, is_edit: Sequence[bool], keep_weight: float = 1.0) -> torch.Tensor:
    """(B, T) float loss weights: ``weight`` where the label is an edit target's image code that differs from
    the source image's code at the same cell, ``keep_weight`` where it equals a source code that is not the
    source image's most common code (a kept object's cell; the most common code is the background), 1 elsewhere.
    In an edit row (``is_edit``) the source is the input's image codes that are not trained (label -100) and the
    target the trained ones, both in raster order, so the k-th of each is the same cell; a row where the counts
    differ is left at 1."""
    lo, hi = image_codes
    weights = torch.ones(labels.shape, dtype=torch.float, device=labels.device)
    for row in (i for i, edit in enumerate(is_edit) if edit):
        ids, lab = input_ids[row], labels[row]
        source = ids[((ids >= lo) & (ids < hi)) & (lab == IGNORE)]
        target_pos = torch.nonzero((lab >= lo) & (lab < hi)).flatten()
        if len(source) == len(target_pos) > 0:
            same = lab[target_pos] == source
            weights[row, target_pos[~same]] = weight
            if keep_weight != 1.0:
                background = torch.mode(source).values
                weights[row, target_pos[same & (source != background)]] = keep_weight
    return weights


def noisy_image_inputs(input_ids: torch.Tensor, labels: torch.Tensor, image_codes: tuple[int, int], share: float,
                       generator: torch.Generator) -> torch.Tensor:
    """``input_ids`` with ``share`` of the trained image codes (label = an image code) replaced by random codes;
    labels are kept, so each code is still predicted right after an input that may be wrong (as in sampling,
    where the model reads its own mistakes). Input images (label -100) are never changed."""
    lo, hi = image_codes
    target = (labels >= lo) & (labels < hi)
    hit = (torch.rand(input_ids.shape, generator=generator) < share) & target.cpu()
    random_codes = torch.randint(lo, hi, input_ids.shape, generator=generator)
    return torch.where(hit.to(input_ids.device), random_codes.to(input_ids.device), input_ids)


def weighted_lm_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy, a weighted mean over positions whose label is not -100."""
    targets = labels[:, 1:]
    w = weights[:, 1:] * (targets != IGNORE)
    losses = nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE, reduction="none"
    ).view(targets.shape)
    return (losses * w).sum() / w.sum().clamp(min=1e-9)


@torch.no_grad()
def eval_loss_by_task(
    model: nn.Module, sequences: Sequence[TrainingSequence], *, pad_id: int, device, batch_size: int = 16
) -> dict[str, float]:
    """Mean next-token loss over the trained positions of ``sequences``, per task (and "all")."""
    was_training = model.training
    model.eval()
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    for start in range(0, len(order), batch_size):
        chunk = [sequences[i] for i in order[start : start + batch_size]]
        batch = collate(chunk, pad_id).to(device)
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        targets = batch.labels[:, 1:]
        losses = nn.functional.cross_entropy(
            logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE, reduction="none"
        ).view(targets.shape)  # (B, T-1)
        trained = targets != IGNORE
        for row, seq in enumerate(chunk):
            sums[seq.task] += float(losses[row][trained[row]].sum())
            counts[seq.task] += int(trained[row].sum())
    model.train(was_training)
    out = {task: sums[task] / counts[task] for task in sorted(sums) if counts[task]}
    total = sum(counts.values())
    out["all"] = sum(sums.values()) / total if total else float("nan")
    return out


def train_lm(
    model: nn.Module,
    sequences: Sequence[TrainingSequence],
    config: TrainConfig,
    *,
    work_dir: str | Path,
    accelerator,
    pad_id: int,
    eval_sequences: Sequence[TrainingSequence] = (),
    time_limit_s: float | None = None,
    image_codes: tuple[int, int] | None = None,
    snapshot_steps: Sequence[int] = (),
) -> TrainLog:
    """Train ``model`` (any causal LM taking input_ids/attention_mask/labels) on ``sequences``.

    ``image_codes`` (first id, end id) is the image-code id range that ``config.change_weight`` and
    ``config.image_noise`` act on; they need it. Held-out losses stay plain (unweighted, clean inputs).

    Resumes from ``work_dir/state`` when it exists. ``time_limit_s`` (a guard for probes; it makes the run's
    length machine-dependent) stops early after checkpointing. ``snapshot_steps`` keeps a copy of the weights
    after each of those steps in ``work_dir/snapshots/step{N}.safetensors`` (the keys of a checkpoint's
    ``model.safetensors``; the state is saved at those steps too, which does not change the run), e.g. to score
    a run's progress afterwards. Returns the log; the trained model is ``accelerator.unwrap_model(model)`` (the
    object passed in, on CPU).
    """
    bad = [s for s in snapshot_steps if not (isinstance(s, int) and 1 <= s <= config.steps)]
    if bad:
        raise ValueError(f"snapshot_steps must be whole steps from 1 to {config.steps}, got {bad}")
    if config.uses_image_options and image_codes is None:
        raise ValueError("change_weight / edit_change_weight / edit_keep_weight / image_noise need the image-code id "
                         "range (image_codes)")
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    optimizer = torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.lr, betas=(0.9, 0.95))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, config.lr_factor)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    schedule = BatchSchedule([len(s) for s in sequences], max_tokens=config.max_tokens, seed=config.seed)
    log = TrainLog()
    state_dir = work_dir / STATE_DIR
    _recover_interrupted_save(state_dir)
    ema = None
    if config.ema_decay:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(accelerator.unwrap_model(model), multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay))
    if (state_dir / TRAINER_STATE).is_file():
        accelerator.load_state(str(state_dir))
        log = TrainLog(**json.loads((state_dir / TRAINER_STATE).read_text()))
        if ema is not None:
            ema.load_state_dict(torch.load(state_dir / EMA_FILE, map_location=accelerator.device, weights_only=True))
        logger.info("resumed %s at step %d", work_dir, log.step)
    model.train()
    started = time.perf_counter() - log.elapsed_s
    window_loss, window_steps = 0.0, 0
    while log.step < config.steps:
        chosen = [sequences[i] for i in schedule.batch(log.step)]
        batch = collate(chosen, pad_id).to(accelerator.device)
        if config.weighted:
            inputs = batch.input_ids
            if config.image_noise:  # a pure function of (seed, step), so a resumed run draws the same noise
                generator = torch.Generator().manual_seed(config.seed * 1_000_003 + log.step)
                inputs = noisy_image_inputs(inputs, batch.labels, image_codes, config.image_noise, generator)
            logits = model(input_ids=inputs, attention_mask=batch.attention_mask).logits
            weights = torch.tensor([[config.task_weights.get(s.task, 1.0)] for s in chosen], device=logits.device)
            if config.change_weight != 1.0:
                weights = weights * image_code_weights(batch.labels, image_codes, config.change_weight)
            if config.edit_change_weight != 1.0 or config.edit_keep_weight != 1.0:
                weights = weights * edit_code_weights(batch.input_ids, batch.labels, image_codes,
                                                      config.edit_change_weight, [s.task == "edit" for s in chosen],
                                                      config.edit_keep_weight)
            loss = weighted_lm_loss(logits, batch.labels, weights.expand(batch.labels.shape))
        else:
            loss = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels).loss
        accelerator.backward(loss)
        if config.grad_clip:
            accelerator.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update_parameters(accelerator.unwrap_model(model))
        log.step += 1
        log.tokens += int(batch.attention_mask.sum())
        window_loss += float(loss.detach())
        window_steps += 1
        log.elapsed_s = time.perf_counter() - started
        if log.step % config.log_every == 0 or log.step == config.steps:
            log.train_loss.append((log.step, window_loss / window_steps))
            logger.info(
                "step %d/%d loss %.4f  %.0f tok/s", log.step, config.steps, window_loss / window_steps,
                log.tokens / max(log.elapsed_s, 1e-9),
            )
            window_loss, window_steps = 0.0, 0
        at_eval = config.eval_every and log.step % config.eval_every == 0
        if eval_sequences and (at_eval or log.step == config.steps):
            losses = eval_loss_by_task(model, eval_sequences, pad_id=pad_id, device=accelerator.device)
            log.eval_loss.append((log.step, losses))
            logger.info("step %d held-out loss %s", log.step, {k: round(v, 4) for k, v in losses.items()})
        out_of_time = time_limit_s is not None and log.elapsed_s > time_limit_s
        snapshot = log.step in snapshot_steps
        if log.step % config.checkpoint_every == 0 or log.step == config.steps or out_of_time or snapshot:
            save_training_state(accelerator, log, state_dir, ema)
        if snapshot:  # the last step's weights (not the average), as saved in the state; whole or absent
            target = work_dir / SNAPSHOT_DIR / f"step{log.step}.safetensors"
            target.parent.mkdir(exist_ok=True)
            shutil.copyfile(state_dir / "model.safetensors", target.with_suffix(".tmp"))
            target.with_suffix(".tmp").replace(target)
        if out_of_time:
            logger.warning("time limit reached at step %d of %d", log.step, config.steps)
            break
    if ema is not None and log.step >= config.steps:  # end with the average (a stopped run keeps training weights)
        with torch.no_grad():
            for mine, averaged in zip(accelerator.unwrap_model(model).parameters(), ema.module.parameters()):
                mine.copy_(averaged)
        if eval_sequences:
            log.ema_eval_loss = eval_loss_by_task(model, eval_sequences, pad_id=pad_id, device=accelerator.device)
            logger.info("averaged weights: held-out loss %s", {k: round(v, 4) for k, v in log.ema_eval_loss.items()})
    accelerator.unwrap_model(model, keep_fp32_wrapper=False).eval()  # drops a mixed-precision forward patch
    accelerator.free_memory()  # forget this stage's objects so a later save_state holds only its own
    return log


def save_training_state(accelerator, log: TrainLog, state_dir: Path, ema: nn.Module | None = None) -> None:
    """Write the accelerate state, the log and the weight average (if any) into ``state_dir``, replacing it
    only once complete."""
    tmp = state_dir.with_name(state_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    accelerator.save_state(str(tmp))
    if ema is not None:
        torch.save(ema.state_dict(), tmp / EMA_FILE)
    (tmp / TRAINER_STATE).write_text(json.dumps(asdict(log)))
    old = state_dir.with_name(state_dir.name + ".old")
    if state_dir.exists():
        state_dir.rename(old)
    tmp.rename(state_dir)
    if old.exists():
        shutil.rmtree(old)


def _recover_interrupted_save(state_dir: Path) -> None:
    """A crash between the two renames of :func:`save_training_state` leaves only ``state.old``."""
    old = state_dir.with_name(state_dir.name + ".old")
    if not state_dir.exists() and old.exists():
        old.rename(state_dir)

