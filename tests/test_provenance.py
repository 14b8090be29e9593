"""robust.provenance: one description of the command and the hardware for every artefact."""
from __future__ import annotations

import sys

import torch

from robust.provenance import command_line, hardware


def test_command_line_names_the_cli_as_a_user_types_it(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/usr/bin/robust", "audit", "m.onnx", "--suite", "pgd:linf@8/255"])
    assert command_line() == "robust audit m.onnx --suite pgd:linf@8/255"
    assert command_line(world_size=2) == "torchrun --standalone --nproc_per_node=2 -m robust.cli audit m.onnx --suite pgd:linf@8/255"


def test_command_line_quotes_and_keeps_other_programs(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["bench.py", "--natra", "a b"])
    assert command_line() == "bench.py --natra 'a b'"


def test_hardware_describes_the_cpu_with_its_threads():
    text = hardware(torch.device("cpu"))
    assert text.startswith("CPU: ") and f"{torch.get_num_threads()} torch threads" in text
