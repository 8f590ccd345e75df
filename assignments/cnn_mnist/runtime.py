"""The cnn_mnist lab's part of a graded run, inside the sandbox: the harness (autograder/harness.py, the
engine's) runs the student's cells, then the steps below call the student's functions on the plan's probes
and write what they saw. Nothing here is secret: the hidden inputs arrive in the plan, the checks and the
expected answers stay with the grading process (hidden/).

The engine loads this file as the module `lab` (harness.load_lab), after the modules its config lists in
runtime_modules (labkit.steps: the steps every lab of the training contract shares), and asks it for:
- STEPS: the probes' methods, run in order after the cells (each one's failure costs only itself);
- Probes(torch, namespace, plan, emit, data): the object they run on;
- warm_up(torch, device, plan): the work every run needs before the student's turn (a fork server does it once).
"""

from __future__ import annotations

import labkit.steps as steps
from harness import encode, error_info
from labkit.steps import ClassifierSteps


class Probes(ClassifierSteps):
    """The standard steps (device, net, training, evaluate: labkit/steps.py) and this lab's own: the shapes."""

    @staticmethod
    def network(torch):
        return LectureNet(torch)

    # --- part: shapes -------------------------------------------------------------------------
    def shapes(self):
        for name, calls in self.plan["probes"]["shape_probes"].items():
            results = []
            for args, kwargs in calls:
                args = [tuple(a) if isinstance(a, list) else a for a in args]
                kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
                try:
                    results.append({"ok": True, "value": encode(self.call(name, *args, **kwargs))})
                except BaseException as exc:
                    results.append({"ok": False, "error": error_info(exc)})
            self.emit("shapes", function=name, results=results)

    # --- part: net (the standard step, with the shape functions answered by torch while Net() is built) ---
    def build_network(self, record: dict):
        """The student's Net, built while their shape functions answer through torch and are counted: the net
        is judged on its own, and a wrong shape function loses its points once, in its own part."""
        torch = self.torch
        calls = record.setdefault("shape_calls", [])
        saved = {name: self.ns.get(name) for name in SHAPE_FUNCTIONS}

        def oracle(name):
            def answer(size, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
                calls.append(name)
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

        for name in saved:
            self.ns[name] = oracle(name)
        try:
            return self.call(self.model)
        finally:
            self.ns.update(saved)


SHAPE_FUNCTIONS = ("conv2d_output_size", "pool2d_output_size")


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
    steps.warm_up(LectureNet, torch, device, plan)
