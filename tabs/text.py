"""Text tab (placeholder until issue #3 lands)."""
from tabs.common import not_built_yet


def build() -> None:
    not_built_yet("Text", "Temperature sampling from character language models (LSTM and a small GPT).", 3)
