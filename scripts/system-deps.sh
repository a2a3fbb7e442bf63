#!/usr/bin/env bash
# The system programs ingestion uses: tesseract (text in pictures, with English data), espeak-ng
# (speech for the tests and the demo) and Fashion-MNIST (the labelled product photos the demo
# trains its own CLIP on); and chromium with its driver, which the chat page's browser tests
# drive (tests/test_browser.py). Installed with apt where this machine allows (root, or
# password-less sudo); otherwise one line says what to install, and the exit is 1.
set -euo pipefail

packages=(tesseract-ocr tesseract-ocr-eng espeak-ng dataset-fashion-mnist chromium chromium-driver)
missing=()
command -v tesseract >/dev/null && tesseract --list-langs 2>/dev/null | grep -qx eng \
    || missing+=(tesseract-ocr tesseract-ocr-eng)
command -v espeak-ng >/dev/null || missing+=(espeak-ng)
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] \
    || missing+=(dataset-fashion-mnist)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
[ ${#missing[@]} -eq 0 ] && exit 0

if command -v apt-get >/dev/null; then
    if [ "$(id -u)" -eq 0 ]; then
        sudo=()
    elif sudo -n true 2>/dev/null; then
        sudo=(sudo)
    else
        sudo=(none)
    fi
    if [ "${sudo[0]:-}" != none ]; then
        echo "installing ${missing[*]} (apt-get)…"
        "${sudo[@]}" apt-get update -qq
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null
        exit 0
    fi
fi
echo "missing system packages: ${missing[*]} (all needed: ${packages[*]})." >&2
echo "Install them (Debian/Ubuntu: sudo apt-get install ${packages[*]};" \
    "macOS: brew install tesseract espeak-ng; Fashion-MNIST's four .gz files from its"\
    "project page into /usr/share/datasets/fashion-mnist) and run make again." >&2
exit 1
