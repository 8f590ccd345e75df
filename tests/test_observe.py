"""Reading what a run sent back: every record is bounded, and one that breaks a bound costs only its own kind."""

from __future__ import annotations

import json

from autograder import observe
from repo import COURSE

# What a run of the CNN lab may write: the engine's records and the lab's (its hidden/probes.py).
CNN = observe.schema(observe.load_probes(COURSE.lab("cnn_mnist")).RECORDS)


def lines(*records) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in records)


def test_a_record_nested_too_deeply_is_rejected_alone():
    deep = b'{"kind": "shapes", "function": "f", "results": ' + b"[" * 3000 + b"]" * 3000 + b"}"
    obs = observe.parse(lines({"kind": "start", "pid": 1}, deep, {"kind": "net", "ok": True}, {"kind": "done"}), CNN)
    assert obs.problems == []
    assert obs.rejected == {"shapes": "nested too deeply"}
    assert obs.first("net") == {"kind": "net", "ok": True} and obs.finished


def test_sizes_numbers_and_strings_are_bounded():
    huge_shape = {"kind": "net", "ok": True, "params": [{"name": "w", "shape": [10 ** 599] * 2500}]}
    big_int = {"kind": "device", "cases": {"x": {"type": 2 ** 60}}}
    long_text = {"kind": "evaluate", "ok": False, "error": {"message": "x" * 5000}}
    obs = observe.parse(lines(huge_shape, big_int, long_text), CNN)
    assert set(obs.rejected) == {"net", "device", "evaluate"} and obs.problems == []
    assert "2500 items" in obs.rejected["net"] and "too large" in obs.rejected["device"]
    # an integer of more than 4,300 digits is not even JSON to Python: what only a forger writes
    assert observe.parse(lines(b'{"kind": "net", "ok": true, "x": ' + b"9" * 5000 + b"}"), CNN).problems


def test_what_the_harness_never_writes_is_tampering():
    obs = observe.parse(lines({"kind": "done"}, {"kind": "done"}, {"kind": "mystery"}, b"not json"))
    assert len(obs.problems) == 3
    # a rejected record still counts towards its kind's maximum: a flood of them is surplus
    flood = observe.parse(lines(*[{"kind": "net", "ok": True, "x": "y" * 5000}] * 2), CNN)
    assert flood.rejected and any("surplus" in p for p in flood.problems)


def test_a_record_only_another_lab_declares_is_tampering():
    """The kinds a run may write are the engine's and its own lab's: the CNN lab's shapes record is unknown to
    the MLP lab's runs, and the MLP lab's linear record to the CNN lab's."""
    mlp = observe.schema(observe.load_probes(COURSE.lab("mlp_mnist")).RECORDS)
    shapes = {"kind": "shapes", "function": "f", "results": []}
    linear = {"kind": "linear", "results": []}
    assert observe.parse(lines(shapes), CNN).problems == [] and observe.parse(lines(linear), mlp).problems == []
    assert observe.parse(lines(shapes), mlp).problems == ["line 1: unknown record"]
    assert observe.parse(lines(linear), CNN).problems == ["line 1: unknown record"]
    assert observe.parse(lines(shapes)).problems  # the engine's own records alone


def test_a_missing_graded_function_is_a_record_not_tampering():
    """The harness writes a short training record when train_one_epoch is not defined: that is no forgery."""
    record = {"kind": "training", "ok": False, "error": {"type": "NameError", "message": "x", "where": None}}
    obs = observe.parse(lines(record))
    assert obs.problems == [] and obs.first("training") == record
