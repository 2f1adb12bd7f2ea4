"""bench.classroom: its figures from hand-made calls, and its quick run end to end against a real server
(4 students, one round of the lesson, short heavy jobs, half a minute at most)."""
import json

import pytest

import bench.classroom as classroom
import bench.common
from bench.report import fill


def _call(kind, what, submit, start, end, error=None, cancelled=False, rank=None, size=None, student=0):
    return {"student": student, "kind": kind, "what": what, "submit": submit, "start": start, "end": end,
            "error": error, "cancelled": cancelled, "max_rank": rank, "max_queue_size": size}


def test_percentiles_are_nearest_rank():
    values = [float(v) for v in range(1, 21)]  # 1 … 20
    assert classroom.percentile(values, 50) == 10.0
    assert classroom.percentile(values, 95) == 19.0
    assert classroom.percentile([3.0], 95) == 3.0


def test_summary_separates_light_actions_during_heavy_jobs_and_bounds_waits():
    calls = [
        _call("heavy", "Style", submit=0.0, start=2.0, end=10.0, rank=3, size=5),
        _call("heavy", "Style", submit=0.5, start=None, end=None, cancelled=True, rank=4, size=5),  # never ran
        _call("heavy", "Text", submit=1.0, start=None, end=1.1, error="Queue is full"),  # refused at once
        _call("light", "GAN", submit=3.0, start=3.1, end=3.5),     # during the first heavy job: 0.5 s
        _call("light", "GAN", submit=4.0, start=4.2, end=6.0),     # during: 2 s
        _call("light", "VAE", submit=0.0, start=0.0, end=0.25),    # before any heavy job started
        _call("light", "VAE", submit=11.0, start=None, end=None, error="not finished in time", cancelled=True),
    ]
    figures = classroom.summarise(calls, stopped=20.0, deadline=19.0)
    assert figures["light"]["n"] == 3 and figures["light_unfinished"] == 1
    assert figures["light_during_heavy"] == {"n": 2, "p50_s": 0.5, "p95_s": 2.0, "max_s": 2.0}
    assert figures["light_by_action"]["VAE"]["n"] == 1
    heavy = figures["heavy"]
    assert heavy["submitted"] == 3 and heavy["finished"] == 1 and heavy["unstarted"] == 1
    assert heavy["by_action"]["Text"] == {"submitted": 1, "finished": 0, "wait_max_s": 0.1, "wait_median_s": None,
                                          "run_median_s": None}
    # The job that never started had waited from 0.5 s until the lesson stopped at 20 s: at least 19.5 s.
    assert heavy["wait_longest_s"] == 19.5 and heavy["wait_longest_is_lower_bound"]
    assert heavy["by_action"]["Style"]["run_median_s"] == 8.0
    # Waited a second or more: both heavy jobs (and the light one cut off at the end); two were told their place.
    assert figures["queue"] == {"max_place_shown": 5, "max_queue_size": 5, "waiting": 3, "told_place": 2}
    # The refusal is an error; the light action and the heavy job cancelled at the time limit were cut off.
    assert figures["errors"] == 1 and figures["error_messages"] == ["Queue is full"]
    assert figures["cut_off_at_limit"] == 2


@pytest.fixture
def results_in(tmp_path, monkeypatch):
    monkeypatch.setattr(bench.common, "RESULTS_DIR", tmp_path)
    return tmp_path


def test_quick_classroom_run_saves_sane_figures(results_in):
    figures = classroom.main(["--quick"])
    saved = json.loads((results_in / "classroom.quick.json").read_text())
    assert saved["quick"] and saved["figures"] == json.loads(json.dumps(figures))
    assert figures["students"] == 4 and figures["rounds"] == 1
    light, during = figures["light"], figures["light_during_heavy"]
    assert light["n"] >= 4, figures
    assert during["n"] >= 1, "no light action finished while a heavy job ran"
    for spread in (light, during):
        assert 0 < spread["p50_s"] <= spread["p95_s"] <= spread["max_s"] <= 60 * figures["minutes_limit"] + 30
    heavy = figures["heavy"]
    assert heavy["submitted"] >= 3 and heavy["finished"] >= 1, heavy
    assert heavy["wait_longest_s"] >= 0
    assert figures["wall_s"] <= 60 * figures["minutes_limit"] + 35  # the time limit holds
    assert 0 < figures["rss_idle_gb"] <= figures["rss_peak_gb"] < 16
    # Jobs that waited were told their place (gradio's queue sends each waiting job its rank).
    queue = figures["queue"]
    assert queue["told_place"] <= queue["waiting"]
    if queue["waiting"]:
        assert queue["max_place_shown"] >= 1 and queue["told_place"] >= 1, queue
    # The README rows fill from what was saved.
    for row in classroom.README_ROWS:
        fill(row["measured"], figures), fill(row["reference"], figures), fill(row["figure"], figures)
