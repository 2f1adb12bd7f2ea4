"""Sample-quality measurement with feature networks this project trains itself.

    classifiers  the Fashion-MNIST judges (a convnet classifier and a ResNet with global average pooling)
                 and the face-attribute classifiers whose features feed FID/KID (and their training:
                 python -m core.train classifier --dataset ... [--arch resnet])
    fid          FID and unbiased KID between two feature sets
    precision_recall  improved precision (fidelity) and recall (variety) on k-NN manifolds
    quality      generated samples vs real data on every judge, always with the real-vs-real baseline
                 at the same n
    music        MuseGAN's musical metrics

In a benchmark:

    from core.metrics.quality import JUDGES, judge, ranking
    judge(samples, "fashion", value_range=(-1, 1))  # [N, 1, 32, 32] or [N, 1, 28, 28] clothes
    judge(samples, "faces", value_range=(0, 1))     # [N, 3, H, H] faces, compared at their own H
    # -> {network: {"n", "fid", "kid_mean", "kid_std", "kid_subset_size", "precision", "recall",
    #               "real_fid", "real_kid_mean", "real_kid_std", "real_precision", "real_recall"}}
    #    for each network of JUDGES["fashion"] = ("classifier", "resnet", "lite0") or
    #    JUDGES["faces"] = ("attributes", "lite0")
    ranking({"dcgan": judge(...), "diffusion": judge(...)})["sentence"]  # do the judges agree?

`real_*` is what a perfect generator scores with the same n; report it next to the figure.
fashion_quality / face_quality are judge() on the first judge alone.
value_range is always stated, never guessed. Other building blocks:
classifiers.fashion_probabilities (class accuracy of a conditional GAN), classifiers.face_attributes
(how much the smile vector makes faces smile), fid.fid and fid.kid on any two feature sets.
"""
