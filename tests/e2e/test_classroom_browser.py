"""The classroom in a real browser on a laptop screen (1366×768): every tab's first screen shows its main action's
button and its result without scrolling, and a link reproduces a view (its settings and its result) as a run by
hand does.

    python -m pytest tests/e2e/test_classroom_browser.py -k diffusion
"""
from __future__ import annotations

import importlib

import pytest

from tabs import TABS
from tests.e2e.test_tabs import JOB_TIMEOUT_MS, assert_no_error, open_tab

LAPTOP = {"width": 1366, "height": 768}
SHOWN_PX = 200  # at least this much of the result (or all of it, when smaller) above the fold

BUSY_JS = "() => document.querySelectorAll('.pending, .generating, .eta-bar').length === 0"


def open_link(browser, url: str):
    context = browser.new_context(viewport=LAPTOP)
    page = context.new_page()
    page.goto(url)
    return context, page


@pytest.mark.parametrize("title, module", TABS, ids=[module for _, module in TABS])
def test_the_first_screen_of_every_tab_shows_its_main_action_and_its_result(browser, app_server, title, module):
    """Measured on the tab as it opens (the result's place does not depend on what it will show; running every
    tab's main action here would take minutes: the link tests below run three)."""
    lesson = importlib.import_module(f"tabs.{module}").LESSON
    context, page = open_link(browser, app_server.url)
    try:
        page.get_by_role("tab", name="Text", exact=True).wait_for()
        open_tab(page, title)
        page.locator(f"#{lesson.main}").first.wait_for(timeout=JOB_TIMEOUT_MS)
        page.wait_for_timeout(300)  # the tab's layout settles
        button = page.locator(f"#{lesson.main}").first.bounding_box()
        result = page.locator(f"#{lesson.result}").first.bounding_box()
        assert button and result, f"{module}: #{lesson.main} or #{lesson.result} is not shown"
        assert 0 <= button["y"] and button["y"] + button["height"] <= LAPTOP["height"], (module, button)
        assert result["y"] + min(SHOWN_PX, result["height"]) <= LAPTOP["height"], (module, result)
        assert result["x"] + result["width"] <= LAPTOP["width"] + 1, (module, result)
        assert_no_error(page)
    finally:
        context.close()


# The decoded pixels of an <img>, summed with position weights: equal for two pictures only if they are the same.
PIXELS_JS = """img => {
    const canvas = document.createElement("canvas");
    canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
    const context = canvas.getContext("2d");
    context.drawImage(img, 0, 0);
    const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
    let sum = 0;
    for (let i = 0; i < data.length; i += 1) { sum = (sum * 31 + data[i] * (1 + i % 7)) % 1000000007; }
    return [canvas.width, canvas.height, sum];
}"""


def shown_pixels(page, selector: str):
    image = page.locator(f"{selector} img").first
    image.wait_for(timeout=JOB_TIMEOUT_MS)
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle(),
                           timeout=JOB_TIMEOUT_MS)
    return image.evaluate(PIXELS_JS)


def set_number(page, elem_id: str, value) -> None:
    """Type a value into a number box or a slider's box, as a user does, and leave the box."""
    box = page.locator(f"#{elem_id} input[type=number]").first
    box.fill(str(value))
    box.press("Enter")
    box.blur()


def shown_text(page, module: str) -> str:
    page.locator("#text-notes").get_by_text("characters at T").wait_for(timeout=JOB_TIMEOUT_MS)
    return page.locator("#text-output textarea").input_value()


# (tab title, module, settings a link gives, the main button, how to read the result once it is there)
LINKS = [
    ("Diffusion", "diffusion", {"seed": 7, "steps": 20, "samples": 4}, "diffusion-sample",
     lambda page: shown_pixels(page, "#diffusion-final")),
    ("GAN", "gan", {"seed": 5, "truncation": 0.5}, "gan-generate", lambda page: shown_pixels(page, "#gan-samples")),
    ("Text", "text", {"seed": 3, "length": 120, "temperature": 0.5}, "text-generate",
     lambda page: shown_text(page, "text")),
]


@pytest.mark.parametrize("title, module, settings, button, result", LINKS, ids=[case[1] for case in LINKS])
def test_a_link_gives_the_settings_and_the_result_of_a_run_by_hand(browser, app_server, title, module, settings,
                                                                   button, result):
    query = "&".join(f"{name}={value}" for name, value in settings.items())
    context, linked = open_link(browser, f"{app_server.url}?tab={module}&{query}")
    try:
        linked.locator(f"#{module}-lesson-note").get_by_text("Opened from a link").wait_for(timeout=JOB_TIMEOUT_MS)
        by_link = result(linked)
        for name, value in settings.items():
            assert float(linked.locator(f"#{module}-set-{name} input[type=number]").first.input_value()) == value
        linked.locator(f"#{module}-copy-link").click()
        address = linked.locator(f"#{module}-link textarea, #{module}-link input").first
        linked.wait_for_function("box => box.value.startsWith('http')", arg=address.element_handle(),
                                 timeout=JOB_TIMEOUT_MS)
        copied = address.input_value()
        assert copied.startswith(f"{app_server.url}?tab={module}&")
        assert all(f"{name}={value}" in copied for name, value in settings.items()), copied
    finally:
        context.close()

    context, by_hand = open_link(browser, app_server.url)
    try:
        open_tab(by_hand, title)
        for name, value in settings.items():
            set_number(by_hand, f"{module}-set-{name}", value)
        by_hand.wait_for_function(BUSY_JS, timeout=JOB_TIMEOUT_MS)  # a widget's own .change may run first
        by_hand.locator(f"#{button}").click()
        by_hand.wait_for_timeout(500)
        by_hand.wait_for_function(BUSY_JS, timeout=JOB_TIMEOUT_MS)
        assert result(by_hand) == by_link
        assert_no_error(by_hand)
    finally:
        context.close()
