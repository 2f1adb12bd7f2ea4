"""The checks that need a CUDA GPU, as one script (nothing else in the project needs one):

    python -m tests.gpu_checks [--out DIR] [--skip-speed]

1. same seed, same sample on the GPU as on the CPU, in fp32 and in bf16, for every tab that samples
   (each tests/test_<tab>.py has a cuda_checks_<tab>(device) that its CPU test also runs);
2. a trainer on the GPU for a few hundred steps (bf16 autocast), whose loss must fall and whose
   checkpoint must load on the CPU;
3. the GPU row of bench/train_speed.py.
Each check's outcome (passed, or the error) goes into DIR/gpu_checks.json; the exit status is 1 if one failed.
"""
from __future__ import annotations

import argparse
import json
import time
import traceback
from pathlib import Path


def _trainer_on_gpu(folder: Path) -> dict:
    from core.checkpoints import build_model
    from core.diffusion import DiffusionConfig, UNet
    from tests.distributed import loads, train

    out = folder / "diffusion_gpu.pt"
    done, card = train(["diffusion", "--data", "faces", "--limit", "4000", "--size", "32", "--batch-size", "64",
                        "--steps", "400", "--device", "cuda"], out, extra_env={"GENLAB_THREADS": "4"})
    assert done.returncode == 0, done.stderr[-3000:]
    curve = [loss for _, loss in card["training_curve"]["step_and_mean_loss"]]
    assert curve[-1] < 0.8 * curve[0], curve
    assert card["bf16_autocast"] is True and card["devices"][0].startswith("cuda")
    build_model(loads(out), UNet, DiffusionConfig)  # loads on the CPU
    return {"steps_per_s": card["steps_per_s"], "loss_curve": curve, "device": card["devices"][0]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="bench/results", help="folder for gpu_checks.json")
    parser.add_argument("--skip-speed", action="store_true")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("No CUDA GPU here: these checks only run where there is one.")
    from tests.test_diffusion import cuda_checks_diffusion
    from tests.test_dream import cuda_checks_dream
    from tests.test_ebm import cuda_checks_ebm
    from tests.test_flow import cuda_checks_flow
    from tests.test_gan import cuda_checks_gan
    from tests.test_text import cuda_checks_text
    from tests.test_vae import cuda_checks_vae

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    checks = {"diffusion_same_seed": lambda: cuda_checks_diffusion("cuda"),
              "gan_same_seed": lambda: cuda_checks_gan("cuda"),
              "vae_same_seed": lambda: cuda_checks_vae("cuda"),
              "text_same_seed": lambda: cuda_checks_text("cuda"),
              "dream_same_seed": lambda: cuda_checks_dream("cuda"),
              "flow_same_seed": lambda: cuda_checks_flow("cuda"),
              "ebm_same_seed": lambda: cuda_checks_ebm("cuda"),
              "diffusion_trains_on_the_gpu": lambda: _trainer_on_gpu(out)}
    if not args.skip_speed:
        from bench import train_speed

        checks["train_speed"] = lambda: train_speed.main(["--quick"])
    results = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    for name, check in checks.items():
        started = time.monotonic()
        try:
            value = check()
            results[name] = {"passed": True, "seconds": round(time.monotonic() - started, 1),
                             **({"figures": value} if isinstance(value, dict) else {})}
        except Exception as exc:  # report every check, not just the first failure
            results[name] = {"passed": False, "error": f"{type(exc).__name__}: {exc}",
                             "traceback": traceback.format_exc()[-3000:]}
        print(name, "passed" if results[name]["passed"] else f"FAILED: {results[name]['error']}", flush=True)
    (out / "gpu_checks.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0 if all(r["passed"] for r in results.values() if isinstance(r, dict)) else 1


if __name__ == "__main__":
    raise SystemExit(main())
