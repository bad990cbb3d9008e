"""release_memory hands freed heap pages back to the OS: the resident size drops, not only the Python objects.

Measured in a fresh interpreter, as a training process is: pytest's own process has a history of allocations
(and of threads, so of glibc arenas) that makes its resident size say little about one call."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.integration.conftest import REPO

FRAGMENT_THEN_RELEASE = """
import torch  # a training process has it loaded; release_memory imports it
from training.memory import release_memory, resident_mib
blocks = [bytearray(2048) for _ in range(100_000)]  # ~200 MiB of heap, below glibc's mmap threshold
keep = blocks[::64]  # pins pages all over the heap, so glibc cannot shrink it from the top by itself
del blocks
held = resident_mib()
release_memory()
print(held, resident_mib(), len(keep))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc_trim and /proc are Linux's")
def test_a_fragmented_heap_is_given_back():
    done = subprocess.run([sys.executable, "-c", FRAGMENT_THEN_RELEASE], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    held, after, kept = done.stdout.split()
    assert int(kept) == 1563
    assert float(held) - float(after) > 100, done.stdout
