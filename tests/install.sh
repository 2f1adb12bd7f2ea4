#!/bin/sh
# Everything the tests need, on a fresh Debian machine: the Python packages and these Debian packages:
#   chromium               the browser tests in tests/e2e (Playwright drives the system browser, so
#                          Playwright's own browser download is never needed)
#   dataset-fashion-mnist  real Fashion-MNIST for the FID/KID tests (/usr/share/datasets/fashion-mnist)
#   fluidsynth, timgm6mb-soundfont  MuseGAN audio through a SoundFont
# Under CI=true anything missing afterwards is an error (exit 1), as tests/conftest.py makes the tests
# that need it fail; elsewhere it is a warning, and those tests skip and say why.
set -e
cd "$(dirname "$0")/.."
DEBIAN_PACKAGES="chromium dataset-fashion-mnist fluidsynth timgm6mb-soundfont"

pip install -r requirements-dev.txt

missing=""
for package in $DEBIAN_PACKAGES; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing="$missing $package"
done
if [ -n "$missing" ]; then
    if command -v apt-get >/dev/null 2>&1; then
        as_root=""
        [ "$(id -u)" = 0 ] || as_root="sudo"
        $as_root apt-get update -qq && DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y -qq $missing \
            || echo "tests/install.sh: apt-get could not install:$missing"
    else
        echo "tests/install.sh: no apt-get here; install:$missing (or set GENLAB_CHROMIUM / GENLAB_DATA)"
    fi
fi

# Check what the tests will look for, not only what dpkg says.
problems=""
command -v chromium >/dev/null 2>&1 || [ -x "${GENLAB_CHROMIUM:-/nonexistent}" ] || problems="$problems chromium"
[ -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] || [ -n "$GENLAB_DATA" ] \
    || problems="$problems dataset-fashion-mnist"
command -v fluidsynth >/dev/null 2>&1 || problems="$problems fluidsynth"
[ -f /usr/share/sounds/sf2/TimGM6mb.sf2 ] || problems="$problems timgm6mb-soundfont"
python -c "import playwright.sync_api, diffusers, torchmetrics" 2>/dev/null || problems="$problems playwright/diffusers/torchmetrics"
python -c "import gymnasium, Box2D, cma" 2>/dev/null || problems="$problems gymnasium[box2d]/cma"

if [ -n "$problems" ]; then
    if [ "$CI" = "true" ]; then
        echo "tests/install.sh: CI=true and still missing:$problems" >&2
        exit 1
    fi
    echo "tests/install.sh: missing:$problems; the tests that need them will be skipped"
fi
