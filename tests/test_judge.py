"""The judge's trusted forward passes: computed once per set of weights for a whole batch, never mixed up."""

from __future__ import annotations

import torch

from autograder import judge, reference


def context(assignment, data, outputs):
    return judge.Context(assignment=assignment, sanitized=None, run=None, obs=None, reference=reference.load(assignment),
                         data=data, device=torch.device("cpu"), probes={}, seed=0, outputs=outputs)


def test_a_batch_computes_each_set_of_weights_once(assignment, monkeypatch):
    g = torch.Generator().manual_seed(0)
    images = torch.randn(300, 1, 28, 28, generator=g).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (300,), generator=g)
    data = judge.TrustedData(images, labels, images[:100], labels[:100])
    ref = reference.load(assignment)
    torch.manual_seed(0)
    first = ref.Net().state_dict()
    torch.manual_seed(1)
    second = ref.Net().state_dict()
    calls = []
    real = judge.trusted_outputs
    monkeypatch.setattr(judge, "trusted_outputs", lambda *a: calls.append(a[1]) or real(*a))

    shared = {}
    alice, bob = context(assignment, data, shared), context(assignment, data, shared)
    loss = alice.holdout_loss(first)
    assert bob.holdout_loss({k: v.clone() for k, v in first.items()}) == loss  # same bytes: no second pass
    assert len(calls) == 1
    other = bob.holdout_loss(second)
    assert len(calls) == 2 and other != loss
    assert alice.holdout_accuracy(second) == bob.holdout_accuracy(second)  # same weights and images as the loss
    assert len(calls) == 2
    alice.test_accuracy(second)  # the test images: a pass of their own
    assert len(calls) == 3
    # the values are those of a fresh context, and the shared store stays bounded
    assert context(assignment, data, {}).holdout_loss(second) == other
    for seed in range(judge.MAX_SHARED_OUTPUTS + 5):
        torch.manual_seed(100 + seed)
        alice.holdout_loss(ref.Net().state_dict())
    assert len(shared) == judge.MAX_SHARED_OUTPUTS
