"""Suite-wide settings."""
import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """One intra-op thread per test process: the suite runs as 2 xdist workers on 2 cores, and the tests' models
    are tiny, so a second thread per worker only contends (measured 2-20x slower on a busy 2-core box)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
