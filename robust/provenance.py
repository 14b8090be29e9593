"""Provenance: the command line and hardware that produced a result, recorded beside every artefact."""
from __future__ import annotations

import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any


def command_line(world_size: int = 1) -> str:
    """This process's command as a user would type it: ``robust ...`` for the CLI (also ``python -m robust.cli``),
    ``torchrun --standalone --nproc_per_node=N -m robust.cli ...`` for a distributed run, else the raw argv."""
    args = shlex.join(sys.argv[1:])
    if world_size > 1:
        return f"torchrun --standalone --nproc_per_node={world_size} -m robust.cli {args}"
    if Path(sys.argv[0]).name in ("robust", "__main__.py"):
        return f"robust {args}".rstrip()
    return shlex.join(sys.argv)


def hardware(device: Any) -> str:
    """``"GPU: <name> x<count>"`` or ``"CPU: <cores> cores (<processor>), <threads> torch threads"``."""
    import torch  # here, so that importing this module stays cheap for the command line

    if getattr(device, "type", str(device)) == "cuda":
        return f"GPU: {torch.cuda.get_device_name(device)} x{torch.cuda.device_count()}"
    return f"CPU: {os.cpu_count()} cores ({processor()}), {torch.get_num_threads()} torch threads"


def processor() -> str:
    """The CPU's name as the platform reports it (its architecture when it reports none)."""
    return platform.processor() or platform.machine()
