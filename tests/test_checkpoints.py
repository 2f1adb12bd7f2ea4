import json
from dataclasses import dataclass

import pytest
import torch

from core import registry
from core.checkpoints import (CheckpointError, build_model, load_checkpoint, load_resume, make_card, save_checkpoint,
                              save_resume)
from core.registry import list_shipped, read_card
from core.train import TRAINERS


@dataclass
class TinyConfig:
    width: int = 8
    depth: int = 2


class TinyNet(torch.nn.Module):
    def __init__(self, config: TinyConfig):
        super().__init__()
        self.layers = torch.nn.Sequential(*[torch.nn.Linear(config.width, config.width) for _ in range(config.depth)])
        self.norm = torch.nn.BatchNorm1d(config.width)  # has an integer buffer (num_batches_tracked)

    def forward(self, x):
        return self.norm(self.layers(x))


def _card():
    return make_card(commands=["python -m core.train tiny"], data="none", wall_time_s=1.23, metrics={"loss": 0.5})


def test_round_trip_rebuilds_model_from_config(tmp_path):
    model = TinyNet(TinyConfig(width=6, depth=3)).eval()
    path = save_checkpoint(tmp_path / "tiny.pt", model, TinyConfig(width=6, depth=3), _card(),
                           extras={"alphabet": ["a", "b"], "vector": torch.arange(3.0)})
    ckpt = load_checkpoint(path)
    rebuilt = build_model(ckpt, TinyNet, TinyConfig)
    assert len(rebuilt.layers) == 3
    x = torch.randn(4, 6)
    assert torch.equal(rebuilt(x), model(x))
    assert ckpt.extras["alphabet"] == ["a", "b"]
    assert torch.equal(ckpt.extras["vector"], torch.arange(3.0))
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["command"] == "python -m core.train tiny"
    assert card["config"] == {"width": 6, "depth": 3}
    assert card["metrics"] == {"loss": 0.5} and "hardware" in card and "date" in card
    assert card["threads"] == torch.get_num_threads()


def test_float16_storage_is_smaller_and_loads_as_float32(tmp_path):
    config = TinyConfig(width=64, depth=4)
    model = TinyNet(config).eval()
    full = save_checkpoint(tmp_path / "full.pt", model, config, _card())
    half = save_checkpoint(tmp_path / "half.pt", model, config, _card(), half=True)
    assert half.stat().st_size < 0.7 * full.stat().st_size
    ckpt = load_checkpoint(half)
    assert all(v.dtype == torch.float32 for v in ckpt.state_dict.values() if v.is_floating_point())
    assert ckpt.state_dict["norm.num_batches_tracked"].dtype == torch.int64
    rebuilt = build_model(ckpt, TinyNet, TinyConfig)
    x = torch.randn(8, 64)
    assert torch.allclose(rebuilt(x), model(x), atol=1e-2)


def test_missing_file_names_the_file_and_the_command(tmp_path):
    path = tmp_path / "vae" / "faces.pt"
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert str(path) in message and "python -m core.train vae" in message


def test_missing_weights_use_the_command_from_the_card(tmp_path):
    model = TinyNet(TinyConfig())
    path = save_checkpoint(tmp_path / "tiny.pt", model, TinyConfig(), _card())
    path.unlink()
    with pytest.raises(CheckpointError, match="python -m core.train tiny"):
        load_checkpoint(path)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04truncated zip"])
def test_corrupt_file_gives_one_clear_sentence(tmp_path, content):
    path = tmp_path / "broken.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="corrupt") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


def test_truncated_real_checkpoint_is_reported_as_corrupt(tmp_path):
    path = save_checkpoint(tmp_path / "t.pt", TinyNet(TinyConfig()), TinyConfig(), _card())
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)


def test_pickled_objects_are_refused(tmp_path):
    # weights_only=True: a file that needs arbitrary unpickling must not load.
    path = tmp_path / "evil.pt"
    torch.save({"config": {}, "state_dict": {}, "payload": TinyConfig()}, path)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_registry_lists_shipped_checkpoints(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "CHECKPOINT_DIR", tmp_path)
    assert list_shipped("gan") == []
    for name in ("b", "a"):
        save_checkpoint(tmp_path / "gan" / f"{name}.pt", TinyNet(TinyConfig()), TinyConfig(), _card())
    (tmp_path / "gan" / "a.pt.resume.pt").write_bytes(b"trainer state")
    assert list_shipped("gan") == ["a", "b"]
    assert read_card("gan", "a")["data"] == "none"


def test_resume_state_round_trip(tmp_path):
    model = TinyNet(TinyConfig())
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(3, 8)).sum().backward()
    optimizer.step()
    gen = torch.Generator().manual_seed(5)
    save_resume(tmp_path / "r.pt", {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                     "step": 17, "rng": gen.get_state()})
    state = load_resume(tmp_path / "r.pt")
    assert state["step"] == 17
    fresh = torch.optim.AdamW(TinyNet(TinyConfig()).parameters())
    fresh.load_state_dict(state["optimizer"])
    restored = torch.Generator()
    restored.set_state(state["rng"])
    assert torch.equal(torch.randn(3, generator=restored), torch.randn(3, generator=gen))
    with pytest.raises(CheckpointError, match="--resume"):
        load_resume(tmp_path / "none.pt")


def test_command_history_lists_every_command_that_made_a_run():
    from argparse import Namespace

    from core.checkpoints import command_history

    first = command_history(Namespace(command_line="python -m core.train gan --minutes 5"))
    assert first == ["python -m core.train gan --minutes 5"]
    resumed = command_history(Namespace(command_line="python -m core.train gan --resume"), {"commands": first})
    assert resumed == first + ["python -m core.train gan --resume"]
    card = make_card(commands=resumed, data="none", wall_time_s=0)
    assert card["command"] == first[0] and card["resumed_with"] == ["python -m core.train gan --resume"]
    assert "resumed_with" not in make_card(commands=first, data="none", wall_time_s=0)


def test_a_run_started_from_a_checkpoint_keeps_its_history(tmp_path):
    from argparse import Namespace

    from core.checkpoints import command_history, start_from

    model = TinyNet(TinyConfig(width=6))
    earlier = make_card(commands=["python -m core.train tiny", "python -m core.train tiny --resume"], data="none",
                        wall_time_s=100, metrics={"loss": 0.5}, epochs=3)
    path = save_checkpoint(tmp_path / "tiny.pt", model, TinyConfig(width=6), earlier)
    weights, init = start_from(path, {"width": 6, "depth": 2}, "tiny net", ("epochs",))
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    commands = command_history(Namespace(command_line="python -m core.train tiny --init-from tiny.pt"), init)
    card = make_card(commands=commands, data="none", wall_time_s=20, init=init)
    assert card["command"] == "python -m core.train tiny" and len(card["resumed_with"]) == 2
    assert card["wall_time_s"] == 120 and card["fine_tuned_from"]["epochs"] == 3
    assert "commands" not in card["fine_tuned_from"]
    with pytest.raises(ValueError, match="asks for"):
        start_from(path, {"width": 7, "depth": 2}, "tiny net")


def test_resumable_state_of_shipped_checkpoints_stays_out_of_assets(tmp_path):
    from core.registry import CHECKPOINT_DIR, RESUME_DIR, resume_path

    assert resume_path(CHECKPOINT_DIR / "gan" / "dcgan.pt") == RESUME_DIR / "gan" / "dcgan.pt.resume.pt"
    assert resume_path(tmp_path / "mine.pt") == tmp_path / "mine.pt.resume.pt"


# --- the shipped cards tell the truth about themselves -------------------------------------

SHIPPED = [(technique, name) for technique in sorted(TRAINERS) for name in list_shipped(technique)]
# Training-set sizes, from each card's command and data line: epochs x steps per epoch must give its steps.
TRAINING_IMAGES = {("vae", "fashion_2d"): 60000, ("vae", "fashion_32d"): 60000,
                   ("vae", "faces_200d"): 30000,  # --train-size 30000
                   ("gan", "dcgan_fashion"): 60000, ("gan", "cgan_fashion"): 60000,
                   ("gan", "wgangp_faces"): 6000,  # --faces 6000
                   ("gan", "stylegan_faces"): 12000,  # --faces' default
                   ("classifier", "fashion_mnist_resnet"): 55000,  # 60,000 less the 5,000 held out
                   ("vae", "fashion16_k4"): 60000,
                   ("classifier", "fashion_mnist_robust"): 55000,  # 5,000 held out for validation
                   ("classifier", "face_attributes32"): 16000,  # --train-faces 16000
                   **{("autoencoder", name): 60000 for name in list_shipped("autoencoder")}}


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


@pytest.mark.parametrize("technique, name", SHIPPED)
def test_shipped_card_in_the_checkpoint_equals_its_json(technique, name):
    raw = torch.load(registry.shipped_path(technique, name), map_location="cpu", weights_only=True)
    on_disk = json.loads(registry.shipped_path(technique, name).with_suffix(".json").read_text())
    # A card amended after training (core.checkpoints.amend_card) adds the fields it lists, nothing else.
    amended = on_disk.pop("amended", {"fields": []})
    added = {field: on_disk.pop(field) for field in amended["fields"]}
    assert added.keys().isdisjoint(raw["card"]) and (not added or amended["notes"])
    assert json.loads(json.dumps({"config": raw["config"], **raw["card"]}, default=str)) == on_disk


@pytest.mark.parametrize("technique, name", SHIPPED)
def test_shipped_card_names_its_data_by_name_source_and_sha256(technique, name):
    card = read_card(technique, name)
    records = card.get("data_files", []) + ([card["corpus"]] if "corpus" in card else [])
    if card["data"].startswith("no data"):  # a controller searched by CMA-ES: it reads other checkpoints
        return
    assert records, f"{technique}/{name}: no data_files (name, source, SHA-256)"
    for record in records:
        assert record["name"] and record["source"], record
        assert any(key.startswith("sha256") and len(value) == 64 for key, value in record.items()), record


def test_amending_a_card_leaves_the_checkpoint_file_as_it_was(tmp_path):
    from core.checkpoints import amend_card

    path = save_checkpoint(tmp_path / "tiny.pt", TinyNet(TinyConfig()), TinyConfig(), _card())
    before = path.read_bytes()
    amend_card(path, "added later", data_files=[{"name": "d", "source": "s", "sha256": "0" * 64}])
    amend_card(path, "and later still", origin="x")
    card = json.loads(path.with_suffix(".json").read_text())
    assert path.read_bytes() == before
    assert card["amended"] == {"fields": ["data_files", "origin"], "notes": ["added later", "and later still"]}
    assert card["data_files"][0]["name"] == "d" and card["data"] == "none"


@pytest.mark.parametrize("technique, name", SHIPPED)
def test_shipped_card_fields_agree_with_each_other(technique, name):
    card = read_card(technique, name)
    # No path of the machine that trained it: data is named by name, source and SHA-256.
    for text in _strings(card):
        for word in text.replace("=", " ").split():
            assert not word.strip("'\"(),;").startswith(("/", "~/")), f"{name}: machine path {word!r}"
    # `command` started the run from scratch; each of `resumed_with` says how it continued.
    prefix = f"python -m core.train {technique} "
    assert card["command"].startswith(prefix)
    assert "--resume" not in card["command"].split() and "--init-from" not in card["command"]
    for later in card.get("resumed_with", []):
        assert later.startswith(prefix) and ("--resume" in later.split() or "--init-from" in later)
    assert f"{card['threads']} threads" in card["hardware"]
    if "epochs" in card and "steps" in card:
        batch = card.get("batch_size") or card["training"]["batch_size"]
        images = TRAINING_IMAGES[technique, name]
        # Trainers drop (GAN) or keep (VAE) the last short batch; epochs are rounded to 2 decimals.
        assert any(abs(card["steps"] / per_epoch - card["epochs"]) <= 0.006
                   for per_epoch in (images // batch, -(-images // batch))), \
            f"{name}: {card['steps']} steps of {batch} are not {card['epochs']} epochs of {images} images"
    if technique == "classifier":
        assert [c["epoch"] for c in card["curves"]] == list(range(1, card["epochs"] + 1))
    if "train_images" in card:
        assert card["train_images"] + card["validation_images"] == 60000  # Fashion-MNIST's train set
