"""Hosting readiness: the README front matter Hugging Face Spaces reads, the server's upload limit,
and which network interface `python app.py` listens on."""
from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

import app
from bench.memory import start_app

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
