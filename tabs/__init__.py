"""The lab's tabs, in the order they appear. Each module exposes build(), called inside its gr.Tab."""

TABS = [
    ("Text", "text"),
    ("DeepDream", "dream"),
    ("Style transfer", "style"),
    ("VAE", "vae"),
    ("GAN", "gan"),
    ("PixelCNN", "pixelcnn"),
    ("Normalizing flow", "flow"),
    ("Diffusion", "diffusion"),
    ("MuseGAN", "musegan"),
]
