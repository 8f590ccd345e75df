#!/usr/bin/env python
"""Which CPU convolution kernels for which work: torch's own (im2col and one matrix product per layer, what
the sandbox trains with: harness.use_small_conv_kernels) against torch's default, oneDNN, alternating.

1. training steps (batch 64, SGD, resident MNIST batches, one torch thread): the lecture's network (2 and 3
   channels, what every sandbox trains) and wider variants of it (the channels given by --wide), to show
   where the choice would turn;
2. the judge's forward passes (no gradients, batches of 2,000): the lecture's network over 12,500 images,
   channels-last and contiguous, each way.

    MNIST_DIR=... .venv/bin/python bench/conv_kernels.py [--rounds 3] [--batches 200] [--wide 8,16 32,64]

Prints the median milliseconds per batch and per forward sweep. Not a test: figures on a shared machine
drift, which is why every way runs once per round, in turn.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from autograder import mnist  # noqa: E402


def net(c1: int, c2: int) -> torch.nn.Module:
    """The lecture's layers with c1 and c2 channels: Conv2d(1, c1, 3), Conv2d(c1, c2, 3), pool, 16, 10."""

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = torch.nn.Conv2d(1, c1, 3), torch.nn.Conv2d(c1, c2, 3)
            self.fc1, self.fc2 = torch.nn.Linear(12 * 12 * c2, 16), torch.nn.Linear(16, 10)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2, 2)
            return F.log_softmax(self.fc2(F.relu(self.fc1(x.flatten(1)))), dim=1)

    return Net()


def kernels(own: bool):
    """torch's own kernels (oneDNN and NNPACK off, as in the sandbox) or torch's defaults."""
    return torch.backends.mkldnn.flags(enabled=not own), torch.backends.nnpack.flags(enabled=not own)


def train_ms(channels: tuple[int, int], batches: list, own: bool) -> float:
    torch.manual_seed(0)
    model = net(*channels)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    onednn, nnpack = kernels(own)
    with onednn, nnpack:
        started = time.perf_counter()
        for x, y in batches:
            opt.zero_grad()
            F.nll_loss(model(x), y).backward()
            opt.step()
        return (time.perf_counter() - started) / len(batches) * 1000


def forward_ms(images: torch.Tensor, own: bool, channels_last: bool) -> float:
    torch.manual_seed(0)
    model = net(2, 3).eval()
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model, x = model.to(memory_format=layout), images.contiguous(memory_format=layout)
    onednn, nnpack = kernels(own)
    with onednn, nnpack, torch.inference_mode():
        started = time.perf_counter()
        torch.cat([model(x[i:i + 2000]) for i in range(0, len(x), 2000)])
        return (time.perf_counter() - started) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, default=200, help="training steps per measurement")
    parser.add_argument("--wide", nargs="*", default=["8,16", "32,64"], help="wider variants, as c1,c2")
    args = parser.parse_args()
    torch.set_num_threads(1)
    import warnings
    warnings.filterwarnings("ignore", message=".*TF32.*")  # oneDNN's flags() context warns on every use

    train = mnist.load_split("train")
    n = 64 * args.batches
    images, labels = mnist.normalize(train.images[:n]).contiguous(), train.labels[:n].long()
    batches = [(images[s:s + 64], labels[s:s + 64]) for s in range(0, n, 64)]
    sweep = mnist.normalize(train.images[:12_500])

    ways = {}
    for channels in [(2, 3)] + [tuple(map(int, w.split(","))) for w in args.wide]:
        for own in (True, False):
            ways[f"train {channels[0]},{channels[1]} channels, {'own' if own else 'oneDNN'} (ms/batch)"] = (
                lambda c=channels, o=own: train_ms(c, batches, o))
    for channels_last in (True, False):
        for own in (True, False):
            ways[f"forward 12,500 images, {'channels-last' if channels_last else 'contiguous'}, "
                 f"{'own' if own else 'oneDNN'} (ms)"] = lambda o=own, cl=channels_last: forward_ms(sweep, o, cl)
    for way in ways.values():  # warm-up: first calls pay for lazy initialisation
        way()
    figures = {name: [] for name in ways}
    for rnd in range(1, args.rounds + 1):
        for name, way in ways.items():
            figures[name].append(way())
        print(f"round {rnd}/{args.rounds} done", flush=True)
    print(f"\ntorch {torch.__version__}, 1 thread, {args.rounds} rounds, {args.batches} batches of 64; medians:")
    for name, values in figures.items():
        print(f"  {name:<62} {statistics.median(values):8.2f}   ({', '.join(f'{v:.1f}' for v in values)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
