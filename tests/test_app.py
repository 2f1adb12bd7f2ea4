import re
import subprocess
import sys
from pathlib import Path

import gradio as gr

from tabs import GROUPS, TABS

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = ["Text", "DeepDream", "Style transfer", "Adversarial examples", "VAE", "GAN", "PixelCNN",
            "Normalizing flow", "Energy-based model", "Diffusion", "Text to image", "Music", "World Models"]


def test_build_app_has_every_tab_in_the_books_order():
    import app

    demo = app.build_app()
    assert isinstance(demo, gr.Blocks)
    groups = [child for child in demo.children if isinstance(child, gr.Tabs)]
    assert len(groups) == 1  # tabs nested inside a technique's tab are its own business
    assert [group.label for group in groups[0].children] == [title for title, _, _ in GROUPS]
    # the book parts, each a row of techniques short enough for a 1366-px screen (the browser test checks it)
    shown = [tab.label for group in groups[0].children for tab in group.children[0].children]
    assert shown == EXPECTED
    assert [title for title, _ in TABS] == EXPECTED


def test_train_cli_help_lists_techniques():
    out = subprocess.run([sys.executable, "-m", "core.train", "--help"], capture_output=True, text=True, check=True)
    for technique in ("text", "vae", "gan", "diffusion", "musegan", "world_models"):
        assert technique in out.stdout
    bad = subprocess.run([sys.executable, "-m", "core.train", "nonsense"], capture_output=True, text=True)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_building_the_app_loads_no_model_code():
    # Models load on first use: building the UI must not even import torch (start-up budget 5 s).
    code = "import sys, app; app.build_app(); print(sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


API_NAME = re.compile(r"(text_to_image|text|dream|style|adversarial|vae|gan|pixelcnn|flow|ebm|diffusion|musegan|music|"
                      r"world_models)_[a-z][a-z0-9_]*[a-z0-9]")


def test_every_event_is_named_and_the_readme_lists_the_public_ones():
    import app

    demo = app.build_app()
    callable_events = [fn for fn in demo.fns.values() if fn.api_visibility != "private"]
    unnamed = sorted(str(fn.api_name) for fn in callable_events if not API_NAME.fullmatch(str(fn.api_name)))
    assert not unnamed, f"give these events an api_name '<tab>_<action>' (or make them private): {unnamed}"
    public = {fn.api_name for fn in callable_events if fn.api_visibility == "public"}
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Scripting the lab"):]
    section = section[:section.index("\n## ", 1)]
    listed = set(re.findall(r"`/([a-z0-9_]+)`", section))
    assert listed == public, f"README lacks {sorted(public - listed)}; lists what is not there: {sorted(listed - public)}"
