"""Pool evaluation files per run and compare runs paired by seed: the tables of the model card.

    python scripts/compare_runs.py --run shipped 'runs/xe4.s*.json' --run tried 'runs/xw0.s*.json' \
        [--run ... ] [--pair tried shipped] [--pair ...] [--json out.json]

Each file is one ``scripts/evaluate_embedded.py CKPT --seed S --n N [--tasks ...] --json F`` of the run. Per run
and task the counts are pooled over every file holding the task (the card's "edits /800" adds an edits-only
seed to three full ones); the average pools all five tasks over the files that hold all five ("average /500").
``--pair NEW OLD`` prints NEW minus OLD per task and on the average, in points. Paired runs must have been
evaluated on the same (split, seed, n) per task with the same image sampling settings, or the comparison
stops: a difference between runs scored on different samples measures the samples. With two or more pairs
it also prints, per task, the differences' mean, standard deviation and how many are above zero, and each
side pooled over its runs (a run in several pairs counted once). Run-to-run spread is the yardstick: read a
mean difference against its sd.
"""

from __future__ import annotations

import argparse
import glob
import json
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from unix_core.training.evaluate import EVAL_TASKS as TASKS  # noqa: E402  (the tasks evaluate_embedded writes)

AVERAGE = "average"


@dataclass
class RunScores:
    """One run's counts pooled over its evaluation files, and which samples they came from."""

    name: str
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)  # task or AVERAGE -> (correct, total)
    samples: dict[str, list[tuple]] = field(default_factory=dict)  # task -> sorted (split, seed, n)
    sampling: object = None
    files: list[str] = field(default_factory=list)

    def share(self, key: str) -> float | None:
        c, n = self.counts.get(key, (0, 0))
        return c / n if n else None


def load_run(name: str, paths: list[str]) -> RunScores:
    if not paths:
        raise ValueError(f"run {name!r}: no evaluation files")
    run = RunScores(name)
    average = [0, 0]
    for path in sorted(paths):
        data = json.loads(Path(path).read_text())
        settings = data.get("settings") or {}
        tasks = [t for t in TASKS if t in data]
        if not tasks:
            raise ValueError(f"{path}: no task scores (expected keys among {list(TASKS)}); "
                             "is it a scripts/evaluate_embedded.py --json file?")
        sampling = settings.get("image_sampling")
        if run.files and sampling != run.sampling:
            raise ValueError(f"run {name!r}: {path} was sampled with {sampling}, {run.files[0]} with {run.sampling}")
        run.sampling = sampling
        run.files.append(path)
        key = (settings.get("split"), settings.get("seed"), settings.get("n"))
        for t in tasks:
            c, n = run.counts.get(t, (0, 0))
            run.counts[t] = (c + int(data[t]["correct"]), n + int(data[t]["total"]))
            run.samples.setdefault(t, []).append(key)
        if len(tasks) == len(TASKS):  # a full evaluation: it counts towards the average
            average[0] += sum(int(data[t]["correct"]) for t in tasks)
            average[1] += sum(int(data[t]["total"]) for t in tasks)
    for t in run.samples:
        if len(set(run.samples[t])) != len(run.samples[t]):
            raise ValueError(f"run {name!r}: task {t} is evaluated twice on the same (split, seed, n) "
                             f"{run.samples[t]}; pass each evaluation once")
        run.samples[t].sort(key=repr)
    if average[1]:
        run.counts[AVERAGE] = tuple(average)
    return run


def paired(new: RunScores, old: RunScores) -> dict[str, float]:
    """NEW minus OLD in points, per task and on the average; stops unless both saw the same samples."""
    if new.sampling != old.sampling:
        raise ValueError(f"{new.name!r} and {old.name!r} were sampled with different settings: "
                         f"{new.sampling} against {old.sampling}")
    for t in set(new.samples) | set(old.samples):
        if new.samples.get(t) != old.samples.get(t):
            raise ValueError(f"{new.name!r} and {old.name!r} were not evaluated on the same samples for {t}: "
                             f"(split, seed, n) {new.samples.get(t)} against {old.samples.get(t)}")
    return {key: 100 * (new.share(key) - old.share(key))
            for key in (*TASKS, AVERAGE) if new.share(key) is not None and old.share(key) is not None}


def _cell(run: RunScores, key: str) -> str:
    c, n = run.counts.get(key, (0, 0))
    return f"{c}/{n} = {100 * c / n:.1f}%" if n else "-"


def _head(first: str, keys: list[str]) -> list[str]:
    return [f"| {first} | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]


def report(runs: dict[str, RunScores], pairs: list[tuple[str, str]]) -> tuple[str, dict]:
    keys = [k for k in (*TASKS, AVERAGE) if any(k in r.counts for r in runs.values())]
    lines = _head("run", keys)
    lines += [f"| {r.name} | " + " | ".join(_cell(r, k) for k in keys) + " |" for r in runs.values()]
    result: dict = {"runs": {r.name: {k: list(v) for k, v in r.counts.items()} for r in runs.values()}, "pairs": []}
    if pairs:
        diffs = [(new, old, paired(runs[new], runs[old])) for new, old in pairs]
        lines += ["", "Paired differences, points (new minus old):", "", *_head("new − old", keys)]
        for new, old, d in diffs:
            lines.append(f"| {new} − {old} | " + " | ".join(f"{d[k]:+.1f}" if k in d else "-" for k in keys) + " |")
            result["pairs"].append({"new": new, "old": old, "points": d})
        if len(diffs) >= 2:
            summary = {}
            for k in keys:
                values = [d[k] for _, _, d in diffs if k in d]
                if len(values) < 2:
                    continue
                pooled = []
                for side in (0, 1):  # each run once, though several pairs may share one
                    names = [name for name in dict.fromkeys(p[side] for p in pairs) if k in runs[name].counts]
                    pooled.append((sum(runs[name].counts[k][0] for name in names),
                                   sum(runs[name].counts[k][1] for name in names)))
                summary[k] = {"mean": statistics.mean(values), "sd": statistics.stdev(values),
                              "above_zero": sum(v > 0 for v in values), "pairs": len(values),
                              "pooled_new": pooled[0], "pooled_old": pooled[1]}
            lines += ["", *_head("over the pairs", ["mean", "sd", "above zero", "new pooled", "old pooled"])]
            for k, s in summary.items():
                (cn, nn), (co, no) = s["pooled_new"], s["pooled_old"]
                lines.append(f"| {k} | {s['mean']:+.1f} | {s['sd']:.1f} | {s['above_zero']}/{s['pairs']} | "
                             f"{cn}/{nn} = {100 * cn / nn:.1f}% | {co}/{no} = {100 * co / no:.1f}% |")
            result["over_pairs"] = summary
    return "\n".join(lines), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", nargs="+", action="append", required=True, metavar=("NAME", "FILE"),
                        help="a run's name, then its evaluation JSON files (globs are expanded)")
    parser.add_argument("--pair", nargs=2, action="append", default=[], metavar=("NEW", "OLD"),
                        help="compare NEW with OLD (both names given to --run)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    runs: dict[str, RunScores] = {}
    try:
        for name, *patterns in args.run:
            if name in runs:
                raise ValueError(f"run {name!r} is given twice")
            paths = [p for pattern in patterns for p in (sorted(glob.glob(pattern)) or [pattern])]
            missing = [p for p in paths if not Path(p).is_file()]
            if missing:
                raise ValueError(f"run {name!r}: no such file {missing[0]}")
            runs[name] = load_run(name, paths)
        for new, old in args.pair:
            unknown = [n for n in (new, old) if n not in runs]
            if unknown:
                raise ValueError(f"--pair names {unknown[0]!r}, which is not a --run (runs: {sorted(runs)})")
        text, result = report(runs, [tuple(p) for p in args.pair])
    except ValueError as err:
        print(f"compare_runs: {err}", file=sys.stderr)
        return 2
    print(text)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
