"""Hosting readiness: the README front matter Hugging Face Spaces reads, the server's upload limit,
which network interface `python app.py` listens on, the device it computes on, and ZeroGPU's `spaces`."""
from __future__ import annotations

import functools
import inspect
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import gradio as gr
import httpx
import pytest

import app
from bench.memory import start_app
from tabs.common import on_gpu, user_errors

ROOT = Path(__file__).resolve().parent.parent
SPACES_COLOURS = {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}


def front_matter() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    assert text.startswith("---\n"), "the README must start with the Spaces front matter"
    block = text[4:text.index("\n---\n", 4)]
    return {key.strip(): value.strip().strip('"') for key, value in
            (line.split(":", 1) for line in block.splitlines() if line.strip())}


def test_readme_front_matter_is_what_spaces_needs():
    meta = front_matter()
    pinned = re.search(r"^gradio==([\d.]+)$", (ROOT / "requirements.txt").read_text(), re.M)
    assert meta["sdk"] == "gradio"
    assert pinned and meta["sdk_version"] == pinned.group(1), "sdk_version must be the gradio pinned in requirements.txt"
    assert (ROOT / meta["app_file"]).is_file()
    assert re.fullmatch(r"3\.\d+", meta["python_version"])
    assert meta["colorFrom"] in SPACES_COLOURS and meta["colorTo"] in SPACES_COLOURS
    assert 0 < len(meta["short_description"]) <= 60  # Spaces refuses longer ones
    assert meta["title"] and meta["emoji"]


def test_uploads_over_the_limit_are_refused_by_the_server(app_server):
    assert app.MAX_UPLOAD == "20mb"
    url = f"{app_server.url}gradio_api/upload"
    small = httpx.post(url, files={"files": ("small.txt", b"hello " * 100)}, timeout=60)
    assert small.status_code == 200, small.text
    big = httpx.post(url, files={"files": ("big.txt", b"x" * 21_000_000)}, timeout=60)
    assert big.status_code == 413, (big.status_code, big.text[:200])


def _listening_addresses(port: int) -> set[str]:
    """Local IPv4 addresses with a socket listening on `port`, from /proc/net/tcp (Linux)."""
    addresses = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        host, port_hex = local.split(":")
        if state == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
            addresses.add(".".join(str(int(host[i:i + 2], 16)) for i in (6, 4, 2, 0)))
    return addresses


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads /proc/net/tcp (Linux)")
def test_the_server_listens_on_all_interfaces_only_when_asked(app_server):
    default_port = int(app_server.url.rstrip("/").rsplit(":", 1)[1])
    assert _listening_addresses(default_port) == {"127.0.0.1"}
    shared = start_app(host="0.0.0.0", connect_host="127.0.0.1")  # GRADIO_SERVER_NAME=0.0.0.0
    try:
        port = int(shared.url.rstrip("/").rsplit(":", 1)[1])
        assert _listening_addresses(port) == {"0.0.0.0"}
        assert httpx.get(shared.url, timeout=30).status_code == 200
    finally:
        shared.stop()


# --- the device ---------------------------------------------------------------------------------

@pytest.fixture
def fresh_app_device():
    """core.runtime.app_device() reads GENLAB_DEVICE once per process: forget its answer before and after."""
    from core.runtime import app_device

    app_device.cache_clear()
    yield app_device
    app_device.cache_clear()


def test_genlab_device_cpu_is_honoured(monkeypatch, fresh_app_device):
    import torch

    monkeypatch.setenv("GENLAB_DEVICE", "cpu")
    assert fresh_app_device() == torch.device("cpu")
    assert app.compute_device().startswith("cpu: ")


def _missing_device() -> str:
    """A CUDA device this machine does not have, whether or not it has GPUs."""
    import torch

    return f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"


def test_a_device_the_machine_lacks_stops_the_start_up_with_one_sentence(monkeypatch, fresh_app_device):
    monkeypatch.setenv("GENLAB_DEVICE", _missing_device())
    with pytest.raises(SystemExit, match=f"^GENLAB_DEVICE={_missing_device()}: Device .* was asked for, but"):
        app.compute_device()
    # The same from `python app.py`: one sentence on stderr, no traceback, no server.
    env = {**os.environ, "GENLAB_DEVICE": _missing_device(), "GRADIO_ANALYTICS_ENABLED": "False"}
    started = subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert started.returncode == 1, started.stdout[-2000:] + started.stderr[-2000:]
    assert "Traceback" not in started.stderr and "Running on" not in started.stdout
    assert started.stderr.strip().splitlines()[-1].startswith(f"GENLAB_DEVICE={_missing_device()}: Device ")


def test_the_app_logs_the_device_it_computes_on(app_server):
    from core.runtime import app_device

    assert f"GenLab computes on {app_device().type}: " in app_server.log.read_text()


# --- ZeroGPU ------------------------------------------------------------------------------------

@pytest.fixture
def fake_spaces(monkeypatch):
    """A stand-in for ZeroGPU's `spaces` package: GPU(duration=...) records the duration asked for each
    function, and its wrapper records each call (a generator stays a generator, as with the real one)."""
    record = types.SimpleNamespace(durations={}, calls=[])

    def gpu(duration=60):
        def decorate(fn):
            record.durations[fn.__name__] = duration
            if inspect.isgeneratorfunction(fn):
                @functools.wraps(fn)
                def on_gpu_generator(*args, **kwargs):
                    record.calls.append(fn.__name__)
                    yield from fn(*args, **kwargs)
                return on_gpu_generator

            @functools.wraps(fn)
            def on_gpu_function(*args, **kwargs):
                record.calls.append(fn.__name__)
                return fn(*args, **kwargs)
            return on_gpu_function
        return decorate

    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=gpu))
    return record


def _handlers():
    def plain(x):
        if x < 0:
            raise ValueError("x must not be negative.")
        return 2 * x

    def streaming(n):
        if n < 0:
            raise ValueError("n must not be negative.")
        yield from range(n)
    return plain, streaming


def test_without_spaces_on_gpu_returns_the_function_unchanged(monkeypatch):
    monkeypatch.setitem(sys.modules, "spaces", None)  # `import spaces` raises ImportError
    for handler in _handlers():
        assert on_gpu(45)(handler) is handler


def test_with_spaces_plain_and_generator_handlers_are_wrapped_and_keep_working(fake_spaces):
    plain, streaming = (user_errors(on_gpu(45)(handler)) for handler in _handlers())
    assert fake_spaces.durations == {"plain": 45, "streaming": 45}
    assert plain(3) == 6
    assert inspect.isgeneratorfunction(streaming)  # so Gradio streams its updates
    stream = streaming(3)
    assert fake_spaces.calls == ["plain"]  # nothing runs before the first update is asked for
    assert next(stream) == 0 and list(stream) == [1, 2]
    assert fake_spaces.calls == ["plain", "streaming"]
    with pytest.raises(gr.Error, match="x must not be negative"):
        plain(-1)
    with pytest.raises(gr.Error, match="n must not be negative"):
        list(streaming(-1))


def test_dream_and_style_ask_zerogpu_for_a_gpu_and_still_stream(fake_spaces):
    from tabs import dream, style

    with gr.Blocks() as demo:
        dream.build()
        style.build()
    assert fake_spaces.durations == {"run_dream": dream.DREAM_GPU_S, "run_zoom": dream.ZOOM_GPU_S,
                                     "run_style": style.STYLE_GPU_S}  # the light handlers stay on the CPU
    events = {fn.api_name: fn.fn for fn in demo.fns.values()}
    slots = dream.layer_slot_values("efficientnet_lite0")
    dreamt = list(events["dream_run"](None, True, None, "efficientnet_lite0", *slots, 1, 1.4, 2, 0.02, 0, 0, 0, 64))
    assert len(dreamt) >= 2 and dreamt[-1][1].startswith("Done")
    examples = style.EXAMPLES_DIR
    painted = list(events["style_transfer"](str(examples / "grace_hopper.jpg"), str(examples / "mosaic.png"), 1.0,
                                            None, 1.0, None, 1.0, "efficientnet_lite0", 64, 0.0, 3.0, 1.7, 4,
                                            "lbfgs", "content", "none", 1.0, 100, 0))
    assert painted[-1][2].startswith("Done: 4/4 iterations")
    assert fake_spaces.calls == ["run_dream", "run_style"]


def test_the_readme_says_what_each_heavy_handler_asks_zerogpu_for():
    from tabs import dream, style

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Hosting: CPU, GPU and ZeroGPU Spaces"):readme.index("## Layout")]
    assert readme.index("## Quick start") < readme.index("## Hosting: CPU, GPU and ZeroGPU Spaces")
    assert (f"DeepDream asks for {dream.DREAM_GPU_S} s, its zoom animation {dream.ZOOM_GPU_S} s, "
            f"style transfer {style.STYLE_GPU_S} s") in " ".join(section.split())
    for words in ("CPU Space", "GPU Space", "ZeroGPU Space", "GENLAB_DEVICE", "`spaces`"):
        assert words in section


def test_text_and_diffusion_ask_zerogpu_for_a_gpu_and_training_asks_for_its_own_minutes(fake_spaces, monkeypatch):
    import importlib

    from tabs import diffusion, text

    importlib.reload(text)  # text decorates its handlers at import: import it again with `spaces` there
    try:
        with gr.Blocks():
            diffusion.build()
        durations = fake_spaces.durations
        assert {durations[name] for name in ("generate", "steps_versus_quality", "interpolation")} == \
            {diffusion.GPU_SECONDS}
        assert {"generate", "compare", "train_own", "entropy_view"} <= set(durations)
        asked = durations["train_own"]  # a function of the call's arguments: the minutes chosen + a margin
        assert asked(None, "LSTM", 4, 0) == 30 + 4 * 60
        assert asked(None, "LSTM", 1000, 0) == 30 + text.MAX_TRAIN_MINUTES * 60  # clamped like the slider
    finally:
        monkeypatch.delitem(sys.modules, "spaces")
        importlib.reload(text)
