"""The judge's replay of a training loop (replay.py): honest loops written differently are believed, and loops
whose weights are not the result of their reported steps are not.

Each loop runs here, in the test process, on the real MNIST training images, through the harness's own Spy and
loader (what a sandboxed run does, minus the sandbox); the replay then sees only the records. The fairness
claims run the whole epoch (782 batches), where float rounding adds up; the cheats need only the first 96
batches to be caught.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from autograder import config, harness, judge, mnist, observe, reference, replay
from autograder.budget import Budget

from repo import COURSE

pytestmark = [pytest.mark.slow]

EPOCH = 50_000  # the training images the grader trains on (the rest is held out)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The grading process replays with one torch thread on the CPU (grade.Grader), as the sandbox trains."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def data(assignment, mnist_dir):
    train = mnist.load_split("train")
    return mnist.normalize(train.images[:EPOCH]).contiguous(), train.labels[:EPOCH].long()


@pytest.fixture(scope="module")
def ref(assignment):
    return reference.load(assignment)


def setup_for(assignment, ref, data, count):
    t = assignment.training
    return replay.Setup(net_class=ref.Net, initial=judge.initial_weights(ref.Net, t.seed), images=data[0][:count],
                        labels=data[1][:count], batch_size=t.batch_size, seed=t.seed, optimizer=t.optimizer,
                        lr=t.lr, momentum=t.momentum)


def run_loop(assignment, ref, data, loop, *, count=EPOCH, net_class=None):
    """Train with `loop(model, loader, optimizer, device)` as the harness would; return what the replay gets."""
    return replay.trace_of(setup_for(assignment, ref, data, count), loop, net_class=net_class)


def verdict(assignment, ref, data, loop, *, count=EPOCH, net_class=None):
    events, snapshots, final = run_loop(assignment, ref, data, loop, count=count, net_class=net_class)
    return replay.verify(setup_for(assignment, ref, data, count), events, snapshots, final)


def textbook(loss_fn=F.nll_loss, zero=lambda model, optimizer: optimizer.zero_grad(), after=None, during=None):
    """The answer key's loop, with a loss, a way to clear gradients, or something done to the model after the
    loop or before a batch (`during(i, model)`) of one's choosing (bench/replay_tolerance.py uses it too)."""
    def loop(model, loader, optimizer, device):
        model.train()
        for i, (images, labels) in enumerate(loader):
            if during:
                during(i, model)
            images, labels = images.to(device), labels.to(device)
            zero(model, optimizer)
            loss = loss_fn(model(images), labels)
            loss.backward()
            optimizer.step()
        if after:
            after(model)
    return loop


LAB = harness.load_lab(config.runtime_sources(COURSE.lab("cnn_mnist")))  # the lab's in-sandbox steps


class SoftmaxThenLog(type(LAB.LectureNet(torch))):
    """The lecture's network, with torch.log(F.softmax(...)) and .view: the same function, rounded otherwise."""

    def forward(self, x):
        x = self.pool(F.relu(self.conv2(F.relu(self.conv1(x)))))
        return torch.log(F.softmax(self.fc2(F.relu(self.fc1(x.view(-1, 12 * 12 * 3)))), dim=1))


# --- honest loops, the whole epoch ---------------------------------------------------------------------------

def test_the_answer_key_loop_replays_to_the_bit(assignment, ref, data):
    v = verdict(assignment, ref, data, textbook())
    assert v.verified, v.message
    assert v.worst == 0.0 and v.stretches >= 782 // observe.SNAPSHOT_EVERY
    assert len(v.last_pass_losses()) == 782


@pytest.mark.parametrize("name, loop, net_class", [
    ("cross_entropy on log-probabilities", textbook(F.cross_entropy), None),
    ("sum over the batch divided by its size", textbook(lambda o, y: F.nll_loss(o, y, reduction="sum") / len(y)), None),
    ("model.zero_grad() instead of the optimizer's", textbook(zero=lambda model, optimizer: model.zero_grad()), None),
    ("log(softmax) and view in forward", textbook(), SoftmaxThenLog),
], ids=lambda v: v if isinstance(v, str) else "")
def test_honest_loops_written_differently_are_believed(assignment, ref, data, name, loop, net_class):
    v = verdict(assignment, ref, data, loop, net_class=net_class)
    assert v.verified, (name, v.message)
    assert v.worst < replay.TOLERANCE["param"] / 10, (name, v.worst)  # far inside the tolerance


def test_a_loop_without_zero_grad_is_replayed_as_it_is(assignment, ref, data):
    """Its trace says every backward added to stale gradients (K); the replay does the same and agrees."""
    def loop(model, loader, optimizer, device):
        for images, labels in loader:
            F.nll_loss(model(images), labels).backward()
            optimizer.step()
    count = 96 * 64
    events, snapshots, final = run_loop(assignment, ref, data, loop, count=count)
    assert events.count("K") == 95 and events.count("k") == 1
    assert replay.verify(setup_for(assignment, ref, data, count), events, snapshots, final).verified


# --- loops whose weights are not their own result ------------------------------------------------------------

SHORT = 96 * 64  # six stretches


def test_weights_copied_in_after_the_loop_are_refused(assignment, ref, data):
    def better(model):  # "better" weights from elsewhere, a little off the loop's own
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1.01)
    v = verdict(assignment, ref, data, textbook(after=better), count=SHORT)
    assert not v.verified and "not the result of the loop" in v.message.en


def test_a_skipped_batch_is_replayed_as_it_is(assignment, ref, data):
    """What the loop did is believed when its weights agree: the step count then tells (checks_loop)."""
    def loop(model, loader, optimizer, device):
        for i, (images, labels) in enumerate(loader):
            if i == 40:
                continue
            optimizer.zero_grad()
            F.nll_loss(model(images), labels).backward()
            optimizer.step()
    events, snapshots, final = run_loop(assignment, ref, data, loop, count=SHORT)
    assert events.count("b") == 96 and events.count("s") == 95
    assert replay.verify(setup_for(assignment, ref, data, SHORT), events, snapshots, final).verified


def test_an_optimizer_of_its_own_is_refused_with_a_hint(assignment, ref, data):
    def loop(model, loader, optimizer, device):
        mine = torch.optim.SGD(model.parameters(), lr=0.02)
        for images, labels in loader:
            mine.zero_grad()
            F.nll_loss(model(images), labels).backward()
            mine.step()
    v = verdict(assignment, ref, data, loop, count=SHORT)
    assert not v.verified and "use the optimizer passed to your training loop" in v.message.en


def test_weights_swapped_in_mid_loop_are_refused(assignment, ref, data):
    def nudge(i, model):  # to the class priors, between two steps
        if i == 70:
            with torch.no_grad():
                model.fc2.bias.add_(0.05)
    v = verdict(assignment, ref, data, textbook(during=nudge), count=SHORT)
    assert not v.verified and "from batch 64 on" in v.message.en


def test_forged_snapshots_are_refused(assignment, ref, data):
    """Snapshots come from the student's process too: a momentum that would steer the next stretch, a missing
    snapshot, or one out of order breaks the chain."""
    events, snapshots, final = run_loop(assignment, ref, data, textbook(), count=SHORT)
    setup = setup_for(assignment, ref, data, SHORT)
    assert replay.verify(setup, events, snapshots, final).verified
    steered = [(e, {k: v * 1.5 if k.startswith("state/") else v for k, v in s.items()}) if i == 3 else (e, s)
               for i, (e, s) in enumerate(snapshots)]
    assert not replay.verify(setup, events, steered, final).verified
    assert not replay.verify(setup, events, snapshots[:2] + [(snapshots[2][0], None)] + snapshots[3:], final).verified
    assert not replay.verify(setup, events, [snapshots[2], snapshots[1]] + snapshots[3:], final).verified
    # a trace that hides steps the weights took, or claims one they never took
    assert not replay.verify(setup, events.replace("s", "", 5), snapshots, final).verified
    assert not replay.verify(setup, events.replace("fks", "fkss", 1), snapshots, final).verified
    assert not replay.verify(setup, "x" + events, snapshots, final).verified


def test_the_replay_stops_when_the_judges_budget_is_spent(assignment, ref, data):
    events, snapshots, final = run_loop(assignment, ref, data, textbook(), count=SHORT)
    spent = Budget(0.0)
    spent.start()
    with pytest.raises(replay.JudgeTimeout):
        replay.verify(setup_for(assignment, ref, data, SHORT), events, snapshots, final, budget=spent)
