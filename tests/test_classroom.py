"""The classroom pieces every tab shares (tabs/classroom.py): each tab's lesson bar and lesson page, "Try this"
buttons that set valid values, links that reproduce a view and survive bad parameters, captions and alt text on
every output picture, and colours that colour-blind students can tell apart."""
from __future__ import annotations

import itertools
import re
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest

from tabs import TABS, classroom
from tabs.common import CLASS_PALETTE, PALETTE

ROOT = Path(__file__).resolve().parent.parent
MODULES = [module for _, module in TABS]


@pytest.fixture(scope="module")
def demo():
    import app

    return app.build_app()


@pytest.fixture(scope="module")
def pages(demo):
    return {page.lesson.tab: page for page in demo.lesson_pages}


def restore(demo, query: dict):
    """Run the app's page-load event as a browser opening `?<query>` would."""
    fn = next(fn for fn in demo.fns.values() if fn.api_name == "restore_link")
    return fn.fn(SimpleNamespace(query_params=query))


# --- every tab has its lesson ----------------------------------------------------------------------------

def test_every_tab_has_a_lesson_bar_with_books_equations_examples_misconceptions_and_code(pages):
    assert sorted(pages) == sorted(MODULES)
    for module, page in pages.items():
        lesson = page.lesson
        assert re.search(r"Deep Learning with Python|Generative Deep Learning|et al\.", lesson.chapters), module
        assert lesson.equations.count("$") >= 2, f"{module}: no equation in LaTeX"
        assert len(lesson.try_this) >= 3 and len(page.buttons) == len(lesson.try_this), module
        assert len(lesson.misconceptions) >= 2, module
        assert lesson.code and all(code.equation.count("$") >= 2 for code in lesson.code), module
        assert page.settings, f"{module}: a link can set none of its widgets"


def _texts(value):
    """Every string inside a lesson (its equations, Try texts, misconceptions, code titles), however nested."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _texts(item)
    elif hasattr(value, "__dataclass_fields__") or hasattr(value, "_fields"):
        yield from _texts([getattr(value, field) for field in getattr(value, "_fields", None) or value.__dataclass_fields__])
    elif isinstance(value, dict):
        yield from _texts(list(value.items()))


@pytest.mark.parametrize("module", MODULES)
def test_lesson_texts_hold_no_control_characters(pages, module):
    # "\b" or "\t" in a string that is not raw becomes a backspace or a tab, and the LaTeX beside the code breaks
    broken = [text for text in _texts(pages[module].lesson) if re.search(r"[\x00-\x09\x0b-\x1f]", text)]
    assert not broken, broken


@pytest.mark.parametrize("module", MODULES)
def test_the_code_beside_the_picture_is_read_from_core_as_it_stands(pages, module):
    for code in pages[module].lesson.code:
        source = classroom.code_of(code.module, *code.names)
        for name in code.names:
            assert f"def {name.split('.')[-1]}(" in source
        lines = {line.strip() for line in (ROOT / code.module).read_text().splitlines()}
        assert all(line.strip() in lines for line in source.splitlines())  # the module's lines, not a copy


@pytest.mark.parametrize("module", MODULES)
def test_each_tab_has_a_lesson_page_with_a_walk_through_and_two_questions_with_answers(module):
    text = (ROOT / "docs" / "lessons" / f"{module}.md").read_text()
    for heading in ("## Before class", "## Walk-through (15 minutes)", "## What students should notice",
                    "## Two questions to ask"):
        assert heading in text, f"docs/lessons/{module}.md lacks {heading!r}"
    questions = text[text.index("## Two questions to ask"):]
    assert questions.count("**Question:**") == 2 and questions.count("**Answer:**") == 2
    assert f"?tab={module}" in text
    for picture in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        assert (ROOT / "docs" / "lessons" / picture).resolve().is_file(), picture
    assert classroom.lesson_plan(module).endswith(text)  # shown in the tab as it is on disk


def test_no_page_names_a_path_of_the_machine_that_wrote_it():
    texts = {path: path.read_text() for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]}
    for path, text in texts.items():
        assert not re.search(r"(?<![\w.~-])/(home|work|tmp|root|Users|mnt)/", text), path


# --- "Try this" --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("module", MODULES)
def test_try_this_gives_valid_values_and_runs_the_main_action(pages, module):
    page = pages[module]
    for example in page.lesson.try_this:
        assert 0 < len(example.label) <= 24 and example.notice
        for name, value in example.settings.items():
            restored, note = classroom.widget_value(page.settings[name], classroom._text(value))
            assert note is None and restored == value, f"{module} “{example.label}”: {name}={value!r} ({note})"
        outputs = classroom._try(page, example)(3)
        *values, ran, note = outputs
        assert ran == 4 and example.label in note
        for (name, widget), value in zip(page.settings.items(), values):
            if name in example.settings:
                assert value == example.settings[name]
            else:
                assert isinstance(value, type(gr.skip()))  # the other widgets keep what the user set


# --- links ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("module", MODULES)
def test_a_link_made_from_the_widgets_restores_them_selects_the_tab_and_runs(demo, pages, module):
    page = pages[module]
    example = page.lesson.try_this[0]
    values = [example.settings.get(name, widget.value) for name, widget in page.settings.items()]
    query = classroom.link_query(page, values)
    assert query.startswith(f"?tab={module}")
    parsed = dict(pair.split("=", 1) for pair in query[1:].split("&"))
    from urllib.parse import unquote_plus
    updates = restore(demo, {key: unquote_plus(value) for key, value in parsed.items()})
    for name, value in example.settings.items():
        widget = page.settings[name]
        if value != widget.value:
            assert updates[widget] == value, name
    assert updates[page.ran] == 1 and "Opened from a link" in updates[page.note]
    selected = {tabs: update for tabs, update in updates.items() if isinstance(tabs, gr.Tabs)}
    assert len(selected) == 2 and module in {update.selected for update in selected.values()}


def test_a_link_with_bad_parameters_is_clamped_or_ignored_with_a_note(demo, pages):
    page = pages["diffusion"]
    updates = restore(demo, {"tab": "Diffusion", "steps": "5000", "eta": "nan", "sampler": "Euler",
                             "bogus": "1", "seed": "-3"})
    widgets = page.settings
    assert updates[widgets["steps"]] == widgets["steps"].maximum
    assert widgets["eta"] not in updates and widgets["sampler"] not in updates
    assert updates[widgets["seed"]] == 0
    note = updates[page.note]
    for said in ("steps: 5000 is outside", "eta: “nan” is not a finite number", "sampler: “Euler” is not one of",
                 "`bogus` is not a setting"):
        assert said in note, note
    assert updates[page.ran] == 1


def test_a_link_to_an_unknown_tab_or_no_tab_changes_nothing(demo):
    outputs = next(fn for fn in demo.fns.values() if fn.api_name == "restore_link").outputs

    def skips_every_output(updates):  # (Gradio reads an empty dict as one value, so each output is skipped)
        return len(updates) == len(outputs) and all(isinstance(u, type(gr.skip())) for u in updates.values())

    assert skips_every_output(restore(demo, {})) and skips_every_output(restore(demo, {"seed": "7"}))
    with pytest.warns(UserWarning, match="does not have"):
        assert skips_every_output(restore(demo, {"tab": "quantum"}))


@pytest.mark.parametrize("widget, text, expected", [
    (gr.Slider(1, 100, value=50, step=1), "20", (20, None)),
    (gr.Slider(1, 100, value=50, step=1), "20.6", (21, "20.6 is outside 1…100 or not whole, so 21")),
    (gr.Slider(0, 1, value=0.5, step=0.05), "0.35", (0.35, None)),
    (gr.Slider(0, 1, value=0.5, step=0.05), "-inf", (None, "“-inf” is not a finite number")),
    (gr.Number(0, precision=0, minimum=0), "12", (12, None)),
    (gr.Checkbox(False), "on", (True, None)),
    (gr.Checkbox(False), "maybe", (None, "“maybe” is neither on nor off")),
    (gr.Dropdown([("Fashion-MNIST", "fashion32"), ("faces", "faces32")], value="fashion32"), "FACES", ("faces32", None)),
    (gr.Radio(["DDIM", "DDPM"], value="DDIM"), "ddpm", ("DDPM", None)),
    (gr.Dropdown([], allow_custom_value=True), "goldfish (1)", ("goldfish (1)", None)),
    (gr.Textbox("x"), "a" * 600, ("a" * 500, "shortened to 500 characters")),
])
def test_a_link_value_becomes_a_valid_widget_value(widget, text, expected):
    assert classroom.widget_value(widget, text) == expected


def test_a_link_leaves_out_what_is_at_its_starting_value(pages):
    page = pages["diffusion"]
    values = [widget.value for widget in page.settings.values()]
    assert classroom.link_query(page, values) == "?tab=diffusion"
    values[list(page.settings).index("steps")] = 20.0
    assert classroom.link_query(page, values) == "?tab=diffusion&steps=20"


# --- pictures people can read ---------------------------------------------------------------------------

PICTURES = (gr.Image, gr.Plot, gr.Gallery, gr.LinePlot, gr.ScatterPlot, gr.BarPlot, gr.AnnotatedImage)


def has_caption_beside(block) -> bool:
    """A caption Markdown just before or after the block (a row of pictures may share one)."""
    siblings = block.parent.children
    at = siblings.index(block)
    neighbours = siblings[max(at - 1, 0):at] + siblings[at + 1:at + 2]
    return any(isinstance(n, gr.Markdown) and "caption" in (n.elem_classes or []) for n in neighbours)


def test_every_output_picture_has_a_caption_beside_it_and_images_have_alt_text(demo):
    inputs = {block._id for fn in demo.fns.values() for block in fn.inputs}
    outputs = {block._id for fn in demo.fns.values() for block in fn.outputs}
    missing = []
    for block in demo.blocks.values():
        if not isinstance(block, PICTURES) or block._id not in outputs or block._id in inputs:
            continue
        if not (has_caption_beside(block) or isinstance(block.parent, gr.Row) and has_caption_beside(block.parent)):
            missing.append(f"{block.label or block.elem_id}: no caption beside it")
        if isinstance(block, gr.Image) and not block.alt_text:
            missing.append(f"{block.label or block.elem_id}: no alt_text")
    assert not missing, missing


CVD = {  # Machado, Oliveira & Fernandes (2009), severity 1, on linear RGB
    "protanopia": [[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216], [-0.003882, -0.048116, 1.051998]],
    "deuteranopia": [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413], [-0.011820, 0.042940, 0.968881]],
    "tritanopia": [[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602], [0.004733, 0.691367, 0.303900]],
}
MIN_DELTA_E = 12  # CIE76: tab10 falls to 4.6 under protanopia, red against green to 7.3 under deuteranopia


def closest_pair_seen_as(colours, vision) -> float:
    """The smallest CIE76 distance between two colours of a palette as a person with `vision` sees them."""
    def linear(hex_colour):
        c = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)]) / 255
        return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)

    def lab(rgb):
        xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ rgb
        xyz = xyz / np.array([0.95047, 1.0, 1.08883])
        f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
        return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])

    seen = [lab(np.clip(np.array(CVD[vision]) @ linear(c), 0, 1)) for c in colours]
    return min(float(np.linalg.norm(a - b)) for a, b in itertools.combinations(seen, 2))


@pytest.mark.parametrize("vision", sorted(CVD))
def test_the_palettes_stay_apart_for_colour_blind_eyes(vision):
    assert closest_pair_seen_as(PALETTE, vision) >= MIN_DELTA_E
    assert closest_pair_seen_as(CLASS_PALETTE, vision) >= MIN_DELTA_E
    # the test can fail: matplotlib's default colours and red against green do
    tab10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
    assert min(closest_pair_seen_as(tab10, v) for v in CVD) < MIN_DELTA_E
    assert closest_pair_seen_as(["#d62728", "#2ca02c"], "deuteranopia") < MIN_DELTA_E


BANNED = r"jet|rainbow|hsv|tab10|tab20|Set1|Paired|RdYlGn(_r)?|PiYG(_r)?|PRGn(_r)?|tab:red|tab:green|red|green|r-|g-"
UNSAFE = re.compile(rf"""(cmap|colou?rs?|[a-z]*colou?r|c)\s*=\s*["']({BANNED})["']""")


def test_no_tab_draws_with_colours_that_colour_blind_students_confuse():
    found = [f"{path.name}:{n}: {line.strip()}" for path in sorted((ROOT / "tabs").glob("*.py"))
             for n, line in enumerate(path.read_text().splitlines(), 1) if UNSAFE.search(line)]
    assert not found, found
