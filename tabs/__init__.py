"""The lab's tabs, in the order they appear. Each module exposes build(), called inside its gr.Tab."""

TABS = [
    ("Text", "text"),
    ("DeepDream", "dream"),
    ("Style transfer", "style"),
    ("Adversarial examples", "adversarial"),
    ("VAE", "vae"),
    ("GAN", "gan"),
    ("PixelCNN", "pixelcnn"),
    ("Normalizing flow", "flow"),
    ("Energy-based model", "ebm"),
    ("Diffusion", "diffusion"),
    ("Text to image", "text_to_image"),
    ("Music", "music"),
    ("World Models", "world_models"),
]
