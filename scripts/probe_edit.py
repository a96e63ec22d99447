"""Where editing goes wrong for an embedded shapes-world checkpoint: teacher-forced target codes, split into the
cells the edit changes and the cells it must copy from the source image.

    python scripts/probe_edit.py assets/unix-shapes [--n 300] [--seed 7] [--split heldout]

Each edit (``edit_samples(n, seed, split)``) is rendered in the checkpoint's own prompt layout with its true
target codes, and every target code is predicted (argmax over the codebook) from the true codes before it.
A target cell is "changed" when its code differs from the source image's code at the same cell, else "copied".
Errors on copied cells are located: on a kept object's first code row (in raster order, where the model first
meets an object of the source it has to keep), on its later rows, or on background; and counted when the
prediction is the scene's background code (the model starts erasing what it should keep). Kept objects are
also counted by how they resemble the object the edit changes (same shape, same colour, neither; or none
changed, as in additions and background edits), with how many of them get a copy error. "Targets all right"
counts edits whose every code is predicted right. The figures are in the shipped model's card.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def relation(kept, edited) -> str:
    """How a kept object resembles the edited one (the object the instruction names)."""
    if kept.shape == edited.shape:
        return "same shape and colour" if kept.color == edited.color else "same shape"
    return "same colour" if kept.color == edited.color else "shape and colour differ"


def probe(folder: Path, n: int, seed: int = 7, split: str = "heldout") -> dict:
    import torch

    from unix_core.templates import load_templates
    from unix_core.training.data import SequenceBuilder, vq_scene_encoder
    from unix_core.training.evaluate import load_checkpoint
    from unix_core.world import edit_samples

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from probe_generation import background_codes, object_cells

    model, tokenizer, vq = load_checkpoint(folder)
    first_id = model.config.real_text_vocab_size
    builder = SequenceBuilder(tokenizer, templates=load_templates(folder), real_text_vocab_size=first_id,
                              separator=model.config.separator)
    samples = list(edit_samples(n, seed=seed, split=split))
    encode = vq_scene_encoder(vq)
    sources, targets = encode([s.source for s in samples]), encode([s.target for s in samples])
    plain = background_codes(vq)
    width = vq.grid_size
    count: Counter = Counter()  # edits and copy errors
    hits: Counter = Counter()  # per group of cells (changed, copied, by kind): right predictions
    total: Counter = Counter()  # per group of cells: cells
    loss_sum: Counter = Counter()
    for sample, source, target in zip(samples, sources, targets):
        sequence = builder.edit(source, sample.instruction, target)
        labels = torch.tensor(sequence.labels)
        at = torch.nonzero((labels >= first_id) & (labels < first_id + vq.codebook_size)).flatten()
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([sequence.input_ids[: int(at[-1])]])).logits[0]
        logits = logits[at - 1, first_id : first_id + vq.codebook_size].float()
        src, tgt = source.flatten(), target.flatten()
        predicted = logits.argmax(-1).cpu()
        losses = torch.nn.functional.cross_entropy(logits, tgt.to(logits.device), reduction="none").cpu()
        right, changed = predicted == tgt, tgt != src
        copy_error = ~changed & ~right
        for name, mask in (("changed", changed), ("copied", ~changed)):
            for key in (name, f"{sample.kind} {name}"):
                hits[key] += int(right[mask].sum())
                total[key] += int(mask.sum())
                loss_sum[key] += float(losses[mask].sum())
        count["edits"] += 1
        count["targets all right"] += bool(right.all())
        count["changed cells all right"] += bool(right[changed].all())
        first_row, later_rows = set(), set()
        edited = [o for o in sample.source.objects if o not in sample.target.objects]
        for obj, cells in object_cells(sample.source, width, vq.config.input_box):
            top = min(c // width for c in cells)
            first_row.update(c for c in cells if c // width == top)
            later_rows.update(c for c in cells if c // width != top)
            if obj in sample.target.objects:  # kept: is it like the object the instruction names?
                like = relation(obj, edited[0]) if edited else "no object edited"
                count[f"kept objects: {like}"] += 1
                count[f"kept objects with a copy error: {like}"] += bool(copy_error[cells].any())
        background = plain[sample.source.background]
        for cell in torch.nonzero(copy_error).flatten().tolist():
            where = ("object first row" if cell in first_row
                     else "object later rows" if cell in later_rows else "background")
            count[f"copy errors: {where}"] += 1
            count["copy errors: predicted background"] += int(predicted[cell]) == background
            count[f"copy errors: {sample.kind}"] += 1
    out: dict = dict(sorted(count.items()))
    for key in sorted(total):
        n_cells = total[key]
        out[key] = {"right": hits[key], "total": n_cells,
                    "accuracy": hits[key] / n_cells if n_cells else float("nan"),
                    "loss": loss_sum[key] / n_cells if n_cells else float("nan")}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--n", type=int, default=300, help="edits")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--split", default="heldout", choices=["heldout", "train"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    if not args.checkpoint.is_dir():
        parser.error(f"{args.checkpoint} is not a checkpoint folder")
    if args.n < 1:
        parser.error(f"--n must be at least 1, got {args.n}")
    result = probe(args.checkpoint, args.n, args.seed, args.split)
    for key in ("changed", "copied"):
        r = result[key]
        print(f"teacher-forced {key} cells: {r['right']}/{r['total']} = {r['accuracy']:.2%}, loss {r['loss']:.4f}")
    print(f"targets all right: {result['targets all right']}/{result['edits']}; changed cells all right: "
          f"{result['changed cells all right']}/{result['edits']}")
    errors = {k.split(": ", 1)[1]: v for k, v in result.items() if k.startswith("copy errors: ")}
    print("copy errors: " + ", ".join(f"{k} {v}" for k, v in errors.items()))
    kept = {k.split(": ", 1)[1]: v for k, v in result.items() if k.startswith("kept objects: ")}
    print("kept objects with a copy error, by likeness to the edited object: " + ", ".join(
        f"{k} {result.get(f'kept objects with a copy error: {k}', 0)}/{v}" for k, v in kept.items()))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
