"""Where text-to-image goes wrong for an embedded shapes-world checkpoint: teacher-forced code accuracy split by
the first code, background patches and object patches, then per object, and greedy generation given the true
first code.

    python scripts/probe_generation.py assets/unix-shapes [--n 100] [--split heldout]

Teacher forcing feeds the true codes of each prompt's scene and counts argmax hits over the codebook: the first
code (predicted from ``<|vision_start|>``, so from the prompt alone), codes of background patches (the code a
plain canvas of the background colour gets), and the rest (patches with some object).

Per object, the patches it touches are split into its first one in raster order (where the model has to
decide that an object starts) and the later ones, and objects into those whose (shape, colour, position) key
is held out of training and those whose key is trained (a held-out scene has one object drawn from the
held-out keys; the others may have any key). "Predicted background" at the first patch means the model did not start the object there.

"Oracle first code" then decodes greedily after the true first code and asks the judge, which separates a
wrong background from wrong objects. The shipped model's figures are in its model card.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def object_cells(scene, grid: int, box=None) -> list[tuple[object, list[int]]]:
    """Each object of ``scene`` with the raster indices of the code cells its pixels touch."""
    import numpy as np

    from unix_core.training.embedded import flat_cells
    from unix_core.world import render
    from unix_core.world.scene import COLORS, Scene

    out = []
    for obj in scene.objects:
        pixels = np.asarray(render(Scene(scene.background, (obj,))).convert("RGB"), dtype=np.int32)
        background = (pixels == np.array(COLORS[scene.background])).all(-1)
        out.append((obj, np.flatnonzero(~flat_cells(background, grid, box).flatten()).tolist()))
    return out


def background_codes(vq) -> dict[str, int]:
    """The code a plain canvas of each world colour gets (one code per colour with the shipped tokenizer)."""
    from PIL import Image

    from unix_core.world.scene import CANVAS_SIZE, COLORS

    return {c: int(vq.encode(Image.new("RGB", (CANVAS_SIZE, CANVAS_SIZE), COLORS[c])).flatten()[0]) for c in COLORS}


def probe(folder: Path, n: int, split: str, seed: int = 0) -> dict:
    import torch

    from unix_core.generation import generate_image_stream
    from unix_core.sampling import SamplingConfig
    from unix_core.training.data import SequenceBuilder, to_canvas, vq_scene_encoder
    from unix_core.training.evaluate import _drain_image, load_checkpoint
    from unix_core.world import judge, prompt_samples
    from unix_core.world.split import is_heldout_key

    model, tokenizer, vq = load_checkpoint(folder)
    first_id = model.config.real_text_vocab_size
    builder = SequenceBuilder(tokenizer, real_text_vocab_size=first_id, separator=model.config.separator)
    samples = list(prompt_samples(n, seed=seed, split=split))
    codes = vq_scene_encoder(vq)([s.scene for s in samples])
    plain = background_codes(vq)
    hits = {"first_code": [0, 0], "background_codes": [0, 0], "object_codes": [0, 0]}
    objects = {kind: {"objects": 0, "first_patch_right": 0, "first_patch_background": 0, "later_patches": 0,
                      "later_patches_right": 0, "whole_object_right": 0} for kind in ("heldout_key", "trained_key")}
    accepted = 0
    greedy = SamplingConfig(cfg_scale=1.0, temperature=0.0)
    for sample, grid in zip(samples, codes):
        flat = grid.flatten()
        sequence = builder.text_to_image(sample.prompt, grid)
        # where each code sits in the sequence (row separators, if any, sit between them)
        at = torch.tensor([i for i, t in enumerate(sequence.input_ids) if t >= first_id])
        start = int(at[0])
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([sequence.input_ids[: int(at[-1])]])).logits[0]
        predicted = logits[at - 1, first_id : first_id + vq.codebook_size].argmax(-1).cpu()
        right = predicted == flat
        background = flat == plain[sample.scene.background]
        later = torch.arange(flat.numel()) > 0
        for key, mask in (("first_code", ~later), ("background_codes", background & later),
                          ("object_codes", ~background & later)):
            hits[key][0] += int(right[mask].sum())
            hits[key][1] += int(mask.sum())
        for obj, cells in object_cells(sample.scene, vq.grid_size, vq.config.input_box):
            o = objects["heldout_key" if is_heldout_key(obj.shape, obj.color, obj.position) else "trained_key"]
            o["objects"] += 1
            o["first_patch_right"] += int(right[cells[0]])
            o["first_patch_background"] += int(predicted[cells[0]] == plain[sample.scene.background])
            o["later_patches"] += len(cells) - 1
            o["later_patches_right"] += int(right[cells[1:]].sum())
            o["whole_object_right"] += int(right[cells].all())
        drawn = _drain_image(generate_image_stream(
            model, [sequence.input_ids[:start]], grid_hw=tuple(grid.shape), sampling=greedy, given=[int(flat[0])],
            generator=torch.Generator().manual_seed(seed), pad_id=tokenizer.eos_token_id))
        image = vq.decode_batch(drawn.cpu())[0]
        accepted += judge(to_canvas(image, vq.config.input_box), sample.prompt, partial=True).ok
    out = {key: {"right": r, "total": t, "accuracy": r / t if t else float("nan")} for key, (r, t) in hits.items()}
    out["objects"] = objects
    out["oracle_first_code_greedy_accepted"] = {"accepted": accepted, "total": n}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--n", type=int, default=100, help="prompts")
    parser.add_argument("--split", default="heldout", choices=["heldout", "train"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    if not args.checkpoint.is_dir():
        parser.error(f"{args.checkpoint} is not a checkpoint folder")
    result = probe(args.checkpoint, args.n, args.split)
    for key in ("first_code", "background_codes", "object_codes"):
        r = result[key]
        print(f"teacher-forced {key.replace('_', ' '):17s} {r['right']:5d}/{r['total']:<5d} = {r['accuracy']:.1%}")
    for kind, o in result["objects"].items():
        if o["objects"]:
            print(f"{kind.replace('_', ' ')} objects ({o['objects']}): first patch right "
                  f"{o['first_patch_right'] / o['objects']:.0%} (predicted background "
                  f"{o['first_patch_background'] / o['objects']:.0%}), later patches right "
                  f"{o['later_patches_right'] / max(o['later_patches'], 1):.0%}, whole object right "
                  f"{o['whole_object_right'] / o['objects']:.0%}")
    o = result["oracle_first_code_greedy_accepted"]
    print(f"greedy after the true first code: judge accepts {o['accepted']}/{o['total']}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
