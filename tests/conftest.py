"""Fixtures shared by several test modules."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors and models: one torch thread avoids OpenMP spin-waits on a busy machine.

    Use it with ``pytestmark = pytest.mark.usefixtures("one_thread")``; the previous thread
    count is restored after the module.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
