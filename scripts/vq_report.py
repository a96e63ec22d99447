"""Score an image tokenizer for the shapes world: judge acceptance of held-out reconstructions, and how
predictable its codes for flat background are (distinct codes and entropy per background colour).

    python scripts/vq_report.py assets/unix-shapes [--images 200] [--scenes 300]

Both matter to the LM: the first caps text-to-image and edit scores, the second is loss the LM can never
remove (the shipped tokenizer: 198/200 and 0.00 bits per flat patch; the 8x8-grid one before it: 187/200 and 0.13
bits; its whole-image predecessor: 111/200 and 4.45 bits; see the model card).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="folder with vq_config.json + vq_model.safetensors")
    parser.add_argument("--images", type=int, default=200, help="held-out reconstructions to judge")
    parser.add_argument("--scenes", type=int, default=300, help="training scenes for the flat-patch statistics")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from unix_core.training.embedded import flat_patch_code_entropy, vq_judge_acceptance
    from unix_core.vq import VQImageTokenizer

    vq = VQImageTokenizer.from_pretrained(args.folder)
    judged = vq_judge_acceptance(vq, args.images, seed=args.seed + 1)
    flat = flat_patch_code_entropy(vq, args.scenes, seed=args.seed)
    print(f"judge accepts {judged['accepted']}/{judged['images']} held-out reconstructions; failures {judged['failures']}")
    print(f"flat background patches: {flat['mean_entropy_bits']:.2f} bits per patch on average")
    for colour, v in flat["per_colour"].items():
        print(f"  {colour:7s} {v['patches']:5d} patches  {v['codes']:3d} distinct codes  {v['entropy_bits']:.2f} bits")
    print(json.dumps({"judge": {k: judged[k] for k in ("accepted", "images")}, "flat": flat["mean_entropy_bits"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
