"""Realistic submissions built from the released notebook and the answer key, each with one known mistake.

`filled()` is what a student who got everything right hands in: the released notebook with every stub
replaced by the answer key's code. A mutant changes one line of one cell; MUTANTS says which part it must
cost and what the student is told.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

from autograder.notebook import grade_id, strip_markers

from repo import REPO_ROOT

RELEASED = REPO_ROOT / "release" / "cnn_mnist" / "cnn_mnist.ipynb"
SOURCE = REPO_ROOT / "assignments" / "cnn_mnist" / "cnn_mnist.ipynb"


def released(lab: str) -> Path:
    return REPO_ROOT / "release" / lab / f"{lab}.ipynb"


def source(lab: str) -> Path:
    return REPO_ROOT / "assignments" / lab / f"{lab}.ipynb"


@dataclass(frozen=True)
class Mutant:
    name: str
    cell: str
    old: str
    new: str
    part: str  # the one part that must lose points
    message: str  # a phrase of the English feedback
    lab: str = "cnn_mnist"


MUTANTS = [
    Mutant("off_by_one", "conv2d_output_size", "(n + 2 * p - d * (k - 1) - 1) // s + 1", "(n + 2 * p - d * (k - 1)) // s + 1",
           "shapes", "which is not what PyTorch gives"),
    Mutant("stride_ignored", "conv2d_output_size", "(n + 2 * p - d * (k - 1) - 1) // s + 1", "(n + 2 * p - d * (k - 1) - 1) + 1",
           "shapes", "divide by the stride"),
    Mutant("ceil_mode_ignored", "pool2d_output_size", "o = (span + (s - 1 if ceil_mode else 0)) // s + 1", "o = span // s + 1",
           "shapes", "ceil_mode=True rounds up"),
    Mutant("hard_coded_432", "net",
           "side = pool2d_output_size(conv2d_output_size(conv2d_output_size(28, 3), 3), 2, 2)\n"
           "        self.fc1 = nn.Linear(side * side * 3, 16)", "self.fc1 = nn.Linear(12 * 12 * 3, 16)",
           "net", "instead of typing 432"),
    Mutant("missing_relu", "net", "x = F.relu(self.conv1(x))", "x = self.conv1(x)", "net", "check the ReLU after conv1"),
    Mutant("no_log_softmax", "net", "return F.log_softmax(self.fc2(x), dim=1)", "return self.fc2(x)", "net",
           "F.log_softmax(x, dim=1)"),
    Mutant("batches_not_moved", "train_one_epoch", "        images, labels = images.to(device), labels.to(device)\n", "",
           "device", "without being moved to the device"),
    Mutant("no_zero_grad", "train_one_epoch", "        optimizer.zero_grad()\n", "", "training",
           "call optimizer.zero_grad() for every batch"),
    Mutant("evaluate_without_eval", "evaluate", "    model.eval()\n", "", "evaluate", "call model.eval() first"),
    Mutant("accuracy_divided_by_batches", "evaluate", "return correct / total", "return correct / len(loader)", "evaluate",
           "divide the number of correct predictions by the number of samples"),
    # Right whenever every batch is full: the grader's evaluate probe ends on a short batch to catch it.
    Mutant("accuracy_over_full_batches", "evaluate", "return correct / total",
           "return correct / (len(loader) * loader.batch_size)", "evaluate",
           "divide the number of correct predictions by the number of samples"),
    Mutant("cuda_without_checking", "get_device", "if use_gpu and torch.cuda.is_available():", "if use_gpu:", "device",
           "without CUDA, return torch.device('cpu')"),
]


# The mlp_mnist lab's own mistakes, and the CNN lab's mistakes in the cells both labs share (the same contract,
# the same answer code): each must cost its part there too.
SHARED_CELLS = ("get_device", "train_one_epoch", "evaluate")
MLP_MUTANTS = [
    Mutant("bias_ignored", "linear_forward", "        y = y + bias\n", "        pass\n", "linear",
           "returned values that differ from nn.Linear's", "mlp_mnist"),
    Mutant("calls_F_linear", "linear_forward", "y = x @ weight.T", "y = F.linear(x, weight)", "linear",
           "calls torch's linear layer", "mlp_mnist"),
    Mutant("no_shape_check", "linear_forward", "    if x.shape[-1] != weight.shape[1]:", "    if False:", "linear",
           "should raise ValueError, but raised RuntimeError", "mlp_mnist"),
    Mutant("hidden_64", "net", "nn.Linear(28 * 28, 128)  # 784 -> 128\n        self.fc2 = nn.Linear(128, 10)",
           "nn.Linear(28 * 28, 64)\n        self.fc2 = nn.Linear(64, 10)", "net", "self.fc1 has out_features = 64",
           "mlp_mnist"),
    Mutant("missing_relu", "net", "x = F.relu(self.fc1(x))", "x = self.fc1(x)", "net", "the ReLU after fc1",
           "mlp_mnist"),
    Mutant("no_log_softmax", "net", "return F.log_softmax(self.fc2(x), dim=1)", "return self.fc2(x)", "net",
           "F.log_softmax(x, dim=1)", "mlp_mnist"),
    *[Mutant(m.name, m.cell, m.old, m.new, m.part, m.message, "mlp_mnist") for m in MUTANTS if m.cell in SHARED_CELLS],
]


def answers(lab: str = "cnn_mnist") -> dict[str, str]:
    """grade_id -> the answer key's code for every solution cell."""
    nb = json.loads(source(lab).read_text(encoding="utf-8"))
    return {grade_id(c): strip_markers("".join(c["source"])) for c in nb["cells"]
            if c.get("metadata", {}).get("nbgrader", {}).get("solution")}


def filled(changes: dict[str, str] | None = None, lab: str = "cnn_mnist") -> dict:
    """The released notebook with the stubs replaced by the answer key (and by `changes`, per cell)."""
    nb = json.loads(released(lab).read_text(encoding="utf-8"))
    code = answers(lab) | (changes or {})
    for cell in nb["cells"]:
        gid = grade_id(cell)
        if gid in code:
            cell["source"] = code[gid]
    return nb


def mutant_notebook(mutant: Mutant) -> dict:
    code = answers(mutant.lab)[mutant.cell]
    assert mutant.old in code, f"{mutant.name}: {mutant.old!r} is not in the answer key any more"
    return filled({mutant.cell: code.replace(mutant.old, mutant.new, 1)}, mutant.lab)


def write(nb: dict, path: Path) -> Path:
    path.write_text(json.dumps(copy.deepcopy(nb), ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def course_copy(folder: Path, edits: dict[str, str] | None = None) -> Path:
    """A copy of the cnn_mnist course under `folder`, with `edits` ("old line": "new line") made to its
    assignment.toml. An edit that no longer matches fails here rather than silently grading with the default."""
    import shutil

    course = folder / "course"
    shutil.copytree(REPO_ROOT / "assignments" / "cnn_mnist", course)
    toml = (course / "assignment.toml").read_text()
    for old, new in (edits or {}).items():
        assert old in toml, f"assignment.toml no longer has {old!r}"
        toml = toml.replace(old, new)
    (course / "assignment.toml").write_text(toml)
    return course


def assert_costs_only_its_part(result, points: dict[str, float], mutant: Mutant) -> None:
    """The mutant's notebook was graded, lost points in its own part only, and was told why."""
    assert result.status == "graded"
    lost = {part for part in points if result.parts[part] < points[part]}
    assert lost == {mutant.part}, result.parts
    messages = " ".join(c.message.en for c in result.checks if not c.passed)
    assert mutant.message in messages
