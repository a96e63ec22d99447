"""UniXPipeline: a loaded Uni-X checkpoint (model, text tokenizer, image tokenizer, prompt templates) with
task entry points for text-to-image, captioning, question answering, editing and few-shot prompting.

Every entry point has a ``*_stream`` twin yielding progress events; the plain call drains it. Image streams
carry a cheap mosaic preview every step and a real decoded preview every ``preview_every_rows`` rows of
codes, or, by default, adaptively: as often as keeps decoding within ~5% of the generation time (a decode
of the Chameleon VQGAN costs far more on a CPU than on a GPU, and more than a small model's rows). All per-request state lives in the stream; the pipeline object holds only read-only resources, so
concurrent requests cannot see each other's state. Invalid arguments raise ``ValueError`` naming the
argument and what is allowed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from .config import resolve_separator
from .generation import generate_image_stream, generate_text_stream, write_plans
from .model import UniXForCausalLM
from .prompting import PromptBuilder, RenderedPrompt, Segment
from .routing import RoutingTrace, trace_routing
from .selfcheck import caption_scores
from .sampling import SamplingConfig
from .templates import PromptTemplates, load_templates

logger = logging.getLogger(__name__)

EMBEDDED_DEFAULT = Path(__file__).resolve().parent.parent / "assets" / "unix-shapes"
VQ_SUBFOLDERS = ("", "vqgan", "vq", "image_tokenizer")
VQ_FILE_SETS = (("vq_config.json", "vq_model.safetensors"), ("vqgan.yaml", "vqgan.ckpt"))
PALETTE_FILE = "code_palette.safetensors"
MAX_TEXT_CHARS = 2000
MAX_IMAGES_PER_PROMPT = 8
MAX_FEW_SHOT_EXAMPLES = 8
MAX_NEW_TOKENS = 1024


@dataclass
class ImageStreamEvent:
    """Progress of an image generation: ``grids`` (B, h, w) codes so far (-1 = not yet), one cheap
    ``mosaics`` preview per drawn image every step, ``decoded`` previews at the row interval (else None), and
    the final ``images`` on the last event. ``sequence_ids`` (last event) is the first image's full sequence,
    for :meth:`UniXPipeline.trace`.

    With a self-check (``candidates`` > 1, text to image) B is ``num_images * candidates``: rows
    ``i * candidates ... (i + 1) * candidates - 1`` are the candidates of image ``i``; the last event names the
    ``chosen`` candidate of each image and every candidate's ``scores`` (the captioner's log-probability of
    the prompt), and ``images`` holds the chosen ones only."""

    step: int
    total: int
    elapsed: float
    seed: int
    grids: torch.Tensor
    mosaics: list[Image.Image]
    decoded: list[Image.Image] | None = None
    images: list[Image.Image] | None = None
    sequence_ids: list[int] | None = None
    candidates: int = 1
    chosen: list[int] | None = None
    scores: list[list[float]] | None = None
    plan: str | None = None  # edits with a written plan: the edited scene the model wrote before drawing

    @property
    def progress(self) -> float:
        return self.step / self.total

    @property
    def done(self) -> bool:
        return self.images is not None


@dataclass
class TextStreamEvent:
    """Progress of a text answer: the ``text`` so far and the ``delta`` this step added."""

    step: int
    text: str
    delta: str
    done: bool
    elapsed: float
    seed: int
    sequence_ids: list[int] | None = None  # on the last event: prompt + answer, for tracing


@dataclass
class TokenLayout:
    """The interleaved token layout a prompt turns into (shown by the studio)."""

    segments: list[Segment]
    total_tokens: int
    text_tokens: int = field(init=False)
    vision_tokens: int = field(init=False)

    def __post_init__(self) -> None:
        self.vision_tokens = sum(s.num_tokens for s in self.segments if s.modality == "vision")
        self.text_tokens = self.total_tokens - self.vision_tokens


def resolve_checkpoint(path_or_hub_id: str | Path | None) -> Path:
    """A local folder for the checkpoint: the embedded default, a folder, or a hub id (huggingface_hub)."""
    if path_or_hub_id is None:
        if not (EMBEDDED_DEFAULT / "config.json").is_file():
            raise ValueError(
                f"the embedded default model is not installed at {EMBEDDED_DEFAULT}; pass a checkpoint folder or hub id"
            )
        return EMBEDDED_DEFAULT
    path = Path(path_or_hub_id).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(f"model path {path} is a file; a checkpoint is a folder (config.json, *.safetensors, ...)")
    text = str(path_or_hub_id)
    if text.count("/") != 1 or text.startswith((".", "/", "~")):
        raise ValueError(f"model {text!r} is neither an existing folder nor a hub id of the form 'owner/name'")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id=text))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as err:
        raise ValueError(f"could not fetch hub model {text!r} (no network, or no such repository): {err}") from err


def find_vq_folder(folder: Path, vqgan: str | Path | None = None) -> Path:
    candidates = [Path(vqgan).expanduser()] if vqgan is not None else [folder / sub for sub in VQ_SUBFOLDERS]
    for candidate in candidates:
        if any(all((candidate / name).is_file() for name in files) for files in VQ_FILE_SETS):
            return candidate
    where = ", ".join(str(c) for c in candidates)
    raise ValueError(
        f"no image tokenizer found in {where}: expected vqgan.yaml + vqgan.ckpt (taming/Chameleon) or "
        "vq_config.json + vq_model.safetensors; pass the folder holding them (--vqgan)"
    )


class PreviewSchedule:
    """When an image stream runs the real decoder (at row ends only).

    ``every_rows`` k > 0: after every k-th row; 0: never; None: adaptively, after the first row and then
    whenever the generation time since the last decode is at least ``cost / budget``, so decoding takes at
    most about ``budget`` of the generation time (plus the first decode) whatever the decoder's and the
    model's speeds. The default budget of 5% leaves room under the 10% target for timing noise.
    """

    def __init__(self, every_rows: int | None, budget: float = 0.05) -> None:
        self.every_rows = every_rows
        self.budget = budget
        self._last_cost = 0.0
        self._since = 0.0

    def generated(self, seconds: float) -> None:
        self._since += seconds

    def due(self, rows_done: int) -> bool:
        if self.every_rows is not None:
            return self.every_rows > 0 and rows_done % self.every_rows == 0
        return self._since * self.budget >= self._last_cost

    def decoded(self, seconds: float) -> None:
        self._last_cost, self._since = seconds, 0.0


def palette_cache_dir() -> Path:
    return Path(os.environ.get("UNIX_STUDIO_CACHE", Path.home() / ".cache" / "unix-studio"))


def load_or_build_palette(image_tokenizer, vq_folder: Path):
    """The per-code preview palette: shipped beside the weights, cached from an earlier run, or built now
    (seconds for small tokenizers, minutes for Chameleon's 8192 codes on a CPU) and cached."""
    from .vq import CodePalette

    shipped = vq_folder / PALETTE_FILE
    if shipped.is_file():
        return CodePalette.load(shipped)
    weights = next(vq_folder / name for files in VQ_FILE_SETS for name in files[1:] if (vq_folder / name).is_file())
    stat = weights.stat()
    key = hashlib.sha1(f"{weights.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    cached = palette_cache_dir() / f"palette-{key}.safetensors"
    if cached.is_file():
        return CodePalette.load(cached)
    logger.info("building the code palette for streaming previews (%d codes, once)", image_tokenizer.codebook_size)
    palette = image_tokenizer.code_palette
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        palette.save(cached)
    except OSError as err:
        logger.warning("could not cache the code palette at %s: %s", cached, err)
    return palette


class UniXPipeline:
    def __init__(self, model: UniXForCausalLM, tokenizer, image_tokenizer, templates: PromptTemplates, *, name: str = "") -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.image_tokenizer = image_tokenizer
        self.templates = templates
        self.name = name
        cfg = model.config
        vocab = tokenizer.get_vocab()
        self.vision_start_id = cfg.vision_start_id
        self.vision_end_id = cfg.vision_end_id if cfg.vision_end_id is not None else vocab.get("<|vision_end|>")
        if self.vision_end_id is None:
            raise ValueError("the checkpoint defines no <|vision_end|> id (config vision_end_id or tokenizer)")
        if image_tokenizer.codebook_size != cfg.vision_vocab_size:
            raise ValueError(
                f"image tokenizer codebook ({image_tokenizer.codebook_size} codes) does not match the model's "
                f"vision_vocab_size ({cfg.vision_vocab_size})"
            )
        self.end_ids = {vocab[t] for t in templates.end_tokens if t in vocab}
        if tokenizer.eos_token_id is not None:
            self.end_ids.add(tokenizer.eos_token_id)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.end_ids, default=0)
        self.image_size = templates.image_size or image_tokenizer.image_size
        f = image_tokenizer.downsample_factor
        if self.image_size % f:
            raise ValueError(f"image size {self.image_size} is not a multiple of the tokenizer's downsampling {f}")
        self.grid_hw = (self.image_size // f, self.image_size // f)
        resolve_separator(cfg, tokenizer)
        self.builder = PromptBuilder(
            tokenizer,
            real_text_vocab_size=cfg.real_text_vocab_size,
            vision_start_id=self.vision_start_id,
            vision_end_id=self.vision_end_id,
            separator=cfg.separator,
        )

    # ----------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str | Path | None = None,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        load_in_8bit: bool = False,
        vqgan: str | Path | None = None,
        device_map: str | dict | None = None,
    ) -> "UniXPipeline":
        """Load a checkpoint folder or hub id (``None``: the embedded default in ``assets/``)."""
        from transformers import AutoTokenizer

        from .vq import VQImageTokenizer

        folder = resolve_checkpoint(path_or_hub_id)
        kwargs: dict[str, Any] = {"dtype": dtype or torch.float32}
        if load_in_8bit:
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        if device_map is not None or load_in_8bit:
            kwargs["device_map"] = device_map or str(device)
        model = UniXForCausalLM.from_pretrained(folder, **kwargs)
        if "device_map" not in kwargs:
            model = model.to(device)
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, config=model.config)
        except (OSError, ValueError) as err:
            raise ValueError(f"no text tokenizer could be loaded from {folder}: {err}") from err
        vq_folder = find_vq_folder(folder, vqgan)
        image_tokenizer = VQImageTokenizer.from_pretrained(vq_folder, device=model.device)
        image_tokenizer.set_code_palette(load_or_build_palette(image_tokenizer, vq_folder))
        default_family = "shapes" if folder == EMBEDDED_DEFAULT else "uni-x"
        name = "embedded default (shapes world)" if path_or_hub_id is None else str(path_or_hub_id)
        return cls(model, tokenizer, image_tokenizer, load_templates(folder, default_family), name=name)

    @property
    def device(self) -> torch.device:
        return self.model.device

    # ----------------------------------------------------------------------------------------------
    # Validation helpers
    @staticmethod
    def _check_text(name: str, value: Any, max_chars: int = MAX_TEXT_CHARS) -> str:
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a string, got {type(value).__name__}")
        if not value.strip():
            raise ValueError(f"{name} must not be empty")
        if len(value) > max_chars:
            raise ValueError(f"{name} is {len(value)} characters long; allowed: at most {max_chars}")
        return value.strip()

    @staticmethod
    def _seed(seed: int | None) -> int:
        if seed is None:
            return secrets.randbelow(2**31)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise ValueError(f"seed must be an integer in [0, 2**63), got {seed!r}")
        return seed

    def _generator(self, seed: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(seed)

    def _sampling(self, entry: str, **settings) -> SamplingConfig:
        defaults = self.templates.defaults.get(entry, {})
        values = {k: (settings[k] if settings.get(k) is not None else defaults.get(k)) for k in settings}
        return SamplingConfig(**{k: v for k, v in values.items() if v is not None})

    def _encode_image(self, name: str, image) -> torch.Tensor:
        try:
            return self.image_tokenizer.encode(image, self.image_size)
        except (ValueError, TypeError, OSError) as err:
            raise ValueError(f"{name} is not a usable image: {err}") from err

    def _check_context(self, prompt_len: int, new_tokens: int, what: str) -> None:
        limit = self.model.config.max_position_embeddings
        if prompt_len + new_tokens > limit:
            raise ValueError(
                f"{what} is {prompt_len} tokens; with {new_tokens} tokens to generate it exceeds the model's "
                f"context of {limit} tokens"
            )

    def _render(self, template: str, fields: dict[str, str], images: list[torch.Tensor]) -> RenderedPrompt:
        return self.builder.render(template, fields, images)

    # ----------------------------------------------------------------------------------------------
    # Image generation
    def text_to_image_stream(
        self,
        prompt: str,
        *,
        seed: int | None = None,
        cfg_scale: float | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        num_images: int = 1,
        cfg_window: tuple[float, float] | None = None,
        candidates: int | None = None,
        preview_every_rows: int | None = None,
    ) -> Iterator[ImageStreamEvent]:
        """``candidates`` > 1: draw that many images per requested image and keep the one the model's own
        captioner finds the prompt most likely for (:mod:`unix_core.selfcheck`); None: the checkpoint's
        default (1 unless its templates say otherwise)."""
        prompt = self._check_text("prompt", prompt)
        t = self.templates
        rendered = self._render(t.text_to_image, {"prompt": prompt}, [])
        uncond = self._render(t.unconditional, {}, [])
        sampling = self._sampling(
            "text_to_image", cfg_scale=cfg_scale, temperature=temperature, top_k=top_k, top_p=top_p,
            cfg_window=cfg_window, candidates=candidates,
        )
        return self._image_stream(rendered, uncond, sampling, seed, num_images, preview_every_rows, check=prompt)

    def edit_stream(
        self,
        image,
        instruction: str,
        *,
        seed: int | None = None,
        cfg_scale: float | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        num_images: int = 1,
        cfg_window: tuple[float, float] | None = None,
        preview_every_rows: int | None = None,
    ) -> Iterator[ImageStreamEvent]:
        """With an ``edit_plan`` template the model first writes the edited scene as text (greedy; every event's
        ``plan``), then draws it."""
        instruction = self._check_text("instruction", instruction)
        codes = self._encode_image("image", image)
        t = self.templates
        uncond = self._render(t.edit_unconditional, {}, [codes] * t.edit_unconditional.count("<image>"))
        sampling = self._sampling(
            "edit", cfg_scale=cfg_scale, temperature=temperature, top_k=top_k, top_p=top_p, cfg_window=cfg_window
        )
        if not t.edit_plan:
            rendered = self._render(t.edit, {"instruction": instruction}, [codes])
            return self._image_stream(rendered, uncond, sampling, seed, num_images, preview_every_rows)
        rendered = self._render(t.edit_plan, {"instruction": instruction}, [codes])
        return self._image_stream(rendered, uncond, sampling, seed, num_images, preview_every_rows,
                                  plan_tokens=t.max_text_tokens)

    def _image_stream(
        self,
        rendered: RenderedPrompt,
        uncond: RenderedPrompt,
        sampling: SamplingConfig,
        seed: int | None,
        num_images: int,
        preview_every_rows: int | None,
        check: str | None = None,
        plan_tokens: int = 0,
    ) -> Iterator[ImageStreamEvent]:
        """``check``: the prompt the self-check scores candidates against (text to image). ``plan_tokens`` > 0:
        the model first writes a plan of at most that many tokens after ``rendered`` (edits with an
        ``edit_plan`` template), then draws."""
        if isinstance(num_images, bool) or not isinstance(num_images, int) or not 1 <= num_images <= MAX_IMAGES_PER_PROMPT:
            raise ValueError(f"num_images must be an integer in [1, {MAX_IMAGES_PER_PROMPT}], got {num_images!r}")
        if preview_every_rows is not None and (
            isinstance(preview_every_rows, bool) or not isinstance(preview_every_rows, int) or preview_every_rows < 0
        ):
            raise ValueError(
                "preview_every_rows must be None (adaptive) or an integer >= 0 (0: no decoded previews), "
                f"got {preview_every_rows!r}"
            )
        h, w = self.grid_hw
        image_tokens = len(self.builder.code_ids(torch.zeros(h, w, dtype=torch.long)))  # codes (+ separators)
        self._check_context(len(rendered.ids), plan_tokens + image_tokens, "the prompt")
        self._check_context(len(uncond.ids), image_tokens, "the prompt")
        seed = self._seed(seed)
        if sampling.candidates > 1:
            if check is None:
                raise ValueError("candidates > 1 (the self-check) applies to text to image only")
            self._check_context(len(self._render(self.templates.caption, {}, [torch.zeros(h, w, dtype=torch.long)]).ids)
                                + len(self.builder.text_ids(" " + check, user=True)), 0, "the self-check's caption")
        return self._run_image_stream(rendered.ids, uncond.ids, sampling, seed, num_images, preview_every_rows,
                                      check if sampling.candidates > 1 else None, plan_tokens)

    def _run_image_stream(self, ids, uncond_ids, sampling, seed, num_images, preview_every_rows, check, plan_tokens):
        from .vq import StreamingPreview

        h, w = self.grid_hw
        k = sampling.candidates if check is not None else 1
        start = time.perf_counter()
        plan = None
        if plan_tokens:  # greedy, once for every image; the codes follow the plan's <|vision_start|>
            written = write_plans(self.model, [ids], vision_start_id=self.vision_start_id,
                                  banned_ids=self.end_ids | {self.vision_end_id}, max_new_tokens=plan_tokens,
                                  pad_id=self.pad_id)[0]
            plan = self.tokenizer.decode(written[:-1], skip_special_tokens=True).strip()
            ids = ids + written
        schedule = PreviewSchedule(preview_every_rows)
        previews = [StreamingPreview(self.image_tokenizer, (h, w)) for _ in range(num_images * k)]
        stream = generate_image_stream(
            self.model,
            [ids] * (num_images * k),
            grid_hw=(h, w),
            sampling=sampling,
            unconditional=uncond_ids,
            generator=self._generator(seed),
            pad_id=self.pad_id,
        )
        try:
            mark = time.perf_counter()
            for event in stream:
                for preview, code in zip(previews, event.codes.tolist()):
                    preview.add(code)
                step = event.step + 1
                last = step == h * w
                decoded = None
                if step % w == 0 and not last:
                    now = time.perf_counter()
                    schedule.generated(now - mark)
                    if schedule.due(step // w):
                        decoded = [p.decoded() for p in previews]
                        mark = time.perf_counter()
                        schedule.decoded(mark - now)
                    else:
                        mark = now
                images = sequence = chosen = scores = None
                if last:
                    grids = event.grid.cpu()
                    if k > 1:
                        scores = [caption_scores(self.model, self.builder, self.templates.caption,
                                                 grids[i * k : (i + 1) * k], check) for i in range(num_images)]
                        chosen = [int(s.argmax()) for s in scores]
                        grids = torch.stack([grids[i * k + c] for i, c in enumerate(chosen)])
                        scores = [s.tolist() for s in scores]
                    images = self.image_tokenizer.decode_batch(grids)
                    sequence = ids + self.builder.code_ids(grids[0])
                yield ImageStreamEvent(
                    step=step,
                    total=h * w,
                    elapsed=time.perf_counter() - start,
                    seed=seed,
                    grids=event.grid,
                    mosaics=[p.mosaic() for p in previews],
                    decoded=decoded,
                    images=images,
                    sequence_ids=sequence,
                    candidates=k,
                    chosen=chosen,
                    scores=scores,
                    plan=plan,
                )
        finally:
            stream.close()

    def text_to_image(self, prompt: str, **kwargs) -> list[Image.Image]:
        return _last(self.text_to_image_stream(prompt, preview_every_rows=0, **kwargs)).images

    def edit(self, image, instruction: str, **kwargs) -> Image.Image:
        return _last(self.edit_stream(image, instruction, preview_every_rows=0, **kwargs)).images[0]

    # ----------------------------------------------------------------------------------------------
    # Text generation
    def caption_stream(self, image, **kwargs) -> Iterator[TextStreamEvent]:
        codes = self._encode_image("image", image)
        return self._text_stream(self._render(self.templates.caption, {}, [codes]), **kwargs)

    def answer_stream(self, image, question: str, **kwargs) -> Iterator[TextStreamEvent]:
        question = self._check_text("question", question)
        codes = self._encode_image("image", image)
        return self._text_stream(self._render(self.templates.answer, {"question": question}, [codes]), **kwargs)

    def few_shot_layout(self, examples: list[tuple[Any, str]], query) -> tuple[RenderedPrompt, TokenLayout]:
        """The interleaved prompt for ``examples`` (image, text) and a ``query`` image, and its layout."""
        if not isinstance(examples, (list, tuple)) or not 1 <= len(examples) <= MAX_FEW_SHOT_EXAMPLES:
            raise ValueError(f"examples must be a list of 1 to {MAX_FEW_SHOT_EXAMPLES} (image, text) pairs")
        ids, segments = [], []
        for i, example in enumerate(examples):
            if not isinstance(example, (list, tuple)) or len(example) != 2:
                raise ValueError(f"example {i + 1} must be an (image, text) pair")
            image, text = example
            text = self._check_text(f"example {i + 1} text", text)
            part = self._render(self.templates.few_shot_example, {"text": text}, [self._encode_image(f"example {i + 1} image", image)])
            ids += part.ids
            segments += part.segments
        part = self._render(self.templates.few_shot_query, {}, [self._encode_image("query image", query)])
        rendered = RenderedPrompt(ids + part.ids, segments + part.segments)
        return rendered, TokenLayout(rendered.segments, len(rendered.ids))

    def few_shot_stream(self, examples: list[tuple[Any, str]], query, **kwargs) -> Iterator[TextStreamEvent]:
        rendered, _ = self.few_shot_layout(examples, query)
        return self._text_stream(rendered, **kwargs)

    def _text_stream(
        self,
        rendered: RenderedPrompt,
        *,
        seed: int | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        max_new_tokens: int | None = None,
    ) -> Iterator[TextStreamEvent]:
        max_new_tokens = max_new_tokens if max_new_tokens is not None else self.templates.max_text_tokens
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
            raise ValueError(f"max_new_tokens must be an integer in [1, {MAX_NEW_TOKENS}], got {max_new_tokens!r}")
        sampling = self._sampling("text", temperature=temperature, top_k=top_k, top_p=top_p)
        self._check_context(len(rendered.ids), max_new_tokens, "the prompt")
        seed = self._seed(seed)
        return self._run_text_stream(rendered.ids, sampling, seed, max_new_tokens)

    def _run_text_stream(self, ids, sampling, seed, max_new_tokens):
        start = time.perf_counter()
        stream = generate_text_stream(
            self.model,
            [ids],
            max_new_tokens=max_new_tokens,
            end_ids=self.end_ids,
            banned_ids={self.vision_start_id},
            sampling=sampling,
            generator=self._generator(seed),
            pad_id=self.pad_id,
        )
        answer: list[int] = []
        text = ""
        try:
            for event in stream:
                token = int(event.token_ids[0])
                finished = bool(event.finished[0])
                if not (finished and token in self.end_ids):
                    answer.append(token)
                new_text = self.tokenizer.decode(answer, skip_special_tokens=True).strip()
                done = finished or event.step + 1 == max_new_tokens
                yield TextStreamEvent(
                    step=event.step + 1,
                    text=new_text,
                    delta=new_text[len(text) :] if new_text.startswith(text) else new_text,
                    done=done,
                    elapsed=time.perf_counter() - start,
                    seed=seed,
                    sequence_ids=ids + answer if done else None,
                )
                text = new_text
        finally:
            stream.close()

    def caption(self, image, **kwargs) -> str:
        return _last(self.caption_stream(image, **kwargs)).text

    def answer(self, image, question: str, **kwargs) -> str:
        return _last(self.answer_stream(image, question, **kwargs)).text

    def few_shot(self, examples: list[tuple[Any, str]], query, **kwargs) -> str:
        return _last(self.few_shot_stream(examples, query, **kwargs)).text

    # ----------------------------------------------------------------------------------------------
    # Routing
    def trace(self, sequence_ids: list[int]) -> RoutingTrace:
        """Per-layer modality routing of a sequence (e.g. an event's ``sequence_ids``)."""
        if not sequence_ids:
            raise ValueError("sequence_ids must hold at least one token")
        limit = self.model.config.max_position_embeddings
        if len(sequence_ids) > limit:
            raise ValueError(f"sequence is {len(sequence_ids)} tokens; allowed: at most {limit}")
        return trace_routing(self.model, sequence_ids)

    def token_labels(self, sequence_ids: list[int]) -> list[str]:
        """A short label per token: text pieces, ``<|vision_start|>``, and ``#code`` for image codes."""
        first = self.model.config.real_text_vocab_size
        return [
            f"#{i - first}" if i >= first else self.tokenizer.convert_ids_to_tokens(i) or f"<{i}>" for i in sequence_ids
        ]

    def describe(self) -> dict[str, Any]:
        """What is loaded: id, split, parameters per branch, dtype, 8-bit, device, memory."""
        cfg, inner = self.model.config, self.model.model
        count = lambda modules: sum(p.numel() for m in modules for p in m.parameters())
        split_text = [inner.layers[d] for d in sorted(inner.split_depths)]
        shared = [inner.layers[d] for d in range(cfg.num_hidden_layers) if d not in inner.split_depths]
        vision = list(inner.vision_encode_layers) + list(inner.vision_decode_layers)
        quantized = any("8bit" in type(m).__name__ for m in self.model.modules())
        return {
            "model": self.name,
            "family": self.templates.family,
            "backbone": cfg.backbone,
            "layers": cfg.num_hidden_layers,
            "split": f"{cfg.num_vision_encode_layers}:{cfg.num_vision_decode_layers} of {cfg.num_hidden_layers}",
            "parameters": {
                "total": sum(p.numel() for p in self.model.parameters()),
                "text_branch": count(split_text),
                "vision_branch": count(vision),
                "shared_layers": count(shared),
                "embeddings_and_head": count([inner.embed_tokens, self.model.lm_head, inner.norm]),
            },
            "dtype": str(self.model.dtype).replace("torch.", ""),
            "load_in_8bit": quantized,
            "device": str(self.device),
            "memory_bytes": self.model.get_memory_footprint(),
            "image_size": self.image_size,
            "image_grid": list(self.grid_hw),
            "codebook_size": self.image_tokenizer.codebook_size,
            "text_vocab_size": cfg.real_text_vocab_size,
            "row_separator": None if cfg.separator is None else f"{cfg.vis_sep_tokens} after every {cfg.vis_sep_lens} codes",
        }


def _last(stream):
    event = None
    for event in stream:
        pass
    return event
