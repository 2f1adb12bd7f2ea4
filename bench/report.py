"""Build the README's benchmark table from the latest bench/results/*.json.

    python -m bench.report        # prints the markdown and writes bench/results/README_table.md

A benchmark module says how its figures read in the table with a README_ROWS list:

    README_ROWS = [
        {"figure": "what the number means, in words",
         "measured": "{fashion.real_fid:.2f} (n = {fashion.n})",   # filled from the results JSON
         "reference": "≈ 0"},                                       # target or comparison value
    ]

`{dotted.path:format}` fields are looked up in the result's "figures" and may appear in
"measured", "reference" (a reference measured in the same run, such as a real-vs-real
baseline, is written that way) and "figure". A benchmark without README_ROWS gets one row per number it
saved, named by its key; its `target...` figures are listed as references.

A figure the README's prose quotes is declared the same way, as the exact words it appears in:

    README_PROSE = ["at n = {n:,} the CGAN reaches FID {cgan_fashion.fid:.1f}"]

filled from the full run's results; tests/test_bench_report.py fails while the README does not
contain each one (line breaks and spaces aside), so prose cannot keep an old figure.

A benchmark may also declare README_TABLE, a function of the full run's figures returning markdown
(e.g. one row per generator, several columns per feature network) or None; the README must contain
that text too, checked as the prose is.
"""
from __future__ import annotations

import argparse
import importlib
import json
import re
from pathlib import Path

from bench.__main__ import all_benchmarks
from bench.common import RESULTS_DIR

TABLE_PATH = RESULTS_DIR / "README_table.md"
_FIELD = re.compile(r"\{([A-Za-z0-9_.]+)(?::([^{}]*))?\}")
MISSING = "not run yet"


def lookup(figures: dict, dotted: str):
    value = figures
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            raise KeyError(dotted)
        value = value[key]
    return value


def fill(template: str, figures: dict) -> str:
    """Replace each {path:format} in `template` by that figure; raises KeyError if one is missing."""
    return _FIELD.sub(lambda m: format(lookup(figures, m.group(1)), m.group(2) or ""), template)


def _numbers(figures: dict, prefix: str = ""):
    for key, value in figures.items():
        if isinstance(value, dict):
            yield from _numbers(value, f"{prefix}{key}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield prefix + key, value


def default_rows(figures: dict) -> list[dict]:
    """Rows for a benchmark that declares no README_ROWS: every number it saved; `target...`
    figures become references of their own (which figure each one is for is the module's to say)."""
    rows = []
    for key, value in _numbers(figures):
        if key.split(".")[-1].startswith("target"):
            rows.append({"figure": f"`{key}`", "measured": "—", "reference": f"{value:g}"})
        else:
            rows.append({"figure": f"`{key}`", "measured": f"{value:g}", "reference": "—"})
    return rows


def _declared_rows(name: str) -> list[dict] | None:
    try:
        module = importlib.import_module(f"bench.{name}")
    except Exception as exc:  # a broken benchmark must not take the whole table down
        print(f"bench.{name} cannot be imported ({exc.__class__.__name__}: {exc}); using its saved numbers")
        return None
    return getattr(module, "README_ROWS", None)


def _escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(results_dir: Path = RESULTS_DIR, names: list[str] | None = None) -> str:
    """The markdown table (and a line saying when and where the numbers were measured)."""
    lines = ["| benchmark | figure | reference | measured |", "|---|---|---|---|"]
    runs = []
    for name in names if names is not None else all_benchmarks():
        path = results_dir / f"{name}.json"
        if not path.is_file():  # only a quick run so far
            path = results_dir / f"{name}.quick.json"
        result = json.loads(path.read_text()) if path.is_file() else None
        figures = result["figures"] if result else {}
        rows = _declared_rows(name)
        if rows is None:
            rows = default_rows(figures) if result else [{"figure": "—", "measured": "", "reference": "—"}]
        quick = " (quick)" if result and result.get("quick") else ""
        for row in rows:
            try:
                measured = fill(row["measured"], figures) if result else MISSING
                measured += quick if measured not in (MISSING, "—") else ""
            except (KeyError, ValueError, TypeError):
                measured = MISSING  # e.g. the face classifier was not shipped when this ran
            try:
                reference = fill(row["reference"], figures)
            except (KeyError, ValueError, TypeError):
                reference = MISSING
            try:  # a figure's words may quote a setting of the run, e.g. "after {rounds} rounds"
                figure = fill(row["figure"], figures) if result else row["figure"]
            except (KeyError, ValueError, TypeError):
                figure = row["figure"]
            lines.append(f"| `bench/{name}.py` | {_escape(figure)} | {_escape(reference)} | {_escape(measured)} |")
        if result:
            machine = result.get("machine", {})
            runs.append(f"{name}: {result.get('date', '?')}, {machine.get('device', '?')}, "
                        f"{machine.get('cpu_count', '?')} CPUs, torch {machine.get('torch', '?')}")
    text = "\n".join(lines) + "\n"
    if runs:
        text += "\nMeasured: " + "; ".join(runs) + ". (quick) marks figures from `--quick` runs.\n"
    return text


def _declared_prose(name: str) -> tuple[list[str], object]:
    try:
        module = importlib.import_module(f"bench.{name}")
    except Exception:
        return [], None
    return list(getattr(module, "README_PROSE", [])), getattr(module, "README_TABLE", None)


def prose(results_dir: Path = RESULTS_DIR, names: list[str] | None = None) -> list[str]:
    """Each benchmark's README_PROSE (and README_TABLE), filled from its full run's results (quick runs
    never feed prose)."""
    sentences = []
    for name in names if names is not None else all_benchmarks():
        path = results_dir / f"{name}.json"
        templates, table_of = _declared_prose(name)
        if (templates or table_of) and path.is_file():
            figures = json.loads(path.read_text())["figures"]
            sentences += [fill(template, figures) for template in templates]
            text = table_of(figures) if table_of else None
            if text:
                sentences.append(text)
    return sentences


def _words(text: str) -> str:
    return " ".join(text.split())


def prose_missing_from(readme: str, results_dir: Path = RESULTS_DIR, names: list[str] | None = None) -> list[str]:
    """The filled README_PROSE sentences that the README text does not contain."""
    words = _words(readme)
    return [sentence for sentence in prose(results_dir, names) if _words(sentence) not in words]


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=TABLE_PATH)
    args = parser.parse_args(argv)
    text = table()
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    readme = Path(__file__).resolve().parent.parent / "README.md"
    for sentence in prose_missing_from(readme.read_text()) if readme.is_file() else []:
        print(f"README prose should read: {sentence}")
    return text


if __name__ == "__main__":
    main()
