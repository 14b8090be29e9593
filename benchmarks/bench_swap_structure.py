"""What the structure code of a structure/appearance model carries, honest protocol: two probes.

1. **A class judge.** A small CNN trained on the structure codes of the shortcut ``train`` split
   (benchmark seed 0) with their class labels only. For each of ``n`` held-out ``train`` images
   (seed 1) it scores ``k`` full-strength swaps (random donors of other classes) by the probability
   that the re-encoded structure code still shows the image's class. Printed: its accuracy on
   held-out real structure codes, the AUC of its score for the oracle keeping the class, the class
   kept among the best-scored swaps, and the edit reach of one random donor against the judge's
   pick of ``k``.
2. **A low-passed structure code** (``--blur``: Gaussian sigmas in code cells): reconstructions and
   full swaps decoded from the blurred code, to see whether the background texture sits in the
   code's fine detail.

The oracle and the factor regressor (robust.gan.reach) only measure.

    python benchmarks/bench_swap_structure.py --threads 1 --json structure.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_natra_swap import swap_setup

from augment._corruption_ops import gaussian_blur
from augment.swap import AppearanceSwap, DonorBank
from robust.gan.reach import EditReach, edit_reach, reach_table
from robust.provenance import command_line, hardware


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="demo-swap", help="structure/appearance model (default: the shipped one)")
    p.add_argument("--n", type=int, default=512, help="held-out train-split images (benchmark seed 1)")
    p.add_argument("--donors", type=int, default=5000, help="judge training set and donor bank: the first N train images")
    p.add_argument("--k", type=int, default=4, help="swaps scored per image")
    p.add_argument("--epochs", type=int, default=12, help="epochs of the judge")
    p.add_argument("--blur", default="0.5,1", help="comma-separated Gaussian sigmas (code cells) for the low-pass probe; '' for none")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None)
    return p.parse_args(argv)


def train_judge(structure: torch.Tensor, labels: torch.Tensor, epochs: int, seed: int) -> nn.Module:
    """A small CNN from structure codes ``[N, C, R, R]`` to the class (AdamW, batch 128)."""
    torch.manual_seed(seed)
    c = structure.shape[1]
    judge = nn.Sequential(nn.Conv2d(c, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
                          nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(64, int(labels.max()) + 1))
    opt = torch.optim.AdamW(judge.parameters(), 2e-3)
    order = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(structure), generator=order)
        for i in range(0, len(perm), 128):
            b = perm[i : i + 128]
            loss = F.cross_entropy(judge(structure[b]), labels[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return judge.eval()


def auc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """Area under the ROC curve: the chance a positive outscores a negative (ties count half)."""
    pos, neg = scores[positive], scores[~positive]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).float().mean()
    ties = (pos[:, None] == neg[None, :]).float().mean()
    return float(greater + 0.5 * ties)


def judge_probe(model, setup, bank: DonorBank, codes, labels: torch.Tensor, args: argparse.Namespace) -> tuple[dict, list[EditReach]]:
    """Probe 1: the class judge on structure codes (see the module's documentation); ``codes`` and
    ``labels`` are the training images'."""
    judge = train_judge(codes.structure.float(), labels, args.epochs, args.seed)
    held, labels = setup.data, setup.data.labels

    def score(images: torch.Tensor) -> torch.Tensor:
        return judge(model.encode(images)[0].float()).softmax(1).gather(1, labels[:, None])[:, 0]

    with torch.no_grad():
        real_acc = float((judge(model.encode(held.images)[0].float()).argmax(1) == labels).float().mean())
        swap = AppearanceSwap(model, bank, "random", min_strength=1.0)
        candidates = torch.stack([swap.transform(held.images.clone(), labels, seed=args.seed + 100 + j).images for j in range(args.k)])
        scores = torch.stack([score(c) for c in candidates])  # [k, N]
        kept = torch.stack([setup.oracle.predict(c).cpu() == labels for c in candidates])
    recognised = setup.oracle_classes == labels
    s, ok = scores[:, recognised].flatten(), kept[:, recognised].flatten()
    top = {f"top {q:.0%}": float(ok[s >= torch.quantile(s, 1 - q)].float().mean()) for q in (0.25, 0.5, 0.75, 1.0)}
    pick = scores.argmax(0)
    rows = [edit_reach(lambda x: candidates[0], setup, name="one random donor, t = 1"),
            edit_reach(lambda x: candidates[pick, torch.arange(len(labels))], setup, name=f"judge's pick of {args.k} donors, t = 1")]
    print(f"judge accuracy on held-out real structure codes: {real_acc:.3f}")
    print(f"AUC of the judge's score for the oracle keeping the class: {auc(s, ok):.3f}")
    print("class kept among the best-scored swaps: " + ", ".join(f"{k} {v:.3f}" for k, v in top.items()), flush=True)
    return {"judge_real_accuracy": real_acc, "auc": auc(s, ok), "class_kept_top": top}, rows


def blur_probe(model, setup, bank: DonorBank, sigmas: list[float], seed: int) -> list[EditReach]:
    """Probe 2: reconstructions and full swaps (one donor of another class per image) from a low-passed
    structure code (the corruptions' Gaussian blur, replicated borders)."""
    labels = setup.data.labels
    donor = bank.appearance[bank.pick(torch.arange(len(labels)) + 1_000_003 * (seed + 1), labels)].float()
    rows = []
    with torch.no_grad():
        structure, own = (c.float() for c in model.encode(setup.data.images))
        for sigma in sigmas:
            blurred = gaussian_blur(structure, torch.full((len(structure),), sigma))
            for t in (0.0, 1.0):
                out = model.decode(blurred, torch.lerp(own, donor, t))
                rows.append(edit_reach(lambda x, out=out: out, setup, name=f"structure blur {sigma:g}, strength {t:g}"))
    return rows


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    model, setup, train, codes, _ = swap_setup(args.model, args.n, args.donors, args.threads)
    bank = DonorBank.from_codes(codes, train)
    judged, rows = judge_probe(model, setup, bank, codes, train.labels, args)
    sigmas = [float(v) for v in args.blur.split(",") if v.strip()]
    rows += blur_probe(model, setup, bank, sigmas, args.seed)
    print(reach_table(rows), flush=True)
    out = {"command": command_line(), "hardware": hardware(torch.device("cpu")), "model": str(args.model), "n": args.n,
           "k": args.k, **judged, "rows": [r.to_dict() for r in rows]}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
