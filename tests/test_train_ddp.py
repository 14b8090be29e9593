"""DistributedDataParallel on a CPU (gloo): two processes equal one process with the same global batch.

The model is BN-free (convolutions, GroupNorm, linear head) on purpose: BatchNorm statistics are
per-process under DDP, and torch's SyncBatchNorm runs on GPUs only.
"""
from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from robust.models import Classifier
from robust.synthetic import SyntheticBenchmark

EPOCHS, BATCH = 2, 32
# Per-epoch evaluation through the audit's suites: every rank counts its shard of the set.
SUITES = ["clean", "corruptions@3,names=gaussian_noise+fog", "pgd:linf@2/255,steps=2"]


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.GroupNorm(4, 16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )


def run(out: str | None, recipe: str) -> tuple[dict[str, torch.Tensor], dict[str, float], list[dict]]:
    from robust.train import harden

    bench = SyntheticBenchmark(size=16, seed=0)
    # 85 images, batch 32: the last global batch (21 images) is uneven across the two ranks.
    train, test = bench.split("train", 85), bench.split("test_shift", 41)
    clf = Classifier(tiny_net(), input_size=(3, 16, 16), num_classes=10, class_names=train.class_names)
    result = harden(clf, train, recipe, eval_sets={"shift": test}, eval_suites=SUITES, epochs=EPOCHS, batch_size=BATCH,
                    optimizer="sgd", lr=0.05, seed=3, out=out, progress=False, device="cpu")
    return {k: v.clone() for k, v in clf.model.state_dict().items()}, result.metrics, result.history


RECIPES = ["0.5*erm+0.5*oracle", "0.5*augmix+0.5*pgd:linf@2/255,steps=1"]


def _worker(rank: int, world_size: int, port: int, folder: str) -> None:
    from safetensors.torch import save_file

    from robust.io import write_json
    from robust.train.distributed import teardown

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        for k, recipe in enumerate(RECIPES):
            weights, metrics, history = run(os.path.join(folder, f"run{k}"), recipe)
            if rank == 0:
                save_file({k: v.contiguous() for k, v in weights.items()}, os.path.join(folder, f"weights{k}.safetensors"))
                write_json(os.path.join(folder, f"metrics{k}.json"), {"metrics": metrics, "history": history})
        dist.barrier()  # both ranks tear gloo down together (a rank leaving early can abort its peer)
    finally:
        teardown()
    # Leave without interpreter finalisation: gloo's C++ threads torn down at exit aborted a rank
    # ("terminate called without an active exception", SIGABRT) in CI after all work was done.
    # Every file above is written and closed; an exception still leaves through spawn's error path.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _spawn_two_ranks(folder: Path) -> Path:
    """Run the two gloo ranks; the folder they wrote. One more try, in a fresh folder, only when a rank
    was killed by SIGABRT (gloo's C++ teardown aborted a rank twice in CI, never here); wrong figures,
    exceptions and a second abort still fail."""
    try:
        mp.spawn(_worker, args=(2, _free_port(), str(folder)), nprocs=2, join=True)
        return folder
    except mp.ProcessExitedException as err:
        if err.signal_name != "SIGABRT":
            raise
    retry = folder / "retry"
    retry.mkdir()
    mp.spawn(_worker, args=(2, _free_port(), str(retry)), nprocs=2, join=True)
    return retry


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_equal_one_process_with_the_same_global_batch(tmp_path):
    """Recipes whose draws follow per-image seeds (oracle, augmix, the PGD start) match exactly too, and so
    does the per-epoch evaluation (clean, corruptions and PGD suites over the ranks' shards)."""
    from safetensors.torch import load_file

    from robust.io import read_json

    folder = _spawn_two_ranks(tmp_path)
    for k, recipe in enumerate(RECIPES):
        ddp_weights = load_file(str(folder / f"weights{k}.safetensors"))
        ddp = read_json(folder / f"metrics{k}.json")
        weights, metrics, history = run(None, recipe)
        assert set(ddp_weights) == set(weights)
        for name, value in weights.items():
            torch.testing.assert_close(ddp_weights[name], value, atol=1e-5, rtol=1e-4, msg=f"{recipe}: weight {name} differs")
        assert ddp["metrics"].keys() == metrics.keys() >= {"shift/acc", "shift/loss", "shift/corruptions.mean_acc", "shift/pgd.acc"}
        for theirs, mine in zip(ddp["history"], history, strict=True):  # every epoch's evaluation
            for key in metrics:
                assert theirs[key] == pytest.approx(mine[key], abs=1e-5), (recipe, theirs["epoch"], key)
        # The training loss summed over both shards equals the single process's.
        assert [r["train_loss"] for r in ddp["history"]] == pytest.approx([r["train_loss"] for r in history], abs=1e-5)
        # Only rank 0 wrote the run folder, and it is complete.
        assert (folder / f"run{k}" / "last.safetensors").is_file() and (folder / f"run{k}" / "state.json").is_file()


