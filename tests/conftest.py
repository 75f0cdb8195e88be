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


def pytest_collection_modifyitems(config, items):
    """Slowest first: end-to-end pipeline tests, then stage tests, then the rest (stable within each group).
    Under xdist's worksteal the last tests to start set the tail, with one worker idle while the other finishes;
    in file order the 1-2 minute pipeline tests started late, and CI's last few percent of tests ran for minutes."""
    def group(item) -> int:
        if item.get_closest_marker("pipeline") is not None:
            return 0
        return 1 if "/tests/stages/" in str(item.path) else 2
    items.sort(key=group)
