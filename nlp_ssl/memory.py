"""Returning freed heap memory to the OS during long runs.

CPU tensors come from glibc malloc, whose mmap threshold rises to the size of each large
block freed; from then on activations are carved from the heap, and when their sizes change
from step to step (masked-LM heads see a different number of masked positions each step,
padded fine-tuning batches differ in length) the heap fragments and resident memory creeps
up over a long run. Trimming it every few steps keeps resident memory flat at no measurable
cost; trimming every step is slow, as the pages must be faulted back in. The figures are in
docs/benchmarks.md ("Heap trimming").
"""

from __future__ import annotations

RELEASE_MEMORY_EVERY = 10
"""Optimizer steps between calls of ``release_free_memory`` in the training loop."""


def _malloc_trim():
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
        return None


_MALLOC_TRIM = _malloc_trim()


def release_free_memory() -> None:
    """Give the heap's free pages back to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    The engine calls it every ``RELEASE_MEMORY_EVERY`` steps and after each evaluation and
    checkpoint, whose allocations differ from a training step's.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
