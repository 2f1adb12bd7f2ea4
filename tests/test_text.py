"""Character language models: sampling math, caches, training, checkpoints and the tab's handlers."""
import hashlib
import json
import math
import shlex

import pytest
import torch

from core import text
from core.text import (CharTokenizer, GPT, GPTConfig, CharLSTM, CharLSTMConfig, TrainConfig, Trainer,
                       apply_temperature, entropy, prepare_prompt, sample, top_k_filter, top_p_filter)

CORPUS = "the cat sat on the mat. the dog sat on the log. " * 40




def tiny_gpt(vocab=20, block_size=16):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=vocab, block_size=block_size, n_layer=2, n_head=2, n_embd=16, dropout=0.0)).eval()


def tiny_lstm(vocab=20):
    torch.manual_seed(0)
    return CharLSTM(CharLSTMConfig(vocab_size=vocab, n_embd=8, hidden=16, n_layer=2, dropout=0.0)).eval()


# --- temperature, top-k, top-p -----------------------------------------------------------

def test_temperature_one_is_the_model_and_zero_is_the_argmax():
    logits = torch.tensor([2.0, 0.5, -1.0, 1.9])
    assert torch.allclose(apply_temperature(logits, 1.0), torch.softmax(logits, -1))
    assert apply_temperature(logits, 0).tolist() == [1.0, 0.0, 0.0, 0.0]
    assert apply_temperature(logits, 0.01).argmax() == 0 and apply_temperature(logits, 0.01)[0] > 0.99
    # p ** (1/T), renormalised, is the same thing as softmax(logits / T)
    p = torch.softmax(logits, -1)
    assert torch.allclose(apply_temperature(logits, 0.5), p ** 2 / (p ** 2).sum())


def test_entropy_rises_with_temperature():
    logits = torch.randn(30, generator=torch.Generator().manual_seed(1)) * 3
    values = text.entropy_by_temperature(logits, [0.0, 0.2, 0.5, 1.0, 1.5, 2.0])
    assert values[0] == pytest.approx(0.0, abs=1e-6)
    assert all(a < b for a, b in zip(values, values[1:]))
    assert values[-1] < math.log(30)
    assert float(entropy(torch.full((30,), 1 / 30))) == pytest.approx(math.log(30))


def test_top_k_keeps_the_k_most_likely():
    probs = torch.tensor([0.1, 0.4, 0.2, 0.3])
    kept = top_k_filter(probs, 2)
    assert (kept > 0).tolist() == [False, True, False, True]
    assert float(kept.sum()) == pytest.approx(1.0)
    assert torch.equal(top_k_filter(probs, 0), probs)


def test_top_p_keeps_the_smallest_nucleus():
    probs = torch.tensor([0.1, 0.4, 0.2, 0.3])
    assert (top_p_filter(probs, 0.6) > 0).tolist() == [False, True, False, True]  # 0.4 + 0.3 reaches 0.6
    assert (top_p_filter(probs, 0.0) > 0).tolist() == [False, True, False, False]  # p = 0 is greedy
    assert torch.equal(top_p_filter(probs, 1.0), probs)
    assert float(top_p_filter(probs, 0.75).sum()) == pytest.approx(1.0)


# --- caches: sampling step by step equals reading the whole text ---------------------------

def test_gpt_cache_and_sliding_window_match_a_full_forward_pass():
    model = tiny_gpt(block_size=8)
    ids = torch.randint(20, (1, 30), generator=torch.Generator().manual_seed(0))
    logits, state = model.next_logits(ids[:, :3])
    for t in range(3, 30):
        logits, state = model.next_logits(ids[:, t:t + 1], state)
        window = state[0]  # what the model now attends over: at most block_size characters
        assert window.shape[1] <= 8 and torch.equal(window[0], ids[0, t + 1 - window.shape[1]:t + 1])
        expected = model(window)[0][0, -1]
        assert torch.allclose(logits, expected, atol=1e-5)


def test_lstm_carried_state_matches_a_full_forward_pass():
    model = tiny_lstm()
    ids = torch.randint(20, (1, 12), generator=torch.Generator().manual_seed(0))
    logits, state = model.next_logits(ids[:, :4])
    for t in range(4, 12):
        logits, state = model.next_logits(ids[:, t:t + 1], state)
    assert torch.allclose(logits, model(ids)[0][0, -1], atol=1e-5)


# --- sample() ------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [tiny_gpt, tiny_lstm])
def test_same_seed_same_text_and_zero_temperature_is_greedy(make):
    tokenizer = CharTokenizer("abcdefghijklmnopqrs\n")
    model = make()
    prompt = tokenizer.encode("abc")

    def run(seed, temperature=1.0):
        return "".join(s.char for s in sample(model, tokenizer, prompt, 40, temperature,
                                             generator=torch.Generator().manual_seed(seed)))

    assert run(1) == run(1)
    assert run(1) != run(2)
    assert run(1, 0.0) == run(2, 0.0)  # greedy: no randomness left
    for step in sample(model, tokenizer, prompt, 40, 0.0):
        assert step.char == tokenizer.chars[int(step.model_probs.argmax())] and step.prob == 1.0


def test_sample_steps_carry_distributions():
    tokenizer = CharTokenizer("abcdefghijklmnopqrs\n")
    steps = list(sample(tiny_gpt(), tokenizer, [0], 5, temperature=0.7, top_k=5,
                        generator=torch.Generator().manual_seed(0)))
    for s in steps:
        assert s.probs.shape == (20,) and float(s.probs.sum()) == pytest.approx(1.0, abs=1e-5)
        assert int((s.probs > 0).sum()) <= 5
        assert s.prob == pytest.approx(float(s.probs[tokenizer.index[s.char]]))
        assert s.model_prob == pytest.approx(float(s.model_probs[tokenizer.index[s.char]]))


@pytest.mark.parametrize("options", [dict(length=0), dict(length=text.MAX_SAMPLE_LENGTH + 1),
                                     dict(temperature=-0.1), dict(temperature=float("nan")),
                                     dict(top_p=1.5), dict(top_k=-1)])
def test_sample_refuses_out_of_range_options(options):
    tokenizer = CharTokenizer("ab")
    kwargs = dict(length=5, temperature=1.0, top_k=0, top_p=1.0) | options
    with pytest.raises(ValueError):
        next(sample(tiny_gpt(vocab=2), tokenizer, [0], **kwargs))


def test_prompt_drops_unknown_characters_and_empty_starts_from_newline():
    tokenizer = CharTokenizer("\n abc")
    p = prepare_prompt(tokenizer, "abé c€")
    assert p.text == "ab c" and p.dropped == ["é", "€"] and not p.started_from_newline
    empty = prepare_prompt(tokenizer, "")
    assert empty.text == "\n" and empty.started_from_newline
    assert prepare_prompt(tokenizer, "ééé").text == "\n"


def test_prompt_of_which_only_spaces_are_left_starts_from_a_newline():
    tokenizer = CharTokenizer("\n abc")
    foreign = prepare_prompt(tokenizer, "你好 世界 ")  # words of a script the model never saw, spaces between
    assert foreign.text == "\n" and foreign.nothing_kept and foreign.started_from_newline
    assert foreign.dropped == list("你好世界")
    spaces = prepare_prompt(tokenizer, "  ")  # spaces the user typed, nothing dropped: read as given
    assert spaces.text == "  " and not spaces.nothing_kept and not spaces.started_from_newline


def test_lstm_given_a_prompt_it_cannot_read_says_so_and_writes_text():
    """The shipped Nietzsche LSTM, greedy, wrote 50 spaces after the two spaces left of this prompt."""
    from tabs import text as tab

    final_text, _, _, notes, _, _ = list(tab.generate("lstm_nietzsche", None, "你好 世界 ", 50, 0.0, 0, 1.0, 0))[-1]
    assert "Nothing of the prompt was kept" in notes and "starting from a newline" in notes.lower()
    assert final_text.startswith("\n") and len(final_text) == 51 and len(set(final_text[1:].split())) > 3


def test_dropped_right_to_left_characters_are_listed_in_reading_order():
    import unicodedata

    from tabs.text import readable_chars

    listed = readable_chars(list("שלום*<"), markdown=True)
    assert listed.startswith("\u2068ש\u2069 (U+05E9 HEBREW LETTER SHIN); \u2068ל\u2069 (U+05DC HEBREW LETTER LAMED)")
    assert "\u2068\\*\u2069 (U+002A ASTERISK)" in listed and "\u2068&lt;\u2069" in listed
    for i, c in enumerate(listed):  # every right-to-left letter sits alone between isolates
        if unicodedata.bidirectional(c) in ("R", "AL"):
            assert listed[i - 1] == "\u2068" and listed[i + 1] == "\u2069"
    assert [part.split("U+")[1][:4] for part in listed.split("; ")] == ["05E9", "05DC", "05D5", "05DD", "002A", "003C"]
    assert readable_chars(["\u200f"]) == "U+200F RIGHT-TO-LEFT MARK"  # invisible: by name only
    assert readable_chars(list("abc"), limit=2).endswith("; and 1 more")


# --- corpora -------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, message", [(b"", "empty"), (b"   \n", "empty"), (b"ab\x00cd", "binary"),
                                          (b"caf\xe9 latin-1", "UTF-8")])
def test_bad_corpora_are_refused_with_a_reason(raw, message):
    with pytest.raises(ValueError, match=message):
        text.decode_corpus(raw)


def test_huge_corpus_is_refused(tmp_path):
    path = tmp_path / "big.txt"
    path.write_text("x" * 2000)
    with pytest.raises(ValueError, match="limit"):
        text.read_corpus(path, max_bytes=1000)


def test_split_is_contiguous_last_ten_percent():
    train, val = text.split_corpus(torch.arange(100))
    assert train.tolist() == list(range(90)) and val.tolist() == list(range(90, 100))


# --- training -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["gpt", "lstm"])
def test_loss_falls_on_a_tiny_corpus(kind):
    tokenizer = CharTokenizer.from_text(CORPUS)
    train, val = text.split_corpus(torch.tensor(tokenizer.encode(CORPUS)))
    sizes = dict(n_layer=1, n_embd=32, n_head=2, block_size=16, dropout=0.0) if kind == "gpt" else \
        dict(n_layer=1, n_embd=16, hidden=48, dropout=0.0)
    torch.manual_seed(0)
    model = text.build_model(kind, len(tokenizer), **sizes)
    trainer = Trainer(model, train, val, TrainConfig(batch_size=16, context=16, max_steps=40, lr=1e-2,
                                                     warmup_steps=5, eval_every=20, eval_windows=32))
    before = trainer.evaluate()
    events = list(trainer.run())
    assert len(events) == 40 and [c["step"] for c in trainer.curve] == [20, 40]
    assert trainer.best_val < before * 0.6  # from ~log(vocab) to well below: it learned the pattern
    assert events[0]["lr"] < events[5]["lr"] and events[-1]["lr"] < events[5]["lr"]  # warmup, then decay


def test_too_short_text_is_refused():
    ids = torch.arange(10) % 3
    with pytest.raises(ValueError, match="too short"):
        Trainer(tiny_lstm(vocab=3), ids[:9], ids[9:], TrainConfig(context=16))


def test_training_command_writes_a_loadable_checkpoint_and_resumes(tmp_path):
    from core.checkpoints import load_checkpoint
    from core.train import main

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS)
    out = tmp_path / "tiny.pt"
    common = ["text", "--model", "gpt", "--corpus", str(corpus), "--layers", "1", "--width", "16", "--heads", "2",
              "--context", "16", "--batch-size", "8", "--eval-every", "5", "--threads", "1", "--out", str(out)]
    main(common + ["--steps", "10"])
    main(common + ["--steps", "15", "--resume", "--half"])
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["steps"] == 15 and [c["step"] for c in card["curve"]] == [5, 10, 15]
    # The card names the exact command lines given to core.train.main (not pytest's sys.argv), with the
    # files outside the repository by name only, and the corpus by name, SHA-256 and size.
    named = [{str(corpus): "corpus.txt", str(out): "tiny.pt"}.get(a, a) for a in common]
    assert card["command"] == "python -m core.train " + shlex.join(named + ["--steps", "10"])
    assert card["resumed_with"] == ["python -m core.train " + shlex.join(named + ["--steps", "15", "--resume", "--half"])]
    assert str(tmp_path) not in json.dumps(card)
    assert card["corpus"] == {"name": "corpus.txt", "source": "a text file of the trainer's own",
                              "sha256": hashlib.sha256(corpus.read_bytes()).hexdigest(), "bytes": len(corpus.read_bytes())}
    assert card["metrics"]["val_loss_nats_per_char"] > 0
    ckpt = load_checkpoint(out)
    assert ckpt.extras["kind"] == "gpt" and set(ckpt.extras["chars"]) == set(CORPUS)



# --- many processes (torchrun, 2 CPU processes) ----------------------------------------------

TINY_RUN = ["text", "--model", "gpt", "--layers", "1", "--width", "32", "--heads", "2", "--context", "16",
            "--dropout", "0", "--batch-size", "16", "--lr", "1e-2", "--warmup", "5", "--eval-every", "10",
            "--threads", "1"]
# Final validation loss of the tiny run after 40 steps, 1 process against 2 with the same global batch.
# Only the batches differ (each process draws its own from its half of the windows); five seeds of the
# 1-process run span 0.38-0.45 nats/char, and the untrained model scores ln(17) = 2.8.
SAME_RUN_NATS = 0.15


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The tiny GPT trained for 40 steps on 2 processes (torchrun) and on 1 (in this process)."""
    from core.train import main
    from tests.distributed import train

    folder = tmp_path_factory.mktemp("text_runs")
    corpus = folder / "corpus.txt"
    corpus.write_text(CORPUS)
    arguments = TINY_RUN + ["--corpus", str(corpus)]
    done, card = train(arguments + ["--steps", "40"], folder / "two.pt", processes=2)
    assert done.returncode == 0, done.stderr[-3000:]
    main(arguments + ["--steps", "40", "--out", str(folder / "one.pt")])
    return {"arguments": arguments, "folder": folder, "two": card,
            "one": json.loads((folder / "one.json").read_text())}


def test_two_processes_train_the_same_model_as_one(runs):
    from core.checkpoints import load_checkpoint
    from tests.distributed import check_ranks_agree

    card = runs["two"]
    check_ranks_agree(card, 2)
    assert card["global_batch"] == 16 and card["train_config"]["batch_size"] == 8 and card["steps"] == 40
    assert [r["data"] for r in card["ranks"]] == ["training windows 0::2 (856 of 1711)",
                                                  "training windows 1::2 (855 of 1711)"]
    curve = [point["val_loss"] for point in card["curve"]]
    assert [point["step"] for point in card["curve"]] == [10, 20, 30, 40]
    assert curve[-1] < curve[0] and card["metrics"]["val_loss_nats_per_char"] < 0.3 * math.log(17)
    assert card["metrics"]["val_loss_nats_per_char"] == pytest.approx(
        runs["one"]["metrics"]["val_loss_nats_per_char"], abs=SAME_RUN_NATS)
    # The checkpoint loads as the app loads a model file, and writes the corpus's words.
    model, tokenizer = text.model_from_checkpoint(load_checkpoint(runs["folder"] / "two.pt"))
    written = "".join(s.char for s in sample(model, tokenizer, tokenizer.encode("the cat "), 40, 0.0))
    assert len(written) == 40 and len(set(written.split()) & {"the", "cat", "dog", "sat", "on"}) >= 3, written


def test_a_run_on_two_processes_resumes_on_one(runs, capsys):
    from core.train import main
    from tests.distributed import train

    out = runs["folder"] / "resumed.pt"
    done, first = train(runs["arguments"] + ["--steps", "20"], out, processes=2)
    assert done.returncode == 0 and first["world_size"] == 2, done.stderr[-3000:]
    main(runs["arguments"] + ["--steps", "40", "--resume", "--out", str(out)])
    assert "resuming on 1 processes (saved on 2)" in capsys.readouterr().out
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["world_size"] == 1 and "ranks" not in card and card["steps"] == 40
    assert card["resumed_with"][0].endswith("--steps 40 --resume --out resumed.pt")
    assert card["curve"][:2] == first["curve"]  # it went on from the 2-process state
    # The learning rate rises again when --steps grows, but the loss keeps falling.
    losses = [point["val_loss"] for point in card["curve"]]
    assert [point["step"] for point in card["curve"]] == [10, 20, 30, 40] and losses[3] < losses[2] < losses[1]
    assert losses[3] < 0.3 * math.log(17)


def test_bf16_and_fp32_together_are_refused(tmp_path, capsys):
    from core.train import main

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS)
    with pytest.raises(SystemExit):
        main(TINY_RUN + ["--corpus", str(corpus), "--steps", "2", "--bf16", "--fp32", "--out", str(tmp_path / "x.pt")])
    assert "--bf16 and --fp32 ask for opposite things" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()

# --- shipped models and the tab --------------------------------------------------------------

SHIPPED = ["gpt_shakespeare", "lstm_shakespeare", "lstm_nietzsche"]

# Short passages from each corpus's validation part (its last 10%, never trained on).
SHAKESPEARE = ("BAPTISTA:\nNot in my house, Lucentio; for, you know,\nPitchers have ears, and I have many servants:\n"
               "Besides, old Gremio is hearkening still;\nAnd happily we might be interrupted.\n\nTRANIO:\n"
               "Then at my lodging, an it like you:\nThere doth my father lie; and there, this night,\n"
               "We'll pass the business privately and well.\n")
NIETZSCHE = ("Though one believe oneself absolutely weaned\naway from religion, the process has yet not been so "
             "thorough as to make\nimpossible a feeling of joy at the presence of religious feelings and\n"
             "dispositions without intelligible content, as, for example, in music;\nand if a philosophy alleges "
             "to us the validity of metaphysical hopes,\nthrough the peace of soul therein attainable, we greet "
             "such\ndeclarations and innuendoes with a welcome smile.\n")
PASSAGES = {"gpt_shakespeare": SHAKESPEARE, "lstm_shakespeare": SHAKESPEARE, "lstm_nietzsche": NIETZSCHE}


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_models_predict_their_authors_text(name):
    # Measured on the weights themselves, not read from the card: the three models score
    # 1.23-1.26 nats/char here; random weights score 4.2-4.6 (uniform over 65 characters is 4.17).
    model, tokenizer, _ = text.load_shipped_model(name)
    ids = torch.tensor(tokenizer.encode(PASSAGES[name]))
    assert len(ids) == len(PASSAGES[name])  # every character is in the model's alphabet
    loss = text.split_loss(model, ids, context=128)
    assert loss < 1.8, f"{name}: {loss:.2f} nats/char"
    prompt = prepare_prompt(tokenizer, "The ")
    out = "".join(s.char for s in sample(model, tokenizer, prompt.ids, 60, 0.8,
                                         generator=torch.Generator().manual_seed(0)))
    assert len(out) == 60 and set(out) <= set(tokenizer.chars)


# --- the tab's handlers -----------------------------------------------------------------------

def own_model():
    tokenizer = CharTokenizer("\n abcdefghijklmnopqrstuvwxyz.")
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=len(tokenizer), block_size=16, n_layer=1, n_head=2, n_embd=16, dropout=0.0))
    with torch.no_grad():
        model.head.weight.mul_(200)  # sharp distributions, so temperature visibly matters
    return {"model": model.eval(), "tokenizer": tokenizer}


def test_compare_gives_every_temperature_the_same_prompt(monkeypatch):
    from tabs import text as tab

    prompts, real_sample = [], text.sample

    def spy(model, tokenizer, prompt_ids, *args, **kwargs):
        prompts.append(list(prompt_ids))
        return real_sample(model, tokenizer, prompt_ids, *args, **kwargs)

    monkeypatch.setattr(text, "sample", spy)
    outputs = list(tab.compare("own", own_model(), "The CAT sat", 40, 7, 0.0, 0.5, 1.0, 1.5))[-1]
    assert len(prompts) == 4 and all(p == prompts[0] for p in prompts)
    assert all(out.startswith("he  sat") and len(out) == len("he  sat") + 40 for out in outputs)
    assert len(set(outputs)) > 1  # the temperatures really differ


def test_generate_streams_text_and_keeps_every_step():
    from tabs import text as tab
    from tabs.text import display_char

    own = own_model()
    updates = list(tab.generate("own", own, "héllo wörld", 30, 0.8, 0, 1.0, 1))
    final_text, _, _, notes, steps, _ = updates[-1]
    assert final_text.startswith("hllo wrld") and len(final_text) == len("hllo wrld") + 30
    assert set(final_text) <= set(own["tokenizer"].chars)
    assert "\u2068é\u2069 (U+00E9 LATIN SMALL LETTER E WITH ACUTE)" in notes and "U+00F6" in notes
    assert steps["probs"].shape == (30, len(own["tokenizer"]))
    for index, shown in ((1, 1), (7, 7), (30, 30), (999, 30), (-4, 1)):  # out-of-range positions are clamped
        ax = tab.inspect_step(steps, index).axes[0]
        assert ax.get_title().startswith(f"step {shown}:"), index
        assert f"it drew {display_char(steps['chars'][shown - 1])!r}" in ax.get_title()
        # The orange bars are that step's distribution, most likely character first.
        drawn = [bar.get_height() for bar in ax.containers[1]][:5]
        assert drawn == pytest.approx(steps["probs"][shown - 1].sort(descending=True).values[:5].tolist()), index
    again = list(tab.generate("own", own, "héllo wörld", 30, 0.8, 0, 1.0, 1))[-1][0]
    assert again == final_text


def test_tab_refuses_missing_model_and_bad_uploads(tmp_path):
    import gradio as gr

    from tabs import text as tab

    with pytest.raises(gr.Error, match="not trained your own model"):
        list(tab.generate("own", None, "hi", 10, 1.0, 0, 1.0, 0))
    with pytest.raises(gr.Error, match="Generate some text first"):
        tab.inspect_step(None, 1)
    cases = {"empty.txt": (b"", "empty"), "binary.txt": (b"\x89PNG\x00\x00data", "binary"),
             "latin1.txt": ("café ".encode("latin-1") * 50, "UTF-8"),
             "huge.txt": (b"a" * (tab.MAX_TRAINING_UPLOAD_BYTES + 1), "limit"), "short.txt": (b"tiny text", "too short"),
             "one_letter.txt": (b"a" * 5000, "at least two different characters")}
    for name, (raw, message) in cases.items():
        (tmp_path / name).write_bytes(raw)
        with pytest.raises(gr.Error, match=message):
            list(tab.train_own(str(tmp_path / name), "LSTM", 0.05, 0))


def test_train_on_own_text_gives_a_private_model(tmp_path):
    from tabs import text as tab

    path = tmp_path / "mine.txt"
    path.write_text(CORPUS)
    curve, status, own = list(tab.train_own(str(path), "LSTM", 0.03, 0))[-1]
    assert "Done" in status and set(curve["split"]) == {"train (one batch)", "validation (last 10%)"}
    out = list(tab.generate("own", own, "the ", 20, 0.5, 0, 1.0, 0))[-1][0]
    assert set(out) <= set(CORPUS)


# --- devices ---------------------------------------------------------------------------------

def cuda_checks_text(device="cuda"):
    """On `device` as on the CPU: the same seed writes the same text (tiny GPT and LSTM, and a shipped
    model), and a short training runs there in the app's autocast (bf16 on CUDA). The lead's GPU script
    calls this; test_device_checks_pass_on_the_cpu runs it with device="cpu"."""
    import copy

    from core.checkpoints import load_shipped
    from core.runtime import autocast

    def written(model, tokenizer, prompt):
        return "".join(s.char for s in sample(model, tokenizer, tokenizer.encode(prompt), 200, 0.8,
                                             generator=torch.Generator().manual_seed(3)))

    alphabet = CharTokenizer("abcdefghijklmnopqrs\n")
    shipped, shakespeare = text.model_from_checkpoint(load_shipped("text", "gpt_shakespeare"))
    for model, tokenizer, prompt in [(tiny_gpt(), alphabet, "abc"), (tiny_lstm(), alphabet, "abc"),
                                     (shipped, shakespeare, "ROMEO:\n")]:
        there = copy.deepcopy(model).to(device)
        assert written(there, tokenizer, prompt) == written(model, tokenizer, prompt), (device, type(model))
        logits = text.next_char_logits(there, tokenizer.encode(prompt))
        assert logits.device.type == "cpu"
        assert torch.allclose(logits, text.next_char_logits(model, tokenizer.encode(prompt)), atol=1e-3)
    tokenizer = CharTokenizer.from_text(CORPUS)
    train, val = text.split_corpus(torch.tensor(tokenizer.encode(CORPUS)))
    torch.manual_seed(0)
    model = text.build_model("gpt", len(tokenizer), n_layer=1, n_embd=32, n_head=2, block_size=16,
                             dropout=0.0).to(device)
    trainer = Trainer(model, train, val, TrainConfig(batch_size=16, context=16, max_steps=30, lr=1e-2,
                                                     warmup_steps=5, eval_every=30, eval_windows=32),
                      autocast=lambda: autocast(device))
    before = trainer.evaluate()
    assert all(math.isfinite(event["loss"]) for event in trainer.run())
    assert trainer.best_val < before * 0.6 and next(trainer.best_model().parameters()).device.type == device


def test_device_checks_pass_on_the_cpu():
    cuda_checks_text("cpu")


def test_shipped_models_move_to_the_app_device_once():
    from core.runtime import app_device

    model, _, _ = text.load_shipped_model("lstm_nietzsche")
    assert next(model.parameters()).device == app_device()
    assert text.load_shipped_model("lstm_nietzsche")[0] is model
