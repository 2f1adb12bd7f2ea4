"""Hosting budget: seconds until `python app.py` answers, the resident memory of the server after
several rounds of every tab's actions, heavier options included, and what a burst of hostile uploads
costs (targets: ready <= 5 s, memory <= 4 GB, no growth from round to round, bombs within 100 MB).

    python -m bench.memory [--quick] [--rounds N]

The app runs as a real server in a subprocess and is driven through gradio_client, as a browser
would drive it, so the figure includes Gradio, torch and every lazily loaded model. Memory is the
resident set (RSS) of the server's whole process tree, read from /proc (Linux). The first round loads
every model; later rounds must not add to it (a leak or a per-request cache would show as growth).
The bomb burst sends 8 uploads at once of a 20000x20000 PNG (0.4 MB on disk, 1.2 GB decoded) to the
image inputs, and samples the server's memory every 20 ms while they are refused.
--quick runs one round with the long jobs (DeepDream, style transfer) cut short.

`start_app` is also what the browser and concurrency tests use to start their server.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import save_results

ROOT = Path(__file__).resolve().parent.parent
TARGET_READY_S, TARGET_RSS_GB, TARGET_GROWTH_GB, TARGET_BOMB_MB = 5.0, 4.0, 0.1, 100
README_ROWS = [
    {"figure": "seconds from `python app.py` to the server answering (median)", "measured": "{ready_s:.2f} s",
     "reference": "≤ {target_ready_s:g} s"},
    {"figure": "server memory (RSS) after {rounds} rounds of every tab's actions, heavier options included",
     "measured": "{rss_after_all_gb:.2f} GB (idle: {rss_idle_gb:.2f} GB)", "reference": "≤ {target_rss_gb:g} GB"},
    {"figure": "memory growth from the end of round 1 to the end of the last round",
     "measured": "{rss_growth_after_first_round_gb:+.3f} GB", "reference": "≤ {target_growth_gb:g} GB"},
    {"figure": "peak memory rise during 8 concurrent 20000×20000 PNG uploads (refused from the header)",
     "measured": "{bomb_burst.peak_rise_mb:.0f} MB", "reference": "≤ {target_bomb_mb:g} MB"},
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
    """(what, endpoint, arguments) for each tab's actions, in an order one user could click them (state
    such as the current face or piece carries from one call to the next in a client's session);
    arguments not given keep the UI's defaults. The heavier options are the largest a tab offers
    short of its slowest settings: a guided dream, a 512-px painting, full grids, the faces models."""
    from gradio_client import handle_file

    photo, painting = handle_file(str(DREAM_EXAMPLE)), handle_file(str(STYLE_PAINTING))
    # Every action runs at the UI's defaults in the full run; --quick cuts the slow ones short.
    dream_short = {"iterations per octave": 2, "working size (longer side, px)": 256} if quick else {}
    style_short = {"iterations": 5, "size": 128} if quick else {}
    return [
        ("Text", "/text_generate", {"length": 60} if quick else {}),
        ("Text, four temperatures", "/text_compare", {"length": 60} if quick else {}),
        ("DeepDream", "/dream_run", {"image": photo, "by_label": dream_short}),
        ("DeepDream with a guide", "/dream_run", {"image": photo, "guide": painting, "by_label": dream_short}),
        ("DeepDream zoom", "/dream_zoom", {"image": photo, "by_label": {"frames": 3, "frame size (px)": 256}}),
        ("Style transfer", "/style_transfer", {"content": handle_file(str(STYLE_CONTENT)), "style_1": painting,
                                               **style_short}),
        ("Style transfer 512 px", "/style_transfer", {"content": handle_file(str(STYLE_CONTENT)), "style_1": painting,
                                                      "size": 128 if quick else 512, "iterations": 5 if quick else 20}),
        ("VAE: PCA, autoencoder, VAE", "/vae_show_spaces", {}),
        ("VAE: random codes in each space", "/vae_sample_spaces", {}),
        ("VAE: denoising", "/vae_denoise", {}),
        ("VAE map", "/vae_show_fashion", {}),
        ("VAE face", "/vae_random_face", {}),
        ("VAE photo", "/vae_uploaded_face", {"image": photo}),
        ("VAE edit", "/vae_render_face", {"by_label": {"smiling": 2.0}}),
        ("GAN dcgan_fashion", "/gan_samples", {"name": "dcgan_fashion"}),
        ("GAN cgan_fashion", "/gan_samples", {"name": "cgan_fashion"}),
        ("GAN wgangp_faces", "/gan_samples", {"name": "wgangp_faces", "grid_size": 16}),
        ("GAN stylegan_faces", "/gan_samples", {"name": "stylegan_faces", "grid_size": 16}),
        ("GAN walk", "/gan_latent_walk", {}),
        ("GAN style mixing", "/gan_style_mix", {}),
        ("Diffusion", "/diffusion_sample", {"steps": 10} if quick else {}),
        ("Diffusion faces", "/diffusion_sample", {"name": "faces32", "steps": 10 if quick else 50}),
        ("Diffusion steps vs quality", "/diffusion_steps_versus_quality", {"n_rows": 1} if quick else {}),
        ("Text to image", "/text_to_image_generate", {"steps": 10} if quick else {}),
        ("Text to image, 8 images", "/text_to_image_generate", {"n": 8, "steps": 10 if quick else 100}),
        ("Text to image, Fashion-MNIST", "/text_to_image_generate", {"name": "fashion32_classes", "prompt": "a sneaker",
                                                                     "steps": 10 if quick else 50}),
        ("Text to image, four weights", "/text_to_image_guidance_strip", {"steps": 10} if quick else {}),
        ("Text to image, CLIP search", "/text_to_image_clip_search", {}),
        ("Text to image, CLIP captions", "/text_to_image_clip_describe", {}),
        ("Text to image, CLIP matrix", "/text_to_image_clip_matrix", {}),
        ("MuseGAN", "/musegan_new_piece", {}),
        ("MuseGAN interpolation", "/musegan_interpolate", {}),
        ("Music Transformer", "/music_continue", {}),
        ("Music Transformer attention", "/music_attention", {}),
        ("PixelCNN", "/pixelcnn_generate", {}),
        ("Normalizing flow", "/flow_samples", {}),
        ("EBM", "/ebm_sample", {"steps": 20} if quick else {}),
        ("EBM score", "/ebm_score", {}),
        ("EBM repair", "/ebm_repair", {"steps": 20} if quick else {}),
        ("Adversarial", "/adversarial_attack", {"image": photo}),
        ("Adversarial side by side", "/adversarial_side_by_side", {}),
        ("World Models drive", "/world_models_drive", {"steps": 100} if quick else {}),
        ("World Models dream", "/world_models_dream_start", {}),
        ("World Models dream, a button", "/world_models_dream_press", {}),
        ("World Models dream, again", "/world_models_dream_press", {}),
        ("World Models dream driver", "/world_models_dream_drive", {"frames": 50} if quick else {}),
        ("World Models compare", "/world_models_compare", {"steps": 60} if quick else {}),
        ("World Models mixture", "/world_models_mixture", {}),
    ]


def image_inputs(client) -> list[tuple[str, str]]:
    """(endpoint, parameter) of every image input the app's API offers."""
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    return [(name, p["parameter_name"]) for name, endpoint in endpoints.items()
            for p in endpoint["parameters"] if p["component"] == "Image"]


def one_bad_image(client, targets: list[tuple[str, str]], endpoint: str, parameter: str, path) -> dict:
    """Arguments for `endpoint` at its UI defaults with the file at `path` in `parameter` and the example
    photo in the endpoint's other image inputs (`targets`: image_inputs), so that the file under test is
    what gets refused."""
    from gradio_client import handle_file

    others = {other: handle_file(str(DREAM_EXAMPLE)) for e, other in targets if e == endpoint and other != parameter}
    return ui_arguments(client, endpoint, **others, **{parameter: handle_file(str(path))})


def make_bomb(path: Path, side: int = 20_000) -> Path:
    """A PNG of side x side black pixels: small on disk (zlib squeezes the runs), huge decoded."""
    from PIL import Image

    Image.new("L", (side, side)).save(path)
    return path


def bomb_burst(client, server: AppServer, bomb: Path, count: int = 8) -> dict:
    """Send `count` uploads of `bomb` at once, spread over the image inputs (see one_bad_image), and
    sample the server's memory while they are refused.
    Returns the peak and final rise in MB over the memory just before, and the messages users got."""
    targets = image_inputs(client)
    calls = [targets[i % len(targets)] for i in range(count)]
    baseline = tree_rss_bytes(server.process.pid)
    peak, done = baseline, threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss_bytes(server.process.pid))
            time.sleep(0.02)

    def upload(target):
        endpoint, parameter = target
        try:
            client.predict(api_name=endpoint, **one_bad_image(client, targets, endpoint, parameter, bomb))
        except Exception as exc:  # the refusal we want: gradio_client raises the user's message
            return str(exc)
        return "accepted"

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with ThreadPoolExecutor(count) as pool:
        messages = list(pool.map(upload, calls))
    done.set()
    sampler.join()
    return {"uploads": count, "peak_rise_mb": round((peak - baseline) / 1e6, 1),
            "after_rise_mb": round((tree_rss_bytes(server.process.pid) - baseline) / 1e6, 1),
            "messages": sorted(set(messages))}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--starts", type=int, default=None, help="start-ups timed (median); default 3, quick 1")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of every action; default 3, quick 1")
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
    rounds = args.rounds or (1 if args.quick else 3)
    try:
        idle = tree_rss_bytes(server.process.pid)
        client = Client(server.url, verbose=False)
        seconds, after_round = {}, []
        for round_number in range(1, rounds + 1):
            for what, endpoint, arguments in main_actions(args.quick):
                start = time.perf_counter()
                client.predict(api_name=endpoint, **ui_arguments(client, endpoint, **arguments))
                seconds.setdefault(f"{what} {endpoint}", []).append(round(time.perf_counter() - start, 2))
                print(f"round {round_number} {what:28s} {endpoint:32s} {seconds[f'{what} {endpoint}'][-1]:6.2f} s  "
                      f"RSS {tree_rss_bytes(server.process.pid) / 1e9:.2f} GB", flush=True)
            after_round.append(tree_rss_bytes(server.process.pid))
        with tempfile.TemporaryDirectory() as folder:
            burst = bomb_burst(client, server, make_bomb(Path(folder) / "bomb.png"))
        print(f"bomb burst: peak +{burst['peak_rise_mb']} MB, after +{burst['after_rise_mb']} MB", flush=True)
    finally:
        server.stop()
    figures = {"ready_s": round(statistics.median(ready), 2), "ready_runs_s": [round(t, 2) for t in ready],
               "load_average_1min": round(load, 2), "rss_idle_gb": round(idle / 1e9, 3), "rounds": rounds,
               "rss_after_round_gb": [round(b / 1e9, 3) for b in after_round],
               "rss_after_all_gb": round(after_round[-1] / 1e9, 3),
               "rss_growth_after_first_round_gb": round((after_round[-1] - after_round[0]) / 1e9, 3),
               "bomb_burst": burst, "action_seconds": {k: statistics.median(v) for k, v in seconds.items()},
               "target_ready_s": TARGET_READY_S, "target_rss_gb": TARGET_RSS_GB,
               "target_growth_gb": TARGET_GROWTH_GB, "target_bomb_mb": TARGET_BOMB_MB}
    save_results("memory", figures, quick=args.quick)
    return figures


if __name__ == "__main__":
    main()
