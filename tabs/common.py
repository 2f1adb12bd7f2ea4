"""What every tab shares: turning core's ValueErrors into UI messages, and queue settings."""
from __future__ import annotations

import functools
import inspect
import math

import gradio as gr

from core.registry import list_shipped, shipped_path


def user_errors(fn):
    """Show core's ValueError sentences as a gr.Error popup instead of a traceback.

    Works for plain handlers and for generator handlers (streaming jobs).
    """
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def wrapped_gen(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except gr.Error:  # already a message for the user (gr.Error is a ValueError too)
                raise
            except ValueError as exc:
                raise gr.Error(str(exc)) from None
        return wrapped_gen

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except ValueError as exc:
            raise gr.Error(str(exc)) from None
    return wrapped


def number(value, default: float, low: float, high: float, whole: bool = False):
    """A number from a widget or an API call, made safe to compute with: empty (None), NaN and
    non-numbers become `default`; anything outside [low, high], infinities included, is clamped."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        value = math.nan
    value = default if math.isnan(value) else min(max(value, low), high)
    return int(value) if whole else value


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


def not_built_yet(title: str, what: str, issue: int) -> None:
    gr.Markdown(f"### {title}\n{what}\n\n**Not built yet** (issue #{issue}). This tab will appear here "
                "with trained models once that work lands; nothing is faked in the meantime.")
