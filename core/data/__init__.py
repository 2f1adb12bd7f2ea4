"""Dataset loaders. Each works offline from local files first and explains where it looked."""
