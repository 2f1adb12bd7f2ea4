"""The lab's tabs in the books' order, grouped by the books' parts so that thirteen tabs fit a laptop
screen or a projector: (group title, group id, [(tab title, module name), ...]). Each module exposes
build(), called inside its gr.Tab, which returns its tabs.classroom.Page."""

GROUPS = [
    ("First steps · Chollet ch. 12", "first_steps", [
        ("Text", "text"),
        ("DeepDream", "dream"),
        ("Style transfer", "style"),
        ("Adversarial examples", "adversarial"),
    ]),
    ("Six families · Foster part II", "families", [
        ("VAE", "vae"),
        ("GAN", "gan"),
        ("PixelCNN", "pixelcnn"),
        ("Normalizing flow", "flow"),
        ("Energy-based model", "ebm"),
        ("Diffusion", "diffusion"),
    ]),
    ("Applications · Foster part III", "applications", [
        ("Text to image", "text_to_image"),
        ("Music", "music"),
        ("World Models", "world_models"),
    ]),
]

TABS = [tab for _, _, tabs in GROUPS for tab in tabs]
GROUP_OF = {module: group for _, group, tabs in GROUPS for _, module in tabs}
