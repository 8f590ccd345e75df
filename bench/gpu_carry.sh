#!/usr/bin/env bash
# Here, before a GPU session: fill .gpu/ (ignored by git) with what bench/gpu_proof.sh needs on the device
# machine and can not fetch there (it has no network): the wheels its python3 lacks (nbformat and its
# dependencies, for Python 3.12), bubblewrap and its libraries as Debian packages, and a copy of MNIST.
# Then call the device tool with carry [".gpu"] and the command `bash bench/gpu_proof.sh` (see that file).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${MNIST_DIR:?set MNIST_DIR to the folder of the four MNIST .gz files}"
rm -rf .gpu
mkdir -p .gpu/whl .gpu/deb .gpu/mnist
# The device's python3 (3.12, torch 2.11) has pytest, numpy, safetensors, tqdm, matplotlib, python-dateutil and
# attrs; of the kit's needs it lacks nbformat's family (the device README: carry wheels, --no-deps).
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .gpu/whl \
  nbformat fastjsonschema jsonschema jsonschema-specifications referencing rpds-py traitlets jupyter_core platformdirs
# bubblewrap and what it links (libcap, libselinux, pcre2): unpacked under /tmp there, never over its /.
(cd .gpu/deb && apt-get download bubblewrap libcap2 libselinux1 libpcre2-8-0 2>/dev/null)
cp "$MNIST_DIR"/*-ubyte.gz .gpu/mnist/
du -sh .gpu
