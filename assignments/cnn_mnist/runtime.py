"""The cnn_mnist lab's part of a graded run, inside the sandbox: the harness (autograder/harness.py, the
engine's) runs the student's cells, then the steps below call the student's functions on the plan's probes
and write what they saw. Nothing here is secret: the hidden inputs arrive in the plan, the checks and the
expected answers stay with the grading process (hidden/).

The engine loads this file as the module `lab` (harness.load_lab) and asks it for:
- STEPS: the probes' methods, run in order after the cells (each one's failure costs only itself);
- Probes(torch, namespace, plan, emit, data): the object they run on;
- warm_up(torch, device, plan): the work every run needs before the student's turn (a fork server does it once).
"""

from __future__ import annotations

import contextlib
import io
import random
import time

from harness import Spy, Timeout, encode, error_info, state_b64, tensors_b64, text, time_limit


class Probes:
    def __init__(self, torch, namespace, plan, emit, data):
        self.torch, self.ns, self.plan, self.emit, self.data = torch, namespace, plan, emit, data
        self.device = torch.device(plan["device"])
        self.seconds = plan["call_seconds"]

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

    # --- part: shapes -------------------------------------------------------------------------
    def shapes(self):
        for name, calls in self.plan["shape_probes"].items():
            results = []
            for args, kwargs in calls:
                args = [tuple(a) if isinstance(a, list) else a for a in args]
                kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
                try:
                    results.append({"ok": True, "value": encode(self.call(name, *args, **kwargs))})
                except BaseException as exc:
                    results.append({"ok": False, "error": error_info(exc)})
            self.emit("shapes", function=name, results=results)

    # --- part: device -------------------------------------------------------------------------
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
                    value = self.call("get_device", asked)
                result = {"ok": True, "is_device": isinstance(value, torch.device),
                          "type": value.type if isinstance(value, torch.device) else text(value)}
            except BaseException as exc:
                result = {"ok": False, "error": error_info(exc)}
            finally:
                torch.cuda.is_available = real
            result["printed"] = bool(printed.getvalue().strip())
            cases[f"{asked}-{cuda}"] = result
        self.emit("device", cases=cases)

    # --- part: net ----------------------------------------------------------------------------
    def build_net(self, record_calls):
        """The student's Net, built while their shape functions answer through torch and are counted."""
        torch = self.torch
        saved = {name: self.ns.get(name) for name in ("conv2d_output_size", "pool2d_output_size")}

        def oracle(name):
            def answer(size, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
                record_calls.append(name)
                pair = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v)  # noqa: E731
                # An empty batch: torch computes (and checks) the output size without touching any pixel, and
                # without the meta device's Python kernels (half a second to import).
                x = torch.empty((0, 1, *pair(size)))
                if name == "conv2d_output_size":
                    w = torch.empty((1, 1, *pair(kernel_size)))
                    y = torch.nn.functional.conv2d(x, w, stride=stride or 1, padding=padding, dilation=dilation)
                else:
                    y = torch.nn.functional.max_pool2d(x, kernel_size, stride=stride, padding=padding,
                                                       dilation=dilation, ceil_mode=ceil_mode)
                h, w_ = y.shape[-2:]
                return (h, w_) if isinstance(size, (tuple, list)) else h

            return answer

        # The net is judged on its own: a wrong shape function loses its points once, in its own part.
        for name in saved:
            self.ns[name] = oracle(name)
        try:
            self.seed()
            if not callable(self.ns.get("Net")):
                raise NameError("Net is not defined")
            with time_limit(self.seconds):
                return self.ns["Net"]()
        finally:
            self.ns.update(saved)

    def net(self):
        torch = self.torch
        calls = []
        try:
            net = self.build_net(calls)
            if not isinstance(net, torch.nn.Module):
                raise TypeError(f"Net() returned {type(net).__name__}, not an nn.Module")
        except BaseException as exc:
            self.emit("net", ok=False, error=error_info(exc), shape_calls=calls)
            self.student_net = None
            return
        self.student_net = net
        layers = {}
        for attr in ("conv1", "conv2", "pool", "fc1", "fc2"):
            layer = getattr(net, attr, None)
            info = {"class": type(layer).__name__ if layer is not None else None}
            for key in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
                        "in_features", "out_features", "ceil_mode"):
                if hasattr(layer, key):
                    value = getattr(layer, key)
                    info[key] = list(value) if isinstance(value, tuple) else value
            layers[attr] = info
        params = [{"name": n, "shape": list(p.shape), "trainable": bool(p.requires_grad)}
                  for n, p in net.named_parameters()]
        generator = torch.Generator().manual_seed(self.plan["seed"] + 1)
        probe = torch.randn(self.plan["net_probe_batch"], 1, 28, 28, generator=generator)
        record = {"ok": True, "shape_calls": calls, "layers": layers, "params": params}
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

    # --- part: training -----------------------------------------------------------------------
    def training(self):
        torch = self.torch
        self.trained = None
        if not callable(self.ns.get("train_one_epoch")):
            self.emit("training", ok=False, error={"type": "NameError", "message": "train_one_epoch is not defined",
                                                   "where": None})
            return
        images, labels = self.data
        holdout = self.plan["training"]["holdout"]
        self.holdout = (images[len(images) - holdout:], labels[len(labels) - holdout:])
        train = (images[:len(images) - holdout], labels[:len(labels) - holdout])

        net, substituted = self.trainable_net()
        # Every run starts from the same weights, which the grader computes itself (the lecture's Net, seeded):
        # its replay of the loop (replay.py) starts where this one did without having to believe this process.
        self.seed()
        net.load_state_dict(LectureNet(torch).state_dict())
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
                    returned.append(encode(self.ns["train_one_epoch"](net, loader, spy.optimizer, self.device)))
        except BaseException as exc:
            error = error_info(exc)
        self.emit("training", ok=error is None, error=error, returned=returned, substituted_net=substituted,
                  seconds=time.perf_counter() - started, **spy.summary())
        self.trained = net
        self.emit("weights", weights=state_b64(torch, net))
    def trainable_net(self):
        """The student's Net when it is the lecture's, else the lecture's: the loop is judged on its own."""
        net = getattr(self, "student_net", None)
        with contextlib.suppress(Timeout), time_limit(self.seconds):
            if net is not None and same_as_lecture(self.torch, net):
                return net, False
        self.seed()
        return LectureNet(self.torch), True

    def make_optimizer(self, net):
        cfg = self.plan["training"]
        if cfg["optimizer"] == "adam":
            return self.torch.optim.Adam(net.parameters(), lr=cfg["lr"])
        return self.torch.optim.SGD(net.parameters(), lr=cfg["lr"], momentum=cfg["momentum"])

    # --- part: evaluate -----------------------------------------------------------------------
    def evaluate(self):
        torch = self.torch
        if not callable(self.ns.get("evaluate")):
            self.emit("evaluate", ok=False, error={"type": "NameError", "message": "evaluate is not defined",
                                                   "where": None})
            return
        if getattr(self, "trained", None) is None:
            self.seed()
            self.trained = LectureNet(torch).to(self.device)
            images, labels = self.data
            holdout = self.plan["training"]["holdout"]
            self.holdout = (images[len(images) - holdout:], labels[len(labels) - holdout:])
        net = self.trained
        net.train()  # evaluate() must switch to eval mode itself
        spy = Spy(torch, net, self.device)
        images, labels = (part[:self.plan["eval_images"]] for part in self.holdout)
        loader = spy.loader(images, labels, batch_size=self.plan["eval_batch_size"], shuffle=False, seed=0)
        try:
            with time_limit(self.plan["call_seconds"] * 4):
                value = encode(self.ns["evaluate"](net, loader, self.device))
            error = None
        except BaseException as exc:
            value, error = None, error_info(exc)
        self.emit("evaluate", ok=error is None, error=error, returned=value, weights=state_b64(torch, net),
                  **spy.summary())


def same_as_lecture(torch, net) -> bool:
    """Does the student's forward compute the lecture's function of its own weights? (Checked again outside.)"""
    try:
        lecture = LectureNet(torch)
        lecture.load_state_dict({k: v.detach().cpu() for k, v in net.state_dict().items()}, strict=True)
        x = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(7))
        with torch.no_grad():
            mine = net.cpu()(x)
            return isinstance(mine, torch.Tensor) and mine.shape == (8, 10) and torch.allclose(
                mine.float(), lecture(x), atol=1e-5)
    except BaseException:
        return False


def LectureNet(torch):
    """The lecture's network as the notebook's table describes it; used only when the student's is unusable."""
    nn, F = torch.nn, torch.nn.functional

    class Lecture(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2, self.pool = nn.Conv2d(1, 2, 3), nn.Conv2d(2, 3, 3), nn.MaxPool2d(2, 2)
            self.fc1, self.fc2 = nn.Linear(432, 16), nn.Linear(16, 10)

        def forward(self, x):
            x = self.pool(F.relu(self.conv2(F.relu(self.conv1(x)))))
            return F.log_softmax(self.fc2(F.relu(self.fc1(x.flatten(1)))), dim=1)

    return Lecture()


# Taken when the engine loads this module, before any student code runs: replacing them afterwards changes
# nothing the run does.
STEPS = (Probes.shapes, Probes.device_switch, Probes.net, Probes.training, Probes.evaluate)


def warm_up(torch, device, plan: dict) -> None:
    """The kernels of one training step of the lecture's network, before the student's turn."""
    generator = torch.Generator().manual_seed(0)
    net = LectureNet(torch).to(device)
    x = torch.randn(plan["training"]["batch_size"], 1, 28, 28, generator=generator).to(device)
    torch.nn.functional.nll_loss(net(x), torch.zeros(len(x), dtype=torch.long, device=device)).backward()
