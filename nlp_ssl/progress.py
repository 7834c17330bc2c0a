"""Progress bars and logging that only the main process prints."""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Launch:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1


def launched() -> Launch:
    """This process's rank, local rank and world size as its launcher set them (torchrun's
    ``RANK``/``WORLD_SIZE``, or MPI's ``PMI_*``/``OMPI_*`` under ``accelerate launch`` with a
    ``MULTI_CPU`` config), readable before Accelerate is set up; one process when unlaunched.
    The variables are the ones ``accelerate.utils.get_cpu_distributed_information`` reads,
    without importing it (and torch) into every command's start-up."""

    def first(names: tuple[str, ...], default: int) -> int:
        return next((int(os.environ[n]) for n in names if os.environ.get(n, "").strip()), default)

    return Launch(
        rank=first(("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK"), 0),
        local_rank=first(
            ("LOCAL_RANK", "MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "MV2_COMM_WORLD_LOCAL_RANK"), 0
        ),
        world_size=first(("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"), 1),
    )


def is_main_process() -> bool:
    return launched().rank == 0


def progress_bar(iterable=None, **kwargs):
    from tqdm.auto import tqdm

    kwargs.setdefault("disable", not is_main_process())
    kwargs.setdefault("mininterval", 1.0)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)


def close_bars() -> None:
    """Close every progress bar still open (one an error interrupted), so that what is printed
    next starts a line of its own instead of continuing the bar's."""
    tqdm = getattr(sys.modules.get("tqdm"), "tqdm", None)
    for bar in list(getattr(tqdm, "_instances", ())):
        try:
            bar.close()
        except Exception:  # a bar whose stream is gone: nothing to tidy
            pass


def setup_logging(verbose: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    if not is_main_process():
        level = logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger("nlp_ssl")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
