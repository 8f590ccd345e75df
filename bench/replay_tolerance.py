"""How far honest loops written differently land from the grader's replay, and how far cheats land: the
figures behind replay.TOLERANCE. On the real MNIST epoch (782 batches), for each training seed:

- honest variants of the answer key's loop (F.cross_entropy on the log-probabilities, a summed loss divided by
  the batch size, model.zero_grad(), a Net whose forward is torch.log(F.softmax(...)) with .view): the
  largest relative difference per 16-batch stretch, of the weights and of the optimizer state / gradients;
  and, for contrast, the difference over the whole epoch replayed in one go (what stretches avoid);
- cheats (weights scaled by 1.0001 or 1.01 after the loop, a nudge of fc2's bias mid-loop, an optimizer of
  its own with lr 0.0101): the difference at the stretch where the replay refuses them;
- the replay's seconds for one epoch, beside the seconds of the loop itself.

    MNIST_DIR=... .venv/bin/python bench/replay_tolerance.py [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # the loops of tests/test_replay.py, used read-only

from autograder import judge, mnist, reference, replay  # noqa: E402
from autograder.course import Course  # noqa: E402
from test_replay import SoftmaxThenLog, textbook  # noqa: E402


def scaled(factor):
    def after(model):
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(factor)
    return after


def nudge(i, model):
    if i == 400:
        with torch.no_grad():
            model.fc2.bias.add_(0.05)


def own_optimizer(model, loader, optimizer, device):
    mine = torch.optim.SGD(model.parameters(), lr=0.0101, momentum=0.9)
    for images, labels in loader:
        mine.zero_grad()
        F.nll_loss(model(images), labels).backward()
        mine.step()


HONEST = {
    "answer key": (textbook(), None),
    "cross_entropy on log-probs": (textbook(F.cross_entropy), None),
    "sum / batch size": (textbook(lambda o, y: F.nll_loss(o, y, reduction="sum") / len(y)), None),
    "model.zero_grad()": (textbook(zero=lambda model, optimizer: model.zero_grad()), None),
    "log(softmax) + view": (textbook(), SoftmaxThenLog),
}
CHEATS = {
    "weights x1.0001 after": textbook(after=scaled(1.0001)),
    "weights x1.01 after": textbook(after=scaled(1.01)),
    "fc2 bias +0.05 at batch 400": textbook(during=nudge),
    "own optimizer, lr 0.0101": own_optimizer,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default: 0 1 2)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    assignment = Course.at(REPO).lab("cnn_mnist")
    t, ref = assignment.training, reference.load(assignment)
    train = mnist.load_split("train")
    n = len(train.labels) - t.holdout
    images, labels = mnist.normalize(train.images[:n]).contiguous(), train.labels[:n].long()
    print(f"tolerance: weights {replay.TOLERANCE['param']:g}, optimizer state {replay.TOLERANCE['state']:g}, "
          f"gradients {replay.TOLERANCE['grad']:g} (relative, per tensor, per stretch)")
    for seed in args.seeds:
        setup = replay.Setup(net_class=ref.Net, initial=judge.initial_weights(ref.Net, seed), images=images,
                             labels=labels, batch_size=t.batch_size, seed=seed, optimizer=t.optimizer, lr=t.lr,
                             momentum=t.momentum)
        print(f"\nseed {seed}")
        for name, (loop, net_class) in HONEST.items():
            started = time.perf_counter()
            events, snapshots, final = replay.trace_of(setup, loop, net_class=net_class)
            trained = time.perf_counter() - started
            started = time.perf_counter()
            v = replay.verify(setup, events, snapshots, final)
            replayed = time.perf_counter() - started
            whole = replay.verify(setup, events, [], final)  # the epoch in one stretch
            print(f"  {name:30s} {'believed' if v.verified else 'REFUSED':8s} per stretch: weights {v.worst:.1e}, "
                  f"state {v.worst_state:.1e}; whole epoch in one go: weights {whole.worst:.1e}; "
                  f"loop {trained:.1f} s, replay {replayed:.1f} s")
        for name, loop in CHEATS.items():
            events, snapshots, final = replay.trace_of(setup, loop)
            v = replay.verify(setup, events, snapshots, final)
            where = v.message.en.split("from batch ")[1].split(" on")[0] if v.message and "from batch" in v.message.en else "-"
            print(f"  {name:30s} {'believed' if v.verified else 'refused':8s} at batch {where}: weights {v.worst:.1e}, "
                  f"state {v.worst_state:.1e}")


if __name__ == "__main__":
    main()
