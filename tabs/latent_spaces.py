"""The VAE tab's first section: PCA -> autoencoder -> VAE, three 2-D latent spaces of the same clothes.

Each space is a model with encode/decode (core.autoencoder.PCA, core.autoencoder.Autoencoder,
core.vae.VAE) plus the Gaussian random codes are drawn from (core.autoencoder.prior: the VAE's prior,
a Gaussian fitted to the codes for the other two). Handlers are plain functions that tests call directly;
nothing is kept between calls but the shipped models, loaded once per process and shared read-only.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import gradio as gr

from core.registry import RECON_VS_DIMS, list_shipped
from tabs.common import CLASS_PALETTE, caption, clicked_pixel, number, queue, user_errors

TAB, CLICKS = "vae", "vae_sliders"  # the VAE tab's queues (tabs/vae.py): clicks and sliders never wait behind a job
SPACES = {"PCA": "pca_32d", "autoencoder": "plain_2d", "VAE": "fashion_2d"}
NEEDED = {"autoencoder": list(SPACES.values())[:2] + ["plain_32d", "denoising_32d"], "vae": ["fashion_2d"]}
MAP_PX = 300             # each of the three maps
SAMPLES = 16             # random codes per space
EIGEN_SHOWN, EIGEN_SLIDERS = 16, 8
DECODED_PX = 160
# The 10 classes' colours as RGB: tabs.common.CLASS_PALETTE, told apart with any common colour-vision deficiency.
CLASS_COLOURS = [tuple(int(hex_[i:i + 2], 16) for i in (1, 3, 5)) for hex_ in CLASS_PALETTE]
ABOUT = {
    "PCA": "linear: the first two principal directions. Every point decodes to a blend of eigen-clothes.",
    "autoencoder": "the VAE's own encoder and decoder, trained only to reconstruct. Codes spread into streaks "
                   "with gaps, on a scale nothing fixes.",
    "VAE": "the same networks plus the KL term: codes packed into the N(0, I) prior, so random points decode.",
}


# --- drawing codes on a map (the VAE's own map uses it too) ------------------------------------------

@dataclass(frozen=True)
class Window:
    """The square of code space a map shows: centre +- half on both axes (one scale, so shapes are true)."""
    centre: tuple[float, float]
    half: float

    @classmethod
    def around(cls, codes, centre=(0.0, 0.0)) -> "Window":
        """Centred on the space's prior mean, holding 99.5 % of the codes on each axis (a few outliers
        would shrink the picture)."""
        import torch

        spread = (codes.float() - torch.tensor(centre)).abs().quantile(0.995).item()
        return cls((float(centre[0]), float(centre[1])), max(spread, 1e-3) * 1.05)

    def to_pixel(self, z, size: int) -> tuple[float, float]:
        return ((z[0] - self.centre[0]) / self.half + 1) / 2 * (size - 1), \
               (1 - (z[1] - self.centre[1]) / self.half) / 2 * (size - 1)

    def to_code(self, x: float, y: float, size: int) -> tuple[float, float]:
        return (self.centre[0] + (x / (size - 1) * 2 - 1) * self.half,
                self.centre[1] + (1 - y / (size - 1) * 2) * self.half)


def draw_codes(codes, labels, window: Window, size: int, legend: list[str] | None = None, legend_px: int = 0,
               marker=None, points=None):
    """A scatter of 2-D codes coloured by class on a white square of `size` pixels, with the axes through
    the window's centre, an optional ring at `marker` (a code), black crosses at `points` (codes [N, 2])
    and, given `legend`, the class names in a strip `legend_px` wide on the right."""
    import numpy as np
    from PIL import Image, ImageDraw

    canvas = np.full((size, size + legend_px, 3), 255, dtype=np.uint8)
    canvas[size // 2, :size] = canvas[:, size // 2] = 225
    codes, labels = codes.float(), labels.long()
    inside = ((codes - codes.new_tensor(window.centre)).abs() < window.half).all(1)  # the 0.5 % beyond: left out
    cols, rows = window.to_pixel(codes[inside].T, size)
    cols, rows = (t.round().long().clamp(0, size - 2).numpy() for t in (cols, rows))
    colours = np.array(CLASS_COLOURS, dtype=np.uint8)[labels[inside].numpy()]
    for dr in (0, 1):
        for dc in (0, 1):  # 2x2 dots
            canvas[rows + dr, cols + dc] = colours
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    for i, name in enumerate(legend or []):
        top = 12 + 22 * i
        draw.rectangle([size + 10, top, size + 24, top + 14], fill=CLASS_COLOURS[i], outline=(90, 90, 90))
        draw.text((size + 30, top + 1), name, fill=(0, 0, 0))
    for z in ([] if points is None else points.tolist()):
        x, y = window.to_pixel(z, size)
        draw.line([x - 4, y - 4, x + 4, y + 4], fill=(0, 0, 0), width=2)
        draw.line([x - 4, y + 4, x + 4, y - 4], fill=(0, 0, 0), width=2)
    if marker is not None:
        x, y = window.to_pixel(marker, size)
        draw.ellipse([x - 7, y - 7, x + 7, y + 7], outline=(0, 0, 0), width=3)
    return image


def legend_html(class_names) -> str:
    return " ".join(f"<span style='color:rgb{CLASS_COLOURS[i]}'>&#9632;</span>&nbsp;{name}"
                    for i, name in enumerate(class_names))


# --- the three spaces ----------------------------------------------------------------------------------

@dataclass
class Space:
    model: object
    codes: object        # every test image's 2-D code [10000, 2]
    labels: object
    class_names: list
    mean: object         # the Gaussian random codes come from
    covariance: object
    window: Window

    def draw(self, marker=None, points=None):
        """The map: every test code coloured by class, a ring at `marker`, crosses at `points`."""
        return draw_codes(self.codes, self.labels, self.window, MAP_PX, marker=marker, points=points)

    def grid(self, n):
        """An n x n grid decoded over the space's Gaussian: mean + std * (inverse-normal-CDF grid) on each
        axis, the same probability spacing as the VAE's decoded plane."""
        from core.autoencoder import decode
        from core.data.images import image_grid
        from core.vae import normal_grid

        n = number(n, 8, 3, 15, whole=True)
        codes = self.mean + self.covariance.diagonal().sqrt() * normal_grid(n)
        return image_grid(decode(self.model, codes), nrow=n, padding=1, pad_value=1.0)


def space(name: str) -> Space:
    """One of the three shipped 2-D spaces (the models load once per process; this only gathers them)."""
    from core import autoencoder, vae

    if name not in SPACES:
        raise ValueError(f"Unknown latent space {name!r}: choose one of {', '.join(SPACES)}.")
    model, ckpt = vae.load_vae(SPACES[name]) if name == "VAE" else autoencoder.load_model(SPACES[name])
    mean, covariance = autoencoder.prior(model, ckpt)
    if name == "PCA":  # the map shows PCA's first two directions
        mean, covariance = mean[:2], covariance[:2, :2]
    codes = ckpt.extras["map_codes"].float()
    return Space(model, codes, ckpt.extras["map_labels"], list(ckpt.extras["class_names"]), mean, covariance,
                 Window.around(codes, tuple(mean.tolist())))


def _picture(images, size=DECODED_PX):
    from PIL import Image

    from core.data.images import tensor_to_pil

    return tensor_to_pil(images).resize((size, size), Image.NEAREST if size % images.shape[-1] == 0 else Image.BICUBIC)


def space_grids(n):
    return [space(name).grid(n) for name in SPACES]


def show_spaces(n):
    """The three maps, the three decoded grids and the classes' colours."""
    spaces = [space(name) for name in SPACES]
    return [s.draw() for s in spaces] + [s.grid(n) for s in spaces] + [legend_html(spaces[-1].class_names)]


def decode_click(name: str, evt: gr.SelectData):
    """Decode the clicked point of one map: the map with a ring there, the image, and the code."""
    import torch

    from core.autoencoder import decode

    x, y = clicked_pixel(evt, MAP_PX, MAP_PX, "a map")
    s = space(name)
    z = s.window.to_code(x, y, MAP_PX)
    image = decode(s.model, torch.tensor([z], dtype=torch.float32))
    return s.draw(marker=z), _picture(image), f"z = ({z[0]:+.2f}, {z[1]:+.2f})"


def _clicker(name: str):
    def on_click(evt: gr.SelectData):
        return decode_click(name, evt)
    on_click.__name__ = f"decode_click_{name.lower()}"
    return on_click


def sample_spaces(seed):
    """SAMPLES random codes in each space from its Gaussian, marked on its map and decoded, and what the
    Fashion-MNIST classifier makes of them."""
    from core.autoencoder import decode, gaussian_codes
    from core.data.images import image_grid
    from core.metrics.classifiers import fashion_probabilities, load_fashion_classifier
    from core.runtime import clamp_seed, make_generator

    seed = clamp_seed(seed)
    classifier = load_fashion_classifier()
    maps, grids, verdicts = [], [], []
    for name in SPACES:
        s = space(name)
        z = gaussian_codes(s.mean, s.covariance, SAMPLES, make_generator(seed))
        images = decode(s.model, z)
        sure = int((fashion_probabilities(images, (0, 1), classifier).max(1).values >= 0.5).sum())
        maps.append(s.draw(points=z))
        grids.append(image_grid(images, nrow=4, padding=1, pad_value=1.0))
        where = "the prior N(0, I)" if name == "VAE" else "a Gaussian fitted to its codes"
        verdicts.append(f"**{name}**: {SAMPLES} codes from {where}; the Fashion-MNIST classifier is sure "
                        f"(p ≥ 0.5) of **{sure} of {SAMPLES}**.")
    return [*maps, *grids, "  \n".join(verdicts)]


# --- PCA: eigen-clothes -----------------------------------------------------------------------------------

def _pca():
    from core.autoencoder import load_model

    return load_model(SPACES["PCA"])[0]


def eigen_clothes():
    """The first principal directions as images (grey = 0, light = positive, dark = negative), and a note."""
    from core.data.images import image_grid

    pca = _pca()
    directions = pca.directions[:EIGEN_SHOWN]
    shown = 0.5 + 0.5 * directions / directions.abs().amax(1, keepdim=True)  # each scaled to fill [0, 1]
    c = pca.config
    ratio = pca.explained_variance_ratio()
    share = ", ".join(f"{i + 1}: {100 * r:.1f} %" for i, r in enumerate(ratio[:EIGEN_SLIDERS].tolist()))
    note = (f"Share of the training images' variance along each direction: {share}. The first "
            f"{EIGEN_SLIDERS} together: {100 * ratio[:EIGEN_SLIDERS].sum():.0f} %; all {len(ratio)} shipped: "
            f"{100 * ratio.sum():.0f} %.")
    grid = image_grid(shown.view(-1, c.channels, c.image_size, c.image_size), nrow=8, padding=1, pad_value=1.0)
    return grid, note


def pca_slider_image(*values):
    """mean + sum_i s_i * std_i * direction_i: slider i moves s_i standard deviations along direction i."""
    import torch

    pca = _pca()
    s = torch.tensor([number(v, 0.0, -3.0, 3.0) for v in values[:EIGEN_SLIDERS]])
    return _picture(pca.decode((s * pca.variances[:len(s)].sqrt())[None]), 192)


# --- the denoising autoencoder ----------------------------------------------------------------------------

def denoise(example, sigma, seed):
    """A shipped test image, corrupted with Gaussian noise of std sigma, reconstructed by the plain and the
    denoising autoencoder of the same size (32-D); the squared errors against the clean image."""
    from core.autoencoder import DENOISING_DIMS, add_noise, decode, encode_mean, load_model
    from core.data.fashion_mnist import CLASS_NAMES
    from core.runtime import clamp_seed, make_generator

    _, ckpt = load_model(SPACES["PCA"])
    examples = ckpt.extras["examples"]
    i = number(example, 0, 0, len(examples) - 1, whole=True)
    sigma = number(sigma, 0.3, 0.0, 1.0)
    clean = examples[i:i + 1].float() / 255
    noisy = add_noise(clean, sigma, make_generator(clamp_seed(seed)))
    shown = [clean, noisy]
    for name in (f"plain_{DENOISING_DIMS}d", f"denoising_{DENOISING_DIMS}d"):
        model = load_model(name)[0]
        shown.append(decode(model, encode_mean(model, noisy)))
    errors = [(x - clean).pow(2).mean().item() for x in shown[1:]]
    label = CLASS_NAMES[int(ckpt.extras["example_labels"][i])]
    note = (f"Test image {int(ckpt.extras['example_test_index'][i])} ({label}), noise std {sigma:.2f}"
            f"{' (beyond the 0.5 the denoiser trained on)' if sigma > 0.5 else ''}. Mean squared error against "
            f"the clean image: noisy input **{errors[0]:.4f}**, plain autoencoder **{errors[1]:.4f}**, "
            f"denoising autoencoder **{errors[2]:.4f}**.")
    return [*(_picture(x) for x in shown), note]


# --- the shipped figure ----------------------------------------------------------------------------------

def figure_table() -> str:
    """The shipped error-against-dimensions numbers as a Markdown table (read without torch)."""
    try:
        record = json.loads(RECON_VS_DIMS.with_suffix(".json").read_text())
        rows = ["| latent dims | " + " | ".join(map(str, record["dims"])) + " |",
                "|---|" + "---|" * len(record["dims"])]
        for kind, label in (("pca", "PCA"), ("autoencoder", "autoencoder")):
            rows.append(f"| {label} | " + " | ".join(f"{e['mse']:.4f}" for e in record[kind]) + " |")
        return ("Test mean squared error per pixel (10,000 Fashion-MNIST test images; the 2-D VAE, decoding its "
                f"mean code: {record['vae_2d']['mse']:.4f}). Made by `{record['command']}` on {record['date']}.\n\n"
                + "\n".join(rows))
    except (OSError, ValueError, KeyError, TypeError, IndexError):  # missing, or not the file the command writes
        return "The figure is not computed yet: run `python -m core.autoencoder figures`."


def measured_holes(results=None) -> str:
    """What bench/autoencoder.py measured about random codes in each space, so the tab's claim is the measured one."""
    from tabs.common import BENCH_RESULTS, bench_records

    for path, record in bench_records("autoencoder", results or BENCH_RESULTS):
        try:
            m, r = record["figures"]["manifold"], record["figures"]["recognised"]
            two = ", ".join(f"{name} {m[key]['precision']:.2f}" for key, name in
                            (("pca", "PCA"), ("autoencoder", "autoencoder"), ("vae", "VAE")))
            return (f"Measured ({path.name}, {record.get('date', '')[:10]}): {m['codes']:,} random codes per space, "
                    f"judged by how many land among the decoder's own reconstructions (precision in the classifier's "
                    f"features; held-out reconstructions score about {m['vae']['reference']['precision']:.2f} in "
                    f"2-D, {m['autoencoder_32d']['reference']['precision']:.2f} and "
                    f"{m['vae_32d']['reference']['precision']:.2f} in 32-D). In 2-D they are close: {two}. "
                    "In 32-D the autoencoder's fall off its codes "
                    f"({m['autoencoder_32d']['precision']:.2f}, recall {m['autoencoder_32d']['recall']:.2f}) while "
                    f"the VAE's stay nearer ({m['vae_32d']['precision']:.2f}, recall {m['vae_32d']['recall']:.2f}); "
                    f"the classifier recognises {r['autoencoder_32d']['share']:.0%} and {r['vae_32d']['share']:.0%} "
                    "of them. The holes grow with the dimension.")
        except (KeyError, TypeError):
            continue
    return "How often random codes miss is not measured yet: run `python -m bench.autoencoder`."


# --- layout ------------------------------------------------------------------------------------------------

def _shipped_figure(suffix: str) -> str | None:
    path = RECON_VS_DIMS.with_suffix(suffix)
    return str(path) if path.is_file() else None


def _image(label: str, explanation: str, **kwargs) -> gr.Image:
    """An output picture with its caption above it and the same words as its alt text."""
    caption(f"**{label}**: {explanation}")
    kwargs.setdefault("type", "pil")
    return gr.Image(label=label, show_label=False, interactive=False, alt_text=f"{label}: {explanation}", **kwargs)


MAP_CAPTION = ("one dot per test image at its 2-D code (z1 across, z2 up; the grey lines cross at the space's "
               "centre), coloured by class as in the legend below; click to decode a point")


def build() -> None:
    gr.Markdown("### From PCA to autoencoder to VAE: three 2-D latent spaces of the same clothes\n"
                "Each map shows where the 10,000 Fashion-MNIST test images land in one model's two-dimensional "
                "code. **PCA**: " + ABOUT["PCA"] + " **The autoencoder**: " + ABOUT["autoencoder"] + " **The VAE**: "
                + ABOUT["VAE"] + " Click any map to decode that point; *Sample* draws random codes from each "
                "space's Gaussian and shows what they decode to. " + measured_holes(), elem_id="spaces-intro")
    missing = [f"{technique}/{name}" for technique, names in NEEDED.items() for name in names
               if name not in list_shipped(technique)]
    if missing:
        gr.Markdown(f"**Not trained yet**: {', '.join(missing)} (see `core/autoencoder.py` for the commands).")
        return
    with gr.Row():
        draw = gr.Button("Draw the three maps and grids", variant="primary", elem_id="spaces-draw")
        n = gr.Slider(3, 15, value=8, step=1, label="grid size n (n x n decoded codes, over each space's Gaussian)")
    maps, decoded, codes, grids = {}, {}, {}, {}
    with gr.Row():
        for name in SPACES:
            with gr.Column(min_width=MAP_PX):
                maps[name] = _image(f"{name} (click to decode)", MAP_CAPTION, height=MAP_PX,
                                    elem_id=f"spaces-map-{name.lower()}")
                with gr.Row():
                    with gr.Column(min_width=DECODED_PX):
                        decoded[name] = _image("decoded point", f"what {name}'s decoder makes of the clicked code "
                                               "(black ring on the map); grey levels are pixel values",
                                               height=DECODED_PX)
                    codes[name] = gr.Textbox(label="code", interactive=False)
    legend = gr.HTML()
    with gr.Row():
        for name in SPACES:
            with gr.Column():
                grids[name] = _image(f"{name}: decoded grid", "codes spaced at equal probability steps of the "
                                     "space's Gaussian: z1 grows to the right, z2 grows upwards")
    with gr.Row():
        seed = gr.Number(value=0, label="seed", precision=0, minimum=0)
        sample = gr.Button(f"Sample {SAMPLES} random codes in each space", elem_id="spaces-sample")
    samples = {}
    with gr.Row():
        for name in SPACES:
            with gr.Column():
                samples[name] = _image(f"{name}: decoded random codes", f"{SAMPLES} codes drawn from the space's "
                                       "Gaussian (the black crosses on its map above), decoded")
    verdict = gr.Markdown(elem_id="spaces-verdict")

    gr.Markdown("#### Reconstruction error against the size of the code\nPCA is the best *linear* code of each "
                "size; the autoencoder's non-linear decoder does better with few dimensions. " + figure_table())
    with gr.Row():
        with gr.Column():
            _image("test error against latent dimensions", "mean squared error per pixel on the test images (up) "
                   "against the number of latent dimensions (across), for PCA and the autoencoder",
                   value=_shipped_figure(".png"), type="numpy")
        with gr.Column():
            _image("reconstructions", "top row: test images; below, PCA and autoencoder reconstructions with 1, 2, "
                   "4, 8, 16 and 32 dimensions", value=_shipped_figure(".examples.png"), type="numpy")

    gr.Markdown("#### Eigen-clothes\nPCA's first directions drawn as images (grey 0, light +, dark -). A PCA "
                "image is the mean image plus a weighted sum of them; each slider moves along one direction, in "
                "standard deviations of the training images' codes.")
    with gr.Row():
        with gr.Column(scale=2):
            eigen = _image(f"the first {EIGEN_SHOWN} principal directions", "one image per direction, first to last "
                           "left to right then down; mid-grey is 0, lighter pixels positive, darker negative")
        with gr.Column(scale=1):
            eigen_image = _image("mean + your weights", "the mean training image moved along each direction by "
                                 "its slider's number of standard deviations", height=192,
                                 elem_id="spaces-eigen-image")
    eigen_note = gr.Markdown()
    with gr.Row():
        eigen_sliders = [gr.Slider(-3, 3, value=0, step=0.1, label=f"direction {i + 1}") for i in range(EIGEN_SLIDERS)]
    show_eigen = gr.Button("Show the eigen-clothes", elem_id="spaces-eigen")

    gr.Markdown("#### The denoising autoencoder\nTrained with noisy inputs and clean targets (noise std up to "
                "0.5), it must learn what clothes look like; the plain autoencoder of the same size (32-D) only "
                "ever saw clean inputs.")
    with gr.Row():
        example = gr.Slider(0, 99, value=0, step=1, label="test image (the first 10 of each class)")
        sigma = gr.Slider(0, 1, value=0.3, step=0.05, label="noise std")
        noise_seed = gr.Number(value=0, label="noise seed", precision=0, minimum=0)
        denoise_button = gr.Button("Corrupt and reconstruct", elem_id="spaces-denoise")
    pictures = []
    with gr.Row():
        for label, explanation in (("clean", "the test image"), ("noisy input", "the test image plus Gaussian noise"),
                                   ("plain autoencoder", "its reconstruction of the noisy input"),
                                   ("denoising autoencoder", "its reconstruction of the noisy input")):
            with gr.Column(min_width=DECODED_PX):
                pictures.append(_image(label, explanation, height=DECODED_PX))
    clean, noisy, plain, denoised = pictures
    denoise_note = gr.Markdown(elem_id="spaces-denoise-note")

    draw.click(user_errors(show_spaces), [n], [*maps.values(), *grids.values(), legend], api_name="vae_show_spaces",
               **queue(TAB, 2))
    # .input fires on drags and on typing (.release only on drags and blur); always_last draws the latest size once.
    n.input(user_errors(space_grids), [n], [*grids.values()], api_name="vae_space_grids", trigger_mode="always_last",
            **queue(CLICKS, 4))
    for name in SPACES:
        maps[name].select(user_errors(_clicker(name)), None, [maps[name], decoded[name], codes[name]],
                          api_name=f"vae_click_{name.lower()}", **queue(CLICKS, 4))
    sample.click(user_errors(sample_spaces), [seed], [*maps.values(), *samples.values(), verdict],
                 api_name="vae_sample_spaces", **queue(TAB, 2))
    show_eigen.click(user_errors(eigen_clothes), None, [eigen, eigen_note], api_name="vae_eigen_clothes",
                     **queue(TAB, 2))
    for i, slider in enumerate(eigen_sliders):
        api = {"api_name": "vae_pca_sliders"} if i == 0 else \
            {"api_name": f"vae_pca_slider_{i + 1}_moved", "api_visibility": "undocumented"}
        slider.input(user_errors(pca_slider_image), eigen_sliders, [eigen_image], trigger_mode="always_last",
                     show_progress="hidden", **api, **queue(CLICKS, 4))
    denoise_button.click(user_errors(denoise), [example, sigma, noise_seed],
                         [clean, noisy, plain, denoised, denoise_note],
                         api_name="vae_denoise", **queue(TAB, 2))
