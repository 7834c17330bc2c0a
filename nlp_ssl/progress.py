"""Progress bars and logging that only the main process prints."""

from __future__ import annotations

import logging
import sys


def launched():
    """This process's rank, local rank and world size as its launcher set them (torchrun's
    ``RANK``/``WORLD_SIZE``, or MPI's ``PMI_*``/``OMPI_*`` under ``accelerate launch`` with a
    ``MULTI_CPU`` config), readable before Accelerate is set up; one process when unlaunched."""
    from accelerate.utils import get_cpu_distributed_information

    return get_cpu_distributed_information()


def is_main_process() -> bool:
    return launched().rank == 0


def progress_bar(iterable=None, **kwargs):
    from tqdm.auto import tqdm

    kwargs.setdefault("disable", not is_main_process())
    kwargs.setdefault("mininterval", 1.0)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)


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
