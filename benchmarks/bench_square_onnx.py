"""Square attack on an ONNX model against the same attack on the torch model it was exported from.

The bar: robust accuracy within 3 points. Square draws each image's randomness from its own seed
(robust.noise), so both runs make the same proposals and differ only where float round-off between
torch and onnxruntime flips an accept/reject decision. Also prints wall time, queries per image and,
as a reference for the attack's strength, torchattacks' Square (same budget, queries and p_init) on
the torch model.

    python benchmarks/bench_square_onnx.py                        # CPU, smallcnn on 32x32 digits
    python benchmarks/bench_square_onnx.py --model /tmp/bench/digits_smallcnn --n 256 --queries 1000
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attacks import Square  # noqa: E402
from robust.data import load_dataset  # noqa: E402
from robust.models import build_classifier, export_onnx, load_classifier  # noqa: E402
from robust.registry import parse_number  # noqa: E402
from robust.seeding import resolve_device, seed_everything  # noqa: E402
from robust.train import fit  # noqa: E402


def run_torchattacks(clf, images: torch.Tensor, labels: torch.Tensor, attack: Square) -> tuple[float, float]:
    import torchattacks

    net = clf.network.eval()
    theirs = torchattacks.Square(net, norm="Linf" if attack.norm == "linf" else "L2", eps=attack.eps, n_queries=attack.queries,
                                 p_init=attack.p_init, seed=0)
    start = time.perf_counter()
    adv = theirs(images, labels)
    with torch.no_grad():
        robust = float((net(adv).argmax(1) == labels).float().mean())
    return robust, time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="device of the torch model (ONNX runs on the CPU)")
    parser.add_argument("--arch", default="smallcnn")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--train-epochs", type=int, default=12)
    parser.add_argument("--model", default=None, help="robust checkpoint to load instead of training")
    parser.add_argument("--norms", default="linf@8/255,l2@0.5")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--no-baseline", action="store_true", help="skip torchattacks' Square")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    seed_everything(0)
    device = resolve_device(args.device)
    test = load_dataset(f"digits:test,size={args.size},rgb=true", n=args.n)
    if args.model:
        clf = load_classifier(args.model, device=device)
    else:
        train = load_dataset(f"digits:train,size={args.size},rgb=true")
        clf = build_classifier(args.arch, 10, (3, args.size, args.size), class_names=train.class_names, device=device)
        fit(clf, train, epochs=args.train_epochs, seed=0, warmup_steps=5, progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        exported = export_onnx(clf, Path(tmp) / "model.onnx")
        onnx_clf = load_classifier(Path(tmp) / "model.onnx")
        print(f"model {args.arch} {args.size}x{args.size} on {device}; ONNX export max |logit diff| {exported['max_abs_diff']:.2e}; "
              f"clean accuracy torch {clf.accuracy(test.images.to(device), test.labels.to(device)):.3f} "
              f"onnx {onnx_clf.accuracy(test.images, test.labels):.3f} on {args.n} images")
        rows = []
        for item in args.norms.split(","):
            norm, eps_text = item.split("@")
            attack = Square(norm=norm, eps=parse_number(eps_text), queries=args.queries)
            figures = {}
            for name, model, x, y in (("torch", clf, test.images.to(device), test.labels.to(device)),
                                      ("onnx", onnx_clf, test.images, test.labels)):
                start = time.perf_counter()
                result = attack(model, x, y, seed=0)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                figures[name] = (result.robust_accuracy, time.perf_counter() - start, result.queries / args.n)
            if not args.no_baseline:
                figures["torchattacks"] = run_torchattacks(clf, test.images.to(device), test.labels.to(device), attack)
            diff = 100 * (figures["onnx"][0] - figures["torch"][0])
            row = {"attack": attack.spec, "torch_robust_accuracy": figures["torch"][0], "onnx_robust_accuracy": figures["onnx"][0],
                   "diff_points": diff, "torch_seconds": figures["torch"][1], "onnx_seconds": figures["onnx"][1],
                   "queries_per_image_onnx": figures["onnx"][2], "within_3_points": abs(diff) <= 3.0}
            if "torchattacks" in figures:
                row["torchattacks_robust_accuracy"], row["torchattacks_seconds"] = figures["torchattacks"]
            rows.append(row)
            print(f"{attack.spec:<28} robust acc torch {row['torch_robust_accuracy']:.3f} onnx {row['onnx_robust_accuracy']:.3f} "
                  f"(diff {diff:+.1f} pt, {'ok' if row['within_3_points'] else 'ABOVE 3 pt'})  "
                  f"time torch {row['torch_seconds']:.1f}s onnx {row['onnx_seconds']:.1f}s  {row['queries_per_image_onnx']:.0f} queries/image")
            if "torchattacks" in figures:
                print(f"{'':<28} torchattacks Square on the torch model: robust acc {row['torchattacks_robust_accuracy']:.3f} "
                      f"in {row['torchattacks_seconds']:.1f}s")
    out = {"device": str(device), "arch": args.arch, "n": args.n, "queries": args.queries, "rows": rows}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
