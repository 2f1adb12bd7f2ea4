"""Hosting budget: seconds until `python app.py` answers, and the resident memory of the server
after every tab's main action has run once (targets: ready <= 5 s, memory <= 4 GB).

    python -m bench.memory [--quick]

The app runs as a real server in a subprocess and is driven through gradio_client, as a browser
would drive it, so the figure includes Gradio, torch and every lazily loaded model. Memory is the
resident set (RSS) of the server's whole process tree, read from /proc (Linux).
--quick runs the same actions with the long jobs (DeepDream, style transfer) cut short.

`start_app` is also what the browser and concurrency tests use to start their server.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import save_results

ROOT = Path(__file__).resolve().parent.parent
TARGET_READY_S, TARGET_RSS_GB = 5.0, 4.0
README_ROWS = [
    {"figure": "seconds from `python app.py` to the server answering (median)", "measured": "{ready_s:.2f} s",
     "reference": "≤ {target_ready_s:g} s"},
    {"figure": "server memory (RSS) after every tab's main action ran once",
     "measured": "{rss_after_all_gb:.2f} GB (idle: {rss_idle_gb:.2f} GB)", "reference": "≤ {target_rss_gb:g} GB"},
]
DREAM_EXAMPLE = ROOT / "assets" / "examples" / "dream" / "grace_hopper.jpg"
STYLE_CONTENT = ROOT / "assets" / "examples" / "style" / "grace_hopper.jpg"
STYLE_PAINTING = ROOT / "assets" / "examples" / "style" / "mosaic.png"


# --- the server -------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class AppServer:
    """A `python app.py` child process serving on `url`; `ready_s` is how long it took to answer."""
    process: subprocess.Popen
    url: str
    ready_s: float
    log: Path = field(repr=False)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_app(host: str = "127.0.0.1", connect_host: str = "127.0.0.1", timeout_s: float = 60.0,
              env: dict | None = None) -> AppServer:
    """Run `python app.py` on a free port (binding `host`) and wait until `connect_host` answers."""
    port = free_port()
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"genlab_app_{port}.log"
    child_env = {**os.environ, "GRADIO_SERVER_NAME": host, "GRADIO_SERVER_PORT": str(port),
                 "GRADIO_ANALYTICS_ENABLED": "False", **(env or {})}
    start = time.perf_counter()
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=child_env, stdout=out,
                                   stderr=subprocess.STDOUT)
    url = f"http://{connect_host}:{port}/"
    while time.perf_counter() - start < timeout_s:
        if process.poll() is not None:
            raise RuntimeError(f"app.py exited with code {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return AppServer(process, url, time.perf_counter() - start, log)
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"app.py did not answer on {url} within {timeout_s:g} s:\n{log.read_text()[-3000:]}")


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo += children.get(current, [])
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


# --- every tab's main action -------------------------------------------------------------------

def ui_arguments(client, api_name: str, by_label: dict | None = None, **given) -> dict:
    """Keyword arguments for an endpoint as the page would send them untouched: each widget's
    starting value, None for empty widgets (an image not uploaded, an unused layer slot), and `given`.
    `by_label` sets widgets by their on-page label, for handlers whose inputs Gradio names param_N
    (DeepDream's, which takes a variable number of layer slots)."""
    parameters = client.view_api(return_format="dict", print_info=False)["named_endpoints"][api_name]["parameters"]
    labelled = {p["label"]: p["parameter_name"] for p in parameters}
    missing = set(by_label or {}) - set(labelled)
    if missing:
        raise KeyError(f"{api_name} has no input labelled {', '.join(sorted(missing))}")
    return ({p["parameter_name"]: p["parameter_default"] for p in parameters}
            | {labelled[label]: value for label, value in (by_label or {}).items()} | given)


def main_actions(quick: bool) -> list[tuple[str, str, dict]]:
    """(what, endpoint, arguments) for each tab's main action; arguments not given keep the UI's defaults."""
    from gradio_client import handle_file

    # Every action runs at the UI's defaults in the full run; --quick cuts the slow ones short.
    dream_short = {"iterations per octave": 2, "working size (longer side, px)": 256} if quick else {}
    style_short = {"iterations": 5, "size": 128} if quick else {}
    return [
        ("Text", "/text_generate", {"length": 60} if quick else {}),
        ("DeepDream", "/dream", {"image": handle_file(str(DREAM_EXAMPLE)), "by_label": dream_short}),
        ("Style transfer", "/style_transfer", {"content": handle_file(str(STYLE_CONTENT)),
                                               "style_1": handle_file(str(STYLE_PAINTING)), **style_short}),
        ("VAE", "/show_fashion", {}),
        ("VAE", "/random_face", {}),
        ("GAN dcgan_fashion", "/samples", {"name": "dcgan_fashion"}),
        ("GAN cgan_fashion", "/samples", {"name": "cgan_fashion"}),
        ("GAN wgangp_faces", "/samples", {"name": "wgangp_faces"}),
        ("Diffusion", "/diffusion_sample", {"steps": 10} if quick else {}),
        ("MuseGAN", "/new_piece", {}),
    ]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--starts", type=int, default=None, help="start-ups timed (median); default 3, quick 1")
    args = parser.parse_args(argv)
    from gradio_client import Client

    load = os.getloadavg()[0]  # start-up time on a busy machine is not the app's fault: record how busy
    ready = []
    for _ in range((args.starts or (1 if args.quick else 3)) - 1):
        extra = start_app()
        ready.append(extra.ready_s)
        extra.stop()
    server = start_app()
    ready.append(server.ready_s)
    try:
        idle = tree_rss_bytes(server.process.pid)
        client = Client(server.url, verbose=False)
        seconds = {}
        for what, endpoint, arguments in main_actions(args.quick):
            start = time.perf_counter()
            client.predict(api_name=endpoint, **ui_arguments(client, endpoint, **arguments))
            seconds[f"{what} {endpoint}"] = round(time.perf_counter() - start, 2)
            print(f"{what:18s} {endpoint:18s} {seconds[f'{what} {endpoint}']:6.2f} s  "
                  f"RSS {tree_rss_bytes(server.process.pid) / 1e9:.2f} GB", flush=True)
        after = tree_rss_bytes(server.process.pid)
    finally:
        server.stop()
    figures = {"ready_s": round(statistics.median(ready), 2), "ready_runs_s": [round(t, 2) for t in ready],
               "load_average_1min": round(load, 2), "rss_idle_gb": round(idle / 1e9, 3),
               "rss_after_all_gb": round(after / 1e9, 3), "action_seconds": seconds,
               "target_ready_s": TARGET_READY_S, "target_rss_gb": TARGET_RSS_GB}
    save_results("memory", figures, quick=args.quick)
    return figures


if __name__ == "__main__":
    main()
