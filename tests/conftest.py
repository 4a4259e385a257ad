"""Shared pytest set-up: the tests folder on sys.path (fixture modules) and the one-torch-thread fixture."""

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Intra-op threads on a shared 2-core box make tiny ops wait on busy cores (ms per GELU).

    Opt in per module with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
