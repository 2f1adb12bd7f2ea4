"""The training skeleton (core.engine) under torchrun: 2 CPU processes talking gloo, as in CI.

The diffusion trainer stands for all of them here; the GAN, text, VAE, MuseGAN and classifier
trainers have their own 2-process tests beside their other tests."""
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from core.checkpoints import build_model, load_resume
from core.diffusion import DiffusionConfig, UNet, sample
from core.registry import resume_path
from core.runtime import make_generator
from tests.conftest import require
from tests.distributed import ROOT, check_ranks_agree, loads, train

TINY = ["diffusion", "--data", "faces", "--limit", "64", "--size", "16", "--widths", "8,16", "--no-attention",
        "--batch-size", "16", "--lr", "1e-2", "--threads", "1"]


def curve(card):
    return [loss for _, loss in card["training_curve"]["step_and_mean_loss"]]


def no_traceback(done, processes: int = 1):
    """None of our code's frames; alone, no traceback at all. (torchrun itself prints a report with
    its own frames whenever a worker exits with an error; our sentence comes first.)"""
    if processes == 1:
        assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert not re.search(r'File ".*/(core|tabs|bench)/', done.stderr), done.stderr[-3000:]


@pytest.fixture(scope="module")
def one_and_two(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp")
    runs = {}
    for processes in (1, 2):
        done, card = train(TINY + ["--steps", "240"], folder / f"p{processes}.pt", processes=processes)
        assert done.returncode == 0, done.stderr[-3000:]
        runs[processes] = (folder / f"p{processes}.pt", card)
    return runs


def test_two_processes_train_one_model_with_averaged_gradients(one_and_two):
    out, card = one_and_two[2]
    check_ranks_agree(card, 2)
    assert card["global_batch"] == 16 and card["steps"] == 240
    assert "torchrun" not in card["command"]  # the card's command is the trainer's; world_size says how many ran
    losses = curve(card)
    assert losses[-1] < 0.8 * losses[0], losses  # it learned


def test_the_two_process_checkpoint_loads_and_samples_like_the_app_does(one_and_two):
    out, _ = one_and_two[2]
    model = build_model(loads(out), UNet, DiffusionConfig)
    images = sample(model, 2, make_generator(0), steps=5)
    assert images.shape == (2, 3, 16, 16) and torch.isfinite(images).all()


def test_two_processes_match_one_with_the_same_global_batch(one_and_two):
    # Same global batch (16 = 2 x 8), same steps: the two runs differ only in which random numbers
    # each process drew, so their loss curves must agree to within the noise of a 16-image batch.
    # Tolerance: the mean of the last three curve points within 15 % of each other.
    one, two = (curve(one_and_two[p][1]) for p in (1, 2))
    tail_one, tail_two = sum(one[-3:]) / 3, sum(two[-3:]) / 3
    assert abs(tail_one - tail_two) < 0.15 * tail_one, (one, two)
    assert one_and_two[1][1]["world_size"] == 1 and "ranks" not in one_and_two[1][1]


def test_resume_on_a_different_number_of_processes(one_and_two, tmp_path):
    # The 2-process run left its resumable state; continue it on 1 process for 20 more steps.
    out, _ = one_and_two[2]
    state = load_resume(resume_path(out))
    assert state["world_size"] == 2 and len(state["random_streams"]["noise and batches"]) == 2
    done, card = train(TINY + ["--steps", "260", "--resume"], out, processes=1)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "new random streams" in done.stdout
    assert card["steps"] == 260 and card["world_size"] == 1 and len(card["resumed_with"]) == 1


@pytest.mark.parametrize("arguments, processes, sentence", [
    (["--batch-size", "15"], 2, "multiple of the 2 processes"),
    (["--limit", "1"], 2, "cannot be shared among 2 processes"),
    (["--device", "cuda:99"], 1, "cuda:99"),
    (["--device", "tpu"], 1, "Unknown device"),
])
def test_impossible_runs_are_refused_in_one_sentence(tmp_path, arguments, processes, sentence):
    done, card = train(TINY + ["--steps", "5"] + arguments, tmp_path / "bad.pt", processes=processes)
    assert done.returncode != 0 and not card
    assert sentence in done.stderr.splitlines()[0]  # said first, and once: rank 0 speaks for the run
    assert done.stderr.count(sentence) == 1
    no_traceback(done, processes)


def _rank_pids(launcher_pid: int) -> dict[int, int]:
    """{rank: pid} of torchrun's worker processes, read from their environment."""
    ranks = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        if parent == launcher_pid:
            for entry in env:
                if entry.startswith(b"RANK="):
                    ranks[int(entry[5:])] = int(pid)
    return ranks


def test_a_killed_rank_stops_the_run_with_a_sentence_not_a_hang(tmp_path):
    require(sys.platform == "linux", "finds the worker processes through /proc")
    out = tmp_path / "killed.pt"
    env = {**os.environ, "GENLAB_THREADS": "1", "OMP_NUM_THREADS": "1"}
    launcher = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "core.train",
         *TINY, "--steps", "100000", "--save-every", "1", "--out", str(out)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not resume_path(out).is_file():  # training has started and saved once
            assert launcher.poll() is None and time.monotonic() < deadline, launcher.communicate()[1][-3000:]
            time.sleep(0.2)
        os.kill(_rank_pids(launcher.pid)[1], signal.SIGKILL)
        _, stderr = launcher.communicate(timeout=120)  # no hang: everything ends
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode != 0
    assert "another process of this run" in stderr and "--resume" in stderr, stderr[-3000:]
    assert load_resume(resume_path(out))["step"] > 0  # what was saved before is there to resume from


def _as_if_saved_on_a_gpu(path):
    """Rewrite a torch.save file so that every tensor says it was saved from cuda:0 (what a GPU run
    writes), without needing a GPU: each storage record names its device as a pickled string
    (protocol 2: opcode X, 4-byte length, UTF-8), and pickles hold no byte offsets to keep right."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    pkl_name = next(name for name in entries if name.endswith("/data.pkl"))
    cpu, cuda = b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0"
    assert cpu in entries[pkl_name]
    entries[pkl_name] = entries[pkl_name].replace(cpu, cuda)
    with zipfile.ZipFile(path, "w") as archive:
        for name, payload in entries.items():
            archive.writestr(name, payload)


def test_a_checkpoint_written_on_a_gpu_loads_on_a_cpu(one_and_two, tmp_path):
    import shutil

    from core.checkpoints import load_checkpoint

    path = tmp_path / "from_gpu.pt"
    shutil.copy(one_and_two[2][0], path)
    _as_if_saved_on_a_gpu(path)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):  # what a plain torch.load does without a GPU
            torch.load(path, weights_only=True)
    model = build_model(load_checkpoint(path), UNet, DiffusionConfig)
    assert next(model.parameters()).device.type == "cpu"


def test_the_readme_recipes_are_commands_the_trainers_accept():
    """Every python -m core.train / torchrun command in the README's dataset recipes parses."""
    import argparse
    import importlib
    import shlex

    from core.train import TRAINERS, add_common_arguments

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Real datasets at 64×64"):readme.index("## Data: offline and online")]
    commands = re.findall(r"`((?:python|torchrun)[^`]*core\.train[^`]*)`", section)
    assert len(commands) >= 6, commands
    for command in commands:
        words = shlex.split(command)
        technique, arguments = words[words.index("core.train") + 1], words[words.index("core.train") + 2:]
        parser = argparse.ArgumentParser(exit_on_error=False)
        add_common_arguments(parser)
        importlib.import_module(TRAINERS[technique][0]).add_train_arguments(parser)
        parser.parse_args(arguments)  # raises on an unknown option or a bad value
