"""Black-box audit cost: the ``transforms`` and ``square`` suites on a small ONNX model, per suite.

Builds (offline, seconds) a 3-class 48x48 classifier on the synthetic benchmark's disks, triangles
and squares, exports it to ONNX and writes 72 test images to an ``.npz``; then audits the ONNX
file with ``robust.audit.run_audit`` and prints each suite's wall time and headline metrics.
``--baseline REF`` also audits the same files with the code of git revision ``REF`` (extracted to a
temporary folder), each tree in its own subprocess with the same threads, alternating new and old
``--repeats`` times, and prints the ratio old/new per suite (wall and CPU time: on a shared machine the
CPU time is the figure that carries over) and the cases whose accuracy differs.

    python benchmarks/bench_blackbox_audit.py --threads 1
    python benchmarks/bench_blackbox_audit.py --threads 1 --baseline c3b8ebb --repeats 2 --json audit.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITES = ("square:linf@8/255,queries=200", "transforms")
CLASSES = (0, 2, 3)  # disk, triangle, square


def prepare(folder: Path, size: int, n: int, threads: int) -> tuple[Path, Path]:
    """Train a small CNN (3 synthetic classes at ``size``), export it to ONNX, write ``n`` test images (kept when there)."""
    import torch

    from robust.data import ImageSet
    from robust.models import build_classifier, export_onnx
    from robust.synthetic import CLASS_NAMES, SyntheticBenchmark
    from robust.train import fit

    model, data = folder / "shapes3.onnx", folder / "shapes3_test.npz"
    if model.is_file() and data.is_file():
        return model, data
    torch.set_num_threads(threads)
    bench = SyntheticBenchmark(size=size, seed=0)

    def three_classes(split: str, count: int) -> ImageSet:
        data = bench.split(split, count * 4)
        keep = sum((data.labels == c) for c in CLASSES).bool()
        labels = torch.zeros_like(data.labels)
        for new, old in enumerate(CLASSES):
            labels[data.labels == old] = new
        return ImageSet(data.images[keep][:count], labels[keep][:count], [CLASS_NAMES[c] for c in CLASSES], name=f"shapes3:{split}")

    train = three_classes("train", 900)
    clf = build_classifier("smallcnn", len(CLASSES), (3, size, size), class_names=train.class_names, seed=0)
    fit(clf, train, epochs=6, seed=0, warmup_steps=5, progress=False)
    export_onnx(clf, model)
    three_classes("test_iid", n).save_npz(data)
    return model, data


def measure(model: Path, data: Path, suites: list[str], threads: int) -> dict:
    """Audit ``model`` on ``data`` with ``suites``: per suite its wall and CPU seconds (the first suite's CPU
    includes loading the model and data), metrics and case accuracies, and the load average around the run."""
    import torch

    import robust.audit as audit

    torch.set_num_threads(threads)
    load = os.getloadavg()[0]
    marks = [time.process_time()]
    settings = {"seed": 0, "device": "cpu", "progress": False}
    mark = {"on_suite": lambda _: marks.append(time.process_time())}
    if hasattr(audit, "AuditConfig"):
        result = audit.run_audit(str(model), str(data), audit.AuditConfig(suites, **settings), **mark)
    else:  # a tree from before AuditConfig (the starting point): the same settings as keywords
        result = audit.run_audit(str(model), str(data), suites, **settings, **mark)
    out = {}
    for suite, start, end in zip(result.suites, marks, marks[1:]):
        cases = {case.name: case.metrics.get("acc") for case in suite.cases}
        out[suite.name] = {"seconds": suite.duration_s, "cpu_seconds": end - start, "status": suite.status, "error": suite.error,
                           "metrics": suite.metrics, "cases": cases, "load": [load, os.getloadavg()[0]]}
    return out


def _run_tree(root: Path, model: Path, data: Path, suites: list[str], threads: int) -> dict:
    """``measure`` with the code under ``root`` first on the path, in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, str(Path(__file__).resolve()), "--measure", "--root", str(root), "--model", str(model),
               "--data", str(data), "--threads", str(threads), *[arg for s in suites for arg in ("-s", s)]]
    done = subprocess.run(command, env=env, cwd=root, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"measuring {root} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _extract(ref: str, folder: Path) -> Path:
    """The tree of git revision ``ref`` written to ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def _compare(runs: dict[str, list[dict]]) -> list[dict]:
    """Per suite and tree: median seconds, and the ratio baseline/current."""
    rows = []
    for suite in runs["current"][0]:
        row = {"suite": suite}
        for tree, measured in runs.items():
            row[f"{tree}_seconds"] = statistics.median(m[suite]["seconds"] for m in measured)
            row[f"{tree}_cpu_seconds"] = statistics.median(m[suite]["cpu_seconds"] for m in measured)
            row[f"{tree}_load"] = [m[suite]["load"] for m in measured]
            row[f"{tree}_metrics"] = measured[0][suite]["metrics"]
            row[f"{tree}_cases"] = measured[0][suite]["cases"]
        if "baseline" in runs:
            row["speedup"] = row["baseline_seconds"] / max(row["current_seconds"], 1e-9)
            row["cpu_speedup"] = row["baseline_cpu_seconds"] / max(row["current_cpu_seconds"], 1e-9)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-s", "--suite", action="append", default=None, help=f"suite spec (default: {' and '.join(SUITES)})")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--n", type=int, default=72)
    parser.add_argument("--baseline", default=None, help="git revision to compare against (e.g. main)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--workdir", default=None, help="keep the model and data here (default: a temporary folder)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--root", default=str(ROOT), help=argparse.SUPPRESS)
    parser.add_argument("--model", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--data", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    suites = args.suite or list(SUITES)
    sys.path.insert(0, args.root)
    if args.measure:
        print(json.dumps(measure(Path(args.model), Path(args.data), suites, args.threads), default=str))
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.workdir or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        model, data = prepare(folder, args.size, args.n, args.threads)
        trees = {"current": ROOT}
        if args.baseline:
            trees["baseline"] = _extract(args.baseline, Path(tmp) / "baseline")
        runs: dict[str, list[dict]] = {tree: [] for tree in trees}
        for _ in range(args.repeats):
            for tree, root in trees.items():
                runs[tree].append(_run_tree(root, model, data, suites, args.threads))
                print(f"{tree}: " + ", ".join(f"{k} {v['seconds']:.1f}s wall, {v['cpu_seconds']:.1f}s CPU (load {v['load'][0]:.1f})"
                                              for k, v in runs[tree][-1].items()), flush=True)
        rows = _compare(runs)
    for row in rows:
        line = f"{row['suite']:<12} current {row['current_seconds']:7.1f}s wall {row['current_cpu_seconds']:7.1f}s CPU"
        if "speedup" in row:
            same = row["current_cases"] == row["baseline_cases"]
            line += (f"  baseline {row['baseline_seconds']:7.1f}s wall {row['baseline_cpu_seconds']:7.1f}s CPU  speedup "
                     f"{row['speedup']:5.1f}x wall {row['cpu_speedup']:5.1f}x CPU  case accuracies {'equal' if same else 'DIFFER'}")
        print(line)
        for case, acc in row["current_cases"].items():
            if "baseline_cases" in row and row["baseline_cases"].get(case) != acc:
                print(f"   {case}: accuracy {acc} (baseline {row['baseline_cases'].get(case)})")
        print("   metrics:", {k: round(v, 4) if isinstance(v, float) else v for k, v in row["current_metrics"].items()})
    total = sum(row["current_seconds"] for row in rows)
    out = {"threads": args.threads, "size": args.size, "n": args.n, "suites": suites, "baseline": args.baseline,
           "repeats": args.repeats, "rows": rows, "current_total_seconds": total}
    print(f"total current {total:.1f}s" + (f", baseline {sum(r['baseline_seconds'] for r in rows):.1f}s" if args.baseline else ""))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2, default=str))
    return out


if __name__ == "__main__":
    main()
