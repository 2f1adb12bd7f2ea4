"""Dataset loaders. Each works offline from local files first and explains where it looked."""

import hashlib


def data_record(name: str, source: str, *arrays, key: str = "sha256") -> dict:
    """What a model card says about data it read: a name, where to get it, and one SHA-256 of the arrays
    (uint8 images, integer labels, rolls, text as bytes, ...) in order, so a reader can check that their copy
    is the same."""
    digest = hashlib.sha256()
    for array in arrays:
        array = array.numpy() if hasattr(array, "numpy") else array
        digest.update(array if isinstance(array, bytes) else array.tobytes())
    return {"name": name, "source": source, key: digest.hexdigest()}
