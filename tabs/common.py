"""What every tab shares: turning core's ValueErrors into UI messages, inputs that reach the handler
whatever a browser or an API client sends, the benchmark figures a tab quotes, and queue settings."""
from __future__ import annotations

import base64
import binascii
import ast
import functools
import inspect
import json
import logging
import math
import tempfile
import textwrap
from pathlib import Path

import gradio as gr

from core.registry import ROOT, list_shipped, shipped_path


log = logging.getLogger("genlab")


def message_for_user(exc: ValueError, where: str) -> gr.Error:
    """A user's mistake as a gr.Error popup: one line in the server log, no traceback (tracebacks are
    for real faults, which are left to propagate)."""
    message = str(exc.message) if isinstance(exc, gr.Error) else str(exc)
    log.info("refused in %s: %s", where, message)
    return gr.Error(message, print_exception=False)


def user_errors(fn):
    """Show core's ValueError sentences (and a handler's own gr.Error) as a popup, not a traceback.

    Works for plain handlers and for generator handlers (streaming jobs). gr.Error is a ValueError too.
    """
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def wrapped_gen(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except ValueError as exc:
                raise message_for_user(exc, fn.__name__) from None
        return wrapped_gen

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ValueError as exc:
            raise message_for_user(exc, fn.__name__) from None
    return wrapped


def on_gpu(duration=60):
    """Mark a heavy handler for ZeroGPU: on a ZeroGPU Space (where the `spaces` package is installed)
    it gets a GPU for up to `duration` seconds per call (a number, or a function of the handler's
    arguments that returns one); everywhere else it runs unchanged. Works for plain and generator
    (streaming) handlers. Put it inside user_errors: @user_errors @on_gpu(90) def f."""
    def decorate(fn):
        try:
            import spaces
        except ImportError:
            return fn
        return spaces.GPU(duration=duration)(fn)
    return decorate


def number(value, default: float, low: float, high: float, whole: bool = False):
    """A number from a widget or an API call, made safe to compute with: empty (None), NaN and
    non-numbers become `default`; anything outside [low, high], infinities included, is clamped."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        value = math.nan
    value = default if math.isnan(value) else min(max(value, low), high)
    return int(value) if whole else value


@functools.lru_cache(maxsize=None)
def fashion_test_split():
    """Fashion-MNIST's test split as float [N, 1, 32, 32] in [0, 1] (zero-padded) and its labels, read once
    per process and only read afterwards. Never downloaded from a request (a handler must not wait on the
    network): where the files are missing, a sentence."""
    from core.data.fashion_mnist import load_fashion_mnist, to_float

    try:
        images, labels = load_fashion_mnist("test", download=False)
    except FileNotFoundError as exc:
        raise ValueError(f"The Fashion-MNIST test images are not installed here ({exc}).") from None
    return to_float(images), labels


def picture(title: str, explanation: str, **kwargs) -> gr.Image:
    """An output picture with its caption above it and the same words as its alt text (Gradio's own label
    would sit over the picture's top-left corner, hiding the first row of a grid)."""
    caption(f"**{title}**: {explanation}")
    kwargs.setdefault("type", "pil")
    if kwargs["type"] == "pil":
        kwargs.setdefault("format", "png")
    kwargs.setdefault("interactive", False)
    return gr.Image(label=title, show_label=False, alt_text=f"{title}: {explanation}", **kwargs)


def clamped(value, default, low, high, what: str, whole: bool = False):
    """A setting from a widget, a link or an API call made usable (tabs.common.number) -> (the value used, a
    sentence saying why it is not the one asked for, or "" when it is). `what` names the setting in a sentence
    ("the step size"); the sentence starts with it, capitalised, and ends with a space to join the next."""
    got = number(value, default, low, high, whole=whole)
    what = what[:1].upper() + what[1:]
    if value is None:
        return got, f"{what} was not given, so {got:g} is used. "
    try:
        asked = float(value)
    except (TypeError, ValueError, OverflowError):
        asked = math.nan
    if math.isnan(asked):
        return got, f"{what}: {repr(value)[:40]} is not a number, so {got:g} is used. "
    if asked == got:
        return got, ""
    return got, f"{what} is set to {got:g} (the range is {low:g} … {high:g}). "


def clicked_pixel(evt, width: int, height: int, what: str = "the picture") -> tuple[int, int]:
    """The pixel under a click on an image (a gr.SelectData), clamped to the picture: a click on its edge,
    or a hand-made request with odd numbers, counts as the nearest pixel; no [x, y] pair is refused."""
    index = getattr(evt, "index", None)
    if not isinstance(index, (list, tuple)) or len(index) != 2:
        raise ValueError(f"Click on {what} to choose a point.")
    return number(index[0], width / 2, 0, width - 1, whole=True), number(index[1], height / 2, 0, height - 1, whole=True)


MAX_UPLOAD_BYTES = 20_000_000  # any one upload (app.py gives it to the server), or an image sent inline


def image_upload(label: str, **kwargs) -> gr.Image:
    """The one way a tab takes an image from a user: a gr.Image whose value reaches the handler as the
    uploaded file's path, undecoded.

    gr.Image opens every upload itself before any handler runs, so a text file named .png, an empty
    or truncated file, or a decompression bomb failed there with a bare "Error" (and a bomb cost
    gigabytes first). Handlers open this path with core.data.images.prepare_image instead, which
    refuses an oversized image from its header and says in a sentence what is wrong with any other.
    (An instance, not a subclass: Gradio writes a .pyi stub beside the source of every component subclass.)
    """
    kwargs.setdefault("sources", ["upload", "clipboard"])
    image = gr.Image(label=label, type="filepath", image_mode=None, **kwargs)
    image.preprocess = functools.partial(_path_of_upload, image.GRADIO_CACHE)
    return image


def _path_of_upload(cache_dir: str, payload) -> str | None:
    if payload is None:
        return None
    if payload.url and payload.url.startswith("data:"):  # sent inline by an API client
        encoded = payload.url.partition(",")[2]
        if len(encoded) * 3 // 4 > MAX_UPLOAD_BYTES:
            raise gr.Error("That image is too large to send inline; upload it as a file.", print_exception=False)
        try:
            data = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise gr.Error("That inline image is not valid base64 data.", print_exception=False) from None
        path = Path(tempfile.mkdtemp(dir=cache_dir)) / "pasted_image"
        path.write_bytes(data)
        return str(path)
    return payload.path


def _lenient_number(component):
    """Number/Slider preprocessing that never fails: an API client may send "NaN", "inf", a word or a
    value out of range. Non-numbers and non-finite values become the widget's starting value; finite
    values arrive as sent, and the handler clamps them (number())."""
    def preprocess(payload):
        try:
            value = float(payload)
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value):
            if component.value is None:
                return None
            value = float(component.value)
        return gr.Number.round_to_precision(value, getattr(component, "precision", None))
    return preprocess


def _sentence_on_failure(component, preprocess):
    """A component's own preprocessing (a choice not in a dropdown, a file Gradio cannot read) fails
    as a sentence naming the widget, logged as one line."""
    where = component.label or component.__class__.__name__

    @functools.wraps(preprocess)
    def safe(payload):
        try:
            return preprocess(payload)
        except gr.Error as exc:
            raise message_for_user(exc, where) from None
        except (ValueError, TypeError, OSError, KeyError, AttributeError) as exc:
            raise message_for_user(ValueError(f"The value sent for “{where}” could not be used "
                                              f"({exc.__class__.__name__})."), where) from None
    return safe


def harden_inputs(demo: gr.Blocks) -> None:
    """Make every input component of every event safe for whatever a browser or an API client sends.

    Applied once to the whole app (app.build_app), so no tab can forget it."""
    inputs = {block._id: block for fn in demo.fns.values() for block in fn.inputs}
    for block in inputs.values():
        undecoded = getattr(block.preprocess, "func", None) is _path_of_upload
        if isinstance(block, gr.Image) and not undecoded and block.interactive is not False:
            raise TypeError(f"image input {block.label!r}: use tabs.common.image_upload")
        if isinstance(block, (gr.Number, gr.Slider)):
            block.preprocess = _lenient_number(block)
        block.preprocess = _sentence_on_failure(block, block.preprocess)


BENCH_RESULTS = ROOT / "bench" / "results"


def bench_records(name: str, results: Path = BENCH_RESULTS):
    """(path, record) of the saved results of bench/<name>.py that a tab quotes: the full run's first,
    then the quick run's; a file that is missing or unreadable is passed over."""
    for path in (results / f"{name}.json", results / f"{name}.quick.json"):
        try:
            yield path, json.loads(path.read_text())
        except (OSError, ValueError):
            continue


def shipped_choices(technique: str, labels: dict[str, str]) -> list[tuple[str, str]]:
    """(label, name) of every finished shipped model of a technique, those named in `labels` first, in
    its order (the first is the tab's default). A training in progress has no card yet: left out."""
    names = [name for name in list_shipped(technique) if shipped_path(technique, name).with_suffix(".json").is_file()]
    order = list(labels)
    names.sort(key=lambda name: (order.index(name) if name in order else len(order), name))
    return [(labels.get(name, name), name) for name in names]


def queue(tab: str, limit: int = 1) -> dict:
    """Event options giving each tab its own concurrency slot, so a slow job in one tab
    (style transfer, say) never holds up another tab's events (the VAE sliders)."""
    return {"concurrency_id": tab, "concurrency_limit": limit}


# Colours that students with any common colour-vision deficiency can tell apart (tests/test_classroom.py checks
# them under simulated protanopia, deuteranopia and tritanopia). Plots use these, never red against green.
# Okabe & Ito (2008), "Color Universal Design": for up to 8 lines, voices or groups.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
# Paul Tol's "muted" scheme, with black as a tenth colour (his pale grey vanished on white maps): the 10
# Fashion-MNIST classes.
CLASS_PALETTE = ("#332288", "#88CCEE", "#44AA99", "#117733", "#999933", "#DDCC77", "#CC6677", "#882255",
                 "#AA4499", "#000000")
SEQUENTIAL = "viridis"   # heat maps: light/dark order survives every deficiency (and greyscale printing)
DIVERGING = "PuOr"       # signed maps: matplotlib's PuOr runs orange (low) to purple (high), not red/green


def caption(text: str, **kwargs) -> gr.Markdown:
    """The caption beside a picture or plot: what it shows, what its axes and colours mean. Every output
    picture has one next to it (tests/test_classroom.py), and a gr.Image also its alt_text for screen readers."""
    return gr.Markdown(text, elem_classes=["caption"], **kwargs)


def pyplot():
    """matplotlib.pyplot on the Agg backend, imported on first use (start-up must not import it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_to_image(fig):
    """A matplotlib figure -> an RGB PIL image; the figure is closed (figures are not shared between calls)."""
    from PIL import Image

    fig.canvas.draw()
    image = Image.frombuffer("RGBA", fig.canvas.get_width_height(), fig.canvas.buffer_rgba()).convert("RGB")
    pyplot().close(fig)
    return image


def code_of(module: str, *names: str) -> str:
    """The source of functions or methods ("Class.method") of a core module as they stand, for "the code
    beside the picture": the file is parsed, not imported (building the page must not import torch)."""
    text = (ROOT / module).read_text()
    lines, parts = text.splitlines(), []
    for name in names:
        body = ast.parse(text).body
        for part in name.split("."):
            node = next(n for n in body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == part)
            body = node.body
        parts.append(textwrap.dedent("\n".join(lines[node.lineno - 1:node.end_lineno])))
    return "\n\n".join(parts)
