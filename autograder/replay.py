"""The judge's replay of a student's training loop: what the loop reported is believed only when the steps it
reported, replayed here, lead to the weights it sent back.

Everything inside the student's process can be found and rewritten, the harness's records included. So the
grading process takes the run's trace (harness.Spy: which batch, forward, backward into cleared or stale
gradients, step, in order) and its snapshots (weights, optimizer state and gradients every few batches), and
replays each stretch between two snapshots with the lab's network (the answer key's), the lecture's loss
(F.nll_loss, the mean over the batch), the optimizer the loop was given, and the batches the grader itself
draws from the same seed. The first stretch starts from weights the grader computes itself; the last ends at the weights the run
sent back. Every stretch must land on the next snapshot within TOLERANCE, or nothing of the trace is believed.

Why stretches and not the whole epoch at once: training is chaotic. An honest loop written a little
differently (F.cross_entropy on the log-probabilities, torch.log(F.softmax(...)) in forward) rounds
differently in the last bit, and over 782 steps that grows to a 3-20% relative difference in the weights;
over 16 steps it stays near 1e-5, while weights scaled by 1.01 or nudged mid-loop land 1e-2 and more away
(bench/replay_tolerance.py prints both, per seed; README, "Recomputed training").
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from .budget import Budget
from .results import Message

# Relative difference allowed per tensor at a checkpoint: ||replayed - reported|| <= TOL * ||reported|| + ATOL.
# Over 16-batch stretches of the real MNIST epoch (bench/replay_tolerance.py, seeds 0-2), honest variants of
# the loop differed from the replay by at most 2.0e-4 in the weights and 8.0e-3 in the optimizer state
# (torch.log(F.softmax(...)) in forward, seed 2; usually 1e-5 and 1e-3 or less): the tolerance leaves them
# ten times that. Weights scaled by 1.01 after the loop differ by 1e-2, a nudge mid-loop or an optimizer of
# the loop's own by 1e-1 and more. Momentum and gradients get more room: they are sums of gradients, which
# rounding moves more, and they steer the weights only through the next stretch, which is checked in its
# own right.
TOLERANCE = {"param": 2e-3, "state": 1e-1, "grad": 1e-1}
ATOL = 1e-6
EVENTS = frozenset("ebfnzkKs")
DEADLINE_EVERY = 64  # events between looks at the clock


class JudgeTimeout(Exception):
    """The replay ran past the judge's time limit for this submission."""


@dataclass(frozen=True)
class Verdict:
    verified: bool
    message: Message | None = None  # why the trace is not believed, for the student; None when it is
    losses: tuple[tuple[int, float], ...] = ()  # (pass over the loader, loss) of each backward, as replayed
    worst: float = 0.0  # the largest relative difference of the weights at a checkpoint
    worst_state: float = 0.0  # ... and of the optimizer's state and the gradients
    stretches: int = 0  # how many stretches were replayed

    def last_pass_losses(self) -> list[float]:
        """The replayed losses of the last pass over the loader: what the loop's mean loss is made of."""
        last = max((p for p, _ in self.losses), default=None)
        return [loss for p, loss in self.losses if p == last]


@dataclass(frozen=True)
class Setup:
    """What the replay needs from the grading process: nothing here comes from the run."""

    net_class: type  # the lab's network (the answer key's)
    initial: dict  # its weights before training, as the grader computes them
    images: torch.Tensor  # the training images, normalised as the harness does, N x 1 x 28 x 28, on the CPU
    labels: torch.Tensor
    batch_size: int
    seed: int  # of the loader's shuffling: pass p draws torch.randperm(N) from seed + p
    optimizer: str
    lr: float
    momentum: float


def verify(setup: Setup, events: str, snapshots: list[tuple[int, dict | None]], final: dict | None,
           budget: Budget | None = None) -> Verdict:
    """Replay `events` stretch by stretch. `snapshots`: (event index, tensors or None when unreadable), in the
    order the run sent them; `final`: the weights the run sent back after training."""
    if not isinstance(events, str) or not set(events) <= EVENTS or (events and events[0] not in "e"):
        return _refused("トレースの形式", "the trace is not one the grader writes")
    if final is None:
        return _refused("学習後の重み", "the weights after training could not be read")
    points = [(0, _initial_state(setup))]
    for event, state in snapshots:
        if not isinstance(event, int) or not points[-1][0] <= event <= len(events) or state is None:
            return _refused("途中の重みの記録", "a snapshot of the weights is out of place or unreadable")
        points.append((event, state))
    points.append((len(events), {f"param/{k}": v for k, v in final.items()}))

    net = setup.net_class()
    params = dict(net.named_parameters())
    optimizer = _optimizer(setup, list(params.values()))
    cursor = _Cursor(setup, events)
    losses, worst, worst_state = [], 0.0, 0.0
    with _small_conv_kernels():
        for number, ((start, state), (end, target)) in enumerate(zip(points, points[1:])):
            if not _load(state, params, optimizer):
                return _refused("途中の重みの記録", "a snapshot of the weights does not fit the lab's network")
            problem = _run(events, start, end, net, params, optimizer, cursor, losses, budget)
            if problem:
                return _diverged(cursor.where(start), problem, events)
            ok, diff, diff_state = _matches(target, params, optimizer, final=number == len(points) - 2)
            worst, worst_state = max(worst, diff), max(worst_state, diff_state)
            if not ok:
                return replace(_diverged(cursor.where(start), None, events), worst=worst, worst_state=worst_state)
    return Verdict(True, None, tuple(losses), worst, worst_state, len(points) - 1)


def lecture_losses(setup: Setup, epochs: int, budget: Budget | None = None) -> list[float]:
    """The loss per batch of the lecture's loop (clear the gradients, forward, F.nll_loss, backward, step on
    every batch) from the grader's initial weights, on the batches a run draws: the answer key's curve under the
    same budget, which the feedback draws beside the student's replayed one."""
    batches = math.ceil(len(setup.labels) / setup.batch_size)
    events = ("e" + "bfks" * batches) * epochs
    net = setup.net_class()
    params = dict(net.named_parameters())
    optimizer = _optimizer(setup, list(params.values()))
    if not _load(_initial_state(setup), params, optimizer):
        raise ValueError("the initial weights do not fit the lab's network")
    losses: list[tuple[int, float]] = []
    with _small_conv_kernels():
        problem = _run(events, 0, len(events), net, params, optimizer, _Cursor(setup, events), losses, budget)
    if problem:  # pragma: no cover - the trace is ours
        raise AssertionError(problem)
    return [loss for _, loss in losses]


@contextlib.contextmanager
def _small_conv_kernels():
    """The convolution kernels the sandbox trains with on the CPU (harness.use_small_conv_kernels), for this
    replay only: the judge's own forward passes keep oneDNN, which is faster for them."""
    mkldnn = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    nnpack = torch.backends.nnpack.set_flags(False)[0]
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = mkldnn
        torch.backends.nnpack.set_flags(nnpack)


class _Cursor:
    """Which batch each event of the trace refers to: the loader's pass p shuffles with seed + p."""

    def __init__(self, setup: Setup, events: str):
        self.setup, self.events = setup, events
        self.orders: dict[int, torch.Tensor] = {}
        # the pass and the batch in it as of each event index (after that event)
        self.position, p, b = [], -1, -1
        for e in events:
            if e == "e":
                p, b = p + 1, -1
            elif e == "b":
                b += 1
            self.position.append((p, b))

    def batch(self, index: int):
        p, b = self.position[index]
        if b < 0:
            return None
        n, size = len(self.setup.labels), self.setup.batch_size
        if b * size >= n:
            return None
        if p not in self.orders:
            generator = torch.Generator().manual_seed(self.setup.seed + p)
            self.orders = {p: torch.randperm(n, generator=generator)}  # one pass at a time is all a trace needs
        index = self.orders[p][b * size:(b + 1) * size]
        return self.setup.images[index], self.setup.labels[index]

    def where(self, index: int) -> int:
        """Batches taken before event `index`, over all passes: how the report names a place in the loop."""
        return self.events[:index].count("b")


def _run(events, start, end, net, params, optimizer, cursor, losses, budget) -> str | None:
    output, batch = None, None
    for i in range(start, end):
        if (i - start) % DEADLINE_EVERY == 0 and budget is not None and budget.over():
            raise JudgeTimeout
        e = events[i]
        if e == "b":
            batch, output = cursor.batch(i), None
            if batch is None:
                return "a batch the loader never gives"
        elif e == "f":
            if batch is None:
                return "a forward pass before any batch"
            output = net(batch[0])
        elif e in "kK":
            if output is None:
                return "a backward pass without a forward pass on this batch"
            if e == "k":
                for p in params.values():
                    p.grad = None
            loss = F.nll_loss(output, batch[1])
            loss.backward(retain_graph=True)
            losses.append((cursor.position[i][0], loss.item()))
        elif e == "s":
            optimizer.step()
    return None


def _initial_state(setup: Setup) -> dict:
    return {f"param/{k}": v for k, v in setup.initial.items()}


def _optimizer(setup: Setup, params):
    if setup.optimizer == "adam":
        return torch.optim.Adam(params, lr=setup.lr)
    return torch.optim.SGD(params, lr=setup.lr, momentum=setup.momentum)


def _load(state: dict, params: dict, optimizer) -> bool:
    """Put a snapshot into the replay's net and optimizer. False when it does not fit."""
    optimizer.state.clear()
    with torch.no_grad():
        for name, p in params.items():
            value = state.get(f"param/{name}")
            if not isinstance(value, torch.Tensor) or value.shape != p.shape:
                return False
            p.copy_(value)
            grad = state.get(f"grad/{name}")
            p.grad = grad.clone().float() if isinstance(grad, torch.Tensor) and grad.shape == p.shape else None
    for key, value in state.items():
        if key.startswith("state/"):
            _, field, name = key.split("/", 2)
            p = params.get(name)
            if p is None or not isinstance(value, torch.Tensor) or (value.dim() and value.shape != p.shape):
                return False
            optimizer.state[p][field] = value.clone()
    return True


def _matches(target: dict, params: dict, optimizer, *, final: bool) -> tuple[bool, float, float]:
    """(whether the replay's state matches `target` within TOLERANCE, the largest relative difference of the
    weights, and of the rest)."""
    worst, worst_state, ok = 0.0, 0.0, True
    for name, p in params.items():
        checks = [("param", p.detach(), target.get(f"param/{name}"))]
        if not final:  # the weights sent back after training carry neither gradients nor optimizer state
            checks.append(("grad", p.grad, target.get(f"grad/{name}")))
            for field, value in optimizer.state.get(p, {}).items():
                if isinstance(value, torch.Tensor) and value.dim():
                    checks.append(("state", value, target.get(f"state/{field}/{name}")))
        for kind, mine, theirs in checks:
            same, diff = _close(mine, theirs, TOLERANCE[kind])
            if kind == "param":
                worst = max(worst, diff)
            else:
                worst_state = max(worst_state, diff)
            ok = ok and same
    return ok, worst, worst_state


def _close(mine, theirs, tolerance: float) -> tuple[bool, float]:
    if mine is None or theirs is None:
        # A gradient the replay has and the run did not send (or the reverse) only matters when it is not zero.
        other = theirs if mine is None else mine
        return other is None or not bool(other.any()), 0.0
    if not isinstance(theirs, torch.Tensor) or theirs.shape != mine.shape:
        return False, math.inf
    mine, theirs = mine.detach().float(), theirs.float()
    both_nan = torch.isnan(mine) & torch.isnan(theirs)  # a loop that diverged: the replay diverges alike
    diff = torch.where(both_nan, 0.0, mine - theirs)
    if not bool(torch.isfinite(diff).all()):
        return False, math.inf
    scale = float(torch.where(both_nan, 0.0, theirs).norm())
    distance = float(diff.norm())
    relative = distance / scale if scale > 0 else (0.0 if distance == 0 else math.inf)
    return distance <= tolerance * scale + ATOL, relative


def _refused(what_ja: str, what_en: str) -> Verdict:
    return Verdict(False, Message(f"{what_ja}を読み取れないため、学習ループの記録は採点に使えません。",
                                  f"{what_en}, so nothing the loop reported can be used."))


def _diverged(batch: int, problem: str | None, events: str) -> Verdict:
    steps = events.count("s")
    if steps == 0 and problem is None:
        hint = Message("与えられた optimizer の step() を呼ばずに重みが変わっています。引数の optimizer を使ってください。",
                       "the weights changed without a step() of the optimizer it was given: use the optimizer "
                       "passed to your training loop.")
    else:
        hint = Message("引数の optimizer と講義の損失 F.nll_loss（ミニバッチの平均）で、loader のミニバッチだけを使って"
                       "学習し、それ以外の方法で重みを変えないでください。",
                       "train with the optimizer passed in and the lecture's loss F.nll_loss (the mean over the "
                       "batch), on the batches the loader gives, and change the weights no other way.")
    detail_en = f" ({problem})" if problem else ""
    return Verdict(False, Message(
        f"学習後の重みは、ループが行った手順（ミニバッチ {batch} 個目以降）を採点側で再現した結果と一致しません。"
        f"そのため学習ループの記録は採点に使えません。{hint.ja}",
        f"the weights are not the result of the loop: replaying the steps it reported, from batch {batch} on, "
        f"does not lead to the weights it left{detail_en}, so nothing the loop reported counts. {hint.en}"))


def trace_of(setup: Setup, loop, *, net_class: type | None = None, threads: int = 1):
    """Run a TRUSTED loop `loop(model, loader, optimizer, device)` here, through the harness's own Spy and loader,
    as a sandboxed run would; return what the replay gets: (events, snapshots, final weights). For the tests
    and the benchmark that measure the replay on known loops; student code never runs in this process."""
    from . import harness
    from .observe import MAX_SNAPSHOTS, SNAPSHOT_EVERY, tensors

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with _small_conv_kernels():
            net = (net_class or setup.net_class)()
            net.load_state_dict(setup.initial)
            records = []
            spy = harness.Spy(torch, net, torch.device("cpu"), optimizer=_optimizer(setup, net.parameters()),
                              emit=lambda kind, **fields: records.append(fields), snapshot_every=SNAPSHOT_EVERY,
                              max_snapshots=MAX_SNAPSHOTS)
            loader = spy.loader(setup.images, setup.labels, batch_size=setup.batch_size, shuffle=True,
                                seed=setup.seed)
            loop(net, loader, spy.optimizer, torch.device("cpu"))
    finally:
        torch.set_num_threads(previous)
    snapshots = [(r["event"], tensors(r["state"])) for r in records]
    return spy.summary()["events"], snapshots, {k: v.detach().clone() for k, v in net.state_dict().items()}
