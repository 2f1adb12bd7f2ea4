"""Bad input, everywhere: every tab handler fed wrong image modes, huge and tiny images, files that are
not images, empty and huge text, extreme and non-finite numbers, unknown choices, odd seeds.

A case passes when the handler, wrapped as the UI wraps it (tabs.common.user_errors), either gives a
sane result or raises gr.Error with a sentence for a person; any other exception, a message that is
Python talking, a blank picture, or a call running past HANG_GUARD_S fails it. Handlers are called
directly with the real shipped models and small settings, so each good call takes well under a second.
"""
from __future__ import annotations

import contextlib
import math
import re
import sys
import time
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from core.backbone_layers import OFFLINE_DEFAULT
from core.data.chorales import DEFAULT_INSTRUMENTS
from tabs import adversarial, diffusion, dream, ebm, flow, gan, musegan, pixelcnn, stepviewer, style, text, vae
from tabs import latent_spaces
from tabs import music_transformer
from tabs import text_to_image
from tabs import world_models
from tabs.common import user_errors

ROOT = Path(__file__).resolve().parent.parent
PHOTO = str(ROOT / "assets" / "examples" / "dream" / "grace_hopper.jpg")
PAINTING = str(ROOT / "assets" / "examples" / "style" / "mosaic.png")
HANG_GUARD_S = 20  # a guard against hangs, not a benchmark: good calls here take well under a second
STREAM_S = 5  # a streaming job still running after this long is stopped, as the Stop button would
NAN, INF = float("nan"), float("inf")
NUMBERS = {"nan": NAN, "inf": INF, "negative": -5, "huge": 1e12, "none": None}
# Fields whose top value is a legitimately slow job (a 1024-px painting): their "huge" and "inf" are
# clamped the same way as every other field's, so they are left out to keep this file fast.
SLOW_AT_THE_TOP = {("style_run", "size"), ("style_run", "iterations"), ("steps_versus_quality", "n_rows"),
                   ("text_compare", "length"), ("gan_live", "steps"), ("flow_live", "steps"),
                   ("ebm_sample", "steps"), ("ebm_live", "steps"), ("adversarial_side", "steps"),
                   ("world_drive", "steps"), ("world_dream_drive", "frames"), ("world_compare", "steps")}
SEEDS = {"negative": -1, "huge": 2**80, "nan": NAN, "inf": INF, "float": 3.7, "none": None}
# What Python (not a person) says: such text must never be the message a user sees.
PYTHON_TALK = re.compile(r"Traceback|invalid literal|could not convert|cannot convert|NoneType|has no attribute|"
                         r"not subscriptable|unsupported operand|object is not|unexpected keyword|positional argument|"
                         r"index out of range|out of bounds|not in (tuple|list)|math domain|tensor|size mismatch|must be real number|"
                         r"^[A-Za-z]*(Error|Exception)\b")


# --- images and files a user might upload ---------------------------------------------------------

def _picture(mode: str, size=(96, 72)) -> Image.Image:
    y, x = np.mgrid[0:size[1], 0:size[0]]
    rgb = np.stack([x * 255 // size[0], y * 255 // size[1], (x + y) % 256], -1).astype(np.uint8)
    picture = Image.fromarray(rgb)
    if mode == "I;16":
        return Image.fromarray((x * 65535 // size[0]).astype(np.uint16))
    if mode in ("RGBA", "LA"):
        alpha = Image.fromarray((x % 2 * 255).astype(np.uint8))
        picture = picture.convert(mode[:-1])
        picture.putalpha(alpha)
        return picture
    return picture.convert(mode)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """Paths of awkward uploads, made once: every image mode, a huge and a tiny image, and non-images."""
    folder = tmp_path_factory.mktemp("uploads")
    paths = {}
    for mode in ("RGBA", "P", "LA", "I;16", "1", "CMYK", "L"):
        name = f"mode_{mode.replace(';', '')}"
        paths[name] = str(folder / (f"{name}.jpg" if mode == "CMYK" else f"{name}.png"))
        _picture(mode).save(paths[name])
    paths["huge"] = str(folder / "huge.jpg")
    _picture("RGB", (6000, 4000)).save(paths["huge"], quality=70)
    paths["tiny"] = str(folder / "tiny.png")
    _picture("RGB", (1, 1)).save(paths["tiny"])
    paths["text_file"] = str(folder / "notes.txt")
    Path(paths["text_file"]).write_text("not a picture\n" * 100)
    paths["empty"] = str(folder / "empty.png")
    Path(paths["empty"]).write_bytes(b"")
    paths["truncated"] = str(folder / "truncated.png")
    Path(paths["truncated"]).write_bytes(Path(paths["mode_L"]).read_bytes()[:200])
    paths["binary"] = str(folder / "binary.txt")
    Path(paths["binary"]).write_bytes(bytes(range(256)) * 40)
    paths["latin1"] = str(folder / "latin1.txt")
    Path(paths["latin1"]).write_bytes("café naïve résumé ".encode("latin-1") * 200)
    paths["good_text"] = str(folder / "good.txt")
    Path(paths["good_text"]).write_text("to be or not to be, that is the question. " * 100)
    paths["huge_text"] = str(folder / "huge.txt")
    Path(paths["huge_text"]).write_text("x" * 3_000_000)
    paths["short_text"] = str(folder / "short.txt")
    Path(paths["short_text"]).write_text("hi")
    paths["missing"] = str(folder / "does_not_exist.png")
    return paths


IMAGE_FILES = ["mode_RGBA", "mode_P", "mode_LA", "mode_I16", "mode_1", "mode_CMYK", "mode_L", "huge", "tiny",
               "text_file", "empty", "truncated", "missing"]
PIL_MODES = ["RGBA", "P", "LA", "I;16", "1", "CMYK", "L", "F", "I"]


# --- each handler, called as its tab calls it, with small settings ------------------------------

def ui(handler):
    """The handler as its tab wires it: ValueErrors become gr.Error messages."""
    return user_errors(handler)


def dream_run(image=PHOTO, from_noise=False, guide=None, octaves=1, scale=1.4, iterations=2, step=0.02, jitter=16,
              max_loss=0, seed=0, max_side=128, weight=1.0, layer=None):
    slots = dream.layer_slot_values(OFFLINE_DEFAULT)
    slots[1] = weight
    if layer is not None:
        slots[0] = layer
    return ui(dream.run_dream)(image, from_noise, guide, OFFLINE_DEFAULT, *slots, octaves, scale, iterations, step, jitter,
                           max_loss, seed, max_side)


def dream_zoom(image=PHOTO, from_noise=False, step=0.02, jitter=16, seed=0, frame_size=128, frames=2, zoom=1.05,
               frame_iterations=1, video_format="GIF"):
    return ui(dream.run_zoom)(image, from_noise, OFFLINE_DEFAULT, *dream.layer_slot_values(OFFLINE_DEFAULT), step, jitter,
                          seed, frame_size, frames, zoom, frame_iterations, video_format)


def style_run(content=PHOTO, style_1=PAINTING, blend_1=1.0, style_2=None, blend_2=1.0, size=64, content_exp=0.0,
              style_exp=3.0, tv_exp=1.7, iterations=3, optimizer="lbfgs", init="content", colour="none",
              style_scale=1.0, strength=100, seed=0, backbone="efficientnet_lite0"):
    return ui(style.run_style)(content, style_1, blend_1, style_2, blend_2, None, 1.0, backbone, size, content_exp,
                           style_exp, tv_exp, iterations, optimizer, init, colour, style_scale, strength, seed)


def text_generate(name="lstm_shakespeare", own=None, prompt="ROMEO:\n", length=20, temperature=0.8, top_k=0, top_p=1.0,
                  seed=0):
    return ui(text.generate)(name, own, prompt, length, temperature, top_k, top_p, seed)


def text_compare(name="lstm_shakespeare", prompt="ROMEO:\n", length=10, seed=0, temperatures=(0.2, 0.5, 1.0, 1.5)):
    return ui(text.compare)(name, None, prompt, length, seed, *temperatures)


def text_entropy(name="lstm_shakespeare", prompt="ROMEO:\n", temperature=0.8):
    return ui(text.entropy_view)(name, None, prompt, temperature)


def text_train(upload=None, kind="LSTM", minutes=0.25, seed=0):
    return ui(text.train_own)(upload, kind, minutes, seed)


def face_state():
    return vae.random_face(0)[0]


def vae_render(state="random", attribute=0.0, dimension=0.0):
    state = face_state() if state == "random" else state
    values = [attribute] + [0.0] * (len(vae.ATTRIBUTES) - 1) + [dimension] * vae.N_DIM_SLIDERS
    return ui(vae.render_face)(state, *values)


def vae_morph(ends="two", steps=8, mode="slerp"):
    ends = {"A": face_state()["z"], "B": vae.random_face(1)[0]["z"]} if ends == "two" else ends
    return ui(vae.morph_faces)(ends, steps, mode)


def vae_morph_position(t=0.5, mode="slerp"):
    return ui(vae.morph_position)({"A": face_state()["z"], "B": vae.random_face(1)[0]["z"]}, t, mode)


def vae_click(x=100, y=100):
    return ui(vae.decode_map_click)(gr.SelectData(None, {"index": [x, y], "value": None}))


def spaces_click(name="PCA", x=150, y=150, event="select"):  # a click on one of the three latent maps
    evt = {"select": gr.SelectData(None, {"index": [x, y], "value": None}),
           "no index": gr.SelectData(None, {"index": None, "value": None}), "none": None}[event]
    return ui(latent_spaces._clicker(name))(evt)


def spaces_sliders(first=0.0, rest=0.0, count=latent_spaces.EIGEN_SLIDERS):  # the eigen-clothes sliders
    return ui(latent_spaces.pca_slider_image)(first, *[rest] * (count - 1))


def spaces_denoise(example=0, sigma=0.3, seed=0):
    return ui(latent_spaces.denoise)(example, sigma, seed)


def gan_samples(name="dcgan_fashion", seed=0, grid_size=4, class_choice=gan.ALL_CLASSES, truncation=1.0):
    return ui(gan.samples)(name, seed, grid_size, class_choice, truncation)


def gan_walk(name="dcgan_fashion", seed_a=1, seed_b=2, steps=4, mode="slerp", class_choice=gan.ALL_CLASSES,
             truncation=1.0):
    return ui(gan.latent_walk)(name, seed_a, seed_b, steps, mode, class_choice, truncation)


def gan_mix(name="stylegan_faces", seed_a=3, seed_b=8, crossover=3, psi=0.7, noise="fixed"):
    return ui(gan.style_mix)(name, seed_a, seed_b, crossover, psi, noise)


def gan_live(distribution="ring", seed=0, lr_g=-3, lr_d=-3, steps=5):
    live = ui(gan.live_reset)(distribution, seed, lr_g, lr_d)[0]
    return ui(gan.live_step)(live, steps, lr_g, lr_d)


def diffusion_sample(name="fashion32", seed=0, n=2, sampler="DDIM", steps=4, eta=0.0, schedule="cosine"):
    return ui(diffusion.generate)(name, seed, n, sampler, steps, eta, schedule)


def diffusion_forward(example=None, upload=None, t=0.3, schedule="cosine", seed=0):
    example = example if example is not None else diffusion.EXAMPLES[0].name
    return ui(diffusion.forward_process)(example, upload, t, schedule, seed)


def diffusion_viewer(index=0):
    frames = [(_picture("RGB"), "first"), (_picture("L"), "second")]
    return ui(stepviewer.show_frame)(frames, index)


def pixelcnn_generate(name="plain_fashion16_k4", n=2, temperature=1.0, seed=0):
    return ui(pixelcnn.generate)(name, n, temperature, seed)


def pixelcnn_complete(name="plain_fashion16_k4", index=0, upload=None, row_from=12, row_to=16, col_from=0,
                      col_to=16, n=2, temperature=1.0, seed=0):
    return ui(pixelcnn.complete_image)(name, index, upload, row_from, row_to, col_from, col_to, n, temperature, seed)


def pixelcnn_inspect(name="plain_fashion16_k4", index=0, upload=None, row=8, col=8):
    return ui(pixelcnn.inspect_pixel)(name, index, upload, row, col)


def flow_live(distribution="moons", seed=0, lr=-2.5, couplings=2, layer=2, steps=5):
    live = ui(flow.live_reset)(distribution, seed, lr, couplings, layer)[0]
    return ui(flow.live_step)(live, steps, lr, couplings, layer)


def flow_play(lr=0, steps=20):  # log10 0: a learning rate of 1, which makes the likelihood blow up
    live = ui(flow.live_reset)("moons", 0, lr, 2, 2)[0]
    return ui(flow.live_play)(live, steps, lr, 2, 2)


def flow_layer(layer=1):
    live = flow.live_reset("moons", 0, -2.5, 2, 2)[0]
    return ui(flow.live_layer)(live, layer)


def flow_point(to="latent", x=0.5, y=0.5, diverged=False):
    live = flow.live_reset("moons", 0, 0 if diverged else -2.5, 2, 2)[0]
    if diverged:
        live.train(50)
    return ui(flow.to_latent if to == "latent" else flow.to_data)(live, x, y)


def flow_click(plane="data", x=100, y=100, event="select"):
    live = flow.live_reset("moons", 0, -2.5, 2, 2)[0]
    evt = {"select": gr.SelectData(None, {"index": [x, y], "value": None}),
           "no index": gr.SelectData(None, {"index": None, "value": None}), "none": None}[event]
    return ui(flow.click_data if plane == "data" else flow.click_latent)(live, evt)


def flow_unstarted(action="step"):  # no flow in this session yet: the state is None
    click = gr.SelectData(None, {"index": [10, 10], "value": None})
    calls = {"step": lambda: ui(flow.live_step)(None, 1, -2.5, 8, 8),
             "play": lambda: ui(flow.live_play)(None, 1, -2.5, 8, 8),
             "layer": lambda: ui(flow.live_layer)(None, 3),
             "to_latent": lambda: ui(flow.to_latent)(None, 0, 0),
             "to_data": lambda: ui(flow.to_data)(None, 0, 0),
             "click": lambda: ui(flow.click_latent)(None, click)}
    return calls[action]()


def flow_samples(seed=0, side=2, temperature=0.7):
    return ui(flow.samples)(seed, side, temperature)


def flow_temperatures(seed=0, rows=1):
    return ui(flow.temperature_grid)(seed, rows)


def flow_interpolate(index_a=0, index_b=1, steps=3):
    return ui(flow.interpolation)(index_a, index_b, steps)


def ebm_sample(seed=0, n=2, steps=3, step_size=10.0, noise=0.005, start_from="noise"):
    return ui(ebm.generate)(seed, n, steps, step_size, noise, start_from)


def ebm_compare(seed=0):  # 5 × 8 images × 200 steps: about 2 s
    return ui(ebm.compare_samplers)(seed)


def ebm_score(seed=0, upload=None):  # 64 samples × 200 steps and 2000 energies: about 2 s
    return ui(ebm.score)(seed, upload)


def ebm_repair(index=0, kind="mask", amount=0.5, top=8, left=8, height=16, width=16, steps=3, seed=0):
    return ui(ebm.repair)(index, kind, amount, top, left, height, width, steps, seed)


def ebm_live(distribution="eight_gaussians", seed=0, lr=-2.5, steps=5):
    live = ui(ebm.live_reset)(distribution, seed, lr)[0]
    return ui(ebm.live_step)(live, steps, lr)


def ebm_learning_rate(lr=-2.5):  # the slider moved during a game
    live = ebm.live_reset("eight_gaussians", 0, -2.5)[0]
    return ui(ebm.live_set_learning_rate)(live, lr)


def ebm_unstarted(action="step"):  # no EBM in this session yet: the state is None
    calls = {"step": lambda: ui(ebm.live_step)(None, 1, -2.5),
             "play": lambda: ui(ebm.live_play)(None, 1, -2.5),
             "learning_rate": lambda: ui(ebm.live_set_learning_rate)(None, -2.5)}
    return calls[action]()


def adversarial_attack(source="photo", image=PHOTO, index=0, network="efficientnet_lite0", method="pgd", epsilon=2,
                       steps=2, step_size=0, target=adversarial.UNTARGETED, random_start=False, seed=0):
    return ui(adversarial.attack_image)(source, image, index, network, method, epsilon, steps, step_size, target,
                                        random_start, seed)


def adversarial_clothes(**kwargs):  # a Fashion-MNIST test image and classifier: each call a fraction of a second
    return adversarial_attack(**{"source": "fashion", "network": "fashion_mnist", **kwargs})


def adversarial_side(index=0, epsilon=8, steps=2, seed=0):  # 2 classifiers (or 1) × 100 test images × 3 steps
    return ui(adversarial.side_by_side)(index, epsilon, steps, seed)


def musegan_new(seed=0, n_bars=2, tempo=90, instruments=DEFAULT_INSTRUMENTS):
    return ui(musegan.new_piece)(seed, n_bars, tempo, *instruments)


def musegan_reroll(kind="melody", voice="Soprano", n_bars=2, tempo=90):
    state = musegan.new_piece(0, 2, 90, *DEFAULT_INSTRUMENTS)[0]
    return ui(musegan.reroll_input)(state, kind, voice, n_bars, tempo, *DEFAULT_INSTRUMENTS)


def musegan_interpolate(kind="Style", segments=2, bars_per_segment=1, tempo=90):
    state = musegan.new_piece(0, 2, 90, *DEFAULT_INSTRUMENTS)[0]
    return ui(musegan.interpolate)(state, kind, segments, bars_per_segment, tempo, *DEFAULT_INSTRUMENTS)


def musegan_upload(path=None, tempo=90):
    return ui(musegan.analyse_upload)(path, tempo, *DEFAULT_INSTRUMENTS)


# The Music tab's Transformer part runs the real shipped model (CI has it; a checkout without it skips these).
MUSIC_PROMPT_FILES: dict = {}  # "midi:<name>" -> path, written on first use into the folder below


@pytest.fixture(scope="module", autouse=True)
def _music_prompt_folder(tmp_path_factory):
    MUSIC_PROMPT_FILES["folder"] = tmp_path_factory.mktemp("music_prompts")
    yield
    MUSIC_PROMPT_FILES.clear()


def _music_prompt_file(upload):
    """"midi:<name>": a prompt file that is refused for a reason (tests/test_music_transformer.bad_uploads:
    empty.mid, letter.mid (a letter renamed .mid), cut.mid (a MIDI file cut in half), trio.mid, band.mid
    (16 parts), one_note.mid, evil.p, song.musicxml (no parts)), or good.mid / good.musicxml (four bars of a
    held-out chorale); anything else is passed on as it is."""
    if not (isinstance(upload, str) and upload.startswith("midi:")):
        return upload
    folder = MUSIC_PROMPT_FILES["folder"]
    if "good.mid" not in MUSIC_PROMPT_FILES:
        from core import musegan as core_musegan
        from core.data.chorales import held_out_openings
        from tests.test_music_transformer import bad_uploads

        piece = held_out_openings(4)[0][1]
        names = list(bad_uploads(folder, piece[:32]))
        (folder / "good.mid").write_bytes(core_musegan.midi_bytes(core_musegan.roll_to_midi(piece)))
        core_musegan.write_musicxml(piece, folder / "good.musicxml")
        MUSIC_PROMPT_FILES.update({name: str(folder / name) for name in names + ["good.mid", "good.musicxml"]})
    return MUSIC_PROMPT_FILES[upload[5:]]


def _require_music_transformer():
    from tests.conftest import require

    require(music_transformer._ready(), "the Music Transformer is not trained yet: "
                                        "python -m core.train music_transformer --minutes 35 --threads 1")


def music_continue(choice="held-out", upload=None, bars=1, temperature=1.0, top_k=0, seed=0, tempo=90,
                   instruments=DEFAULT_INSTRUMENTS):
    _require_music_transformer()
    choice = music_transformer.prompt_names()[0] if choice == "held-out" else choice
    return ui(music_transformer.continue_music)(choice, _music_prompt_file(upload), bars, temperature, top_k, seed,
                                                tempo, *instruments)


_CONTINUED: dict = {}


def music_attention(state="continued", layer=1, head=music_transformer.ALL_HEADS, position=1):
    _require_music_transformer()
    if state == "continued":  # one bar (64 new tokens) after the first held-out opening, made once
        if "state" not in _CONTINUED:
            _CONTINUED["state"] = music_transformer.continue_music(music_transformer.prompt_names()[0], None, 1, 1.0,
                                                                   0, 0, 90, *DEFAULT_INSTRUMENTS)[0]
        state = _CONTINUED["state"]
    return ui(music_transformer.attention_figure)(state, layer, head, position)


_TEXT_STEPS: dict = {}


def text_attention(name="gpt_shakespeare", steps="generated", index=5, layer=1):
    if steps == "generated":  # 20 characters of the shipped GPT, made once
        if "steps" not in _TEXT_STEPS:
            _TEXT_STEPS["steps"] = list(text.generate("gpt_shakespeare", None, "ROMEO:\n", 20, 0.8, 0, 1.0, 0))[-1][4]
        steps = _TEXT_STEPS["steps"]
    return ui(text.attention_html)(name, None, steps, index, layer)


# The World Models tab runs the shipped V and M (CI has them; a checkout without them skips these cases), and a
# shipped controller where a case names one. Drives are short, and the dream's playback pause is taken out.
WM_TRAIN = "python -m core.train world_models --stage rollouts, then --stage vae and --stage rnn"


def _require_world_models(controller=None):
    from core.registry import list_shipped
    from tests.conftest import require

    require(world_models._ready(), f"World Models' V and M are not shipped yet: {WM_TRAIN}")
    if controller in ("real", "dream"):
        require(f"controller_{controller}" in list_shipped("world_models"),
                f"the World Models controller {world_models.CONTROLLERS[controller]} is not shipped yet: "
                f"python -m core.train world_models --stage controller --where {controller}")


@contextlib.contextmanager
def _world_models_setting(environment="works"):
    """The dream shown as fast as it is made; with environment="fails", CarRacing cannot start (gymnasium
    does not import)."""
    missing, saved_fps = object(), world_models.DREAM_FPS
    saved_gym = sys.modules.get("gymnasium", missing)
    world_models.DREAM_FPS = 1e9
    if environment == "fails":
        sys.modules["gymnasium"] = None  # `import gymnasium` raises ImportError
    try:
        yield
    finally:
        world_models.DREAM_FPS = saved_fps
        if environment == "fails":
            if saved_gym is missing:
                sys.modules.pop("gymnasium", None)
            else:
                sys.modules["gymnasium"] = saved_gym


def _dream_state(state):
    """"started": a new dream from the first kept real frame (seed 0); anything else as it is."""
    return world_models.start_dream(1, 0, 1.0)[0] if state == "started" else state


def world_drive(choice="noisy", track=1, steps=20, environment="works"):  # a generator, as the tab's drive is
    _require_world_models(choice)
    with _world_models_setting(environment):
        yield from ui(world_models.drive_real)(choice, track, steps)


def world_dream_start(start=1, seed=0, tau=1.0):
    _require_world_models()
    return ui(world_models.start_dream)(start, seed, tau)


def world_press(label="▲ gas", tau=1.0, state="started"):
    _require_world_models()
    with _world_models_setting():
        yield from ui(world_models.press)(label, tau, _dream_state(state))


def world_dream_drive(choice="noisy", tau=1.0, frames=10, state="started"):
    _require_world_models(choice)
    with _world_models_setting():
        yield from ui(world_models.let_controller_dream)(choice, tau, frames, _dream_state(state))


def world_compare(choice="real", track=2, steps=60, tau=1.0, seed=0, environment="works"):
    _require_world_models(choice)
    with _world_models_setting(environment):
        return ui(world_models.compare)(choice, track, steps, tau, seed)


_COMPARED: dict = {}


def world_mixture(state="compared", step=51):
    if state == "compared":  # the real-trained controller on track 2 for 60 steps, made once
        _require_world_models("real")
        if "state" not in _COMPARED:
            _COMPARED["state"] = world_models.compare("real", 2, 60, 1.0, 0)[0]
        state = _COMPARED["state"]
    else:
        _require_world_models()
    return ui(world_models.mixture_at)(state, step)


# The Text to image tab runs the shipped conditional diffusion models, the CLIP and the classifiers (CI has
# them; a checkout without them skips these cases), with few steps.

def _require_text_to_image(name=None, clip=False):
    from tests.conftest import require

    if name in text_to_image.MODELS:
        require(name in [n for _, n in text_to_image.model_choices()],
                f"{name} is not shipped yet: {text_to_image.TRAIN_COMMANDS[name]}")
    if clip or name == "faces32_captions":
        require(text_to_image.clip_shipped(), f"the CLIP is not shipped yet: {text_to_image.CLIP_COMMAND}")


def t2i_generate(name="faces32_captions", prompt="a person with red hair and glasses", negative="", weight=3.0,
                 steps=10, seed=0, n=1):
    _require_text_to_image(name)
    return ui(text_to_image.generate)(name, prompt, negative, weight, steps, seed, n)


def t2i_strip(name="faces32_captions", prompt="red hair, glasses", negative="", steps=10, seed=0):
    _require_text_to_image(name)
    return ui(text_to_image.guidance_strip)(name, prompt, negative, steps, seed)


def t2i_search(caption="a person with red hair"):
    _require_text_to_image(clip=True)
    return ui(text_to_image.search_faces)(caption)


def t2i_describe(upload=None, index=0):
    _require_text_to_image(clip=True)
    return ui(text_to_image.describe_face)(upload, index)


def t2i_matrix(seed=0):
    _require_text_to_image(clip=True)
    return ui(text_to_image.similarity_matrix)(seed)


# --- the table ------------------------------------------------------------------------------------

def _cases():
    """(handler, keyword arguments, whether it must give a result); a value "file:<name>" is replaced by
    that upload's path, "pil:<mode>" by a picture in that mode."""
    cases = []

    def add(handler, works=False, **kwargs):
        if any((handler.__name__, field) in SLOW_AT_THE_TOP and value in (INF, 1e12) for field, value in kwargs.items()):
            return
        label = ",".join(f"{k}={v if not isinstance(v, float) or math.isfinite(v) else str(v)}"
                         for k, v in kwargs.items())
        cases.append(pytest.param(handler, kwargs, works, id=f"{handler.__name__}[{label[:60]}]"))

    for upload in IMAGE_FILES:  # every mode and a 6000x4000 photo work; the rest are refused
        readable = upload.startswith("mode_") or upload == "huge"
        add(dream_run, image=f"file:{upload}", works=readable)
        add(style_run, content=f"file:{upload}", works=readable)
        add(style_run, style_1=f"file:{upload}", works=readable)
    for upload in ("mode_CMYK", "huge", "tiny", "text_file"):
        add(dream_run, guide=f"file:{upload}")
        add(dream_zoom, image=f"file:{upload}")
    for name, value in NUMBERS.items():
        for field in ("octaves", "scale", "iterations", "step", "jitter", "max_loss", "max_side", "weight"):
            add(dream_run, **{field: value})
        for field in ("frames", "zoom", "frame_iterations", "frame_size"):  # step, jitter: as dream_run's
            add(dream_zoom, **{field: value})
        for field in ("size", "iterations", "content_exp", "style_exp", "tv_exp", "style_scale", "strength", "blend_1"):
            add(style_run, **{field: value})
        for field in ("length", "temperature", "top_k", "top_p"):
            add(text_generate, **{field: value})
        add(text_compare, length=value)
        add(text_compare, temperatures=(value, value, 0.5, 1.0))
        add(text_entropy, temperature=value)
        if name in ("nan", "negative"):  # each trains for seconds; the other values clamp the same way
            add(text_train, upload="file:good_text", minutes=value)
        add(vae_render, attribute=value)
        add(vae_render, dimension=value)
        add(vae_morph, steps=value)
        add(vae_morph_position, t=value)
        for handler in (ui(vae.decode_plane), ui(vae.show_fashion)):
            add(handler, n=value)
        add(ui(vae.dataset_face), index=value)
        for field in ("grid_size", "truncation"):
            add(gan_samples, **{field: value})
        for field in ("steps", "truncation"):
            add(gan_walk, **{field: value})
        for field in ("crossover", "psi"):
            add(gan_mix, **{field: value})
        for field in ("lr_g", "lr_d", "steps"):
            add(gan_live, **{field: value})
        add(ui(gan.story_frame), name="dcgan_fashion", index=value)
        for field in ("n", "steps", "eta"):
            add(diffusion_sample, **{field: value})
        add(diffusion_forward, t=value)
        add(diffusion_viewer, index=value)
        add(ui(diffusion.steps_versus_quality), name="fashion32", seed=0, n_rows=value)
        add(ui(diffusion.interpolation), name="fashion32", seed_a=1, seed_b=2, frames=value, steps=3)
        add(ui(diffusion.interpolation), name="fashion32", seed_a=1, seed_b=2, frames=2, steps=value)
        for field in ("n", "temperature"):
            add(pixelcnn_generate, **{field: value})
        for field in ("index", "row_from", "row_to", "col_from", "col_to", "n", "temperature"):
            add(pixelcnn_complete, **{field: value})
        for field in ("index", "row", "col"):
            add(pixelcnn_inspect, **{field: value})
        for field in ("lr", "couplings", "layer", "steps"):  # 0 couplings and huge learning rates among them
            add(flow_live, **{field: value})
        add(flow_layer, layer=value)
        for to in ("latent", "data"):
            add(flow_point, to=to, x=value)
        for field in ("side", "temperature"):
            add(flow_samples, **{field: value})
        add(flow_temperatures, rows=value)
        for field in ("index_a", "index_b", "steps"):  # test indices out of range
            add(flow_interpolate, **{field: value})
        for field in ("n", "steps", "step_size", "noise"):  # step size and noise 0 among them
            add(ebm_sample, **{field: value})
        for field in ("index", "top", "left", "height", "width", "steps"):  # a rectangle off the image
            add(ebm_repair, **{field: value})
        add(ebm_repair, kind="noise", amount=value)
        for field in ("lr", "steps"):  # huge learning rates are clamped to the slider's top (1)
            add(ebm_live, **{field: value})
        add(ebm_learning_rate, lr=value, works=True)
        for field in ("n_bars", "tempo"):
            add(musegan_new, **{field: value})
        add(musegan_interpolate, segments=value)
        add(musegan_interpolate, bars_per_segment=value)
    for name, seed in SEEDS.items():  # any number is a seed (core.runtime.clamp_seed)
        add(dream_run, seed=seed, from_noise=True, works=True)
        add(style_run, seed=seed, init="noise", works=True)
        add(text_generate, seed=seed, works=True)
        add(ui(vae.random_face), seed=seed, works=True)
        add(gan_samples, seed=seed, works=True)
        add(gan_walk, seed_a=seed, works=True)
        add(gan_mix, seed_a=seed, seed_b=seed, works=True)
        add(gan_live, seed=seed, works=True)
        add(diffusion_sample, seed=seed, works=True)
        add(diffusion_forward, seed=seed, works=True)
        add(ui(diffusion.interpolation), name="fashion32", seed_a=seed, seed_b=5, frames=2, steps=3, works=True)
        add(flow_live, seed=seed, works=True)
        add(flow_samples, seed=seed, works=True)
        add(flow_temperatures, seed=seed, works=True)
        add(musegan_new, seed=seed, works=True)
        add(pixelcnn_generate, seed=seed, works=True)
        add(pixelcnn_complete, seed=seed, works=True)
        add(ebm_sample, seed=seed, works=True)
        add(ebm_compare, seed=seed, works=True)
        add(ebm_score, seed=seed, works=True)
        add(ebm_repair, seed=seed, works=True)
        add(ebm_repair, kind="noise", seed=seed, works=True)
        add(ebm_live, seed=seed, works=True)
    # Text: empty, huge, strange prompts; uploads that are not training text.
    for prompt in ("", None, "x" * 200_000, "🙂🙂 \x00\u202e", "\n" * 5000):
        add(text_generate, prompt=prompt, works=True)
        add(text_entropy, prompt=prompt, works=True)
    add(text_compare, prompt="x" * 200_000, works=True)
    add(text_generate, length=1, works=True)
    for upload in ("binary", "latin1", "huge_text", "short_text", "empty", "mode_L", "missing"):
        add(text_train, upload=f"file:{upload}")
    add(text_train, upload=None)
    add(ui(text.inspect_step), steps=None, index=3)
    # Unknown choices (the API accepts any string).
    add(text_generate, name="no_such_model")
    add(text_generate, name=text.OWN_MODEL)
    add(text_train, upload="file:good_text", kind="Transformer-XL", minutes=0.05)
    add(dream_run, layer="no_such_layer")
    add(dream_zoom, video_format="AVI")
    add(style_run, optimizer="sgd")
    add(style_run, backbone="resnet")
    add(ui(vae.random_face), seed=0, source="somewhere else")
    add(vae_render, state=None)
    for x, y in ((-50, 100), (10_000, 100), (100, -50), (100, 10_000)):  # clicks outside the map
        add(vae_click, x=x, y=y)
    add(vae_morph, ends={})
    add(vae_morph, mode="teleport")
    add(ui(vae.uploaded_face), image=None)
    for mode in PIL_MODES:
        add(ui(vae.uploaded_face), image=f"pil:{mode}", works=True)
        add(diffusion_forward, upload=f"pil:{mode}", works=True)
    add(ui(vae.uploaded_face), image="pil:tiny")
    add(ui(vae.uploaded_face), image="pil:huge", works=True)
    add(diffusion_forward, upload="pil:tiny")
    add(gan_samples, name="no_such_gan")
    add(gan_samples, name="cgan_fashion", class_choice="Unicorn")
    add(gan_samples, name="cgan_fashion", class_choice=None)
    add(gan_walk, seed_a=3, seed_b=3)
    add(gan_walk, mode="teleport")
    add(gan_mix, name="dcgan_fashion")  # no per-layer styles
    add(gan_mix, noise="loud")
    add(gan_live, distribution="cube")
    add(ui(gan.live_step), live=None, steps=1, lr_g_log=-3, lr_d_log=-3)
    add(ui(gan.story_frame), name="no_such_gan", index=0)
    add(diffusion_sample, name="no_such_model")
    add(diffusion_sample, name=None)
    add(diffusion_sample, sampler="Euler")
    add(diffusion_sample, schedule="sigmoid")
    add(diffusion_forward, example="no_such_example.png")
    add(diffusion_forward, schedule="sigmoid")
    add(ui(stepviewer.frames_gif), frames=[])
    add(ui(stepviewer.play), frames=None, index=0)
    add(musegan_new, instruments=("Kazoo", "Oboe", "Clarinet", "Bassoon"))
    add(musegan_reroll, kind="harmony")
    add(musegan_reroll, voice="Countertenor")
    add(musegan_interpolate, kind="Groove")
    add(ui(musegan.replay), state=None, n_bars=2, tempo=90)
    for upload in ("text_file", "mode_L", "empty", "missing", "binary"):
        add(musegan_upload, path=f"file:{upload}")
    add(musegan_upload, path=None)
    for upload in IMAGE_FILES:  # PixelCNN completion of any upload: every mode and a huge photo work
        readable = upload.startswith("mode_") or upload == "huge"
        add(pixelcnn_complete, upload=f"file:{upload}", works=readable)
        add(pixelcnn_inspect, upload=f"file:{upload}", works=readable)
    add(pixelcnn_generate, name="no_such_model")
    add(pixelcnn_complete, row_from=0, row_to=0)  # nothing hidden: nothing to complete
    add(pixelcnn_complete, row_from=0, row_to=16, works=True)  # everything hidden: plain sampling
    add(pixelcnn_generate, temperature=0, works=True)
    add(flow_live, couplings=0, works=True)  # clamped to one coupling, and the status says so
    add(flow_live, lr=0, steps=50, works=True)  # diverges: a status sentence, not a crash
    add(flow_play, lr=0, works=True)
    add(flow_play, lr=1e12, works=True)
    add(flow_live, distribution="cube")
    for action in ("step", "play", "layer", "to_latent", "to_data", "click"):
        add(flow_unstarted, action=action)
    for to in ("latent", "data"):
        add(flow_point, to=to, diverged=True)  # a NaN flow: a picture or a sentence
    for plane in ("data", "latent"):
        for x, y in ((-50, 100), (10_000, 100), (100, -50), (100, 10_000)):  # clicks outside the plane
            add(flow_click, plane=plane, x=x, y=y, works=True)
        for event in ("no index", "none"):
            add(flow_click, plane=plane, event=event)
    for temperature in (0, 1e12):
        add(flow_samples, temperature=temperature, works=True)
        add(flow_samples, temperature=temperature, side=1, works=True)
    add(flow_interpolate, index_a=5, index_b=5)  # the same image at both ends
    add(flow_interpolate, index_a=10**9, index_b=-3, works=True)
    for upload in IMAGE_FILES:  # the energy of any readable upload: every mode and a huge photo work
        add(ebm_score, upload=f"file:{upload}", works=upload.startswith("mode_") or upload == "huge")
    add(ebm_sample, step_size=0, noise=0, works=True)  # nothing moves: the note says so
    add(ebm_sample, start_from="somewhere")
    add(ebm_sample, start_from="chains")  # works, or a checkpoint without training chains says so
    add(ebm_sample, steps=150, works=True)  # the viewer keeps 101 of the 151 frames
    for kind in ("blur", None, ""):
        add(ebm_repair, kind=kind)
    add(ebm_repair, top=31, left=31, height=32, width=32, works=True)  # a one-pixel hole in the corner
    add(ebm_repair, top=0, left=0, height=32, width=32, works=True)  # everything hidden
    add(ebm_repair, kind="noise", amount=0, works=True)  # no damage: "nothing to repair", not a ratio to 0
    add(ebm_live, lr=0, steps=50, works=True)  # the slider's top learning rate: a status, not a crash
    add(ebm_live, distribution="cube")
    add(ebm_live, distribution=None)
    for action in ("step", "play", "learning_rate"):
        add(ebm_unstarted, action=action, works=action == "learning_rate")
    # Adversarial examples: uploads of every mode and size, for the ImageNet network and drawn as clothes.
    for upload in IMAGE_FILES:
        readable = upload.startswith("mode_") or upload == "huge"
        add(adversarial_attack, image=f"file:{upload}", works=readable)
        add(adversarial_attack, image=f"file:{upload}", network="fashion_mnist", works=readable)
    add(adversarial_attack, image=None)
    for name, value in NUMBERS.items():  # ε 0 (negative) is a sentence; huge ε is the whole range
        for field in ("index", "epsilon", "steps", "step_size"):
            add(adversarial_clothes, **{field: value})
        add(adversarial_clothes, method="fgsm", epsilon=value)
        for field in ("index", "epsilon", "steps"):
            add(adversarial_side, **{field: value})
    for name, seed in SEEDS.items():
        add(adversarial_clothes, random_start=True, seed=seed, works=True)
        add(adversarial_side, seed=seed, works=True)
    add(adversarial_attack, epsilon=0)
    add(adversarial_attack, epsilon=1e12, works=True)
    add(adversarial_clothes, epsilon=255, method="fgsm", works=True)
    add(adversarial_attack, target="military uniform (652)")  # already its class
    add(adversarial_clothes, index=0, target="Ankle boot (9)")  # test image 0 is an ankle boot
    for target in ("unicorn", "Bag (8)", 5000, -1, 2.5, ""):  # not one of ImageNet's classes ("" is untargeted)
        add(adversarial_attack, target=target, works=target == "")
    add(adversarial_clothes, target=None, works=True)
    add(adversarial_clothes, target="Bag", steps=3, works=True)
    add(adversarial_clothes, method="fgsm", random_start=True, works=True)  # a note: the random start is PGD's
    add(adversarial_attack, source="fashion", network="efficientnet_lite0", works=True)  # the classifier is switched
    add(adversarial_attack, network="resnet")
    add(adversarial_attack, method="cw")
    add(adversarial_attack, source="webcam")
    add(adversarial_attack, network=None)
    add(adversarial_clothes, network="fashion_mnist_robust")  # works, or says how to train it
    # The VAE tab's three latent spaces (tabs/latent_spaces.py): every number is clamped, any value is a seed.
    for name, value in [*NUMBERS.items(), ("text", "ten")]:
        for handler in (ui(latent_spaces.show_spaces), ui(latent_spaces.space_grids)):
            add(handler, n=value, works=True)
        for field in ("x", "y"):  # off the map: its nearest edge
            add(spaces_click, **{field: value}, works=True)
        for field in ("first", "rest"):  # beyond +-3 standard deviations: +-3
            add(spaces_sliders, **{field: value}, works=True)
        for field in ("example", "sigma"):  # example 0..99, noise std 0..1
            add(spaces_denoise, **{field: value}, works=True)
    for name, seed in [*SEEDS.items(), ("text", "seven")]:
        add(ui(latent_spaces.sample_spaces), seed=seed, works=True)
        add(spaces_denoise, seed=seed, works=True)
    for name in latent_spaces.SPACES:
        add(spaces_click, name=name, x=-50, y=10_000, works=True)
    add(spaces_click, name="t-SNE")
    for event in ("no index", "none"):
        add(spaces_click, event=event)
    add(ui(latent_spaces.pca_slider_image), works=True)  # no sliders sent: the mean image
    add(spaces_sliders, first=3.0, count=20, works=True)  # more values than sliders: the extra ones ignored
    add(ui(latent_spaces.eigen_clothes), works=True)
    add(ui(latent_spaces.figure_table), works=True)  # the table, or a sentence saying it is not computed yet
    # The Music tab's Transformer: numbers, choices, prompt files that cannot be a prompt, and its attention view.
    for name, value in NUMBERS.items():
        add(music_continue, bars=value, works=True)  # clamped to the slider's 1..8 (no value: 4)
        for field in ("temperature", "top_k", "tempo"):  # core's check_sampling and check_tempo say what is allowed
            add(music_continue, **{field: value})
        for field in ("layer", "position"):  # clamped to the model's layers and to the new tokens
            add(music_attention, **{field: value}, works=True)
        for field in ("index", "layer"):  # clamped to the characters written and the GPT's layers
            add(text_attention, **{field: value}, works=True)
    for name, seed in SEEDS.items():
        add(music_continue, seed=seed, works=True)
    add(music_continue, temperature=0, works=True)  # greedy
    add(music_continue, temperature=5.0, top_k=1000, works=True)  # the hottest core allows; top-k past the vocabulary: off
    add(music_continue, top_k=2.5)
    add(music_continue, temperature="hot")
    for choice in ("no such chorale", None, "", 3):
        add(music_continue, choice=choice)
    for upload in (None, "", "file:text_file", "file:mode_L", "file:empty", "file:missing", "file:binary",
                   "midi:empty.mid", "midi:letter.mid", "midi:cut.mid", "midi:trio.mid", "midi:band.mid",
                   "midi:one_note.mid", "midi:evil.p", "midi:song.musicxml"):
        add(music_continue, choice=music_transformer.UPLOAD, upload=upload)
    for upload in ("midi:good.mid", "midi:good.musicxml"):
        add(music_continue, choice=music_transformer.UPLOAD, upload=upload, works=True)
    add(music_continue, upload="midi:trio.mid", works=True)  # a held-out opening is chosen: the file is not read
    add(music_continue, instruments=("Kazoo", "Oboe", "Clarinet", "Bassoon"))
    for state in (None, {}):
        add(music_attention, state=state)
    for head in ("head 0", "head 99", "", "voice 2", "all", -1):
        add(music_attention, head=head)
    for head in (None, "head 2", "Head 4", 3):
        add(music_attention, head=head, works=True)
    add(music_attention, position=64, layer=4, works=True)  # the last new token, the last layer
    add(text_attention, steps=None)
    add(text_attention, steps={})
    add(text_attention, name="no_such_model")
    add(text_attention, name=text.OWN_MODEL)  # no model of your own in this session
    add(text_attention, name="lstm_shakespeare", works=True)  # a sentence: an LSTM has no attention
    # World Models: the real drive, the dream and its buttons, the dream against reality. Every number is
    # clamped (steps to 1..1000, the dream start to the kept frames, tau to 0..3, frames to 1..600, compare's
    # steps to 60..300, the mixture's step to the compared ones); any number is a track or a seed.
    for name, value in NUMBERS.items():
        for field in ("track", "steps"):
            add(world_drive, **{field: value}, works=True)
        add(world_dream_start, start=value, works=True)
        add(world_press, tau=value, works=True)
        for field in ("tau", "frames"):
            add(world_dream_drive, **{field: value}, works=True)
        for field in ("steps", "tau"):
            add(world_compare, **{field: value}, works=True)
        add(world_mixture, step=value, works=True)
    for name, seed in [*SEEDS.items(), ("text", "seven")]:
        add(world_dream_start, seed=seed, works=True)
        add(world_compare, seed=seed, works=True)
    add(world_drive, track="seven", works=True)
    add(world_compare, track=-1, works=True)
    for choice in ("turbo", None, "", 3):  # not one of the drivers
        add(world_drive, choice=choice)
        add(world_dream_drive, choice=choice)
        add(world_compare, choice=choice)
    for choice in ("real", "dream"):
        add(world_drive, choice=choice, works=True)
        add(world_dream_drive, choice=choice, works=True)
    add(world_compare, choice="dream", works=True)
    add(world_compare, choice="noisy")  # it replays a controller's actions: the noisy policy has none to offer
    for label in world_models.BUTTONS:
        add(world_press, label=label, works=True)
    for label in ("jump", None, "", "gas", 3):  # not one of the buttons
        add(world_press, label=label)
    add(world_press, state=None)  # no dream started in this session
    add(world_dream_drive, state=None)
    for state in (None, {}, {"tau": 1.0}):  # nothing compared in this session
        add(world_mixture, state=state)
    add(world_drive, environment="fails")  # CarRacing cannot start: a sentence saying what to install
    add(world_compare, environment="fails")
    # Text to image: numbers clamped with a warning (w to 0..10, steps to 10..100, images to 1..8, the test face
    # to 0..999), any number a seed; prompts empty, cut, contradictory or unknown give a note and a picture.
    for name, value in NUMBERS.items():
        for field in ("weight", "steps", "n"):
            add(t2i_generate, **{field: value}, works=True)
        add(t2i_strip, steps=value, works=True)
        add(t2i_describe, index=value, works=True)
    for name, seed in [*SEEDS.items(), ("text", "seven")]:
        add(t2i_generate, seed=seed, works=True)
        add(t2i_strip, seed=seed, works=True)
        add(t2i_matrix, seed=seed, works=True)
    for prompt in ("", None, "x" * 10_000, "a person with red hair and glasses " * 300, "red hair, black hair",
                   "zebra unicorn", "glasses and no glasses", "🙂🙂 \x00\u202e", "\n" * 5000):
        add(t2i_generate, prompt=prompt, works=True)
        add(t2i_generate, negative=prompt, works=True)
        add(t2i_strip, prompt=prompt, works=True)
    for prompt in ("a sneaker", "", "a zebra", "a shirt and a sandal", "x" * 10_000):
        add(t2i_generate, name="fashion32_classes", prompt=prompt, works=True)
    add(t2i_strip, name="fashion32_classes", prompt="a bag", works=True)
    for name in ("stable_diffusion", None, "", 3, "fashion32"):  # fashion32 is unconditional: the Diffusion tab's
        add(t2i_generate, name=name)
        add(t2i_strip, name=name)
    for caption in ("", None, "zebra unicorn", "\n" * 5000):
        add(t2i_search, caption=caption)
    for caption in ("red hair " + "x " * 5_000, "red hair, black hair", "a person with red hair and a zebra"):
        add(t2i_search, caption=caption, works=True)
    for upload in IMAGE_FILES:  # every mode and a 6000x4000 photo work; the rest are refused
        add(t2i_describe, upload=f"file:{upload}", works=upload.startswith("mode_") or upload == "huge")
    for mode in PIL_MODES:  # a picture sent as it is (an API client's array)
        add(t2i_describe, upload=f"pil:{mode}", works=True)
    return cases


def _resolve(value, files):
    if isinstance(value, str) and value.startswith("file:"):
        return files[value[5:]]
    if isinstance(value, str) and value.startswith("pil:"):
        what = value[4:]
        if what == "tiny":
            return _picture("RGB", (1, 1))
        if what == "huge":
            return _picture("RGB", (6000, 4000))
        return _picture("RGB").convert("F") if what == "F" else \
            _picture("I;16").convert("I") if what == "I" else _picture(what)
    return value


def _pictures(result):
    """Every PIL image in a handler's result (nested tuples and lists too)."""
    if isinstance(result, Image.Image):
        yield result
    elif isinstance(result, (tuple, list)):
        for item in result:
            yield from _pictures(item)


@pytest.mark.parametrize("handler, kwargs, works", _cases())
def test_bad_input_gives_a_sentence_or_a_sane_result(handler, kwargs, works, files):
    kwargs = {key: _resolve(value, files) for key, value in kwargs.items()}
    start = time.monotonic()
    try:
        result = handler(**kwargs)
        if hasattr(result, "__next__"):  # a streaming job: each update must come promptly
            outputs, last = [], time.monotonic()
            for outputs in result:
                assert time.monotonic() - last < HANG_GUARD_S, f"no update for {HANG_GUARD_S} s"
                last = time.monotonic()
                if last - start > STREAM_S:  # a long job at the top of its range: fine, stop it here
                    result.close()
                    break
            result = outputs
    except gr.Error as error:
        message = str(error.message)
        assert not works, f"refused input it should handle: {message!r}"
        assert len(message) > 15 and " " in message, f"not a sentence: {message!r}"
        assert not PYTHON_TALK.search(message), f"Python's words, not a message for a person: {message!r}"
    else:
        for picture in _pictures(result):
            assert 0 < min(picture.size) and max(picture.size) <= 4096, picture.size
            assert np.asarray(picture.convert("L")).std() > 0, "a blank (uniform) picture"
    assert time.monotonic() - start < HANG_GUARD_S, f"took {time.monotonic() - start:.1f} s"



# --- the same through the running server, as a browser or an API client sends it -----------------
# Gradio's own input processing runs before any handler: these cases check it cannot fail with a bare
# "Error" (tabs.common.harden_inputs and image_upload), and that the server logs each refusal as one
# line, never a traceback.

@pytest.fixture(scope="module")
def hostile_uploads(tmp_path_factory, files) -> dict[str, str]:
    from bench.memory import make_bomb

    folder = tmp_path_factory.mktemp("hostile")
    truncated = folder / "truncated.jpg"
    truncated.write_bytes(Path(files["huge"]).read_bytes()[:4000])
    renamed = folder / "notes.png"
    renamed.write_text("not a picture\n" * 100)
    return {"text renamed .png": str(renamed), "zero bytes": files["empty"], "truncated JPEG": str(truncated),
            "49 MP (over our limit, under Pillow's)": str(make_bomb(folder / "bomb49.png", side=7000)),
            "400 MP (over Pillow's own limit)": str(make_bomb(folder / "bomb400.png"))}


def _new_log(server, since: int) -> str:
    return server.log.read_bytes()[since:].decode(errors="replace")


def test_build_app_hardens_every_input():
    from gradio.data_classes import ImageData

    import app
    from tabs.common import harden_inputs

    demo = app.build_app()
    numeric = [block for fn in demo.fns.values() for block in fn.inputs if isinstance(block, (gr.Number, gr.Slider))]
    assert len(numeric) > 50
    for block in numeric:
        for sent in ("NaN", "inf", "-inf", "ten", "", None):
            value = block.preprocess(sent)
            assert value == block.value or (value is None and block.value is None), (block.label, sent, value)
        assert block.preprocess(2.0) == (2 if block.precision == 0 else 2.0)
    images = [block for fn in demo.fns.values() for block in fn.inputs if isinstance(block, gr.Image)]
    assert len(images) >= 6
    for block in images:  # the path is handed over as it is, without opening the file
        assert block.preprocess(ImageData(path="/nonexistent/upload.png")) == "/nonexistent/upload.png", block.label
    with gr.Blocks() as plain:  # a tab that forgets image_upload is caught when the app is built
        gr.Button().click(lambda image: image, gr.Image(type="pil"), gr.Textbox())
    with pytest.raises(TypeError, match="image_upload"):
        harden_inputs(plain)


def test_every_image_input_refuses_hostile_files_with_a_sentence(app_server, hostile_uploads):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    from bench.memory import image_inputs, one_bad_image

    client = Client(app_server.url, verbose=False)
    targets = image_inputs(client)
    assert {endpoint for endpoint, _ in targets} >= {"/dream_run", "/style_transfer", "/vae_uploaded_face",
                                                     "/diffusion_forward_process"}
    log_start, refusals = app_server.log.stat().st_size, 0
    for endpoint, parameter in targets:
        for what, path in hostile_uploads.items():
            with pytest.raises(AppError) as refused:
                client.predict(api_name=endpoint, **one_bad_image(client, targets, endpoint, parameter, path))
            message = str(refused.value)
            assert "megapixels" in message if "MP" in what else "not an image" in message, (endpoint, what, message)
            assert not PYTHON_TALK.search(message), (endpoint, what, message)
            refusals += 1
    log = _new_log(app_server, log_start)
    assert "Traceback" not in log, log[-3000:]
    assert log.count("refused in") == refusals, log[-3000:]


def test_non_numbers_sent_to_numeric_inputs_act_as_the_default(app_server):
    from gradio_client import Client

    from bench.memory import ui_arguments

    client = Client(app_server.url, verbose=False)
    digest = {"image": lambda result: np.asarray(Image.open(result[0] if isinstance(result, tuple) else result)).tobytes(),
              "text": lambda result: result[0]}
    calls = [("/gan_samples", "grid_size", {"seed": 4}, "image"), ("/diffusion_sample", "steps", {"n": 1, "seed": 2}, "image"),
             ("/text_generate", "temperature", {"length": 20, "seed": 1}, "text")]
    for endpoint, field, given, kind in calls:
        default = digest[kind](client.predict(api_name=endpoint, **ui_arguments(client, endpoint, **given)))
        for sent in ("NaN", "inf", "ten"):
            result = client.predict(api_name=endpoint, **ui_arguments(client, endpoint, **given, **{field: sent}))
            assert digest[kind](result) == default, (endpoint, field, sent)


def test_an_unknown_choice_is_a_sentence_and_one_log_line(app_server):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    from bench.memory import ui_arguments

    client = Client(app_server.url, verbose=False)
    log_start = app_server.log.stat().st_size
    with pytest.raises(AppError, match="not in the list of choices"):
        client.predict(api_name="/gan_samples", **ui_arguments(client, "/gan_samples", name="no_such_gan"))
    log = _new_log(app_server, log_start)
    assert "Traceback" not in log and log.count("refused in") == 1, log


def test_a_burst_of_bomb_uploads_leaves_memory_flat(app_server, hostile_uploads):
    from gradio_client import Client

    from bench.memory import TARGET_BOMB_MB, bomb_burst, image_inputs

    client = Client(app_server.url, verbose=False)
    bomb = Path(hostile_uploads["400 MP (over Pillow's own limit)"])
    bomb_burst(client, app_server, bomb, count=len(image_inputs(client)))  # each endpoint's first use, unmeasured
    burst = bomb_burst(client, app_server, bomb, count=8)
    assert all("megapixels" in message for message in burst["messages"]), burst
    assert burst["peak_rise_mb"] < TARGET_BOMB_MB, burst
