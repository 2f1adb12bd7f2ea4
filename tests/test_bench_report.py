import json

from bench import fid_baseline, report


def _write_result(folder, name, figures, quick=False):
    record = {"name": name, "date": "2026-01-02T03:04:05", "quick": quick,
              "machine": {"device": "cpu", "cpu_count": 2, "torch": "2.x"}, "figures": figures}
    (folder / f"{name}.json").write_text(json.dumps(record))


def test_fill_formats_dotted_figures():
    figures = {"fashion": {"real_fid": 1.23456, "n": 10000}}
    assert report.fill("{fashion.real_fid:.2f} (n = {fashion.n})", figures) == "1.23 (n = 10000)"


def test_declared_rows_are_filled_from_the_latest_results(tmp_path):
    _write_result(tmp_path, "fid_baseline", {"fashion": {
        "n": 2000, "classifier_accuracy": 0.9312, "real_fid": 0.5, "real_kid": 0.01,
        "real_kid_std": 0.2, "noise_fid": 40.0, "blur_fid": 30.0}}, quick=True)
    text = report.table(tmp_path, ["fid_baseline"])
    assert "| 93.12% (n = 2000) (quick) |" in text
    assert "0.50 (n = 2000) (quick)" in text
    # The face figures are absent from this result: their rows say so instead of failing.
    assert text.count(report.MISSING) == 2
    assert "fid_baseline: 2026-01-02T03:04:05, cpu, 2 CPUs" in text


def test_benchmarks_without_rows_list_their_numbers_against_their_target(tmp_path):
    # "plain" stands for a benchmark module without README_ROWS (here: no module at all).
    _write_result(tmp_path, "plain", {"build_app_median_s": 2.5, "build_app_s": [2.4, 2.6], "target_s": 5.0})
    text = report.table(tmp_path, ["plain"])
    assert "| `bench/plain.py` | `build_app_median_s` | — | 2.5 |" in text
    assert "| `bench/plain.py` | `target_s` | 5 | — |" in text
    assert "build_app_s" not in text  # lists are not single figures


def test_declared_rows_and_quick_only_results(tmp_path):
    _write_result(tmp_path, "startup", {"build_app_median_s": 2.5, "build_app_s": [2.4, 2.6],
                                        "fresh_process_median_s": 3.1, "target_s": 5.0}, quick=True)
    (tmp_path / "startup.json").rename(tmp_path / "startup.quick.json")
    text = report.table(tmp_path, ["startup"])
    assert ("| `bench/startup.py` | seconds from `import app` to build_app() done in a new process (median; in "
            "brackets: the whole process, interpreter start-up included) | ≤ 5 s | 2.50 s (3.10 s) (quick) |") in text


def test_a_benchmark_that_never_ran_is_listed_as_not_run(tmp_path):
    text = report.table(tmp_path, ["fid_baseline"])
    assert text.count(report.MISSING) == len(fid_baseline.README_ROWS)


def test_every_benchmark_declares_rows_that_its_saved_results_fill():
    # The README table is for people: every benchmark says in words what its numbers mean, and
    # each row's {fields} exist in the figures its full run saved (a renamed figure breaks this test).
    from bench.common import RESULTS_DIR

    for name in report.all_benchmarks():
        rows = report._declared_rows(name)
        assert rows, f"bench/{name}.py declares no README_ROWS"
        # The table reads the full run's results, or a quick run's when no full run exists yet.
        path = RESULTS_DIR / f"{name}.json"
        if path.is_file():
            figures = json.loads(path.read_text())["figures"]
            for row in rows:
                report.fill(row["measured"], figures)
                report.fill(row["reference"], figures)


# --- the README quotes the saved figures, not older ones ------------------------------------

def _readme():
    from bench.common import RESULTS_DIR

    return (RESULTS_DIR.parent.parent / "README.md").read_text()


def test_readme_table_is_the_one_the_saved_results_give():
    # `python -m bench.report` writes the table; the README must carry it unchanged (a figure edited
    # by hand, or results re-run without regenerating the table, fails here).
    from bench.common import RESULTS_DIR

    expected = report.table()
    assert (RESULTS_DIR / "README_table.md").read_text() == expected
    readme = _readme()
    start = readme.index("| benchmark | figure | reference | measured |")
    assert readme[start:start + len(expected)] == expected, "README table differs: run python -m bench.report"


def test_readme_prose_quotes_the_saved_figures():
    assert report.prose(), "no benchmark declares README_PROSE"
    assert report.prose_missing_from(_readme()) == []


def test_prose_check_sees_a_figure_that_changed(tmp_path):
    _write_result(tmp_path, "gan_quality", {"n": 10000, "cgan_fashion": {"fid": 8.84, "class_accuracy": 0.912},
                                            "dcgan_fashion": {"fid": 51.9, "real_fid": 0.42},
                                            "wgangp_faces": {"fid": 266.7, "real_fid": 1.47},
                                            "stylegan_faces": {"fid": 120.2}})
    readme = ("at n = 10,000 the CGAN reaches FID 8.8 and 91% class accuracy,\n  the DCGAN FID 52 (real vs real: 0.4). "
              "(FID 267 on the face features; real vs real 1.5); the StyleGAN's FID on the same features is 120")
    assert report.prose_missing_from(readme, tmp_path, ["gan_quality"]) == []
    _write_result(tmp_path, "gan_quality", {"n": 10000, "cgan_fashion": {"fid": 9.84, "class_accuracy": 0.912},
                                            "dcgan_fashion": {"fid": 51.9, "real_fid": 0.42},
                                            "wgangp_faces": {"fid": 266.7, "real_fid": 1.47},
                                            "stylegan_faces": {"fid": 120.2}})
    assert len(report.prose_missing_from(readme, tmp_path, ["gan_quality"])) == 1


def test_musegan_tolerance_labels_are_the_rule_target_gaps_applies():
    from bench import musegan_quality
    from bench.common import RESULTS_DIR
    from core.metrics.music import METRICS, target_gaps

    chorales = json.loads((RESULTS_DIR / "musegan_quality.json").read_text())["figures"]["held_out_chorales"]
    for metric in METRICS:
        # Move the generated value by 0.021 from the chorales': outside "± 0.02 absolute", inside "± 25 %"
        # of any value above 0.084.
        nudged = {**chorales, metric: chorales[metric] + 0.021}
        outside = target_gaps(nudged, chorales)[metric] > 1
        label = musegan_quality.tolerance(metric)
        if metric == "voice_order_violations":
            assert label.startswith("≤ 2")
        elif label == "± 0.02 absolute":
            assert outside and chorales[metric] < 0.05, metric
        else:
            assert label == "± 25%" and not outside and chorales[metric] >= 0.05, metric
