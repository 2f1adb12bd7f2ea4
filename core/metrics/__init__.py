"""Sample-quality measurement with feature networks this project trains itself.

    classifiers  the Fashion-MNIST and face-attribute classifiers whose penultimate
                 features feed FID/KID (and their training: python -m core.train classifier)
    fid          FID and unbiased KID between two feature sets
    quality      generated samples vs real data, always with the real-vs-real baseline at the same n
    music        MuseGAN's musical metrics

Typical use in a benchmark:
    from core.metrics.quality import fashion_quality
    fashion_quality(samples, value_range=(-1, 1))   # {"fid": ..., "real_fid": ..., "kid_mean": ...}
"""
