import importlib
import os
import sys
from pathlib import Path

import pytest
import torch

# Tests run from the repository root as `python -m pytest`; make `core`, `tabs`, `app` importable anyway.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# CI (.ci/run) sets CI=true: there a missing dependency is a failure, so a green run means every test ran.
IN_CI = os.environ.get("CI", "").strip().lower() == "true"


def require(condition, reason: str) -> None:
    """Skip the calling test when `condition` is false (a local machine may lack a dependency);
    under CI=true fail it instead, saying what is missing (`sh tests/install.sh` installs it all)."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true, so this cannot be skipped: {reason}", pytrace=False)
    pytest.skip(reason)


def real_fashion_test_split():
    """The real Fashion-MNIST test images (uint8) and labels, or `require(False, ...)` saying how to install them."""
    from core.data.fashion_mnist import load_fashion_mnist

    try:
        return load_fashion_mnist("test", download=False)
    except FileNotFoundError:
        require(False, "Fashion-MNIST is not installed: run `sh tests/install.sh` (apt-get install dataset-fashion-mnist)")


def require_module(name: str, reason: str):
    """The imported module `name`, or `require(False, reason)` when it does not import."""
    try:
        return importlib.import_module(name)
    except ImportError:
        require(False, reason)


def _fail_skips_in_ci(report) -> None:
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome, report.longrepr = "failed", f"CI=true, so skips count as failures: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI=true a skip by any other route (skipif, importorskip, pytest.skip) fails too."""
    outcome = yield
    _fail_skips_in_ci(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """... including a whole module skipped while it is collected (a module-level importorskip)."""
    outcome = yield
    _fail_skips_in_ci(outcome.get_result())


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
