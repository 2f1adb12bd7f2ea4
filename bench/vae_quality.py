"""VAE quality: validation ELBO of both shipped models, and what the smile vector does.

Smile vector test (issue #6): 500 non-smiling validation faces are encoded, the smile vector is added
at the default strength (core.vae.DEFAULT_ATTRIBUTE_STRENGTH), the codes are decoded, and the shipped
face-attribute classifier (core.metrics.classifiers) scores the results. Targets: >= 80% become
smiling; every other attribute keeps its label for >= 90% of the faces. "Keeps its label" is
measured two ways: against the classifier's reading of the plain reconstruction (no vector), which
isolates what the vector changes, and against the face's true label (what the generator drew), which
also counts what the VAE's reconstruction alone loses (reported too, as plain reconstruction vs
truth). For every other attribute vector the bench also reports the share of faces lacking the
attribute that gain it at the default strength.

    python -m bench.vae_quality [--quick]
"""
from __future__ import annotations

import argparse

from bench.common import save_results

README_ROWS = [
    {"figure": "VAE Fashion-MNIST 2-D latent: test ELBO (nats per image; reconstruction, KL)",
     "measured": "{fashion_2d_test_elbo_nats:.1f} ({fashion_2d_test_recon_nats:.1f}, {fashion_2d_test_kl_nats:.1f})",
     "reference": "higher is better"},
    {"figure": "VAE faces 200-D latent: validation ELBO (nats per image)",
     "measured": "{faces_200d_validation_elbo_nats:.1f}", "reference": "higher is better"},
    {"figure": "Smile vector: non-smiling faces that smile after the edit",
     "measured": "{smile_vector.now_smiling:.1%} (n = {smile_vector.faces})", "reference": "≥ 80 %"},
    {"figure": "Smile vector: worst share of another attribute keeping its true label",
     "measured": "{smile_vector.worst_kept_vs_truth:.1%}",
     "reference": "≥ 90 %; the reconstruction alone, no edit: {smile_vector.worst_reconstruction_vs_truth:.1%}"},
    {"figure": "Smile vector: worst share of another attribute unchanged by the edit (vs the plain reconstruction)",
     "measured": "{smile_vector.worst_kept_vs_plain:.1%}", "reference": "≥ 90 %"},
]


def elbo_figures(figures: dict, quick: bool) -> None:
    from core.data.faces import face_split
    from core.data.fashion_mnist import load_fashion_mnist, to_float
    from core.vae import evaluate, load_vae

    test_x, _ = load_fashion_mnist("test")
    test_x = to_float(test_x[:2000] if quick else test_x, 32)
    result = evaluate(load_vae("fashion_2d")[0], test_x)
    figures["fashion_2d_test_elbo_nats"] = round(result["elbo"], 2)
    figures["fashion_2d_test_recon_nats"] = round(result["recon"], 2)
    figures["fashion_2d_test_kl_nats"] = round(result["kl"], 2)
    figures["fashion_2d_test_images"] = len(test_x)
    faces = face_split("validation", 500 if quick else 2000).images
    result = evaluate(load_vae("faces_200d")[0], faces)
    figures["faces_200d_validation_elbo_nats"] = round(result["elbo"], 2)
    figures["faces_200d_validation_recon_nats"] = round(result["recon"], 2)
    figures["faces_200d_validation_kl_nats"] = round(result["kl"], 2)
    figures["faces_200d_validation_images"] = len(faces)


def smile_figures(figures: dict, n: int) -> None:
    import torch

    from core.data.faces import face_split
    from core.metrics.classifiers import face_attributes, load_face_classifier
    from core.vae import DEFAULT_ATTRIBUTE_STRENGTH, apply_attributes, decode, encode_all, load_vae

    try:
        classifier = load_face_classifier()
    except ValueError as exc:  # CheckpointError: the metrics issue has not shipped it
        figures["smile_vector"] = f"not measured: no shipped face-attribute classifier ({exc})"
        return
    model, ckpt = load_vae("faces_200d")
    vectors = dict(zip(ckpt.extras["attribute_names"], ckpt.extras["attribute_vectors"].float()))
    batch = face_split("validation", 3 * n)
    keep = (~batch.labels["smiling"]).nonzero()[:n, 0]
    images = batch.images[keep]
    truth = {name: v[keep] for name, v in batch.labels.items()}
    with torch.no_grad():
        z = encode_all(model, images)[0]
        plain = decode(model, z)
        edited = decode(model, apply_attributes(z, vectors, {"smiling": DEFAULT_ATTRIBUTE_STRENGTH}))
    read = lambda x: {k: v > 0.5 for k, v in face_attributes(x, (0, 1), classifier).items()}
    on_plain, on_edited = read(plain), read(edited)
    on_original = read(images)
    others = [name for name in on_edited if name != "smiling" and name in truth]
    kept_truth = {name: round((on_edited[name] == truth[name]).float().mean().item(), 3) for name in others}
    kept_plain = {name: round((on_edited[name] == on_plain[name]).float().mean().item(), 3) for name in others}
    reconstructed = {name: round((on_plain[name] == truth[name]).float().mean().item(), 3) for name in others}
    # Every other vector too: the share of faces without an attribute that have it after adding its vector.
    each = {}
    for name, vector in vectors.items():
        lacking = (~batch.labels[name]).nonzero()[:200, 0]
        if name not in on_edited or len(lacking) == 0:
            continue
        with torch.no_grad():
            codes = encode_all(model, batch.images[lacking])[0]
            gained = decode(model, apply_attributes(codes, vectors, {name: DEFAULT_ATTRIBUTE_STRENGTH}))
        each[name] = round(read(gained)[name].float().mean().item(), 3)
    figures["attribute_vectors_gain_rate"] = each
    figures["smile_vector"] = {
        "faces": len(keep), "strength": DEFAULT_ATTRIBUTE_STRENGTH,
        "now_smiling": round(on_edited["smiling"].float().mean().item(), 3), "target_now_smiling": 0.8,
        "smiling_before_edit_reconstruction": round(on_plain["smiling"].float().mean().item(), 3),
        "classifier_accuracy_on_originals": round(sum((on_original[k] == truth[k]).float().mean().item()
                                                      for k in others) / len(others), 3),
        "kept_label_vs_truth": kept_truth, "worst_kept_vs_truth": min(kept_truth.values()),
        "kept_label_vs_plain_reconstruction": kept_plain, "worst_kept_vs_plain": min(kept_plain.values()),
        "plain_reconstruction_vs_truth": reconstructed, "worst_reconstruction_vs_truth": min(reconstructed.values()),
        "target_kept": 0.9,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    figures: dict = {}
    elbo_figures(figures, args.quick)
    smile_figures(figures, 200 if args.quick else 500)
    save_results("vae_quality", figures, quick=args.quick)
    return figures


if __name__ == "__main__":
    main()
