"""Inside the sandbox: the standard steps of a lab that trains a classifier (labkit/__init__.py).

A lab's runtime.py subclasses `ClassifierSteps`, names its network (`network(torch)`, the answer key's network
as the lecture defines it) and lists the steps it runs in STEPS. Every method here runs after the student's
cells, on the plan's probes; what it sees it writes with `emit`. Nothing here judges and nothing here is
secret: the expected answers stay with the grading process.

This module arrives as source with the plan (the lab's `runtime_modules`, after labkit.records) and imports
only the harness and labkit.records.
"""

from __future__ import annotations

import contextlib
import io
import random
import time

from harness import Spy, Timeout, encode, error_info, state_b64, tensors_b64, text, time_limit
from labkit.records import LAYER_KEYS

# The graded names of this contract (the notebook's function signatures).
GET_DEVICE, TRAIN, EVALUATE = "get_device", "train_one_epoch", "evaluate"
MAX_LAYERS = 32  # direct sub-modules reported of a student's network


class ClassifierSteps:
    """The object the lab's steps run on: `Probes(torch, namespace, plan, emit, data)` (harness.run_submission)."""

    def __init__(self, torch, namespace, plan, emit, data):
        self.torch, self.ns, self.plan, self.emit, self.data = torch, namespace, plan, emit, data
        self.device = torch.device(plan["device"])
        self.seconds = plan["call_seconds"]
        self.model = plan["model"]  # the network class's name in the notebook (assignment.toml: model)
        self.input_shape = tuple(plan["data"]["shape"])  # one image, e.g. (1, 28, 28)
        self.student_net = self.trained = None

    # --- what a lab supplies ------------------------------------------------------------------
    @staticmethod
    def network(torch):
        """The lab's network as the notebook's table defines it, built fresh (the answer key's, unseeded)."""
        raise NotImplementedError

    def build_network(self, record: dict):
        """The student's network, built. A lab may add what it saw while building to `record`."""
        return self.call(self.model)

    # --- helpers ------------------------------------------------------------------------------
    def call(self, name, *args, **kwargs):
        fn = self.ns.get(name)
        if not callable(fn):
            raise NameError(f"{name} is not defined")
        with time_limit(self.seconds):
            return fn(*args, **kwargs)

    def seed(self):
        seed = self.plan["seed"]
        random.seed(seed)
        self.torch.manual_seed(seed)
        with contextlib.suppress(ImportError):
            import numpy

            numpy.random.seed(seed)

    def probe_images(self, n: int, seed: int):
        return self.torch.randn(n, *self.input_shape, generator=self.torch.Generator().manual_seed(seed))

    def missing(self, kind: str, name: str) -> bool:
        """Report that the student's `name` is not defined, if so."""
        if callable(self.ns.get(name)):
            return False
        self.emit(kind, ok=False, error={"type": "NameError", "message": f"{name} is not defined", "where": None})
        return True

    # --- step: the device switch --------------------------------------------------------------
    def device_switch(self):
        torch = self.torch
        cases = {}
        for asked, cuda in ((False, False), (True, False), (True, True), (False, True)):
            printed = io.StringIO()
            real = torch.cuda.is_available
            # Both branches of the isgpu switch are checked on any machine, by telling the student's code
            # what a GPU machine (or a CPU one) would tell it.
            torch.cuda.is_available = lambda: cuda  # noqa: E731
            try:
                with contextlib.redirect_stdout(printed):
                    value = self.call(GET_DEVICE, asked)
                result = {"ok": True, "is_device": isinstance(value, torch.device),
                          "type": value.type if isinstance(value, torch.device) else text(value)}
            except BaseException as exc:
                result = {"ok": False, "error": error_info(exc)}
            finally:
                torch.cuda.is_available = real
            result["printed"] = bool(printed.getvalue().strip())
            cases[f"{asked}-{cuda}"] = result
        self.emit("device", cases=cases)

    # --- step: the network --------------------------------------------------------------------
    def net(self):
        torch = self.torch
        record = {}
        try:
            self.seed()
            if not callable(self.ns.get(self.model)):
                raise NameError(f"{self.model} is not defined")
            net = self.build_network(record)
            if not isinstance(net, torch.nn.Module):
                raise TypeError(f"{self.model}() returned {type(net).__name__}, not an nn.Module")
        except BaseException as exc:
            self.emit("net", ok=False, error=error_info(exc), **record)
            return
        self.student_net = net
        layers = {}
        # The layers the lab's network has, by attribute: what the checks compare with the answer key's.
        for attr, _ in list(self.network(torch).named_children())[:MAX_LAYERS]:
            layer = getattr(net, attr, None)
            info = {"class": type(layer).__name__ if layer is not None else None}
            for key in LAYER_KEYS:
                if hasattr(layer, key):
                    value = getattr(layer, key)
                    info[key] = list(value) if isinstance(value, tuple) else value
            layers[attr] = info
        params = [{"name": n, "shape": list(p.shape), "trainable": bool(p.requires_grad)}
                  for n, p in net.named_parameters()]
        probe = self.probe_images(self.plan["net_probe_batch"], self.plan["seed"] + 1)
        record.update(ok=True, layers=layers, params=params)
        try:
            with torch.no_grad(), time_limit(self.seconds):
                out = net(probe)
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"forward returned {type(out).__name__}, not a tensor")
            record["output"] = tensors_b64(torch, {"output": out.detach().float().cpu()})
        except BaseException as exc:
            record["forward_error"] = error_info(exc)
        record["weights"] = state_b64(torch, net)
        self.emit("net", **record)

    # --- step: the training loop --------------------------------------------------------------
    def holdout_split(self):
        images, labels = self.data
        holdout = self.plan["training"]["holdout"]
        cut = len(images) - holdout
        self.holdout = (images[cut:], labels[cut:])
        return images[:cut], labels[:cut]

    def training(self):
        torch = self.torch
        if self.missing("training", TRAIN):
            return
        train = self.holdout_split()
        net, substituted = self.trainable_net()
        # Every run starts from the same weights, which the grader computes itself (the lab's network, seeded):
        # its replay of the loop (autograder/replay.py) starts where this one did without believing this process.
        self.seed()
        net.load_state_dict(self.network(torch).state_dict())
        net.to(self.device)
        optimizer = self.make_optimizer(net)
        spy = Spy(torch, net, self.device, optimizer=optimizer, emit=self.emit,
                  snapshot_every=self.plan["snapshot_every"], max_snapshots=self.plan["max_snapshots"])
        loader = spy.loader(*train, batch_size=self.plan["training"]["batch_size"], shuffle=True,
                            seed=self.plan["seed"])
        self.seed()
        returned, error, started = [], None, time.perf_counter()
        try:
            with time_limit(self.plan["train_seconds"]):
                for _ in range(self.plan["training"]["epochs"]):
                    returned.append(encode(self.ns[TRAIN](net, loader, spy.optimizer, self.device)))
        except BaseException as exc:
            error = error_info(exc)
        self.emit("training", ok=error is None, error=error, returned=returned, substituted_net=substituted,
                  seconds=time.perf_counter() - started, **spy.summary())
        self.trained = net
        self.emit("weights", weights=state_b64(torch, net))

    def trainable_net(self):
        """The student's network when it computes the lab's, else the lab's: the loop is judged on its own."""
        net = self.student_net
        with contextlib.suppress(Timeout), time_limit(self.seconds):
            if net is not None and self.same_as_lab(net):
                return net, False
        self.seed()
        return self.network(self.torch), True

    def same_as_lab(self, net) -> bool:
        """Does the student's forward compute the lab's function of its own weights? (Checked again outside.)"""
        torch = self.torch
        try:
            lab = self.network(torch)
            lab.load_state_dict({k: v.detach().cpu() for k, v in net.state_dict().items()}, strict=True)
            x = self.probe_images(8, 7)
            with torch.no_grad():
                mine, theirs = net.cpu()(x), lab(x)
            return isinstance(mine, torch.Tensor) and mine.shape == theirs.shape and torch.allclose(
                mine.float(), theirs, atol=1e-5)
        except BaseException:
            return False

    def make_optimizer(self, net):
        cfg = self.plan["training"]
        if cfg["optimizer"] == "adam":
            return self.torch.optim.Adam(net.parameters(), lr=cfg["lr"])
        return self.torch.optim.SGD(net.parameters(), lr=cfg["lr"], momentum=cfg["momentum"])

    # --- step: evaluation ---------------------------------------------------------------------
    def evaluate(self):
        torch = self.torch
        if self.missing("evaluate", EVALUATE):
            return
        if self.trained is None:
            self.seed()
            self.trained = self.network(torch).to(self.device)
            self.holdout_split()
        net = self.trained
        net.train()  # evaluate() must switch to eval mode itself
        spy = Spy(torch, net, self.device)
        images, labels = (part[:self.plan["eval_images"]] for part in self.holdout)
        loader = spy.loader(images, labels, batch_size=self.plan["eval_batch_size"], shuffle=False, seed=0)
        try:
            with time_limit(self.plan["call_seconds"] * 4):
                value = encode(self.ns[EVALUATE](net, loader, self.device))
            error = None
        except BaseException as exc:
            value, error = None, error_info(exc)
        self.emit("evaluate", ok=error is None, error=error, returned=value, weights=state_b64(torch, net),
                  **spy.summary())


def warm_up(network, torch, device, plan: dict) -> None:
    """The kernels of one training step of the lab's network, before the student's turn."""
    generator = torch.Generator().manual_seed(0)
    net = network(torch).to(device)
    x = torch.randn(plan["training"]["batch_size"], *plan["data"]["shape"], generator=generator).to(device)
    torch.nn.functional.nll_loss(net(x), torch.zeros(len(x), dtype=torch.long, device=device)).backward()
