"""What a teacher needs from every tab, in one place: the lesson bar at the top of a tab (the book chapters,
the equations that matter, "Try this" buttons that set the widgets and run), the explanations behind it
(common misconceptions, the code of `core` that made the picture with its equation above it, the lesson
plan from docs/lessons/), and links that reproduce a view (`?tab=diffusion&seed=7&steps=20`).

A tab describes its lesson as data (a `Lesson`), calls `lesson_bar(LESSON)` first thing in build() (app.py adds
the `explanations` after it), then
`page.link({...})` with the widgets a link may set, and starts its main action on `page.ran.change` as well as
on its button (`gr.on([go.click, page.ran.change], ...)`): a "Try this" button or an opened link changes the
widgets and bumps `page.ran`, so the tab runs exactly as if the user had set the widgets and clicked.
`restore_links` (app.py) reads the page's URL when it loads.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from urllib.parse import urlencode

import gradio as gr

from core.registry import ROOT
from core.runtime import MAX_SEED
from tabs.common import code_of

LESSONS = ROOT / "docs" / "lessons"
# Gradio's Markdown renders $...$ inline and $$...$$ as a displayed equation with these.
LATEX = [{"left": "$$", "right": "$$", "display": True}, {"left": "$", "right": "$", "display": False}]
MAX_TEXT = 500  # characters a link may put in a text box


@dataclass(frozen=True)
class Try:
    """One "Try this" button: the settings it gives the widgets (by their link names) and what to notice."""
    label: str
    settings: dict
    notice: str


@dataclass(frozen=True)
class Code:
    """The code beside the picture: functions ("name" or "Class.method") of a core module, under the
    equation they compute. Read from the module when the page is built, so it never drifts from the code."""
    title: str
    module: str
    names: tuple[str, ...]
    equation: str


@dataclass(frozen=True)
class Lesson:
    tab: str                                   # the tab's module name: ?tab=<tab> in a link
    main: str                                  # elem_id of the main action's button ...
    result: str                                # ... and of its result: both on the first screen at 1366×768
    chapters: str                              # where the books teach it
    equations: str                             # one or two equations, Markdown with LaTeX
    try_this: tuple[Try, ...]
    misconceptions: tuple[tuple[str, str], ...]  # (what students often think, what is true)
    code: tuple[Code, ...]


@dataclass
class Page:
    """The lesson bar's widgets in one tab, and the widgets a link or a "Try this" button may set."""
    lesson: Lesson
    ran: gr.Number                             # bumped to start the tab's main action (hidden)
    note: gr.Markdown                          # what to notice; what a link changed or ignored
    buttons: list[gr.Button]
    copy: gr.Button
    address: gr.Textbox
    settings: dict = field(default_factory=dict)

    def link(self, settings: dict) -> None:
        """Name the widgets a link and the "Try this" buttons may set, and wire both."""
        for name, widget in settings.items():
            if not isinstance(widget, (gr.Slider, gr.Number, gr.Dropdown, gr.Radio, gr.Checkbox, gr.Textbox)):
                raise TypeError(f"{self.lesson.tab}: a link cannot set {name!r} ({type(widget).__name__})")
            widget.elem_id = widget.elem_id or f"{self.lesson.tab}-set-{name}"  # for scripts and browser tests
        self.settings = dict(settings)
        widgets = list(self.settings.values())
        for index, (example, button) in enumerate(zip(self.lesson.try_this, self.buttons)):
            unknown = set(example.settings) - set(self.settings)
            if unknown:
                raise KeyError(f"{self.lesson.tab}: “{example.label}” sets {sorted(unknown)}, not linked widgets")
            button.click(_try(self, example), self.ran, [*widgets, self.ran, self.note],
                         api_name=f"{self.lesson.tab}_try_{index}", api_visibility="private")
        self.copy.click(lambda *values: gr.Textbox(link_query(self, values), visible=True), widgets, self.address,
                        api_name=f"{self.lesson.tab}_link", api_visibility="private").then(
            None, self.address, self.address, js=ABSOLUTE_LINK_JS)


# The query made absolute with the page's own address, put on the clipboard where the browser allows it
# (localhost or https), and shown in the box either way.
ABSOLUTE_LINK_JS = """(query) => {
    const url = window.location.origin + window.location.pathname + query;
    if (navigator.clipboard) { navigator.clipboard.writeText(url).catch(() => {}); }
    return url;
}"""


def lesson_bar(lesson: Lesson) -> Page:
    """The top of a tab: chapters and equations beside the "Try this" buttons and "Copy link". The longer
    explanations go below the tab's own views (`explanations`), so the first screen keeps its controls and result."""
    with gr.Row(equal_height=True, elem_classes=["lesson-bar"]):
        gr.Markdown(f"**Read:** {lesson.chapters}", scale=2, elem_id=f"{lesson.tab}-lesson-chapters")
        with gr.Column(scale=3):
            with gr.Row(equal_height=False):
                gr.Markdown("**Try this:**", scale=0, min_width=70)
                buttons = [gr.Button(example.label, size="sm", min_width=80, elem_id=f"{lesson.tab}-try-{index}")
                           for index, example in enumerate(lesson.try_this)]
                copy = gr.Button("Copy link", size="sm", variant="secondary", scale=0, min_width=90,
                                 elem_id=f"{lesson.tab}-copy-link")
    gr.Markdown(lesson.equations, latex_delimiters=LATEX, elem_id=f"{lesson.tab}-lesson-equations")
    address = gr.Textbox(label="a link to this view, with its settings (copied)", visible=False, interactive=False,
                         elem_id=f"{lesson.tab}-link")
    note = gr.Markdown(elem_id=f"{lesson.tab}-lesson-note")
    # A hidden Number, not a gr.State: when the page-load event set one tab's State, Gradio 6.31 also fired
    # .change on States of other tabs, which started their main actions; a Number fires only when it changes.
    ran = gr.Number(0, visible=False, precision=0, elem_id=f"{lesson.tab}-lesson-ran")
    return Page(lesson, ran, note, buttons, copy, address)


def explanations(lesson: Lesson) -> None:
    """The end of a tab (app.py adds it after build()): misconceptions, the code beside the picture under
    its equation, and the lesson plan of docs/lessons/."""
    with gr.Accordion("Why it works: common misconceptions, the code beside the picture, a 15-minute lesson plan",
                      open=False, elem_id=f"{lesson.tab}-lesson-more"):
        gr.Markdown(misconceptions_markdown(lesson), latex_delimiters=LATEX)
        for code in lesson.code:
            gr.Markdown(f"**The code: {code.title}** (`{code.module}`, as it runs)\n\n{code.equation}",
                        latex_delimiters=LATEX)
            gr.Code(code_of(code.module, *code.names), language="python", interactive=False, wrap_lines=True)
        gr.Markdown(lesson_plan(lesson.tab), latex_delimiters=LATEX, elem_id=f"{lesson.tab}-lesson-plan")


def misconceptions_markdown(lesson: Lesson) -> str:
    lines = ["**Common misconceptions**"]
    lines += [f"- *“{belief}”* {truth}" for belief, truth in lesson.misconceptions]
    return "\n".join(lines)


def lesson_plan(tab: str) -> str:
    path = LESSONS / f"{tab}.md"
    if not path.is_file():
        return ""
    return f"**Lesson plan** (`docs/lessons/{tab}.md`)\n\n" + path.read_text()


def _try(page: Page, example: Try):
    """A "Try this" button's handler: the example's settings (the other widgets keep theirs), one more
    run, and what to notice."""
    def handler(ran):
        values = [example.settings.get(name, gr.skip()) for name in page.settings]
        return [*values, (ran or 0) + 1, f"**Try this: {example.label}.** {example.notice}"]
    return handler


# --- links ------------------------------------------------------------------------------------------

def link_query(page: Page, values) -> str:
    """`?tab=<tab>&name=value...` for the widgets' current values; those still at their starting value are
    left out, so a link is as short as the view allows."""
    query = {"tab": page.lesson.tab}
    for (name, widget), value in zip(page.settings.items(), values):
        if value is not None and value != widget.value:
            query[name] = _text(value)
    return "?" + urlencode(query)


def _text(value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _choice_key(text) -> str:
    """How a link's text is matched to a choice: any case, and a "+" the same as a space, since a "+" typed by
    hand into an address arrives as a space (?sampler=DPM++2M reads "DPM  2M"; Copy link writes %2B)."""
    return " ".join(str(text).lower().replace("+", " ").split())


def widget_value(widget, text: str):
    """The value a link's text gives a widget, made valid: (value, None), (clamped value, a note), or
    (None, a note) when the text cannot be used."""
    if isinstance(widget, (gr.Slider, gr.Number)):
        low = widget.minimum if widget.minimum is not None else -MAX_SEED
        high = widget.maximum if widget.maximum is not None else MAX_SEED
        whole = getattr(widget, "precision", None) == 0 or (
            isinstance(widget, gr.Slider) and float(widget.step).is_integer() and float(low).is_integer())
        try:
            number = float(text)
        except ValueError:
            return None, f"“{text}” is not a number"
        if not math.isfinite(number):
            return None, f"“{text}” is not a finite number"
        value = min(max(number, low), high)
        value = int(round(value)) if whole else value
        return value, None if value == number else f"{text} is outside {_text(low)}…{_text(high)} or not whole, so {_text(value)}"
    if isinstance(widget, gr.Checkbox):
        words = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}
        value = words.get(text.strip().lower())
        return value, None if value is not None else f"“{text}” is neither on nor off"
    if isinstance(widget, (gr.Dropdown, gr.Radio)):
        for label, value in widget.choices:
            if _choice_key(text) in (_choice_key(label), _choice_key(value)):
                return value, None
        if getattr(widget, "allow_custom_value", False):  # choices filled in later (the handler checks the text)
            return text[:MAX_TEXT], None
        return None, f"“{text}” is not one of its choices"
    return text[:MAX_TEXT], (f"shortened to {MAX_TEXT} characters" if len(text) > MAX_TEXT else None)


def restore_links(demo: gr.Blocks, pages: list[Page], selectors: dict[str, list[tuple[gr.Tabs, str]]]) -> None:
    """When the page loads with `?tab=...&setting=...`, select that tab (`selectors`: the gr.Tabs to switch
    and the id to give each), give its widgets the link's values and run its main action. What cannot be used
    is left as it was and said in the tab's note; a link never stops the page from loading."""
    by_tab = {page.lesson.tab: page for page in pages}
    outputs = [tabs for path in selectors.values() for tabs, _ in path]
    outputs += [part for page in pages for part in (*page.settings.values(), page.ran, page.note)]
    outputs = list(dict.fromkeys(outputs))  # each gr.Tabs once (every tab of a book part names its row)

    nothing = {part: gr.skip() for part in outputs}  # (an empty dict would count as one value, not none)

    def restore(request: gr.Request):
        query = dict(request.query_params) if request is not None else {}
        tab = query.pop("tab", None)
        if tab is None:
            return nothing
        page = by_tab.get(tab.strip().lower())
        if page is None:
            gr.Warning(f"The link names a tab “{tab}” that the lab does not have; it opened at the start.")
            return nothing
        updates = {tabs: gr.Tabs(selected=id_) for tabs, id_ in selectors[page.lesson.tab]}
        notes = []
        for name, text in query.items():
            widget = page.settings.get(name)
            if widget is None:
                notes.append(f"`{name}` is not a setting of this tab: ignored")
                continue
            value, note = widget_value(widget, text)
            if value is not None:
                updates[widget] = value
            if note:
                notes.append(f"{name}: {note}" + ("" if value is not None else "; left as it was"))
        updates[page.ran] = 1
        updates[page.note] = "**Opened from a link.**" + (" " + "; ".join(notes) + "." if notes else "")
        return updates

    # No spinner over every linked widget while it runs, and never behind another tab's jobs in the queue.
    demo.load(restore, None, outputs, api_name="restore_link", api_visibility="private", show_progress="hidden",
              concurrency_limit=None)
