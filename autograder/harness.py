"""The observer that runs inside the sandbox, next to the student's code. It judges nothing.

Run as ``python -I harness.py PLAN.json``. It executes the student's cells, then the lab's steps (the
lab's runtime.py, which arrives in the plan and is loaded as the module `lab`: load_lab) call the student's
functions on the plan's fixed probes; everything seen goes to file descriptor 3 as JSON lines, one record
at a time, so that a submission that crashes half-way still leaves everything observed before the crash.
This file names no lab: it is the channel, the time limits, the cells, and the instruments a lab's steps
use (encode, Spy, state_b64). Tensors leave as
safetensors bytes (base64 in the record). Nothing here is secret: the expected answers and the test
labels stay with the grading process. Only the standard library, torch and safetensors are imported.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import signal
import sys
import time
import traceback
import types

CHANNEL = 3
MAX_TEXT = 300  # characters of any student-made text kept in a record


def main(plan_path: str) -> None:
    with open(plan_path, encoding="utf-8") as f:
        plan = json.load(f)
    emit = open_channel()
    emit("start", pid=os.getpid())
    torch, data = prepare(plan)
    emit("ready")
    wait_for_turn()
    emit.restart_clock()
    run_submission(torch, plan, emit, data)


ADDED_FLOOR = 2.0  # seconds every added cell gets, even after the added cells' shared time is spent


def open_channel() -> Emitter:
    # Keep our own copy of the channel; the student's code can still find fd 3, but never our closure.
    out = os.fdopen(os.dup(CHANNEL), "w", encoding="utf-8", buffering=1)
    os.close(CHANNEL)
    return Emitter(out)


def prepare(plan: dict):
    """What every run needs before the student's turn: (torch, the training data). A fork server (zygote.py)
    does this once and forks each submission from here."""
    import torch

    torch.set_num_threads(plan["threads"])
    # The same notebook graded twice on one device must score the same: no nondeterministic kernels.
    # (The public torch.use_deterministic_algorithms also imports Inductor's config, 1.3 s here, only to set
    # the same flag for torch.compile; the sandbox's TORCHINDUCTOR_DETERMINISTIC=1 does that if it is used.)
    torch._C._set_deterministic_algorithms(True, warn_only=True)
    if plan["device"] == "cpu":
        use_small_conv_kernels(torch)
    else:
        exact_float32(torch)
    return torch, warm_up(torch, plan)


def exact_float32(torch) -> None:
    """On a GPU, float32 arithmetic as on the CPU: no TF32. Since Ampere, cuDNN's convolutions round their inputs
    to TF32's 10-bit mantissa by default (matrix products no longer do). The grader replays the steps a run
    reported on the CPU (replay.py) and compares the same notebook graded with --device cpu and cuda; a
    student's Colab T4 has no TF32 either. The grader's own forward passes on the GPU (judge.py) do the same."""
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


def use_small_conv_kernels(torch) -> None:
    """Convolve on the CPU with torch's own kernels (im2col and one matrix product) instead of oneDNN's and
    NNPACK's. Training runs the lab's network; for narrow convolutions (the CNN lab's have 2 and 3 channels)
    oneDNN pads channels to a block of 16 and reorders every activation twice a step, so its training step
    takes about twice as long (bench/grade_vs_nbgrader.py prints the floor both ways). Both are deterministic. A student's code may switch them back on; that only slows its own run. Wider
    networks (32 channels and up) are faster with oneDNN: the grader's own forward passes (judge.py) keep it."""
    torch.backends.mkldnn.enabled = False
    torch.backends.nnpack.set_flags(False)


def load_lab(lab: dict):
    """The lab's runtime (its runtime.py, from the plan) as the module `lab`: its STEPS, Probes, warm_up. The
    modules it imports from the kit (its config's runtime_modules) arrive as source beside it and are loaded
    first, under their own names."""
    if "lab" in sys.modules:
        return sys.modules["lab"]  # a fork server loaded it once; every run forked from it shares it
    sys.modules.setdefault("harness", sys.modules[__name__])  # the lab's `from harness import ...`: this module
    for name, source in lab.get("modules", {}).items():
        _load_module(name, source)
    return _load_module("lab", lab["runtime"])


def _load_module(name: str, source: str):
    parent, _, child = name.rpartition(".")
    if parent and parent not in sys.modules:
        package = _load_module(parent, "")
        package.__path__ = []  # a package, so that `import parent.child` looks no further
    module = types.ModuleType(name)
    module.__file__ = f"<{name}>"
    sys.modules[name] = module
    if parent:
        setattr(sys.modules[parent], child, module)
    exec(compile(source, f"<{name}>", "exec"), module.__dict__)
    return module


def run_submission(torch, plan: dict, emit: Emitter, data) -> None:
    """The student's cells, then the lab's steps; never returns."""
    lab = load_lab(plan["lab"])
    namespace = {"__name__": "submission"}
    shell = Shell(namespace)
    # What a notebook has without importing it: IPython's get_ipython() (magics arrive translated by
    # sanitize.py) and display().
    namespace.update(get_ipython=lambda: shell, display=lambda *args, **kwargs: None)
    # Taken before any student code runs, so that replacing them afterwards changes nothing we do.
    steps, make_probes = tuple(lab.STEPS), lab.Probes
    # The cells a student added share one cell's time between them (at least ADDED_FLOOR each, plenty for
    # definitions): however many slow experiments a notebook holds, the graded steps keep their time.
    added_left = plan["cell_seconds"]
    for cell in plan["cells"]:
        shell.cell = cell["id"]
        seconds = max(min(plan["cell_seconds"], added_left), ADDED_FLOOR) if cell.get("added") else plan["cell_seconds"]
        started = time.perf_counter()
        emit("cell", **run_cell(cell, namespace, seconds))
        if cell.get("added"):
            added_left -= time.perf_counter() - started

    probes = make_probes(torch, namespace, plan, emit, data)
    for step in steps:
        try:
            step(probes)
        except BaseException as exc:  # one probe upset by odd student objects must not cost the others
            emit("step_error", step=step.__name__, error=error_info(exc))
    emit("done", **({"gpu_peak_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)}
                    if probes.device.type == "cuda" else {}))
    emit.flush()
    # Everything is reported: skip the interpreter's teardown (torch's takes a few tenths of a second) and
    # whatever exit handlers the student's code registered.
    os._exit(0)


def warm_up(torch, plan: dict):
    """Before the student's turn, the work every run needs and no student code can influence: torch's lazy
    imports (the first optimizer imports torch._dynamo, 1.5 s here), the kernels of a training step,
    and the training data, normalised, on the grading device."""
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1, momentum=0.9).step()
    from safetensors.torch import save  # noqa: F401 - imported for state_b64, later

    with contextlib.suppress(ImportError):
        import numpy  # noqa: F401 - Probes.seed seeds it
    device = torch.device(plan["device"])
    if device.type == "cuda":
        # Several sandboxes share one GPU: each gets its share of the memory (the caching allocator refuses
        # more with an out-of-memory error, which the report shows like any other error).
        torch.cuda.set_per_process_memory_fraction(plan["gpu_memory_fraction"])
    data = load_training_data(torch, plan["data"], device)
    load_lab(plan["lab"]).warm_up(torch, device, plan)
    return data


def wait_for_turn() -> None:
    """Block until the grader writes a byte to stdin (at once when stdin is empty). Until then the sandbox
    runs at nice +19; the grader moves it back to +10 as it writes (see sandbox/__init__.py, "Turns")."""
    os.read(0, 1)


def load_training_data(torch, data: dict, device):
    """The training set, from the raw uint8 files the grader mounts, normalised as the notebook does."""
    root = os.environ.get("SANDBOX_ROOT", "")  # "" in the sandbox; the stand-in root when run without one
    pixels = math.prod(data["shape"])
    images = torch.from_file(root + data["images"], size=data["count"] * pixels, dtype=torch.uint8)
    labels = torch.from_file(root + data["labels"], size=data["count"], dtype=torch.uint8)
    images = images.view(-1, *data["shape"]).float().div_(255).sub_(data["mean"]).div_(data["std"])
    return images.to(device), labels.long().to(device)


class Emitter:
    def __init__(self, out):
        self._out, self._dumps, self._write = out, json.dumps, out.write
        self._clock, self._started = time.perf_counter, time.perf_counter()

    def restart_clock(self) -> None:
        self._started = self._clock()

    def flush(self) -> None:
        self._out.flush()

    def __call__(self, kind: str, **fields) -> None:
        # "t": seconds since the harness started, so that a slow grading can be traced to its step.
        record = {"kind": kind, **fields, "t": round(self._clock() - self._started, 3)}
        self._write(self._dumps(record, allow_nan=True) + "\n")


def text(value) -> str:
    s = value if isinstance(value, str) else repr(value)
    return s if len(s) <= MAX_TEXT else s[:MAX_TEXT] + "…"


def error_info(exc: BaseException) -> dict:
    """Type, message and the line in the student's cell where it happened (never our own frames)."""
    line = None
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        if frame.f_code.co_filename.startswith("<cell "):
            line = [frame.f_code.co_filename[6:-1], lineno]
    return {"type": type(exc).__name__, "message": text(str(exc)), "where": line}


class Timeout(BaseException):
    """Raised by the alarm; a BaseException so that `except Exception` in student code does not swallow it."""


@contextlib.contextmanager
def time_limit(seconds: float):
    def alarm(signum, frame):
        raise Timeout(f"took longer than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Shell:
    """The part of IPython a graded run offers: sanitize.py has translated each magic with IPython's own
    transformer into a call on this object. Timing magics run their code; everything else (%matplotlib,
    %pip, !commands, %%bash, ...) does nothing when grading, and sanitize.py has noted what was skipped."""

    RUNS_ITS_CODE = {"time", "timeit", "capture"}

    def __init__(self, namespace: dict):
        self.namespace, self.cell = namespace, "?"

    def run_line_magic(self, name, line, *args, **kwargs):
        if name in self.RUNS_ITS_CODE and isinstance(line, str):
            exec(compile(line, f"<cell {self.cell}>", "exec"), self.namespace)

    def run_cell_magic(self, name, line, cell, *args, **kwargs):
        if name in self.RUNS_ITS_CODE and isinstance(cell, str):
            # One line down: the cell's first line was the magic, so errors name the lines the student sees.
            exec(compile("\n" + cell, f"<cell {self.cell}>", "exec"), self.namespace)

    def system(self, *args, **kwargs):
        return None

    def getoutput(self, *args, **kwargs):
        return []

    def __getattr__(self, name):  # any other IPython API a notebook might touch: a harmless no-op
        return lambda *args, **kwargs: None


def run_cell(cell: dict, namespace: dict, seconds: float) -> dict:
    started = time.perf_counter()
    try:
        code = compile(cell["source"], f"<cell {cell['id']}>", "exec")
    except SyntaxError as exc:
        return {"id": cell["id"], "ok": False, "error": {"type": "SyntaxError", "message": text(exc.msg),
                                                         "where": [cell["id"], exc.lineno]}}
    except Exception as exc:  # noqa: BLE001 - ValueError (a NUL), UnicodeError, ...: this cell's failure only
        return {"id": cell["id"], "ok": False, "error": {"type": type(exc).__name__, "message": text(str(exc)),
                                                         "where": [cell["id"], None]}}
    try:
        with time_limit(seconds):
            exec(code, namespace)
    except BaseException as exc:  # SystemExit and KeyboardInterrupt at import are the student's too
        return {"id": cell["id"], "ok": False, "error": error_info(exc)}
    return {"id": cell["id"], "ok": True, "seconds": time.perf_counter() - started}


MAX_DEPTH = 3  # nesting kept of a returned tuple or list: a pair of pairs is plenty for a size


def encode(value, depth: int = 0):
    """A student's return value as data: the type is kept, so 26 and "26" and 26.0 stay different. Nesting and
    length are bounded (deeper or longer values become "other"), so no return value makes a record the grader
    can not read back."""
    if isinstance(value, bool):
        return {"type": "bool", "value": value}
    if isinstance(value, int):
        return {"type": "int", "value": value}
    if isinstance(value, float):
        return {"type": "float", "value": value if math.isfinite(value) else repr(value)}
    if isinstance(value, (tuple, list)) and len(value) <= 16 and depth < MAX_DEPTH:
        return {"type": type(value).__name__, "value": [encode(v, depth + 1) for v in value]}
    out = {"type": "other", "repr": text(value), "class": type(value).__name__}
    held = scalar(value)
    if held is not None:
        out["number"] = held
    return out


def scalar(value):
    """The number in a one-element tensor or a numpy scalar (judge.number: a value check judges it whatever
    its type); None for anything else. Only these exact types: a student's own class is not asked."""
    torch, numpy = sys.modules.get("torch"), sys.modules.get("numpy")
    try:
        if torch is not None and type(value) in (torch.Tensor, torch.nn.Parameter) and value.numel() == 1:
            held = value.item()
        elif numpy is not None and isinstance(value, numpy.generic) and type(value).__module__ == "numpy":
            held = value.item()
        else:
            return None
    except Exception:  # noqa: BLE001 - a value that will not say its number is judged as having none
        return None
    if isinstance(held, bool) or not isinstance(held, (int, float)):
        return None
    return held if math.isfinite(held) else repr(held)


def state_b64(torch, net) -> str | None:
    try:
        return tensors_b64(torch, {k: v.detach().float().cpu() for k, v in net.state_dict().items()
                                   if isinstance(v, torch.Tensor)})
    except BaseException:
        return None


def tensors_b64(torch, tensors: dict) -> str:
    from safetensors.torch import save

    return base64.b64encode(save({k: v.contiguous() for k, v in tensors.items()})).decode("ascii")


class Spy:
    """Records what the student's loop does, as a trace the grader replays (replay.py): one letter an event.

    e: a pass over the loader began; b: a batch was taken; f / n: a forward pass with / without gradients;
    z: zero_grad (the optimizer's or the model's); k / K: a backward pass into cleared / stale gradients (seen
    on the gradients themselves, however they were cleared); s: optimizer.step(). Every `snapshot_every`
    batches the loader also sends the weights, the optimizer's state and the gradients, so that the replay
    compares short stretches and float rounding never adds up over a whole epoch. Only the replay makes any of
    this believed: a trace that does not lead to the weights the run sent back counts for nothing.
    """

    def __init__(self, torch, net, device, *, optimizer=None, emit=None, snapshot_every=0, max_snapshots=0):
        self.torch, self.net, self.device = torch, net, device
        self.events = []
        self.moves = {"images": 0, "labels": 0, "wrong_device": 0}
        self.forwards = {"count": 0, "unmoved": 0, "model_elsewhere": 0, "train_mode": 0, "grad_enabled": 0}
        self.emit, self.every, self.snapshots_left = emit, snapshot_every, max_snapshots
        self.params = list(net.named_parameters())
        spy = self

        class Unmoved(torch.Tensor):
            """A batch as the loader hands it out: moving it (.to / .cuda) gives a plain tensor, and is counted."""

            role = None

            def to(self, *args, **kwargs):
                spy.moved(self.role, args, kwargs)
                return torch.Tensor.to(self.as_subclass(torch.Tensor), *args, **kwargs)

            def cuda(self, *args, **kwargs):
                spy.moved(self.role, ("cuda",), {})
                return torch.Tensor.cuda(self.as_subclass(torch.Tensor), *args, **kwargs)

        self.Unmoved = Unmoved
        net.register_forward_pre_hook(self.before_forward)
        zero_grad = net.zero_grad

        def counted_module_zero_grad(*args, **kwargs):
            self.events.append("z")
            return zero_grad(*args, **kwargs)

        net.zero_grad = counted_module_zero_grad
        if self.params:
            self.watched = self.params[0][1]  # one parameter is enough to see each backward pass
            self.watched.register_hook(self.on_grad)
        self.optimizer = self.wrap(optimizer) if optimizer is not None else None

    def moved(self, role, args, kwargs):
        target = kwargs.get("device", args[0] if args else None)
        if role is not None:
            self.moves[role] += 1
        try:
            ok = target is not None and self.torch.device(target).type == self.device.type
        except (TypeError, RuntimeError):
            ok = False
        if not ok:
            self.moves["wrong_device"] += 1

    def before_forward(self, module, inputs):
        grad = bool(self.torch.is_grad_enabled())
        self.events.append("f" if grad else "n")
        self.forwards["count"] += 1
        x = inputs[0] if inputs else None
        if isinstance(x, self.Unmoved) or (isinstance(x, self.torch.Tensor) and x.device.type != self.device.type):
            self.forwards["unmoved"] += 1
        weight = next(module.parameters(), None)
        if weight is not None and weight.device.type != self.device.type:
            self.forwards["model_elsewhere"] += 1
        self.forwards["train_mode"] += bool(module.training)
        self.forwards["grad_enabled"] += grad

    def on_grad(self, grad):
        # Runs before the new gradient is added to .grad: what is there now is what the loop left.
        old = self.watched.grad
        self.events.append("k" if old is None or not bool(old.any()) else "K")

    def wrap(self, optimizer):
        zero_grad, step = optimizer.zero_grad, optimizer.step

        def counted_zero_grad(*args, **kwargs):
            self.events.append("z")
            return zero_grad(*args, **kwargs)

        def counted_step(*args, **kwargs):
            self.events.append("s")
            return step(*args, **kwargs)

        optimizer.zero_grad, optimizer.step = counted_zero_grad, counted_step
        self.state_of = optimizer.state
        return optimizer

    def snapshot(self):
        """The weights, the optimizer's state and the gradients, at this point of the trace."""
        if not self.emit or self.snapshots_left <= 0 or self.optimizer is None:
            return
        self.snapshots_left -= 1
        tensors = {}
        for name, p in self.params:
            tensors[f"param/{name}"] = p
            if p.grad is not None:
                tensors[f"grad/{name}"] = p.grad
            for key, value in self.state_of.get(p, {}).items():
                if isinstance(value, self.torch.Tensor):
                    tensors[f"state/{key}/{name}"] = value
        try:
            state = tensors_b64(self.torch, {k: v.detach().float().cpu() for k, v in tensors.items()})
        except BaseException:
            state = None
        self.emit("snapshot", event=len(self.events), state=state)

    def loader(self, images, labels, *, batch_size, shuffle, seed):
        return ResidentLoader(self, images, labels, batch_size, shuffle, seed)

    def summary(self) -> dict:
        return {"events": "".join(self.events), "moves": self.moves, "forwards": self.forwards}


class ResidentLoader:
    """MNIST already in memory (or on the GPU), served in seeded shuffled batches: no per-sample transforms."""

    def __init__(self, spy, images, labels, batch_size, shuffle, seed):
        self.spy, self.images, self.labels = spy, images, labels
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.epoch = 0
        self.dataset = range(len(labels))  # len(loader.dataset) works as with a DataLoader

    def __len__(self):
        return (len(self.labels) + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        torch, spy = self.spy.torch, self.spy
        n = len(self.labels)
        if self.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
            order = order.to(self.images.device)
        self.epoch += 1
        spy.events.append("e")
        for number, start in enumerate(range(0, n, self.batch_size)):
            if spy.every and number % spy.every == 0:
                spy.snapshot()
            if self.shuffle:
                index = order[start:start + self.batch_size]
                x, y = self.images[index], self.labels[index]
            else:
                x, y = self.images[start:start + self.batch_size], self.labels[start:start + self.batch_size]
            x, y = x.as_subclass(spy.Unmoved), y.as_subclass(spy.Unmoved)
            x.role, y.role = "images", "labels"
            spy.events.append("b")
            yield x, y
        if spy.every:
            spy.snapshot()  # the end of the pass: the last stretch is as short as the others


if __name__ == "__main__":
    main(sys.argv[1])
