"""Shared fixtures: every test starts from the same torch seed; ``single_thread`` for tests of
tiny tensors (on a 2-core VM, waking a second OpenMP thread can cost ~8 ms per parallel op,
far more than the op itself)."""

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
