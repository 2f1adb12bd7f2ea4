import subprocess
import sys

import gradio as gr

from tabs import TABS

EXPECTED = ["Text", "DeepDream", "Style transfer", "VAE", "GAN", "Diffusion", "MuseGAN"]


def test_build_app_has_the_seven_tabs_in_order():
    import app

    demo = app.build_app()
    assert isinstance(demo, gr.Blocks)
    tabs = [child for child in demo.children if isinstance(child, gr.Tabs)]
    assert len(tabs) == 1  # tabs nested inside a technique's tab are its own business
    assert [tab.label for tab in tabs[0].children] == EXPECTED
    assert [title for title, _ in TABS] == EXPECTED


def test_train_cli_help_lists_techniques():
    out = subprocess.run([sys.executable, "-m", "core.train", "--help"], capture_output=True, text=True, check=True)
    for technique in ("text", "vae", "gan", "diffusion", "musegan"):
        assert technique in out.stdout
    bad = subprocess.run([sys.executable, "-m", "core.train", "nonsense"], capture_output=True, text=True)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_building_the_app_loads_no_model_code():
    # Models load on first use: building the UI must not even import torch (start-up budget 5 s).
    code = "import sys, app; app.build_app(); print(sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
