"""Where text-to-image goes wrong for an embedded shapes-world checkpoint: teacher-forced code accuracy split by
the first code, background patches and object patches, and greedy generation given the true first code.

    python scripts/probe_generation.py assets/unix-shapes [--n 100] [--split heldout]

Teacher forcing feeds the true codes of each held-out prompt's scene and counts argmax hits: the first code
(predicted from ``<|vision_start|>``, so from the prompt alone), codes of background patches (the code a
plain canvas of the background colour gets), and the rest (patches with some object). "Oracle first code" then
decodes greedily after the true first code and asks the judge, which separates a wrong background from
wrong objects. The shipped model's figures are in its model card.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def probe(folder: Path, n: int, split: str, seed: int = 0) -> dict:
    import torch
    from PIL import Image

    from unix_core.generation import generate_image_stream
    from unix_core.sampling import SamplingConfig
    from unix_core.training.data import SequenceBuilder, to_canvas, vq_scene_encoder
    from unix_core.training.evaluate import _drain_image, load_checkpoint
    from unix_core.world import judge, prompt_samples
    from unix_core.world.scene import CANVAS_SIZE, COLORS

    from unix_core.config import resolve_separator

    model, tokenizer, vq = load_checkpoint(folder)
    resolve_separator(model.config, tokenizer)
    first_id = model.config.real_text_vocab_size
    builder = SequenceBuilder(tokenizer, real_text_vocab_size=first_id, separator=model.config.separator)
    samples = list(prompt_samples(n, seed=seed, split=split))
    codes = vq_scene_encoder(vq)([s.scene for s in samples])
    plain = {c: vq.encode(Image.new("RGB", (CANVAS_SIZE, CANVAS_SIZE), COLORS[c])).flatten()[0] for c in COLORS}
    hits = {"first_code": [0, 0], "background_codes": [0, 0], "object_codes": [0, 0]}
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
        drawn = _drain_image(generate_image_stream(
            model, [sequence.input_ids[:start]], grid_hw=tuple(grid.shape), sampling=greedy, given=[int(flat[0])],
            generator=torch.Generator().manual_seed(seed), pad_id=tokenizer.eos_token_id))
        image = vq.decode_batch(drawn.cpu())[0]
        accepted += judge(to_canvas(image), sample.prompt, partial=True).ok
    out = {key: {"right": r, "total": t, "accuracy": r / t if t else float("nan")} for key, (r, t) in hits.items()}
    out["oracle_first_code_greedy_accepted"] = {"accepted": accepted, "total": n}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--n", type=int, default=100, help="held-out prompts")
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
    o = result["oracle_first_code_greedy_accepted"]
    print(f"greedy after the true first code: judge accepts {o['accepted']}/{o['total']}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
