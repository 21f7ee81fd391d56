"""What every `gift` command shares: the consoles, logging, clean error exits, and relaunching under torchrun."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

console = Console(stderr=True)
out = Console()


def print_json(data: object) -> None:
    """``--json`` of the list commands: plain JSON on stdout, never wrapped, coloured or cut at the terminal's width."""
    sys.stdout.write(json.dumps(data, indent=1, default=str) + "\n")  # a value with no JSON form: its text


def print_whole(line: str) -> None:
    """A line a user copies (a path, a store address, a command): printed whole, never wrapped or cut by rich."""
    out.print(line, soft_wrap=True, markup=False, highlight=False)


def setup_logging() -> None:
    rank = os.environ.get("RANK")
    fmt = f"[rank {rank}] %(message)s" if rank is not None and os.environ.get("WORLD_SIZE", "1") != "1" else "%(message)s"
    terminal = RichHandler(console=console, show_path=False)
    terminal.addFilter(lambda record: not getattr(record, "file_only", False))  # train.log's copy of a shown line
    logging.basicConfig(level=logging.WARNING, format=fmt, handlers=[terminal], force=True)
    logging.getLogger("gift").setLevel(logging.INFO)  # ours at INFO; libraries (open_clip logs to root) at WARNING
    for noisy in ("httpx", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    # diffusers and transformers read their level from these variables when first imported. Setting them rather than
    # importing both here spares the commands that never load them (shards, train) seconds of start-up each.
    for library in ("diffusers", "transformers"):
        os.environ.setdefault(f"{library.upper()}_VERBOSITY", "error")
        if library in sys.modules:  # already imported: set its level directly
            sys.modules[library].utils.logging.set_verbosity_error()


RESUME_SHARDS = "finished shards are kept; re-run the same command to resume."


@contextmanager
def clean_errors(kept: str = RESUME_SHARDS):
    """Known failures become one red line and a non-zero exit; Ctrl-C exits 130 saying ``kept``: what the command
    keeps of its work, and how to resume."""
    try:
        yield
    except Exception as e:
        code = _exit_code(e)
        if code is None:
            raise
        console.print(f"[bold red]error:[/] {escape(str(e))}")  # messages may hold brackets: `pip install '.[x]'`
        if isinstance(e, OSError):  # a disk or network failure mid-way
            console.print("Nothing partial was kept under a final name; fix the cause and re-run to resume.")
        raise typer.Exit(code) from None
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted:[/] {escape(kept)}")
        raise typer.Exit(130) from None


# Failures that are the user's input or environment, by module: looked up only once one is raised, so a command
# that never loads torch or diffusers (shards ls, tasks, a bad option) does not import them to name their errors.
KNOWN_ERRORS = {"shards.errors": "ShardSetError", "pipeline.generation.generate": "SpecError",
                "pipeline.generation.generators": "ModelNotFoundError"}


def _exit_code(e: Exception) -> int | None:
    """2 for bad input (ValueError and the known errors), 1 for a lost peer process or an OSError; None: a bug."""
    dist = sys.modules.get("pipeline.dist")
    if dist is not None and isinstance(e, dist.PeerLostError):
        return 1  # the other process printed the cause; a gloo traceback here would bury it
    if isinstance(e, ValueError) or any(module in sys.modules and isinstance(e, getattr(sys.modules[module], name))
                                        for module, name in KNOWN_ERRORS.items()):
        return 2
    return 1 if isinstance(e, OSError) else None


def parse_device(text: str | None):
    """``--device``: a torch.device, or None for the command's default; a name torch does not know is a ValueError
    (torch's own RuntimeError lists twenty device types)."""
    if not text:
        return None
    import torch

    try:
        return torch.device(text)
    except RuntimeError:
        raise ValueError(f"--device {text!r} is not a device: use cpu, cuda or cuda:N (also mps where present)") from None


def relaunch_with_torchrun(gpus: int) -> None:
    """``--gpus N``: run this same command under torchrun with N processes (one per GPU)."""
    args, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
        elif arg == "--gpus":
            skip = True
        elif not arg.startswith("--gpus="):
            args.append(arg)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}", "-m", "cli", *args]
    console.print(f"launching {gpus} processes: {' '.join(cmd[2:])}")
    raise typer.Exit(subprocess.call(cmd))


def parse_seeds(text: str) -> list[int]:
    """``0`` or ``0,1,2`` -> distinct non-negative seeds in the order given (``--seed`` of demo and table)."""
    try:
        seeds = [int(part) for part in text.split(",")]
    except ValueError:
        raise typer.BadParameter(f"{text!r}: write one seed or a comma-separated list, e.g. 0 or 0,1,2",
                                 param_hint="--seed") from None
    if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise typer.BadParameter(f"{text!r}: seeds must be distinct and non-negative", param_hint="--seed")
    return seeds
