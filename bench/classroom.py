"""A class at once: simulated students follow one lesson's clicks against one real server, light actions
(slider moves, decodes, sample grids, a short text) while heavy jobs (a 50-step diffusion sampling, a
style transfer of the example photo, a 1000-character text) wait in the queue or run.

    python -m bench.classroom [--quick] [--students 30] [--minutes 4] [--rounds 1]

The app runs as in bench/memory.py (start_app, a `python app.py` child on a free localhost port), and
every student is a gradio_client Client of its own (its own session, as a browser tab is). All students
start within a few seconds of each other, as when the teacher says "now click"; each clicks the lesson's
steps in order with a second or two of thought between them. A heavy job is submitted and left to run
while the student goes on clicking (the page lets them: another tab's slot is free); a light action is
waited for, its result being what the student looks at. After the last click the student waits for their
heavy jobs. Everything is bounded: --students clients, --rounds times through the lesson, and --minutes
from the first click, when whatever has not finished is cancelled and counted as unfinished.

Saved figures:
  - light actions: seconds from click to result, p50 and p95 (nearest rank), over all of them and over
    those that finished while a heavy job was running (the goal: p95 <= 1 s there), and per action;
  - heavy jobs: seconds from submit until the server started them (the queue) and running, per action;
    `wait_longest_s` is the longest wait, a lower bound when a job never started before the time limit;
  - the queue: the largest place a waiting job was told (gradio_client's job.status(): rank + 1 of
    queue_size, what the page shows as "queue: 3/12"), and how many jobs that waited at least a second
    were told their place;
  - memory: RSS of the server's process tree (bench.memory.tree_rss_bytes), idle and at its peak
    (sampled every 0.25 s).
--quick: 4 students, one round, short heavy jobs (the cut-down settings of bench.memory.main_actions).
"""
from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from bench.common import save_results
from bench.memory import TARGET_RSS_GB, main_actions, start_app, tree_rss_bytes, ui_arguments

TARGET_LIGHT_P95_S = 1.0
LIGHT_TIMEOUT_S = 120.0  # one light action; the lesson's --minutes bounds everything else
HTTP_TIMEOUT_S = 60.0    # one HTTP request of gradio_client (its default, 5 s, is too short on a busy machine)
POLL_S, RSS_EVERY_S, REPORT_EVERY_S = 0.05, 0.25, 10.0
README_ROWS = [
    {"figure": "seconds from click to result of the light actions (slider moves, decodes, sample grids, a "
               "40-character text) that finished while heavy jobs ran, {students} students following one lesson "
               "at once: p50 / p95",
     "measured": "{light_during_heavy.p50_s:.2f} s / {light_during_heavy.p95_s:.2f} s "
                 "(n = {light_during_heavy.n})",
     "reference": "p95 ≤ {target_light_p95_s:g} s"},
    {"figure": "longest wait of a heavy job (50-step diffusion, style transfer, 1000-character text) from submit "
               "until the server started it; heavy jobs finished within the {minutes_limit:g}-minute limit",
     "measured": "{heavy.wait_longest_s:.0f} s; {heavy.finished} of {heavy.submitted} finished",
     "reference": "—"},
    {"figure": "largest queue place a waiting student was shown; waiting jobs (≥ 1 s) told their place",
     "measured": "{queue.max_place_shown} of {queue.max_queue_size}; {queue.told_place} of {queue.waiting}",
     "reference": "every waiting job"},
    {"figure": "peak server memory (RSS of the process tree) during the lesson",
     "measured": "{rss_peak_gb:.2f} GB (idle: {rss_idle_gb:.2f} GB)", "reference": "≤ {target_rss_gb:g} GB"},
]
README_PROSE = ["{students} students following one lesson at once on {cpu_count} CPU cores: the light actions "
                "that finished while heavy jobs ran took {light_during_heavy.p50_s:.2f} s (median) and "
                "{light_during_heavy.p95_s:.2f} s (95th percentile)"]


# --- the lesson ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Step:
    kind: str        # "light" (the student waits for it) or "heavy" (submitted, left to run)
    what: str
    endpoint: str
    arguments: dict  # as bench.memory.main_actions gives them: keywords, and "by_label" for param_N inputs


def lesson(quick: bool) -> list[Step]:
    """One lesson's clicks, in order. Actions bench.memory.main_actions already has are taken from it
    (the same endpoint and settings, cut short the same way under --quick); the slider moves and the
    short and long texts are the lesson's own."""
    actions = {what: (endpoint, arguments) for what, endpoint, arguments in main_actions(quick)}

    def known(kind: str, what: str, **changes) -> Step:
        endpoint, arguments = actions[what]
        by_label = {**arguments.get("by_label", {}), **changes.pop("by_label", {})}
        return Step(kind, what, endpoint, {**arguments, **changes, **({"by_label": by_label} if by_label else {})})

    def forward(t: float) -> Step:
        return Step("light", f"Diffusion forward process, t = {t:g}", "/diffusion_forward_process", {"t": t})

    def smile(value: float) -> Step:
        return known("light", "VAE edit", by_label={"smiling": value})

    return [
        Step("light", "Text, 40 characters", "/text_generate", {"length": 40}),
        Step("heavy", "Text, long", "/text_generate", {"length": 200 if quick else 1000}),
        forward(0.2), forward(0.5), forward(0.8),
        known("heavy", "Diffusion faces"),  # 50 DDIM steps (10 with --quick)
        known("light", "GAN dcgan_fashion"),
        known("light", "VAE face"),
        smile(1.0), smile(2.0), smile(-1.0),
        known("heavy", "Style transfer"),  # the example photo in the mosaic's style, at the UI's defaults
        known("light", "GAN dcgan_fashion"),
        forward(0.95),
    ]


# --- one click ----------------------------------------------------------------------------------

@dataclass
class Call:
    """One submitted action and what was seen of it (times from time.time())."""
    student: int
    kind: str
    what: str
    submit: float
    job: object = field(default=None, repr=False)
    start: float | None = None   # first seen running (PROCESSING or later)
    end: float | None = None     # result (or error) received
    error: str | None = None
    cancelled: bool = False
    max_rank: int | None = None  # largest queue rank the server sent while it waited (0 = next)
    max_queue_size: int | None = None

    def record(self) -> dict:
        return {k: getattr(self, k) for k in ("student", "kind", "what", "submit", "start", "end", "error",
                                              "cancelled", "max_rank", "max_queue_size")}


STARTED = {"PROCESSING", "ITERATING", "PROGRESS", "LOG", "FINISHED"}


class Monitor(threading.Thread):
    """Polls every call's job.status() (queue rank, start) and the server's memory until stopped."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.calls, self.lock, self.halt = pid, [], threading.Lock(), threading.Event()
        self.rss_peak = tree_rss_bytes(pid)

    def add(self, call: Call) -> None:
        with self.lock:
            self.calls.append(call)

    def poll(self) -> None:
        now = time.time()
        with self.lock:
            watching = [c for c in self.calls if c.start is None and not c.cancelled]
        for call in watching:
            status = call.job.status()
            code = status.code.name
            if code == "IN_QUEUE" and status.rank is not None:
                call.max_rank = max(call.max_rank or 0, status.rank)
                call.max_queue_size = max(call.max_queue_size or 0, status.queue_size or 0)
            elif code in STARTED:
                seen = status.time.timestamp() if status.time is not None and code != "FINISHED" else now
                call.start = min(now, seen)

    def run(self) -> None:
        began = last_rss = last_report = time.time()
        rss = self.rss_peak
        while not self.halt.is_set():
            self.poll()
            if time.time() - last_rss >= RSS_EVERY_S:
                rss = tree_rss_bytes(self.pid)
                self.rss_peak, last_rss = max(self.rss_peak, rss), time.time()
            if time.time() - last_report >= REPORT_EVERY_S:
                last_report = time.time()
                with self.lock:
                    calls = list(self.calls)
                done = sum(c.end is not None for c in calls)
                running = sum(c.start is not None and c.end is None for c in calls)
                print(f"{last_report - began:5.0f} s: {len(calls)} clicks, {done} done, {running} running, "
                      f"{len(calls) - done - running} queued; RSS {rss / 1e9:.2f} GB", flush=True)
            self.halt.wait(POLL_S)


def submit(client, monitor: Monitor, student: int, step: Step, arguments: dict) -> Call:
    call = Call(student, step.kind, step.what, time.time())

    def finished(future):
        call.end = time.time()
        if call.start is None and not call.cancelled and not future.cancelled() and future.exception() is None:
            call.start = call.end  # done between two polls: it ran at most until now
        if call.cancelled or future.cancelled():  # cut off at the time limit (the server then sends {})
            call.error = call.error or "cancelled"
        elif future.exception() is not None:
            call.error = f"{type(future.exception()).__name__}: {future.exception()}"[:300]

    call.job = client.submit(api_name=step.endpoint, **arguments)
    call.job.future.add_done_callback(finished)
    monitor.add(call)
    return call


def wait(call: Call, deadline: float, limit: float = math.inf) -> None:
    """Wait for `call` until `limit` seconds or the lesson's deadline; cancel it if it is not done by then."""
    try:
        call.job.result(timeout=max(0.0, min(limit, deadline - time.time())))
    except TimeoutError:
        call.cancelled, call.error = True, "not finished in time"
        call.job.cancel()
    except Exception:  # noqa: BLE001 - the done callback keeps the message
        pass


# --- the class ----------------------------------------------------------------------------------

def student(number: int, client, monitor: Monitor, steps: list[tuple[Step, dict]], rounds: int, deadline: float,
            think_s: tuple[float, float], start_spread_s: float) -> None:
    rng = random.Random(number)
    time.sleep(rng.uniform(0, start_spread_s))
    for _ in range(rounds):
        heavy = []
        for step, arguments in steps:
            if time.time() >= deadline:
                break
            call = submit(client, monitor, number, step, arguments)
            if step.kind == "heavy":
                heavy.append(call)
            else:
                wait(call, deadline, LIGHT_TIMEOUT_S)
            time.sleep(rng.uniform(*think_s))
        for call in heavy:
            wait(call, deadline)


def personal(arguments: dict, seeded: bool, number: int) -> dict:
    """A student's own arguments: the seed is the student's number, so that no two make the same picture."""
    return {**arguments, "seed": number} if seeded else arguments


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def spread(values: list[float]) -> dict:
    if not values:
        return {"n": 0, "p50_s": None, "p95_s": None, "max_s": None}
    return {"n": len(values), "p50_s": round(percentile(values, 50), 3), "p95_s": round(percentile(values, 95), 3),
            "max_s": round(max(values), 3)}


def summarise(calls: list[dict], stopped: float, deadline: float | None = None) -> dict:
    """Figures from the calls' records (Call.record()); `stopped`: when the lesson was stopped, `deadline`: the
    time limit (calls cancelled by it, or ended with an error from then on, are counted as cut off, not as errors)."""
    light = [c for c in calls if c["kind"] == "light"]
    heavy = [c for c in calls if c["kind"] == "heavy"]
    light_ok = [c for c in light if c["end"] is not None and not c["error"] and not c["cancelled"]]
    running = [(c["start"], c["end"] if c["end"] is not None else stopped) for c in heavy if c["start"] is not None]

    def during_heavy(c) -> bool:
        return any(start <= c["end"] <= end for start, end in running)

    by_action: dict[str, list[float]] = {}
    for c in light_ok:
        by_action.setdefault(c["what"], []).append(c["end"] - c["submit"])

    def waited(c) -> float:
        """Seconds from submit until it started, was refused (an error before it ran), or the lesson stopped."""
        if c["start"] is not None:
            return c["start"] - c["submit"]
        return (c["end"] if c["end"] is not None and not c["cancelled"] else stopped) - c["submit"]

    def unstarted(c) -> bool:
        return c["start"] is None and (c["cancelled"] or c["end"] is None)

    heavy_ok = [c for c in heavy if c["end"] is not None and not c["error"] and not c["cancelled"]]
    waits = [waited(c) for c in heavy]
    heavy_actions = {}
    for what in dict.fromkeys(c["what"] for c in heavy):
        mine = [c for c in heavy if c["what"] == what]
        done = [c for c in mine if c in heavy_ok]
        started = [c for c in mine if c["start"] is not None]
        heavy_actions[what] = {
            "submitted": len(mine), "finished": len(done),
            "wait_max_s": round(max(waited(c) for c in mine), 2),
            "wait_median_s": round(statistics.median(c["start"] - c["submit"] for c in started), 2) if started else None,
            "run_median_s": round(statistics.median(c["end"] - c["start"] for c in done), 2) if done else None}

    waiting = [c for c in calls if waited(c) >= 1.0]
    ranks = [c["max_rank"] for c in calls if c["max_rank"] is not None]
    cut_off = [c for c in calls if c["cancelled"] or c["error"] and deadline is not None and c["end"] is not None
               and c["end"] >= deadline]
    errors = [c["error"] for c in calls if c["error"] and c not in cut_off]
    return {
        "light": spread([c["end"] - c["submit"] for c in light_ok]),
        "light_during_heavy": spread([c["end"] - c["submit"] for c in light_ok if during_heavy(c)]),
        "light_submitted": len(light), "light_unfinished": len(light) - len(light_ok),
        "light_by_action": {what: spread(values) for what, values in by_action.items()},
        "heavy": {"submitted": len(heavy), "finished": len(heavy_ok),
                  "unstarted": sum(unstarted(c) for c in heavy),
                  "wait_longest_s": round(max(waits), 2) if waits else None,
                  "wait_longest_is_lower_bound": any(unstarted(c) for c in heavy),
                  "last_done_after_s": round(max(c["end"] for c in heavy_ok) - min(c["submit"] for c in calls), 2)
                  if heavy_ok else None,
                  "by_action": heavy_actions},
        "queue": {"max_place_shown": max(ranks) + 1 if ranks else 0,
                  "max_queue_size": max((c["max_queue_size"] or 0 for c in calls), default=0),
                  "waiting": len(waiting), "told_place": sum(c["max_rank"] is not None for c in waiting)},
        "errors": len(errors), "error_messages": sorted(set(errors))[:10], "cut_off_at_limit": len(cut_off),
    }


def start_server(attempts: int = 5, timeout_s: float = 180.0):
    """bench.memory.start_app, tried again when the server does not come up (on a busy machine Gradio's own
    check that localhost answers can time out; the start-up time is bench/memory.py's figure, not this one's)."""
    for attempt in range(1, attempts + 1):
        try:
            return start_app(timeout_s=timeout_s)
        except RuntimeError as exc:
            if attempt == attempts:
                raise
            print(f"the app did not start ({str(exc).strip().splitlines()[-1]}); trying again", flush=True)
            time.sleep(5)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--students", type=int, default=None, help="default 30, quick 4")
    parser.add_argument("--rounds", type=int, default=1, help="times through the lesson (default 1)")
    parser.add_argument("--minutes", type=float, default=None,
                        help="limit from the first click; what is not done then is cancelled (default 4, quick 0.5)")
    args = parser.parse_args(argv)
    from gradio_client import Client

    students = args.students or (4 if args.quick else 30)
    minutes = args.minutes or (0.5 if args.quick else 4.0)
    think_s, start_spread_s = ((0.1, 0.4), 0.5) if args.quick else ((1.0, 3.0), 3.0)
    load = os.getloadavg()[0]
    server = start_server()
    print(f"app ready in {server.ready_s:.1f} s", flush=True)
    try:
        rss_idle = tree_rss_bytes(server.process.pid)

        def connect(_=None):  # a generous HTTP timeout: on a busy server the API description takes seconds
            return Client(server.url, verbose=False, download_files=False, httpx_kwargs={"timeout": HTTP_TIMEOUT_S})

        first = connect()
        # Each step's arguments as the page would send them, resolved once (the API is the same for everyone).
        resolved = []
        for step in lesson(args.quick):
            arguments = dict(step.arguments)
            by_label = arguments.pop("by_label", None)
            full = ui_arguments(first, step.endpoint, by_label, **arguments)
            resolved.append((step, full, "seed" in full and "seed" not in step.arguments))
        with ThreadPoolExecutor(4) as pool:
            clients = [first] + list(pool.map(connect, range(students - 1)))
        print(f"{students} students connected", flush=True)
        monitor = Monitor(server.process.pid)
        monitor.start()
        began = time.time()
        deadline = began + 60 * minutes
        threads = [threading.Thread(target=student, daemon=True, args=(
            n, clients[n], monitor, [(step, personal(full, seeded, n)) for step, full, seeded in resolved],
            args.rounds, deadline, think_s, start_spread_s)) for n in range(students)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=max(1.0, deadline - time.time() + 30))
        stopped = time.time()
        monitor.halt.set()
        monitor.join()
        for call in monitor.calls:
            if call.end is None:
                call.cancelled = True
                call.job.cancel()
        calls = [c.record() for c in monitor.calls]
        for client in clients:
            client.close()
    finally:
        server.stop()
    figures = {"students": students, "rounds": args.rounds, "minutes_limit": minutes,
               "lesson": [f"{s.kind}: {s.what} ({s.endpoint})" for s in lesson(args.quick)],
               "wall_s": round(stopped - began, 1), **summarise(calls, stopped, deadline),
               "rss_idle_gb": round(rss_idle / 1e9, 3), "rss_peak_gb": round(monitor.rss_peak / 1e9, 3),
               "cpu_count": os.cpu_count(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
               "load_average_1min": round(load, 2),
               "command": "python -m bench.classroom " + " ".join(argv if argv is not None else sys.argv[1:]),
               "target_light_p95_s": TARGET_LIGHT_P95_S, "target_rss_gb": TARGET_RSS_GB}
    save_results("classroom", figures, quick=args.quick)
    return figures


if __name__ == "__main__":
    main()
