"""VAE tab: Fashion-MNIST's 2-D latent map, and a 200-D face space with sliders, attribute vectors and morphing.

Handlers are plain functions (tests call them directly); per-user face codes live in gr.State as
lists of floats; the two shipped VAEs load on first use through core.vae.load_vae (onto the app's device;
core.vae.decode and encode_all take and return CPU tensors).
"""
from __future__ import annotations

import gradio as gr

from core.registry import list_shipped, read_card
from tabs import latent_spaces
from tabs.classroom import Code, Lesson, Try, lesson_bar
from tabs.common import BENCH_RESULTS, bench_records, clicked_pixel, image_upload, number, picture, queue, user_errors

TAB = "vae"
SLIDERS = "vae_sliders"          # slider drags get their own queue slot, so they never wait behind a morph
FASHION, FACES = "fashion_2d", "faces_200d"
MAP_SIZE, MAP_LEGEND = 480, 150  # pixels of the scatter and of the legend beside it
SHOW = 256                       # decoded images are shown enlarged to this many pixels
N_DIM_SLIDERS = 8
Z_LIMIT = 4.0                    # the z1, z2 sliders: ±4 prior standard deviations

INTRO = ("An encoder maps each image to a Gaussian over codes and a decoder maps codes back; the **KL term** pulls "
         "every image's Gaussian towards the prior N(0, I), so the codes fill one round blob and points between "
         "them decode to something plausible. Set a code (z1, z2) or click the map to decode it.")

LESSON = Lesson(
    tab=TAB, main="vae-draw-map", result="vae-map",
    chapters="*Deep Learning with Python* 2nd ed. §12.4 (VAEs) · *Generative Deep Learning* 2nd ed. ch. 3 "
             "(autoencoders, VAEs, latent-space arithmetic on faces)",
    equations=(r"Loss per image: $-\log p_\theta(x \mid z) + \beta\,\mathrm{KL}\big(\mathcal N(\mu, \sigma^2)\,\Vert\,"
               r"\mathcal N(0, I)\big)$ with $\mathrm{KL} = \tfrac12\sum_j (\mu_j^2 + \sigma_j^2 - 1 - \log\sigma_j^2)$ · "
               r"reparameterisation: $z = \mu + \sigma \odot \varepsilon,\ \varepsilon \sim \mathcal N(0, I)$"),
    try_this=(
        Try("Between clusters", {"z1": 1.0, "z2": -1.2},
            "The ring sits in the gap between the trousers (right) and the sandals and sneakers (below left): "
            "no test image has this code, yet the decoder draws one picture, half trouser, half sandal. Drag z2 up and "
            "down to watch one class turn into the other."),
        Try("Prior centre", {"z1": 0.0, "z2": 0.0},
            "z = (0, 0) is the most likely code under the prior, yet few test images land there: it decodes to a "
            "dim, average garment. The prior says where codes should be, not where each class is."),
        Try("Far corner", {"z1": 2.8, "z2": -2.8},
            "A code the KL term rarely lets any image use: the decoder never learned what goes there and "
            "draws an odd hybrid. Random codes from N(0, I) seldom land this far out."),
        Try("5 × 5 grid", {"grid": 5, "z1": 0.0, "z2": 0.0},
            "The grid decodes the plane at equal steps of probability (the inverse normal CDF): every class "
            "appears, and neighbouring cells change smoothly. Compare with a 25 × 25 grid."),
    ),
    misconceptions=(
        ("The KL term is a penalty on image quality.",
         "It is the price, in nats, of describing each image's code relative to the prior: it organises the "
         "space so that random codes decode well. Blur comes mostly from the decoder's per-pixel likelihood."),
        ("A VAE's encoder outputs one code per image.",
         "It outputs a Gaussian, a mean μ and a spread σ; training samples z = μ + σε from it, so nearby codes must "
         "decode to similar images. The tab draws each test image at its mean μ."),
        ("The reparameterisation trick changes the model.",
         "It only moves the randomness into ε, an input, so gradients can flow through μ and σ; the distribution "
         "of z is exactly the same."),
        ("Every class gets its own region because the VAE was told the classes.",
         "The VAE never saw a label: the clusters form because similar images get similar codes. Colours are "
         "added afterwards, for us."),
    ),
    code=(Code("the reparameterisation trick", "core/vae.py", ("reparameterize",),
               r"$z = \mu + \sigma \odot \varepsilon$, $\sigma = e^{\frac12 \log\sigma^2}$, "
               r"$\varepsilon \sim \mathcal N(0, I)$"),
          Code("the loss: reconstruction + β · KL", "core/vae.py", ("kl_per_dimension", "vae_loss"),
               r"$L = \mathbb E_x\big[-\log p_\theta(x \mid z) + \beta \sum_j \tfrac12 (\mu_j^2 + \sigma_j^2 - 1 - "
               r"\log\sigma_j^2)\big]$")),
)


def _enlarge(image, size=SHOW):
    from PIL import Image

    return image.resize((size, size), Image.BICUBIC)


def _tensor_image(x, size=SHOW):
    from core.data.images import tensor_to_pil

    return _enlarge(tensor_to_pil(x), size)


# --- Fashion-MNIST: the 2-D map ----------------------------------------------------------------

def _fashion_map():
    """(model, checkpoint, window): the 2-D VAE and the square of code space its map shows, centred on the
    prior's mean 0."""
    from core.vae import load_vae
    from tabs.latent_spaces import Window

    model, ckpt = load_vae(FASHION)
    return model, ckpt, Window.around(ckpt.extras["map_codes"])


def draw_map(marker=None):
    """The scatter of every test image's code, coloured by class, with an optional marker at `marker` (z1, z2)."""
    from PIL import ImageDraw

    from tabs.latent_spaces import draw_codes

    _, ckpt, window = _fashion_map()
    image = draw_codes(ckpt.extras["map_codes"], ckpt.extras["map_labels"], window, MAP_SIZE,
                       legend=ckpt.extras["class_names"], legend_px=MAP_LEGEND, marker=marker)
    draw = ImageDraw.Draw(image)
    draw.text((MAP_SIZE + 10, MAP_SIZE - 40), f"z1, z2 in +-{window.half:.1f}", fill=(90, 90, 90))
    draw.text((MAP_SIZE + 10, MAP_SIZE - 24), "click to decode", fill=(90, 90, 90))
    return image


def _clicked_code(evt: gr.SelectData) -> tuple[float, float]:
    x, y = clicked_pixel(evt, MAP_SIZE + MAP_LEGEND, MAP_SIZE, "the map")
    if x >= MAP_SIZE:
        raise ValueError("That is the legend: click inside the map, on the left.")
    return _fashion_map()[2].to_code(x, y, MAP_SIZE)


def decode_map_click(evt: gr.SelectData):
    """Decode the point of the map that was clicked; return the map with a marker, the image and its code."""
    return decode_point(*_clicked_code(evt))


def decode_plane(n):
    """An n x n grid of decoded images over the latent plane, spaced by the inverse normal CDF."""
    from core.data.images import image_grid
    from core.vae import decode, load_vae, normal_grid

    n = number(n, 12, 3, 25, whole=True)
    model, _ = load_vae(FASHION)
    images = decode(model, normal_grid(n))
    return image_grid(images, nrow=n, padding=1, pad_value=1.0)


def _code(z1, z2) -> tuple[float, float]:
    return number(z1, 0.0, -Z_LIMIT, Z_LIMIT), number(z2, 0.0, -Z_LIMIT, Z_LIMIT)


def decode_point(z1=0.0, z2=0.0):
    """Decode the code (z1, z2): the map with a ring there, the image, and the code as text."""
    import torch

    from core.vae import decode

    z = _code(z1, z2)
    model, _, window = _fashion_map()
    image = decode(model, torch.tensor([z], dtype=torch.float32))
    where = f"z = ({z[0]:+.2f}, {z[1]:+.2f})"
    if max(abs(z[0]), abs(z[1])) > window.half:
        where += f": outside the map (±{window.half:.1f}), where almost no test image lands"
    return draw_map(z), _tensor_image(image, 192), where


def show_fashion(n, z1=0.0, z2=0.0):
    """The tab's main view: the map with the code (z1, z2) ringed, the n x n decoded plane, the decoded code."""
    fashion_map, decoded, where = decode_point(z1, z2)
    return fashion_map, decode_plane(n), decoded, where


def decode_map_click_to_sliders(evt: gr.SelectData):
    """A click on the map: decode it, and move the z1, z2 sliders there (so "Copy link" keeps the point)."""
    z = _clicked_code(evt)
    return (*decode_point(*z), round(z[0], 2), round(z[1], 2))


# --- faces ---------------------------------------------------------------------------------------

def _faces():
    from core.vae import load_vae

    model, ckpt = load_vae(FACES)
    vectors = dict(zip(ckpt.extras["attribute_names"], ckpt.extras["attribute_vectors"].float()))
    return model, ckpt, vectors


def _face_outputs(z, original, note):
    """Everything a newly chosen face updates: state, original, reconstruction, dimension sliders, note."""
    from core.vae import load_vae

    _, ckpt = load_vae(FACES)
    dims = ckpt.card["latent"]["most_active_dims"][:N_DIM_SLIDERS]
    state = {"z": z.tolist()}
    picture = render_face(state, *([0.0] * len(ATTRIBUTES)), *[float(z[d]) for d in dims])
    sliders = [gr.update(value=0.0) for _ in ATTRIBUTES] + [gr.update(value=round(float(z[d]), 2)) for d in dims]
    return [state, original, picture, note, *sliders]


def random_face(seed, source="fitted to the training codes"):
    """A face decoded from a random code (there is no original to compare with)."""
    from core.runtime import clamp_seed, make_generator
    from core.vae import random_codes

    seed = clamp_seed(seed)
    model, ckpt, _ = _faces()
    fitted = source != "the prior N(0, I)" and "code_std" in ckpt.extras
    spread = ckpt.extras["code_std"].float() if fitted else None
    z = random_codes(1, model.config.latent_dim, make_generator(seed), spread)[0]
    where = ("a Gaussian fitted to the training codes (the faces VAE's beta < 1 leaves parts of the prior unused)"
             if fitted else "the prior N(0, I)")
    return _face_outputs(z, None, f"A random code (seed {seed}) drawn from {where}: no original exists.")


def dataset_face(index):
    """Test-split face #index of the synthetic dataset, encoded; shows the original beside its reconstruction."""
    from core.data.faces import face_split
    from core.vae import encode_all

    try:
        index = int(index)
    except (TypeError, ValueError, OverflowError):
        raise ValueError("The face number must be a whole number.") from None
    if not 0 <= index <= 99_999:
        raise ValueError(f"Face numbers go from 0 to 99999, not {index}.")
    model, _, _ = _faces()
    batch = face_split("test", 1, start=index)
    z = encode_all(model, batch.images)[0][0]
    labels = ", ".join(name.replace("_", " ") for name, v in batch.labels.items() if v[0]) or "no labelled attributes"
    return _face_outputs(z, _tensor_image(batch.images), f"Test face #{index} ({labels}), encoded to its mean code.")


def uploaded_face(image):
    """Any photo: cleaned up, centre-cropped and resized to 64x64, then encoded."""
    from core.data.images import center_crop_square, pil_to_tensor, prepare_image
    from core.vae import encode_all

    picture, notes = prepare_image(image)
    width, height = picture.size
    square = center_crop_square(picture, 64)
    notes.append(f"centre-cropped and resized from {width}x{height} to 64x64")
    model, _, _ = _faces()
    z = encode_all(model, pil_to_tensor(square))[0][0]
    note = ("Your photo was " + "; ".join(notes) + ". This VAE has only seen the lab's synthetic cartoon faces, "
            "so it shows the nearest cartoon face it can make.")
    return _face_outputs(z, _enlarge(square), note)


def render_face(state, *values):
    """Decode the current face with the attribute sliders (first len(ATTRIBUTES) values) added and the
    most-active dimensions set to the remaining values."""
    import torch

    from core.vae import apply_attributes, decode

    if not state or "z" not in state:
        raise ValueError("Choose a face first: a random one, one from the dataset, or upload a photo.")
    model, ckpt, vectors = _faces()
    z = torch.tensor(state["z"], dtype=torch.float32)
    dims = ckpt.card["latent"]["most_active_dims"][:N_DIM_SLIDERS]
    for d, value in zip(dims, values[len(ATTRIBUTES):]):
        z[d] = number(value, float(z[d]), -4.0, 4.0)
    strengths = {name: number(v, 0.0, -4.0, 4.0) for name, v in zip(ATTRIBUTES, values[:len(ATTRIBUTES)]) if name in vectors}
    return _tensor_image(decode(model, apply_attributes(z[None], vectors, strengths)))


def set_end(state, which, ends):
    """Remember the current face as morph end A or B."""
    if not state or "z" not in state:
        raise ValueError("Choose a face first, then keep it as A or B.")
    ends = dict(ends or {})
    ends[which] = state["z"]
    return ends, _face_from_code(state["z"])


def _face_from_code(z):
    import torch

    from core.vae import decode

    model, _, _ = _faces()
    return _tensor_image(decode(model, torch.tensor([z], dtype=torch.float32)), 128)


def _ends(ends):
    import torch

    ends = ends or {}
    if "A" not in ends or "B" not in ends:
        raise ValueError("Keep two faces as A and B first (choose a face, then 'Keep as A' / 'Keep as B').")
    return torch.tensor(ends["A"]), torch.tensor(ends["B"])


def morph_faces(ends, steps, mode):
    """The strip of in-between faces from A to B."""
    import torch

    from core.data.images import image_grid
    from core.vae import morph

    z0, z1 = _ends(ends)
    steps = number(steps, 8, 2, 16, whole=True)
    frames = morph(_faces()[0], z0, z1, steps, mode if mode in ("slerp", "lerp") else "slerp")
    note = "A and B are the same face, so every frame is that face." if torch.equal(z0, z1) else ""
    return image_grid(frames, nrow=steps, padding=2), note


def morph_position(ends, t, mode):
    """The single face at position t (0 = A, 1 = B) on the path."""
    from core.latent import lerp, slerp
    from core.vae import decode

    z0, z1 = _ends(ends)
    t = number(t, 0.0, 0.0, 1.0)
    z = (lerp if mode == "lerp" else slerp)(z0[None], z1[None], t)
    return _tensor_image(decode(_faces()[0], z))


# --- layout ---------------------------------------------------------------------------------------

def measured_edits(results=BENCH_RESULTS) -> str:
    """What the attribute vectors really do, from the latest bench/vae_quality.py figures (full ones when
    there are any), so the tab's claims are the measured ones."""
    for path, record in bench_records("vae_quality", results):
        figures = record.get("figures", {})
        smile, gains = figures.get("smile_vector"), figures.get("attribute_vectors_gain_rate")
        if not isinstance(smile, dict) or not gains:
            continue
        ranked = sorted(gains.items(), key=lambda item: -item[1])
        listed = ", ".join(f"{name.replace('_', ' ')} {share:.0%}" for name, share in ranked)
        return (f"Measured ({path.name}, {record.get('date', '')[:10]}; the face-attribute classifier reads the "
                f"decoded faces): at strength {smile['strength']:g} the smile vector makes "
                f"{smile['now_smiling']:.1%} of {smile['faces']} non-smiling faces smile. Faces lacking an "
                f"attribute that gain it from its vector at that strength: {listed}.")
    return "How often each vector works is not measured yet: run `python -m bench.vae_quality`."


def _faces_card() -> dict | None:
    try:
        return read_card("vae", FACES) if FACES in list_shipped("vae") else None
    except (OSError, ValueError):
        return None


_CARD = _faces_card()
ATTRIBUTES = list(_CARD["latent"]["attribute_names"]) if _CARD else []


def _fashion_section(page) -> None:
    """The tab's main view (first screen): controls on the left, the latent map on the right."""
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=260):
            show = gr.Button("Draw the map and decode z", variant="primary", elem_id="vae-draw-map")
            z1 = gr.Slider(-Z_LIMIT, Z_LIMIT, value=0.0, step=0.05, label="z1 (across)", elem_id="vae-z1")
            z2 = gr.Slider(-Z_LIMIT, Z_LIMIT, value=0.0, step=0.05, label="z2 (up)", elem_id="vae-z2")
            decoded = picture("decoded point", "the image the decoder makes from the code (z1, z2), the black "
                               "ring on the map; grey levels are pixel values, black 0 to white 1", height=200,
                               elem_id="vae-decoded")
            where = gr.Textbox(label="code", interactive=False, elem_id="vae-code")
            n = gr.Slider(3, 25, value=15, step=1, label="grid size n (n x n decoded images, below the map)",
                          elem_id="vae-grid-size")
        with gr.Column(scale=3):
            fashion_map = picture("latent map of the 10,000 Fashion-MNIST test images (click to decode)",
                                   "each dot is one image's mean code, z1 across and z2 up, coloured by class as "
                                   "in the legend on the right; the grey lines cross at the prior's centre "
                                   "(0, 0); the black ring is the decoded code", elem_id="vae-map")
    grid = picture("decoded latent plane", "an n x n grid of codes at equal steps of probability under N(0, I) "
                    "(inverse normal CDF): z1 grows to the right, z2 upwards, as on the map", elem_id="vae-grid")
    gr.on([show.click, page.ran.change], user_errors(show_fashion), [n, z1, z2], [fashion_map, grid, decoded, where],
          api_name="vae_show_fashion", **queue(TAB, 2))
    fashion_map.select(user_errors(decode_map_click_to_sliders), None, [fashion_map, decoded, where, z1, z2],
                       api_name="vae_decode_point", **queue(SLIDERS, 4))
    for slider, name in ((z1, "z1"), (z2, "z2")):
        slider.input(user_errors(decode_point), [z1, z2], [fashion_map, decoded, where],
                     api_name="vae_decode_code" if name == "z1" else "vae_decode_code_from_z2",
                     **({} if name == "z1" else {"api_visibility": "undocumented"}),
                     trigger_mode="always_last", show_progress="hidden", **queue(SLIDERS, 4))
    # .input fires on drags and on typing in the slider's number box (.release only on drags and blur);
    # always_last runs the latest value once the current grid is drawn, never a queue of stale ones.
    n.input(user_errors(decode_plane), [n], [grid], api_name="vae_decode_plane", trigger_mode="always_last",
            **queue(SLIDERS, 4))
    page.link({"z1": z1, "z2": z2, "grid": n})


def _faces_section() -> None:
    gr.Markdown("### A 200-D face space\nFaces from the lab's synthetic dataset (exact labels: smiling, glasses, "
                "hair colour, ...). Attribute vectors are Foster's trick: the mean code of faces *with* an "
                "attribute minus the mean code of faces *without* it; add a multiple of one to any face. "
                + measured_edits(), elem_id="vae-faces-intro")
    if not _CARD:
        gr.Markdown("**The faces VAE is not trained yet**: run `python -m core.train vae --dataset faces`.")
        return
    dims = _CARD["latent"]["most_active_dims"][:N_DIM_SLIDERS]
    kls = _CARD["latent"]["most_active_kl"][:N_DIM_SLIDERS]
    state, ends = gr.State(None), gr.State({})
    with gr.Row():
        seed = gr.Number(value=0, label="seed", precision=0, minimum=0)
        source = gr.Radio(["fitted to the training codes", "the prior N(0, I)"], value="fitted to the training codes",
                          label="random codes from")
        random_button = gr.Button("Random face", variant="primary", elem_id="vae-random")
        index = gr.Number(value=0, label="test face #", precision=0, minimum=0, maximum=99_999)
        dataset_button = gr.Button("Face from the dataset")
    with gr.Row():
        with gr.Column():
            original = picture("original (64x64, enlarged)", "the face as it was given: a test face or your "
                                "photo, cropped to a square (empty for a random code)", height=SHOW)
        with gr.Column():
            face = picture("decoded with your edits", "the decoder's face from the code, with the attribute "
                            "vectors and dimension sliders below applied", height=SHOW, elem_id="vae-face")
        with gr.Column():
            upload = image_upload("or encode a photo (centre-cropped to a square)", sources=["upload"], height=180,
                                  elem_id="vae-upload")
            upload_button = gr.Button("Encode my photo", elem_id="vae-encode")
    note = gr.Markdown()
    with gr.Row():
        with gr.Column():
            gr.Markdown("**Attribute vectors** (multiples of the vector; 0 = the face as encoded)")
            attribute_sliders = [gr.Slider(-4, 4, value=0, step=0.1, label=name.replace("_", " "))
                                 for name in ATTRIBUTES]
        with gr.Column():
            gr.Markdown("**The most active latent dimensions** (by KL: the ones the model really uses; "
                        "the other ~190 stay at the prior and decode to nothing)")
            dim_sliders = [gr.Slider(-4, 4, value=0, step=0.05, label=f"z[{d}]  (KL {kl:.2f} nats)")
                           for d, kl in zip(dims, kls)]
    gr.Markdown("**Morph** between two faces")
    with gr.Row():
        with gr.Column(min_width=140):
            keep_a = gr.Button("Keep as A")
            face_a = picture("A", "the face kept as the morph's start", height=128)
        with gr.Column(min_width=140):
            keep_b = gr.Button("Keep as B")
            face_b = picture("B", "the face kept as the morph's end", height=128)
        with gr.Column():
            steps = gr.Slider(2, 16, value=8, step=1, label="frames")
            mode = gr.Radio(["slerp", "lerp"], value="slerp", label="path")
            t = gr.Slider(0, 1, value=0.5, step=0.01, label="position from A (0) to B (1)")
            morph_button = gr.Button("Morph", variant="primary")
    strip = picture("A -> B", "left to right, the faces decoded from codes on the path from A's code to B's "
                     "(slerp: along the sphere; lerp: the straight line)")
    between = picture("face at the chosen position", "the face decoded at the position slider's point of the "
                       "path (0 = A, 1 = B)", height=SHOW)
    morph_note = gr.Markdown()

    sliders = attribute_sliders + dim_sliders
    chosen = [state, original, face, note, *sliders]
    # The spinner, and a refusal's "Error" badge, go on the face only: not on each of the 22 sliders reset.
    on_face = {"show_progress_on": [face], **queue(TAB, 2)}
    random_button.click(user_errors(random_face), [seed, source], chosen, api_name="vae_random_face", **on_face)
    dataset_button.click(user_errors(dataset_face), [index], chosen, api_name="vae_dataset_face", **on_face)
    upload_button.click(user_errors(uploaded_face), [upload], chosen, api_name="vae_uploaded_face", **on_face)
    slider_names = [*ATTRIBUTES, *(f"z{d}" for d in dims)]
    for i, (slider, slider_name) in enumerate(zip(sliders, slider_names)):
        # One action, 22 sliders: the API lists it once; the other wirings stay callable, undocumented.
        api = {"api_name": "vae_render_face"} if i == 0 else \
            {"api_name": f"vae_render_face_from_{slider_name}_slider", "api_visibility": "undocumented"}
        slider.input(user_errors(render_face), [state, *sliders], [face], trigger_mode="always_last",
                     show_progress="hidden", **api, **queue(SLIDERS, 4))
    keep_a.click(user_errors(lambda s, e: set_end(s, "A", e)), [state, ends], [ends, face_a], api_name="vae_keep_a",
                 **queue(TAB, 2))
    keep_b.click(user_errors(lambda s, e: set_end(s, "B", e)), [state, ends], [ends, face_b], api_name="vae_keep_b",
                 **queue(TAB, 2))
    morph_button.click(user_errors(morph_faces), [ends, steps, mode], [strip, morph_note], api_name="vae_morph",
                       **queue(TAB, 2)).then(
        user_errors(morph_position), [ends, t, mode], [between], api_name="vae_morph_position_after_morph",
        api_visibility="undocumented", **queue(SLIDERS, 4))
    t.input(user_errors(morph_position), [ends, t, mode], [between], trigger_mode="always_last",
            show_progress="hidden", api_name="vae_morph_position", **queue(SLIDERS, 4))


def build():
    page = lesson_bar(LESSON)
    gr.Markdown(INTRO)
    if FASHION in list_shipped("vae"):
        _fashion_section(page)
    else:
        gr.Markdown("**The Fashion-MNIST VAE is not trained yet**: run `python -m core.train vae --dataset fashion`.")
    gr.Markdown("---")
    latent_spaces.build()
    gr.Markdown("---")
    _faces_section()
    gr.Markdown("Models: see their cards in `assets/checkpoints/vae/` and `assets/checkpoints/autoencoder/`.")
    return page
