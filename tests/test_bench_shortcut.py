"""The shortcut benchmark's plumbing: rows, their protocols and specs, the table, targets and merging (tiny runs)."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_shortcut.py"
_SPEC = importlib.util.spec_from_file_location("bench_shortcut", _PATH)
bench = sys.modules.setdefault("bench_shortcut", importlib.util.module_from_spec(_SPEC))
_SPEC.loader.exec_module(bench)

TINY = ["--n-train", "40", "--n-test", "20", "--size", "16", "--width", "4", "--epochs", "1", "--seeds", "1", "--robust-n", "8",
        "--eval-pgd", "pgd:linf@2/255,steps=1", "--batch-size", "20", "--device", "cpu", "--threads", "1"]


def test_rows_say_their_protocol_and_the_honest_natra_row_needs_its_spec_and_a_model_of_this_split():
    args = bench.parse_args(["--recipes", "erm,oracle,natra_random,hue_rotation"])
    names = bench.selected_rows(args)
    assert bench.row_protocols(args, names) == {"erm": "honest", "oracle": "instrument", "natra_random": "privileged",
                                                "hue_rotation": "honest"}
    assert bench.row_specs(args, names)["hue_rotation"] == "transform:hue"
    with pytest.raises(SystemExit, match="--natra-swap"):
        bench.selected_rows(bench.parse_args(["--recipes", "natra_swap"]))
    # Another correlated pair needs a structure/appearance model of ITS train split: no default there.
    other = bench.parse_args(["--recipes", "natra_swap", "--natra-swap", "natra:random,model={swap_model}", "--correlated", "bg_hue, mark"])
    assert other.correlated == "bg_hue,mark" and not bench.default_setup(other)
    with pytest.raises(SystemExit, match="--swap-model"):
        bench.row_specs(other, ["natra_swap"])
    other.swap_model = "/models/pair2"
    assert bench.row_specs(other, ["natra_swap"]) == {"natra_swap": "natra:random,model=/models/pair2"}
    with pytest.raises(SystemExit, match="unknown recipes"):
        bench.selected_rows(bench.parse_args(["--recipes", "erm,natra_magic"]))


def _stat(mean):
    return {"mean": mean, "std": 0.0}


def test_table_puts_honest_rows_first_and_targets_judge_honest_natra_rows_only():
    figures = {"erm": (0.92, 0.17, 100), "oracle": (0.84, 0.85, 90), "hue_rotation": (0.9, 0.30, 110), "natra_swap": (0.915, 0.60, 200),
               "natra_random": (0.9, 0.80, 300)}
    rows = {name: [{"seed": 0, "test_iid": iid, "test_shift": shift, "step_ms": ms}] for name, (iid, shift, ms) in figures.items()}
    protocols = {"erm": "honest", "oracle": "instrument", "hue_rotation": "honest", "natra_swap": "honest", "natra_random": "privileged"}
    summary = bench.summarise(rows, {n: n for n in rows}, protocols, ["test_iid", "test_shift", "step_ms"])
    assert list(summary) == ["erm", "hue_rotation", "natra_swap", "oracle", "natra_random"]
    gap = bench.gap_closed(summary)
    assert gap["natra_swap"] == pytest.approx((0.60 - 0.17) / (0.85 - 0.17))
    table = bench.markdown(summary, ["test_iid", "test_shift", "step_ms"], gap).splitlines()
    assert table[2].startswith("| honest | erm |") and table[-1].startswith("| privileged")
    assert "| 2.00 | 63% |" in table[4]  # natra_swap: step 2x erm's, 63% of the gap
    targets = bench.target_lines(summary, gap)
    assert targets[0] == "best honest natra row on test_shift: natra_swap"  # not the privileged row's 80%
    assert targets[1].startswith("gap closed 63%") and targets[1].endswith(": met")
    assert "vs hue_rotation: +30.0 points" in targets[2] and targets[2].endswith(": met")
    assert "test_iid cost vs erm: 0.5 points" in targets[3] and "2.00x erm" in targets[4]


def test_a_tiny_run_writes_its_rows_and_merges_only_runs_of_the_same_split(tmp_path):
    first = tmp_path / "first.json"
    report = bench.main(["--recipes", "erm,natra_swap", "--natra-swap", "transform:hue", *TINY, "--json", str(first)])
    assert set(report["rows"]) == {"erm", "natra_swap"}
    row = report["rows"]["natra_swap"][0]
    assert {"test_iid", "test_shift", "shift_obj_hue", "shift_texture", "step_ms", "train_seconds"} <= set(row)
    assert report["summary"]["natra_swap"]["spec"] == "transform:hue" and report["summary"]["natra_swap"]["protocol"] == "honest"
    merged = bench.main(["--recipes", "oracle", *TINY, "--merge", str(first)])
    assert list(merged["summary"]) == ["erm", "natra_swap", "oracle"] and merged["rows"]["erm"] == report["rows"]["erm"]
    assert json.loads(first.read_text())["args"]["correlated"] == "obj_hue,texture"
    with pytest.raises(SystemExit, match="correlated"):
        bench.main(["--recipes", "oracle", *TINY, "--correlated", "bg_hue,mark", "--merge", str(first)])
