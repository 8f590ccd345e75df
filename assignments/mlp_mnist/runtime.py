"""The mlp_mnist lab's part of a graded run, inside the sandbox (what a lab's runtime.py provides: README, "How
to add a lab"). The standard steps come from labkit.steps; this lab adds one, `linear`, and names its network.
Nothing here is secret: the probes arrive in the plan, the expected answers stay with the grading process."""

from __future__ import annotations

import labkit.steps as steps
from harness import error_info, tensors_b64
from labkit.steps import ClassifierSteps

LINEAR = "linear_forward"


class Probes(ClassifierSteps):
    """The standard steps (device, net, training, evaluate: labkit/steps.py) and this lab's own: linear."""

    @staticmethod
    def network(torch):
        return LabMLP(torch)

    # --- part: linear -------------------------------------------------------------------------
    def linear(self):
        """linear_forward on the plan's inputs, which are drawn here from the seeds the plan gives (the expected
        outputs are computed outside from the same seeds), and whether it called torch's own linear."""
        torch = self.torch
        functional, real = torch.nn.functional, torch.nn.functional.linear
        used = []

        def counted(*args, **kwargs):
            used.append(1)
            return real(*args, **kwargs)

        results = []
        for x_shape, w_shape, b_shape, seed in self.plan["probes"]["linear_probes"]:
            generator = torch.Generator().manual_seed(seed)
            x, w = torch.randn(x_shape, generator=generator), torch.randn(w_shape, generator=generator)
            b = torch.randn(b_shape, generator=generator) if b_shape is not None else None
            functional.linear = counted  # torch.nn.Linear calls it too: either is torch's layer, not the student's
            try:
                out = self.call(LINEAR, x, w, b)
                if not isinstance(out, torch.Tensor):
                    raise TypeError(f"{LINEAR} returned {type(out).__name__}, not a tensor")
                results.append({"ok": True, "output": tensors_b64(torch, {"y": out.detach().float().cpu()})})
            except BaseException as exc:
                results.append({"ok": False, "error": error_info(exc)})
            finally:
                functional.linear = real
        self.emit("linear", results=results, used_torch_linear=bool(used))


def LabMLP(torch):
    """The lab's network as the notebook's table describes it (the answer key's MLP, tested equal to it); used
    for the starting weights and when the student's is unusable."""
    nn, F = torch.nn, torch.nn.functional

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(28 * 28, 128), nn.Linear(128, 10)

        def forward(self, x):
            return F.log_softmax(self.fc2(F.relu(self.fc1(x.flatten(1)))), dim=1)

    return MLP()


# Taken when the engine loads this module, before any student code runs: replacing them afterwards changes
# nothing the run does.
STEPS = (Probes.linear, Probes.device_switch, Probes.net, Probes.training, Probes.evaluate)


def warm_up(torch, device, plan: dict) -> None:
    """The kernels of one training step of the lab's network, before the student's turn."""
    steps.warm_up(LabMLP, torch, device, plan)
