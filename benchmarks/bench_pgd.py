"""PGD-Linf: robust's attack against torchattacks' PGD on the same model and data, in one process.

Prints robust accuracy and wall time per variant and the ratio ours/torchattacks. Variants:
``ours`` (the default: images leave the batch once broken), ``ours-full`` (every step on every image,
the textbook algorithm torchattacks runs), and ``ours-amp`` (the default plus bf16 autocast and a
channels_last copy of the network).
The model is trained briefly first (scikit-learn's digits as 32x32 RGB) so robust accuracy means
something. Both sides produce clean and robust accuracy: torchattacks' time includes the clean and
the adversarial evaluation forward passes a user needs around its attack; ours returns both.

    python benchmarks/bench_pgd.py                      # CPU, smallcnn 32x32, batch 64
    python benchmarks/bench_pgd.py --device cuda --arch timm:resnet18 --n 2048 --batch-size 256
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attacks import get_attack  # noqa: E402
from robust.data import load_dataset  # noqa: E402
from robust.models import build_classifier, load_classifier, save_classifier  # noqa: E402
from robust.registry import parse_number  # noqa: E402
from robust.seeding import resolve_device, seed_everything  # noqa: E402
from robust.train import fit  # noqa: E402


CLOCK = time.perf_counter


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_theirs(net: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float, alpha: float, steps: int,
               batch: int) -> tuple[float, float]:
    import torchattacks

    attack = torchattacks.PGD(net, eps=eps, alpha=alpha, steps=steps, random_start=True)
    device = images.device
    sync(device)
    start = CLOCK()
    correct = clean = 0
    for i in range(0, images.shape[0], batch):
        x, y = images[i : i + batch], labels[i : i + batch]
        with torch.no_grad():  # the clean evaluation a user runs alongside (ours reports clean accuracy too)
            clean += int((net(x).argmax(1) == y).sum())
        adv = attack(x, y)
        with torch.no_grad():
            correct += int((net(adv).argmax(1) == y).sum())
    sync(device)
    return correct / images.shape[0], CLOCK() - start


def run_ours(clf, images: torch.Tensor, labels: torch.Tensor, spec: str, batch: int, **options) -> tuple[float, float]:
    attack = get_attack(spec, batch_size=batch, **options)
    device = images.device
    sync(device)
    start = CLOCK()
    result = attack(clf, images, labels, seed=0)
    robust = result.robust_accuracy
    sync(device)
    return robust, CLOCK() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--arch", default="smallcnn")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--n", type=int, default=256, help="test images attacked")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--data", default="digits", help="digits or synthetic")
    parser.add_argument("--train-epochs", type=int, default=12)
    parser.add_argument("--model", default=None, help="load this robust checkpoint instead of training")
    parser.add_argument("--save-model", default=None, help="save the trained model here (reuse with --model)")
    parser.add_argument("--eps", default="8/255,1/255", help="comma-separated budgets (the bar is at 8/255)")
    parser.add_argument("--steps", default="10,20")
    parser.add_argument("--alpha", default="2/255", help="step size at 8/255; scaled with eps for other budgets")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--clock", choices=("wall", "process"), default="wall",
                        help="process: CPU time of this process (robust to other jobs on a shared CPU; CPU only)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    global CLOCK
    CLOCK = time.process_time if args.clock == "process" else time.perf_counter

    if args.threads:
        torch.set_num_threads(args.threads)
    seed_everything(0)
    device = resolve_device(args.device)
    if args.data == "digits":
        train = load_dataset(f"digits:train,size={args.size},rgb=true")
        test = load_dataset(f"digits:test,size={args.size},rgb=true", n=args.n)
    else:
        train = load_dataset("synthetic:train", size=args.size)
        test = load_dataset("synthetic:test_iid", n=args.n, size=args.size)
    start = CLOCK()
    if args.model:
        clf = load_classifier(args.model, device=device)
    else:
        clf = build_classifier(args.arch, train.num_classes, (3, args.size, args.size), class_names=train.class_names, device=device)
        fit(clf, train, epochs=args.train_epochs, seed=0, warmup_steps=5, progress=False)
        if args.save_model:
            save_classifier(clf, args.save_model)
    train_s = CLOCK() - start
    images, labels = test.images.to(device), test.labels.to(device)
    clean = clf.accuracy(images, labels)
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.processor() or platform.machine()}), "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"model {args.arch} {args.size}x{args.size} trained {train_s:.0f}s, clean accuracy {clean:.3f} on {args.n} images, batch {args.batch_size}")

    net = clf.network
    # torchattacks puts the model in eval mode during its attack only; evaluating needs eval mode too.
    net.eval()
    fast = copy.deepcopy(clf)
    fast.network.to(memory_format=torch.channels_last)
    rows = []
    alpha8 = parse_number(args.alpha)
    for eps_text in args.eps.split(","):
        eps = parse_number(eps_text)
        alpha = alpha8 * eps / (8 / 255)
        for steps in [int(s) for s in args.steps.split(",")]:
            spec = f"pgd:linf@{eps_text},steps={steps}"
            variants = {
                "ours": lambda: run_ours(clf, images, labels, spec, args.batch_size, step_size=alpha),
                "ours-full": lambda: run_ours(clf, images, labels, spec, args.batch_size, step_size=alpha, early_stop=False),
                "torchattacks": lambda: run_theirs(net, images, labels, eps, alpha, steps, args.batch_size),
            }
            variants["ours-amp"] = lambda: run_ours(fast, images, labels, spec, args.batch_size, step_size=alpha, amp="bf16",
                                                    channels_last=True)
            times: dict[str, list[float]] = {k: [] for k in variants}
            accs: dict[str, float] = {}
            for fn in variants.values():  # warm-up (allocator, cuDNN autotuning, lazy imports)
                fn()
            for _ in range(args.repeats):
                for name, fn in variants.items():  # interleaved, so load changes hit every variant alike
                    accs[name], seconds = fn()
                    times[name].append(seconds)
            theirs = statistics.median(times["torchattacks"])
            for name in variants:
                t = statistics.median(times[name])
                row = {"eps": eps_text, "steps": steps, "variant": name, "robust_accuracy": accs[name], "seconds": t,
                       "ratio_vs_torchattacks": t / theirs, "acc_diff_points": 100 * (accs[name] - accs["torchattacks"])}
                rows.append(row)
                print(f"eps {eps_text:>6} steps {steps:>3} {name:<13} robust acc {accs[name]:.3f} "
                      f"(diff {row['acc_diff_points']:+.1f} pt)  {t:7.3f}s  ratio {row['ratio_vs_torchattacks']:.2f}")
    out = {"device": str(device), "clock": args.clock, "arch": args.arch, "size": args.size, "n": args.n, "batch_size": args.batch_size,
           "clean_accuracy": clean, "threads": torch.get_num_threads(), "torch": torch.__version__, "rows": rows}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
