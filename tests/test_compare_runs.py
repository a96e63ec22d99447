"""scripts/compare_runs.py: the card's pooled and paired tables from evaluation files."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "compare_runs.py"
SAMPLING = {"text_to_image": {"cfg_scale": 1.5}, "edit": {"temperature": 0.3}}


@pytest.fixture(scope="module")
def compare():
    spec = importlib.util.spec_from_file_location("compare_runs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["compare_runs"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("compare_runs", None)


def write_eval(path, seed, n, correct, sampling=SAMPLING):
    """An evaluate_embedded --json file: ``correct`` maps task -> count right of n."""
    data = {t: {"correct": c, "total": n, "score": c / n, "failures": [], "by_kind": {}} for t, c in correct.items()}
    data["settings"] = {"n": n, "split": "heldout", "seed": seed, "image_sampling": sampling}
    path.write_text(json.dumps(data))
    return str(path)


def full(values):
    from unix_core.training.evaluate import EVAL_TASKS

    return dict(zip(EVAL_TASKS, values))


def test_pools_each_task_over_its_files_and_the_average_over_full_evaluations(compare, tmp_path):
    files = [write_eval(tmp_path / "a0.json", 0, 100, full([90, 100, 80, 70, 100])),
             write_eval(tmp_path / "a1.json", 1, 100, full([80, 90, 90, 60, 100])),
             write_eval(tmp_path / "a5.json", 5, 300, {"edit": 150})]
    run = compare.load_run("a", files)
    assert run.counts["edit"] == (280, 500)  # 70 + 60 + 150 over the three files that hold edits
    assert run.counts["vqa"] == (170, 200)
    assert run.counts["average"] == (860, 1000)  # the edits-only file is left out of the average
    assert run.samples["edit"] == sorted([("heldout", 0, 100), ("heldout", 1, 100), ("heldout", 5, 300)], key=repr)
    with pytest.raises(ValueError, match="evaluated twice"):
        compare.load_run("a", [files[0], write_eval(tmp_path / "again.json", 0, 100, full([1, 1, 1, 1, 1]))])
    other = write_eval(tmp_path / "other.json", 3, 100, full([1, 1, 1, 1, 1]), sampling={"edit": {"temperature": 1}})
    with pytest.raises(ValueError, match="sampled with"):
        compare.load_run("a", [files[0], other])
    (tmp_path / "junk.json").write_text("{}")
    with pytest.raises(ValueError, match="no task scores"):
        compare.load_run("a", [str(tmp_path / "junk.json")])


def test_paired_differences_need_the_same_samples_and_summarise_over_pairs(compare, tmp_path, capsys):
    def run(name, seeds_values, edit5):
        paths = [write_eval(tmp_path / f"{name}{s}.json", s, 100, full(v)) for s, v in seeds_values]
        paths.append(write_eval(tmp_path / f"{name}5.json", 5, 100, {"edit": edit5}))
        return paths

    old = run("old", [(0, [90, 100, 90, 80, 100]), (1, [90, 100, 90, 70, 100])], 75)
    new_a = run("newa", [(0, [90, 100, 90, 90, 100]), (1, [90, 100, 90, 80, 100])], 85)  # edits +10
    new_b = run("newb", [(0, [80, 100, 90, 70, 100]), (1, [90, 100, 90, 70, 100])], 75)  # edits 0/3 -> -3.3
    runs = {n: compare.load_run(n, p) for n, p in (("old", old), ("new_a", new_a), ("new_b", new_b))}
    d = compare.paired(runs["new_a"], runs["old"])
    assert d["edit"] == pytest.approx(10.0) and d["vqa"] == 0 and d["average"] == pytest.approx(2.0)
    text, result = compare.report(runs, [("new_a", "old"), ("new_b", "old")])
    edit = result["over_pairs"]["edit"]
    assert edit["mean"] == pytest.approx((10.0 - 10 / 3) / 2)
    assert edit["sd"] == pytest.approx(abs(10.0 + 10 / 3) / 2 ** 0.5)
    assert (edit["above_zero"], edit["pairs"]) == (1, 2)
    assert edit["pooled_old"] == (225, 300)  # the shared old run is counted once
    assert edit["pooled_new"] == (255 + 215, 600)
    assert "| new_a − old |" in text and "+10.0" in text

    short = compare.load_run("short", old[:2])  # not evaluated on seed 5
    with pytest.raises(ValueError, match="not evaluated on the same samples for edit"):
        compare.paired(runs["new_a"], short)

    assert compare.main(["--run", "new", str(tmp_path / "newa*.json"), "--run", "old", *old,
                         "--pair", "new", "old", "--json", str(tmp_path / "out.json")]) == 0
    assert json.loads((tmp_path / "out.json").read_text())["pairs"][0]["points"]["edit"] == pytest.approx(10.0)
    capsys.readouterr()
    assert compare.main(["--run", "new", *new_a, "--pair", "new", "old"]) == 2
    assert "not a --run" in capsys.readouterr().err
    assert compare.main(["--run", "new", str(tmp_path / "missing.json")]) == 2
    assert "no such file" in capsys.readouterr().err
