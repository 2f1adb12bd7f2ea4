"""How direct the VAE sliders feel: milliseconds for one decode (target: <= 20 ms median on this CPU),
and how fast the synthetic face dataset is drawn (target: >= 1,000 faces/s).

A slider move re-decodes one code; we time exactly what the tab's handler does (attribute vectors
added, the decoder run, the 64x64 result enlarged for display) and the bare decoder alone. Face drawing
is timed in wall time and in this process's CPU time (the second is what an idle machine would see).

    python -m bench.vae_speed [--quick]
"""
from __future__ import annotations

import argparse
import time

from bench.common import save_results, time_calls

README_ROWS = [
    {"figure": "VAE slider: one face decode as the tab does it (median ms)",
     "measured": "{face_slider_handler_median_ms:.1f}", "reference": "≤ 20 ms"},
    {"figure": "Synthetic faces drawn per second (CPU time)", "measured": "{faces_per_s_cpu_time}",
     "reference": "≥ 1,000"},
]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    import torch

    from core.vae import decode, load_vae
    from tabs import vae as tab

    repeats = 20 if args.quick else 100
    figures = {"target_ms": 20.0}
    for name in ("faces_200d", "fashion_2d"):
        model, _ = load_vae(name)
        z = torch.randn(1, model.config.latent_dim)
        with torch.no_grad():
            timing = time_calls(lambda: decode(model, z), repeats=repeats, warmup=3)
        figures[f"{name}_decode_median_ms"] = round(timing["median_s"] * 1000, 2)
        figures[f"{name}_decode_max_ms"] = round(timing["max_s"] * 1000, 2)
    state = tab.dataset_face(3)[0]
    values = [1.5 if name == "smiling" else 0.0 for name in tab.ATTRIBUTES] + [0.5] * tab.N_DIM_SLIDERS
    timing = time_calls(lambda: tab.render_face(state, *values), repeats=repeats, warmup=3)
    figures["face_slider_handler_median_ms"] = round(timing["median_s"] * 1000, 2)
    figures["torch_threads"] = torch.get_num_threads()
    from core.data.faces import make_faces

    n = 500 if args.quick else 2000
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    make_faces(n, seed=12345)
    wall, cpu = time.perf_counter() - start_wall, time.process_time() - start_cpu
    figures["faces_per_s_wall"] = round(n / wall)
    figures["faces_per_s_cpu_time"] = round(n / cpu)
    figures["faces_target_per_s"] = 1000
    figures["meets_target"] = figures["face_slider_handler_median_ms"] <= figures["target_ms"]
    save_results("vae_speed", figures, quick=args.quick)
    return figures


if __name__ == "__main__":
    main()
