"""Sample-quality measurement with feature networks this project trains itself.

    classifiers  the Fashion-MNIST and face-attribute classifiers whose penultimate features
                 feed FID/KID (and their training: python -m core.train classifier --dataset ...)
    fid          FID and unbiased KID between two feature sets
    precision_recall  improved precision (fidelity) and recall (variety) on k-NN manifolds
    quality      generated samples vs real data, always with the real-vs-real baseline at the same n
    music        MuseGAN's musical metrics

In a benchmark:

    from core.metrics.quality import fashion_quality, face_quality
    fashion_quality(samples, value_range=(-1, 1))  # [N, 1, 32, 32] or [N, 1, 28, 28] clothes
    face_quality(samples, value_range=(0, 1))      # [N, 3, H, H] faces, compared at their own H
    # -> {"n", "fid", "kid_mean", "kid_std", "kid_subset_size", "real_fid", "real_kid_mean", "real_kid_std"}

`real_*` is what a perfect generator scores with the same n; report it next to `fid`.
value_range is always stated, never guessed. Other building blocks:
classifiers.fashion_probabilities (class accuracy of a conditional GAN), classifiers.face_attributes
(how much the smile vector makes faces smile), fid.fid and fid.kid on any two feature sets.
"""
