"""GenLab: an interactive lab for generative deep learning.

    python app.py        # serves on http://127.0.0.1:7860 (GRADIO_SERVER_NAME=0.0.0.0 to share)

Tabs load their models on first use, so the app starts in a few seconds. They compute on CUDA when
there is a GPU (then Apple's MPS, then the CPU); GENLAB_DEVICE=cpu|cuda|cuda:N|mps overrides.
"""
from __future__ import annotations

import ctypes
import importlib
import logging
import os
import threading
import time

# One intra-op thread per request unless GENLAB_THREADS says otherwise: requests from several users
# run side by side, and on a small CPU two OpenMP threads per request mostly spin-wait on each other
# (character sampling measured 4.5x faster with one). Set before torch is first imported.
os.environ.setdefault("OMP_NUM_THREADS", os.environ.get("GENLAB_THREADS", "1"))

import gradio as gr  # noqa: E402

from tabs import GROUPS, TABS  # noqa: E402
from tabs.classroom import explanations, restore_links  # noqa: E402
from tabs.common import MAX_UPLOAD_BYTES, harden_inputs  # noqa: E402

HEADER = f"""**GenLab**: generative deep learning you can touch. {len(TABS)} techniques from *Deep Learning with Python*
(Chollet) and *Generative Deep Learning* (Foster), with models this project trained itself and views that show **why** they work."""

MAX_UPLOAD = f"{MAX_UPLOAD_BYTES // 1_000_000}mb"  # photos and text files; anything bigger is refused by the server


def limit_heap_growth(trim_every_s: float = 5.0) -> None:
    """Keep the server's memory from creeping up request after request (glibc's malloc; elsewhere a no-op).

    Gradio runs each request on one of many worker threads; glibc gives threads heaps of their own
    (up to 8 per core) and keeps what a finished job freed inside them. One heap, and handing its free
    pages back to the system every few seconds, keeps the server at what the models need
    (bench/memory.py; the README gives the figures)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018 (glibc only)
    except (OSError, AttributeError):
        return
    m_arena_max = -8  # from glibc's malloc.h
    libc.mallopt(m_arena_max, 1)

    def trim_forever():
        while True:
            time.sleep(trim_every_s)
            libc.malloc_trim(0)

    threading.Thread(target=trim_forever, name="malloc_trim", daemon=True).start()


def compute_device() -> str:
    """One line naming the device the app computes on (core.runtime.app_device). A GENLAB_DEVICE this
    machine does not have ends the start-up with one sentence, not with a traceback at the first request."""
    from core.runtime import app_device, hardware_description

    try:
        return hardware_description(app_device())
    except ValueError as exc:
        raise SystemExit(f"GENLAB_DEVICE={os.environ['GENLAB_DEVICE']}: {exc}") from None


def build_app() -> gr.Blocks:
    with gr.Blocks(title="GenLab") as demo:
        gr.Markdown(HEADER)
        pages, selectors = [], {}
        with gr.Tabs(elem_id="groups") as groups:
            for group_title, group, tabs in GROUPS:
                with gr.Tab(group_title, id=group):
                    with gr.Tabs(elem_id=f"{group}-tabs") as inner:
                        for title, module_name in tabs:
                            with gr.Tab(title, id=module_name):
                                page = importlib.import_module(f"tabs.{module_name}").build()
                                if page is not None:
                                    explanations(page.lesson)
                            if page is not None:
                                pages.append(page)
                                selectors[module_name] = [(groups, group), (inner, module_name)]
        restore_links(demo, pages, selectors)
        harden_inputs(demo)
    demo.lesson_pages = pages  # for the tests: every tab's lesson bar and linked widgets
    # Events in one tab share a concurrency slot (see tabs.common.queue); the queue itself
    # holds requests from many users in order instead of refusing them.
    demo.queue(default_concurrency_limit=2, max_size=64)
    return demo


if __name__ == "__main__":
    limit_heap_growth()
    # A user's mistake is one INFO line ("refused in dream_run: ..."); real faults keep their traceback.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("genlab").setLevel(logging.INFO)
    demo = build_app()
    # After build_app: on a ZeroGPU Space the tabs' on_gpu has imported `spaces`, which must come
    # before anything asks torch about CUDA.
    logging.getLogger("genlab").info("GenLab computes on %s", compute_device())
    demo.launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", 7860)),
        max_file_size=MAX_UPLOAD,
    )
