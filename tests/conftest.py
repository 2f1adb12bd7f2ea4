import sys
from pathlib import Path

import pytest
import torch

# Tests run from the repository root as `python -m pytest`; make `core`, `tabs`, `app` importable anyway.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


@pytest.fixture(autouse=True)
def one_thread():
    """Every test runs on one torch thread, even after code under test changed it (core.train does).

    The test models are tiny, and with two threads OpenMP spin-waits whenever the CPU is busy:
    small steps ran 10-20x slower that way on this 2-core machine.
    """
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def app_server():
    """One real `python app.py` on a free localhost port, shared by the browser and many-users tests."""
    from bench.memory import start_app

    server = start_app()
    yield server
    server.stop()
