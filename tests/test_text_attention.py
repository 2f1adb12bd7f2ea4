"""The Text tab's attention view (tabs/text.py attention_html): every head of one GPT layer over the characters
the model read when it chose one generated character. Tiny private GPTs (the "your own model" path) make the
numbers checkable; the shipped gpt_shakespeare checks the real shape (4 layers of 4 heads)."""
from __future__ import annotations

import html
import re

import gradio as gr
import pytest
import torch

from core.text import CharLSTM, CharLSTMConfig, CharTokenizer, GPT, GPTConfig

ALPHABET = "\n abcdefghijklmnopqrstuvwxyz."
BLOCK = 16
PROMPT = "the cat"
CELL = re.compile(r'<span title="(.*?): (\d+\.\d{3})" style="background: rgba\(0, 114, 178, (\d+\.\d{2})\)">(.*?)</span>')
OUTLINED = re.compile(r'<span style="outline: 2px solid #E69F00">(.*?)</span></div>')


def own_gpt(alphabet=ALPHABET, n_layer=2, n_head=3):
    tokenizer = CharTokenizer(alphabet)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=len(tokenizer), block_size=BLOCK, n_layer=n_layer, n_head=n_head, n_embd=24,
                          dropout=0.0))
    with torch.no_grad():
        model.head.weight.mul_(50)  # sharp distributions: the text varies with the seed
    return {"model": model.eval(), "tokenizer": tokenizer}


def own_lstm():
    tokenizer = CharTokenizer(ALPHABET)
    torch.manual_seed(0)
    return {"model": CharLSTM(CharLSTMConfig(vocab_size=len(tokenizer), n_embd=8, hidden=16, n_layer=1,
                                             dropout=0.0)).eval(), "tokenizer": tokenizer}


def generated(name, own, prompt=PROMPT, length=30, seed=1):
    from tabs import text as tab

    return list(tab.generate(name, own, prompt, length, 0.8, 0, 1.0, seed))[-1][4]


@pytest.fixture(scope="module")
def gpt():
    own = own_gpt()
    return own, generated("own", own)


def rows(page: str) -> list[dict]:
    """Each head's row of the HTML: its label, the characters it shades with their weights, the outlined one."""
    found = []
    for part in page.split("<div><b>head ")[1:]:
        cells = CELL.findall(part)
        found.append({"head": int(part.split("</b>", 1)[0]),
                      "chars": "".join("\n" if shown == "⏎" else html.unescape(shown) for *_, shown in cells),
                      "weights": [float(weight) for _, weight, _, _ in cells],
                      "shades": [float(shade) for _, _, shade, _ in cells],
                      "outlined": html.unescape(OUTLINED.search(part).group(1))})
    return found


def attention(name, own, steps, index, layer):
    from tabs import text as tab

    return tab.attention_html(name, own, steps, index, layer)


def window_that_chose(steps, index, block=BLOCK) -> str:
    """The characters the GPT's sampler (GPT.next_logits) had in its window when it chose character
    `index`: the key/value cache grows to block_size characters, then the last half-block is re-read."""
    text = steps["prompt"]
    window = text[-block:]
    for c in steps["chars"][:index - 1]:
        cached = len(window)
        window = (window + c)[-block:]
        if cached >= block:
            window = window[-(block // 2):]
    return window


def test_before_generating_there_is_nothing_to_show(gpt):
    own, _ = gpt
    for steps in (None, {}):
        with pytest.raises(gr.Error, match="Generate some text first"):
            attention("own", own, steps, 1, 1)


def test_an_lstm_has_no_attention_and_says_so(gpt):
    _, steps = gpt
    page = attention("own", own_lstm(), steps, 3, 1)
    assert "An LSTM has no attention" in page and "<b>head" not in page
    lstm_steps = generated("own", own_lstm())
    assert "An LSTM has no attention" in attention("own", own_lstm(), lstm_steps, 3, 1)


def test_one_row_per_head_each_over_the_characters_before_the_chosen_one(gpt):
    own, steps = gpt
    model, tokenizer = own["model"], own["tokenizer"]
    for index, layer in ((1, 1), (5, 2), (10, 1)):
        page = attention("own", own, steps, index, layer)
        found = rows(page)
        assert [row["head"] for row in found] == [1, 2, 3]  # n_head rows
        context = (steps["prompt"] + "".join(steps["chars"][:index - 1]))[-BLOCK:]
        assert f"Layer {layer}, choosing character {index} (outlined)" in page
        assert f"over the {len(context)} characters it could see" in page
        _, weights = model.attention_maps(torch.tensor([tokenizer.encode(context)]))
        for head, row in enumerate(found):
            assert row["chars"] == context and len(context) <= BLOCK
            assert row["outlined"] == {"\n": "⏎", " ": "␣"}.get(steps["chars"][index - 1], steps["chars"][index - 1])
            expected = weights[layer - 1, 0, head, -1]
            assert row["weights"] == pytest.approx(expected.tolist(), abs=6e-4)
            assert sum(row["weights"]) == pytest.approx(1, abs=len(context) * 5e-4)
            assert max(row["shades"]) == 1.0  # shaded relative to the head's strongest weight
            assert f"<b>head {head + 1}</b> (strongest weight {float(expected.max()):.2f})" in page


def test_the_context_shown_is_what_the_model_read_while_it_fit_in_one_block(gpt):
    """Up to the first time the sampler's window moved on, the characters shown, read by the model, give
    back the distribution the character was drawn from: they are the ones its query looked at."""
    own, steps = gpt
    model, tokenizer = own["model"], own["tokenizer"]
    fit = BLOCK - len(PROMPT) + 1  # characters 1..10 were chosen before the window moved on
    for index in range(1, fit + 1):
        shown = rows(attention("own", own, steps, index, 1))[0]["chars"]
        assert shown == window_that_chose(steps, index), index
        logits, _ = model(torch.tensor([tokenizer.encode(shown)]))
        assert torch.allclose(torch.softmax(logits[0, -1], -1), steps["model_probs"][index - 1], atol=1e-5), index


def test_the_context_shown_is_what_the_model_read_after_its_window_moved_on(gpt):
    own, steps = gpt
    model, tokenizer = own["model"], own["tokenizer"]
    for index in (BLOCK - len(PROMPT) + 2, 20, 30):
        shown = rows(attention("own", own, steps, index, 1))[0]["chars"]
        logits, _ = model(torch.tensor([tokenizer.encode(shown)]))
        assert torch.allclose(torch.softmax(logits[0, -1], -1), steps["model_probs"][index - 1], atol=1e-5), index


@pytest.mark.parametrize("index, shown", [(0, 1), (-4, 1), (None, 1), (float("nan"), 1), ("ten", 1), (2.9, 2),
                                          (30, 30), (31, 30), (10**9, 30), (float("inf"), 30)])
def test_the_step_is_clamped_to_the_generated_characters(gpt, index, shown):
    own, steps = gpt
    page = attention("own", own, steps, index, 1)
    assert f"choosing character {shown} (outlined)" in page
    assert rows(page)[0]["outlined"] == {" ": "␣", "\n": "⏎"}.get(steps["chars"][shown - 1], steps["chars"][shown - 1])


@pytest.mark.parametrize("layer, shown", [(0, 1), (-1, 1), (None, 1), (float("nan"), 1), (1.5, 1), (2, 2), (4, 2),
                                          (99, 2), (float("inf"), 2)])
def test_the_layer_is_clamped_to_the_models_layers(gpt, layer, shown):
    own, steps = gpt
    page = attention("own", own, steps, 5, layer)
    assert page == attention("own", own, steps, 5, shown) and f"Layer {shown}, " in page


def test_layers_and_steps_show_different_weights(gpt):
    own, steps = gpt
    first = rows(attention("own", own, steps, 5, 1))
    assert rows(attention("own", own, steps, 5, 2))[0]["weights"] != first[0]["weights"]
    assert rows(attention("own", own, steps, 6, 1))[0]["chars"] != first[0]["chars"]
    assert len({tuple(row["weights"]) for row in first}) == 3  # the heads differ


def test_the_shipped_gpt_shows_four_heads_and_escapes_the_text():
    from core.text import load_shipped_model

    model, _, _ = load_shipped_model("gpt_shakespeare")
    steps = generated("gpt_shakespeare", None, prompt="ROMEO & JULIET:\n", length=20, seed=0)
    page = attention("gpt_shakespeare", None, steps, 20, 99)
    assert f"Layer {model.config.n_layer}, choosing character 20" in page and model.config.n_layer == 4
    found = rows(page)
    assert [row["head"] for row in found] == list(range(1, model.config.n_head + 1))
    assert '">&amp;</span>' in page and '">&</span>' not in page  # the text is escaped, not read as HTML
    context = steps["prompt"] + "".join(steps["chars"][:19])
    assert all(row["chars"] == context[-model.config.block_size:] for row in found)
    assert "An LSTM" in attention("lstm_shakespeare", None, steps, 20, 1)
    with pytest.raises(gr.Error, match="Unknown model"):
        attention("no_such_model", None, steps, 20, 1)
    with pytest.raises(gr.Error, match="not trained your own model"):
        attention("own", None, steps, 20, 1)


def test_after_switching_models_the_view_never_pairs_a_character_with_anothers_weight():
    own = own_gpt(alphabet=ALPHABET + "é")
    steps = generated("own", own, prompt="café résumé ", length=10)
    try:
        page = attention("gpt_shakespeare", None, steps, 10, 1)  # the dropdown moved to the shipped GPT
    except gr.Error as refused:  # refusing, with a sentence, would be right too
        assert "Traceback" not in str(refused)
        return
    context = steps["prompt"] + "".join(steps["chars"][:9])
    for row in rows(page):
        assert context.endswith(row["chars"]), row["chars"]  # the characters right before the chosen one
