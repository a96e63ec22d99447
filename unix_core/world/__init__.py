"""The shapes world (spec: /work/shared/SHAPES_WORLD.md, v1): scenes, rendering, task data, split, judge.

Modules, one concept each:
- `scene`: vocabulary, `Obj`, `Scene`, canonical caption and `parse_caption`;
- `prompt`: partial captions for text-to-image (`parse_prompt`, `SceneSpec`, `make_prompt`);
- `render`: alias-free 64x64 rasteriser;
- `split`: the train / held-out rule and the split-aware scene sampler;
- `tasks`, `vqa`, `edits`, `fewshot`, `text`: seeded task generators and reference answerers;
- `judge`: pixel-level scene reader and caption judge; `metrics`: text match functions.

Importing this package does no work; it depends on numpy and PIL only.
"""

from .edits import EDIT_KINDS, EditSample, apply_edit, edit_samples
from .fewshot import FEWSHOT_WORDINGS, FewShotEpisode, fewshot_answer, fewshot_episodes
from .judge import JudgeResult, Reading, judge, read_scene, read_scene_detailed
from .metrics import accuracy, caption_match, fewshot_match, vqa_match
from .prompt import PROMPT_VARIANTS, ObjSpec, SceneSpec, make_prompt, parse_prompt
from .render import render, render_array
from .scene import CANVAS_SIZE, COLORS, POSITIONS, SHAPES, SIZES, Obj, Scene, parse_caption
from .split import SPLITS, is_heldout_key, sample_scene, scene_split
from .tasks import CaptionSample, PromptSample, caption_samples, prompt_samples
from .text import text_corpus, vocabulary, words
from .vqa import VQA_KINDS, VQASample, answer_question, vqa_samples

__all__ = [
    "CANVAS_SIZE", "COLORS", "POSITIONS", "SHAPES", "SIZES", "Obj", "Scene", "parse_caption",
    "PROMPT_VARIANTS", "ObjSpec", "SceneSpec", "make_prompt", "parse_prompt",
    "render", "render_array",
    "SPLITS", "is_heldout_key", "sample_scene", "scene_split",
    "CaptionSample", "PromptSample", "caption_samples", "prompt_samples",
    "VQA_KINDS", "VQASample", "answer_question", "vqa_samples",
    "EDIT_KINDS", "EditSample", "apply_edit", "edit_samples",
    "FEWSHOT_WORDINGS", "FewShotEpisode", "fewshot_answer", "fewshot_episodes",
    "text_corpus", "vocabulary", "words",
    "JudgeResult", "Reading", "judge", "read_scene", "read_scene_detailed",
    "accuracy", "caption_match", "fewshot_match", "vqa_match",
]
