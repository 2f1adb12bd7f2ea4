"""Many users at once, against a real server (the app_server fixture): gradio_client clients calling
different tabs side by side get exactly what a lone user gets, never see each other's models or
pictures, a long job in one tab does not hold up another tab, and Stop really stops a job.
"""
from __future__ import annotations

import hashlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from bench.memory import free_port, ui_arguments

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT / "assets" / "examples" / "dream" / "grace_hopper.jpg"
STYLE_PAINTING = ROOT / "assets" / "examples" / "style" / "mosaic.png"
HANG_GUARD_S = 180  # no call here takes more than a few seconds alone; this only stops a hang


def pixels(path) -> str:
    """A digest of an image file's decoded pixels (PNG/WebP encoders may differ in bytes, not in pixels)."""
    return hashlib.sha256(np.asarray(Image.open(path).convert("RGB")).tobytes()).hexdigest()


def file_digest(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# (endpoint, arguments, what of the result must be identical); seeds fixed, sizes small.
CALLS = {
    "text": ("/text_generate", {"length": 80, "seed": 3, "temperature": 1.0}, lambda r: r[0]),
    "gan": ("/gan_samples", {"name": "cgan_fashion", "seed": 3, "grid_size": 4}, lambda r: pixels(r[0])),
    "diffusion": ("/diffusion_sample", {"seed": 5, "n": 4, "steps": 10}, lambda r: pixels(r[0])),
    # Text to image: the default prompt on the faces model (the final grid and the note), and the CLIP's similarity
    # matrix of a random batch, read from the embeddings every user shares (computed once, on first use).
    "text_to_image": ("/text_to_image_generate", {"seed": 3, "n": 2, "steps": 10}, lambda r: (pixels(r[0]), r[4])),
    "clip": ("/text_to_image_clip_matrix", {"seed": 3}, lambda r: (pixels(r[0]), r[1])),
    "vae": ("/vae_random_face", {"seed": 11}, lambda r: pixels(r[1])),
    "musegan": ("/musegan_new_piece", {"seed": 2}, lambda r: (file_digest(r[1]), r[3])),  # the audio and the metrics
    "ebm": ("/ebm_sample", {"seed": 3, "n": 4, "steps": 20}, lambda r: pixels(r[0])),  # the final samples
    # The VAE tab's three latent spaces: random codes in each (maps with crosses, decoded grids, the verdict).
    # Its other endpoints draw the same pictures for every user (the maps, the eigen-clothes, a denoising
    # example's clean image) or take a click, so only this seeded one can run side by side here without two
    # users making the very same picture.
    "vae_spaces": ("/vae_sample_spaces", {"seed": 3},
                   lambda r: (*(pixels(path) for path in r[:6]), r[6])),
    # The Music tab's Transformer: a held-out opening continued by two bars (the audio, the measures, the note).
    "music": ("/music_continue", {"seed": 4, "bars": 2}, lambda r: (file_digest(r[1]), r[3], r[4])),
    # World Models: the noisy driver on a real track, 50 steps (what the car saw last, V's reconstruction, and
    # the status with the return); the two users drive different tracks.
    "world_models": ("/world_models_drive", {"choice": "noisy", "track": 3, "steps": 50},
                     lambda r: (pixels(r[0]), pixels(r[1]), r[3])),
}
SEED_FIELDS = {"world_models": "track"}  # the input that differs between a tab's two users, where not "seed"


def call(url: str, kind: str, downloads: Path, seed_offset: int = 0):
    endpoint, arguments, fingerprint = CALLS[kind]
    client = Client(url, verbose=False, download_files=downloads)
    field = SEED_FIELDS.get(kind, "seed")
    arguments = {**arguments, field: arguments[field] + seed_offset}
    return fingerprint(client.predict(api_name=endpoint, **ui_arguments(client, endpoint, **arguments)))


def test_concurrent_clients_get_what_a_lone_client_gets(app_server, tmp_path):
    # Twelve clients, two per tab, all at once; the two of a tab use different seeds. (Gradio 6.31 writes
    # a returned picture to its cache under a name made from its bytes, in place and not atomically,
    # so two users who make the very same picture at the same moment can be served a half-written
    # file. That is Gradio's, and rare; this test is about our state, so it keeps outputs distinct.)
    clients = [(kind, copy) for copy in range(2) for kind in CALLS]
    solo = {(kind, copy): call(app_server.url, kind, tmp_path / f"solo-{kind}-{copy}", copy) for kind, copy in clients}
    assert len(solo["text", 0]) >= len("ROMEO:\n") + 80
    assert solo["gan", 0] != solo["gan", 1]  # the seed reaches the model
    assert all(solo[kind, 0] != solo[kind, 1] for kind in CALLS)  # every tab's two users make different things
    start = threading.Barrier(len(clients))

    def together(number):
        kind, copy = clients[number]
        start.wait(timeout=HANG_GUARD_S)
        return call(app_server.url, kind, tmp_path / f"client-{number}", copy)

    with ThreadPoolExecutor(len(clients)) as pool:
        results = list(pool.map(together, range(len(clients)), timeout=HANG_GUARD_S))
    for client, result in zip(clients, results):
        assert result == solo[client], f"{client}: a concurrent call with the same seed differs from the solo call"


# The attention views read what a user made before (the continuation's tokens, the generated text's steps,
# both in gr.State): (first action, its arguments, attention endpoint, its arguments, fingerprint).
ATTENTION = {
    "music": ("/music_continue", {"bars": 2}, "/music_attention", {"position": 100, "layer": 2},
              lambda r: (pixels(r[0]), r[1])),  # the heat map and the note naming the token
    "text": ("/text_generate", {"length": 60}, "/text_attention", {"index": 50, "layer": 2}, lambda r: r),
}


def attention_of_a_session(url: str, kind: str, seed: int, downloads: Path, together=None):
    """A new user makes something with `seed`, then (after `together`, a barrier, when given) asks for its attention."""
    first, arguments, endpoint, asked, fingerprint = ATTENTION[kind]
    client = Client(url, verbose=False, download_files=downloads)
    client.predict(api_name=first, **ui_arguments(client, first, **arguments, seed=seed))
    if together is not None:
        together.wait(timeout=HANG_GUARD_S)
    return fingerprint(client.predict(api_name=endpoint, **ui_arguments(client, endpoint, **asked)))


def test_each_user_sees_the_attention_of_their_own_music_and_text(app_server, tmp_path):
    users = [(kind, seed) for kind in ATTENTION for seed in (1, 2)]
    solo = {user: attention_of_a_session(app_server.url, *user, tmp_path / f"solo-{user[0]}-{user[1]}") for user in users}
    for kind in ATTENTION:
        assert solo[kind, 1] != solo[kind, 2], f"{kind}: two seeds, one attention view: it is not the user's own"
    together = threading.Barrier(len(users))
    with ThreadPoolExecutor(len(users)) as pool:
        results = list(pool.map(lambda user: attention_of_a_session(app_server.url, *user, tmp_path / f"{user[0]}-{user[1]}",
                                                                    together), users, timeout=HANG_GUARD_S))
    for user, result in zip(users, results):
        assert result == solo[user], f"{user}: asked beside other users, the attention view differs from the solo one"
    # Before making anything, a new user is told what to do first (their neighbours' state is not theirs).
    for kind in ATTENTION:
        *_, endpoint, asked, _ = ATTENTION[kind]
        newcomer = Client(app_server.url, verbose=False, download_files=tmp_path / f"new-{kind}")
        with pytest.raises(AppError, match="Continue a prompt first|Generate some text first"):
            newcomer.predict(api_name=endpoint, **ui_arguments(newcomer, endpoint, **asked))


# World Models: a dream lives in the user's gr.State (M's z, its LSTM state and its own random stream).
DREAM_FRAMES = 10


def dream_of_a_session(url: str, seed: int, downloads: Path, together=None):
    """A new user starts a dream with `seed`, then (after `together`, a barrier, when given) lets the noisy
    driver dream on: the last dreamed frame and the status (step and dreamed return)."""
    client = Client(url, verbose=False, download_files=downloads)
    client.predict(api_name="/world_models_dream_start",
                   **ui_arguments(client, "/world_models_dream_start", seed=seed))
    if together is not None:
        together.wait(timeout=HANG_GUARD_S)
    result = client.predict(api_name="/world_models_dream_drive", **ui_arguments(
        client, "/world_models_dream_drive", choice="noisy", frames=DREAM_FRAMES))
    return pixels(result[0]), result[3]


def test_each_user_dreams_their_own_dream(app_server, tmp_path):
    seeds = (1, 2, 3)
    solo = {seed: dream_of_a_session(app_server.url, seed, tmp_path / f"solo-{seed}") for seed in seeds}
    assert len(set(solo.values())) == len(seeds), "three seeds, one dream: it is not the user's own"
    assert all(f"step {DREAM_FRAMES}: " in status for _, status in solo.values()), solo
    together = threading.Barrier(len(seeds))
    with ThreadPoolExecutor(len(seeds)) as pool:
        results = list(pool.map(lambda seed: dream_of_a_session(app_server.url, seed, tmp_path / f"dream-{seed}",
                                                                together), seeds, timeout=HANG_GUARD_S))
    for seed, result in zip(seeds, results):
        assert result == solo[seed], f"seed {seed}: dreamed beside other dreamers, the dream differs from the solo one"
    newcomer = Client(app_server.url, verbose=False, download_files=tmp_path / "new-dreamer")
    with pytest.raises(AppError, match="Start a dream first"):  # their neighbours' dreams are not theirs
        newcomer.predict(api_name="/world_models_dream_drive", **ui_arguments(newcomer, "/world_models_dream_drive"))


def test_an_api_client_presses_the_dream_buttons_the_readme_lists(app_server, tmp_path):
    # The README documents /world_models_dream_press with the button's label as a parameter.
    client = Client(app_server.url, verbose=False, download_files=tmp_path)
    client.predict(api_name="/world_models_dream_start", **ui_arguments(client, "/world_models_dream_start"))
    log_start = app_server.log.stat().st_size
    result = client.predict(api_name="/world_models_dream_press", **ui_arguments(client, "/world_models_dream_press"))
    assert "step 8: " in result[3], result[3]
    for label in ("▲ gas", "▶ right"):
        result = client.predict(api_name="/world_models_dream_press",
                                **ui_arguments(client, "/world_models_dream_press", label=label))
        assert f"“{label}”" in result[3], result[3]
    assert "Traceback" not in app_server.log.read_bytes()[log_start:].decode(errors="replace")


def test_a_users_text_model_and_face_stay_theirs(app_server, tmp_path):
    owner, other = Client(app_server.url, verbose=False), Client(app_server.url, verbose=False)
    corpus = tmp_path / "mine.txt"
    corpus.write_text("abba baab " * 3000)  # an alphabet of three characters: a, b and the space
    owner.predict(api_name="/text_train", **ui_arguments(owner, "/text_train", upload=handle_file(str(corpus)),
                                                         minutes=0.25))  # the shortest the slider allows
    own = ui_arguments(owner, "/text_generate", name="own", prompt="ab", length=60)
    text = owner.predict(api_name="/text_generate", **own)[0]
    assert len(text) == 62 and set(text) <= {"a", "b", " "}  # the owner samples from their own model
    with pytest.raises(AppError, match="not trained your own model"):
        other.predict(api_name="/text_generate", **ui_arguments(other, "/text_generate", name="own"))

    # The owner's uploaded photo becomes their face; the other user has no face to edit.
    owner.predict(api_name="/vae_uploaded_face", image=handle_file(str(PHOTO)))
    sliders = ui_arguments(owner, "/vae_render_face")
    assert Image.open(owner.predict(api_name="/vae_render_face", **sliders)).size == (256, 256)
    with pytest.raises(AppError, match="Choose a face first"):
        other.predict(api_name="/vae_render_face", **sliders)


def test_a_long_style_transfer_does_not_hold_up_the_vae(app_server):
    painter, explorer = Client(app_server.url, verbose=False), Client(app_server.url, verbose=False)
    long_job = painter.submit(api_name="/style_transfer", **ui_arguments(
        painter, "/style_transfer", content=handle_file(str(PHOTO)), style_1=handle_file(str(STYLE_PAINTING)),
        iterations=1000))  # a few minutes of work here
    try:
        deadline = time.monotonic() + HANG_GUARD_S
        while not long_job.outputs():  # the first picture: the painting is under way
            assert not long_job.done() and time.monotonic() < deadline, "the style transfer never started"
            time.sleep(0.1)
        face = explorer.predict(api_name="/vae_random_face", **ui_arguments(explorer, "/vae_random_face", seed=1))
        edited = explorer.predict(api_name="/vae_render_face", **ui_arguments(explorer, "/vae_render_face", by_label={"smiling": 2.0}))
        assert not long_job.done(), "the VAE only answered after the style transfer had finished"
        assert pixels(face[1]) != pixels(edited)  # a real decode, with the first attribute slider moved
    finally:
        long_job.cancel()


# --- Stop -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def counted_server():
    """The app served from this process, with DeepDream's steps counted as the generator makes them."""
    import app
    from core import dream

    steps = {"count": 0}
    original = dream.dream

    def counted(*args, **kwargs):
        for update in original(*args, **kwargs):
            steps["count"] += 1
            yield update

    dream.dream = counted  # tabs.dream imports it when a job starts, so the job runs the counted one
    demo = app.build_app()
    demo.launch(server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        yield demo.local_url, steps
    finally:
        demo.close()
        dream.dream = original


def test_stop_stops_a_long_dream_between_steps_and_frees_the_tab(counted_server):
    url, steps = counted_server
    client = Client(url, verbose=False)
    # The page's Stop button cancels the dream event (cancels=[...]); pressing it makes the page send the
    # same /cancel request for the running job that Job.cancel() sends.
    dependencies = client.config["dependencies"]
    dream_id = next(d["id"] for d in dependencies if d.get("api_name") == "dream_run")
    assert any(d.get("cancels") == [dream_id] for d in dependencies), "no Stop button cancels the dream"
    long_dream = ui_arguments(client, "/dream_run", {"iterations per octave": 100}, image=handle_file(str(PHOTO)))  # 300 steps
    job = client.submit(api_name="/dream_run", **long_dream)
    deadline = time.monotonic() + HANG_GUARD_S
    while steps["count"] < 3:
        assert not job.done() and time.monotonic() < deadline, "the dream never started"
        time.sleep(0.05)
    job.cancel()

    # The generator stops: the count settles (a step under way may finish) far below the 300 steps.
    last, settled_since = steps["count"], time.monotonic()
    while time.monotonic() - settled_since < 2.0:
        assert time.monotonic() < deadline, "DeepDream kept running after Stop"
        time.sleep(0.1)
        if steps["count"] != last:
            last, settled_since = steps["count"], time.monotonic()
    assert last < 100, f"{last} steps ran: Stop did not stop the dream"

    # The tab's single slot is free again: a short dream runs to the end.
    short = ui_arguments(client, "/dream_run", {"octaves": 1, "iterations per octave": 2, "working size (longer side, px)": 128},
                         image=handle_file(str(PHOTO)))
    result = client.predict(api_name="/dream_run", **short)
    assert steps["count"] == last + 2 and Image.open(result[0]).size[0] >= 64
