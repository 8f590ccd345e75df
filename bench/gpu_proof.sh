#!/usr/bin/env bash
# Issue 17 on a GPU machine, in as few device calls as the 10-minute limit allows. Prepare here with
# `MNIST_DIR=... bash bench/gpu_carry.sh` (fills the ignored .gpu/), then call the device tool:
#
#   run  command: bash bench/gpu_proof.sh probe batch     carry: [".gpu"]   timeout_s: 590
#   run  command: bash bench/gpu_proof.sh hostile         carry: [".gpu"]   timeout_s: 330   (at once: still warm)
#
# Steps (each one's log goes to $OUT/<step>.log, its last lines to stdout; one failing does not stop the next,
# except the probe: when CUDA does not start in the sandbox, the later steps would only repeat its error):
#   probe    bench/cuda_sandbox_probe.py: the machine's facts, and CUDA in the kit's sandbox and in variants
#   batch    bench/gpu_batch.py: 64 copies of the answer key with --device cuda (submissions per minute, GPU
#            memory per sandbox), then the samples and the one-mistake mutants on CUDA and on the CPU, part by part
#   hostile  tests/test_hostile.py with AUTOGRADER_TEST_DEVICE=cuda: the hostile corpus graded on the GPU
#            (no network, read-only system, limits, nothing surviving), and tests/test_sandbox_gpu.py there
# What the device machine lacks comes from .gpu/: nbformat's wheels (into /tmp/site), bubblewrap's Debian packages
# (unpacked under /tmp/bw, never over /), and MNIST.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu-proof}"
mkdir -p "$OUT"
PY="${PY:-python3}"
export PYTHONUNBUFFERED=1
began=$(date +%s)
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(probe batch hostile)

[ -d .gpu/whl ] || { echo "no .gpu/ here: run bench/gpu_carry.sh first and carry .gpu"; exit 2; }
if ! "$PY" -c "import nbformat" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl \
    || { echo "the carried wheels did not install"; exit 2; }
  export PYTHONPATH=/tmp/site
fi
if ! command -v bwrap >/dev/null; then
  mkdir -p /tmp/bw/bin
  for deb in .gpu/deb/*.deb; do dpkg -x "$deb" /tmp/bw; done
  libs=/tmp/bw/lib/x86_64-linux-gnu:/tmp/bw/usr/lib/x86_64-linux-gnu
  # bubblewrap with the carried libraries it links; what it starts gets the kit's own environment (--clearenv)
  printf '#!/bin/sh\nLD_LIBRARY_PATH=%s exec /tmp/bw/usr/bin/bwrap "$@"\n' "$libs" > /tmp/bw/bin/bwrap
  chmod 755 /tmp/bw/bin/bwrap
  export PATH="/tmp/bw/bin:$PATH"
fi
export MNIST_DIR="$PWD/.gpu/mnist"
{ nvidia-smi -L; "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
  torch.cuda.is_available())'; bwrap --version; nproc; free -g | head -2; } 2>&1 | tee "$OUT/setup.log"

step() {  # step NAME SECONDS COMMAND...: run it under a time limit, log it whole, show its end
  local name=$1 limit=$2; shift 2
  echo "=== $name: limit ${limit} s, at $(( $(date +%s) - began )) s"
  timeout -k 5 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  tail -n "${TAIL:-70}" "$OUT/$name.log"
  echo "=== $name: exit $rc after $(( $(date +%s) - began )) s"
  return $rc
}

for s in "${steps[@]}"; do
  case "$s" in
    probe) step probe 170 "$PY" bench/cuda_sandbox_probe.py \
             || { echo "CUDA does not start in the sandbox: the later steps are left out"; exit 1; } ;;
    batch) step batch 340 "$PY" bench/gpu_batch.py --n 64 --cluster-jobs 12 --cpu-jobs 12 --jobs 8 --pool-n 24 ;;
    hostile) step hostile 300 env AUTOGRADER_TEST_DEVICE=cuda AUTOGRADER_TEST_JOBS=8 \
               "$PY" -m pytest -q -p no:cacheprovider tests/test_hostile.py tests/test_sandbox_gpu.py ;;
    *) echo "unknown step $s (probe, batch, hostile)"; exit 2 ;;
  esac
done
