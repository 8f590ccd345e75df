"""Honest-habit notebooks: what real students hand in when they got every answer right, or made one slip.

Each entry is a notebook and the exact points per part it earns. An honest habit (a helper in a cell of its
own, a magic, an editor that stripped the metadata, Windows line endings) costs nothing; a slip (a renamed
function, a tensor returned instead of a float) costs only the checks that depend on it.

Points per check (assignments/cnn_mnist/assignment.toml and the hidden checks' weights): device 2 per unit
of weight (the batch moves weigh 2: 4 points); evaluate 2 per unit (the value weighs 2: 4 points, the float
type 2 points).
"""

from __future__ import annotations

import copy
import json

import mutants

FULL = {"shapes": 20.0, "net": 25.0, "device": 10.0, "training": 35.0, "evaluate": 10.0}


def with_parts(**parts: float) -> dict[str, float]:
    return FULL | {part: float(points) for part, points in parts.items()}


def code_cell(source: str, **metadata) -> dict:
    return {"cell_type": "code", "execution_count": None, "metadata": metadata, "outputs": [], "source": source}


def index_of(nb: dict, gid: str) -> int:
    return next(i for i, c in enumerate(nb["cells"]) if mutants.grade_id(c) == gid)


def insert(nb: dict, where: str, gid: str, source: str) -> dict:
    """A cell the student added just before or after the cell `gid` (where: "before" or "after")."""
    i = index_of(nb, gid) + (where == "after")
    nb["cells"].insert(i, code_cell(source))
    return nb


def strip_metadata(nb: dict, *gids: str) -> dict:
    """What an editor that drops unknown metadata does: the nbgrader metadata of these cells (all: none given)."""
    for cell in nb["cells"]:
        if not gids or mutants.grade_id(cell) in gids:
            cell["metadata"].pop("nbgrader", None)
            cell["metadata"].pop("deletable", None)
            cell["metadata"].pop("editable", None)
    return nb


def answer(gid: str) -> str:
    return mutants.answers()[gid]


def edited(gid: str, old: str, new: str) -> str:
    source = answer(gid)
    assert old in source, f"{old!r} is no longer in the answer to {gid}"
    return source.replace(old, new, 1)


# --- the notebooks -----------------------------------------------------------------------------------------

def helper_cell_above() -> dict:
    # _as_pair moved out of the conv2d cell into a cell of its own, above it.
    conv = answer("conv2d_output_size")
    head, helper = conv.split("\n\ndef _as_pair", 1)
    return insert(mutants.filled({"conv2d_output_size": head}), "before", "conv2d_output_size", "def _as_pair" + helper)


def helper_at_call_time() -> dict:
    # train_one_epoch calls a helper defined in a cell below it: Python looks the name up at call time.
    loop = edited("train_one_epoch", """        optimizer.zero_grad()
        loss = F.nll_loss(model(images), labels)
        loss.backward()
        optimizer.step()
""", """        loss = _train_step(model, images, labels, optimizer)
""")
    step = ("def _train_step(model, images, labels, optimizer):\n    optimizer.zero_grad()\n"
            "    loss = F.nll_loss(model(images), labels)\n    loss.backward()\n    optimizer.step()\n    return loss\n")
    return insert(mutants.filled({"train_one_epoch": loop}), "after", "train_one_epoch", step)


def split_over_two_cells() -> dict:
    # Net's forward is written in the next cell and attached to the class there.
    net = answer("net")
    init, forward = net.split("\n    def forward", 1)
    forward = "def forward" + forward.replace("\n    ", "\n")
    return insert(mutants.filled({"net": init + "\n"}), "after", "net", forward + "\nNet.forward = forward\n")


def imports_and_constants() -> dict:
    net = edited("net", "self.conv1 = nn.Conv2d(1, 2, 3)", "self.conv1 = nn.Conv2d(IN_CHANNELS, 2, KERNEL)")
    net = net.replace("self.fc2 = nn.Linear(16, 10)", "self.fc2 = nn.Linear(HIDDEN, CLASSES)")
    return insert(mutants.filled({"net": net}), "after", "setup",
                  "import math\nimport numpy as np\n\nIN_CHANNELS, KERNEL = 1, 3\nHIDDEN, CLASSES = 16, 10\n")


def renamed_train() -> dict:
    return mutants.filled({"train_one_epoch": answer("train_one_epoch").replace("def train_one_epoch", "def train_epoch")})


def deleted_train() -> dict:
    nb = mutants.filled()
    del nb["cells"][index_of(nb, "train_one_epoch")]
    return nb


def train_metadata_stripped() -> dict:
    return strip_metadata(mutants.filled(), "train_one_epoch")


def all_metadata_stripped() -> dict:
    return strip_metadata(mutants.filled())


def line_magics() -> dict:
    return mutants.filled({"net": "%matplotlib inline\n" + answer("net"),
                           "get_device": "!nvidia-smi\n" + answer("get_device")})


def cell_magic() -> dict:
    return mutants.filled({"evaluate": "%%time\n" + answer("evaluate")})


def installs() -> dict:
    return insert(mutants.filled(), "after", "setup", "!pip install torchvision\n%pip install -q numpy\n")


def lone_surrogate() -> dict:
    return mutants.filled({"conv2d_output_size": "# caf\udce9\n" + answer("conv2d_output_size")})


def evaluate_tensor() -> dict:
    return mutants.filled({"evaluate": edited("evaluate", "return correct / total", "return torch.tensor(correct / total)")})


def evaluate_numpy_float() -> dict:
    return mutants.filled({"evaluate": "import numpy as np\n\n" + edited(
        "evaluate", "return correct / total", "return np.mean(np.array([correct / total]))")})


def evaluate_numpy_float32() -> dict:
    return mutants.filled({"evaluate": "import numpy as np\n\n" + edited(
        "evaluate", "return correct / total", "return np.float32(correct / total)")})


def ten_epochs() -> dict:
    # A student's own experiment in a cell of its own: ten epochs over 60,000 random images, far past the
    # cell's time limit; then a second slow experiment, and only then the helper evaluate() needs. The added
    # cells share one cell's time, and a definition still gets its turn after it is spent.
    nb = mutants.filled({"evaluate": edited("evaluate", "return correct / total", "return _ratio(correct, total)")})
    nb = insert(nb, "after", "evaluate", "def _ratio(a, b):\n    return a / b\n")
    nb = insert(nb, "after", "evaluate", "_sums = [sum(range(n)) for n in range(10**9)]\n")
    return insert(nb, "after", "evaluate",
                  "_x = torch.randn(60000, 1, 28, 28)\n_y = torch.randint(0, 10, (60000,))\n"
                  "_loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(_x, _y), batch_size=64)\n"
                  "_model = Net()\n_opt = optim.SGD(_model.parameters(), lr=0.01, momentum=0.9)\n"
                  "for _epoch in range(10):\n    print(_epoch, train_one_epoch(_model, _loader, _opt, torch.device('cpu')))\n")


def prints_a_megabyte() -> dict:
    return insert(mutants.filled(), "after", "net", "print('0123456789' * 100_000)\n")


def windows_line_endings() -> dict:
    nb = mutants.filled()
    for cell in nb["cells"]:
        source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        cell["source"] = [line + "\r\n" for line in source.split("\n")]
    return nb


def non_ascii() -> dict:
    conv = edited("conv2d_output_size", "    out = tuple(", "    # 出力サイズ: (n + 2p - d(k - 1) - 1) / s + 1 の切り捨て\n    出力 = tuple(")
    conv = conv.replace("    if min(out) < 1:", "    out = 出力\n    if min(out) < 1:", 1)
    net = edited("net", "def forward(self, x):", "def forward(self, 画像):\n        x = 画像  # 入力画像 / the images")
    return mutants.filled({"conv2d_output_size": conv, "net": net})


def saved_by_colab() -> dict:
    # Colab writes nbformat 4.0: no cell ids, an "id" and "colab" entry in each cell's metadata, and the
    # runtime in the notebook's metadata.
    nb = mutants.filled()
    nb["nbformat_minor"] = 0
    nb["metadata"] = {"colab": {"provenance": [], "gpuType": "T4"}, "accelerator": "GPU",
                      "kernelspec": {"name": "python3", "display_name": "Python 3"},
                      "language_info": {"name": "python"}}
    for number, cell in enumerate(nb["cells"]):
        cell.pop("id", None)
        cell["metadata"]["id"] = f"cOl{number:04d}aB"
        if cell["cell_type"] == "code":
            cell["metadata"]["colab"] = {"base_uri": "https://localhost:8080/"}
            cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["ok\n"]}]
            cell["execution_count"] = number
    return nb


def saved_by_jupyterlab4() -> dict:
    nb = mutants.filled()
    nb["nbformat_minor"] = 5
    nb["metadata"]["language_info"] = {"name": "python", "version": "3.11.9", "mimetype": "text/x-python",
                                       "file_extension": ".py", "codemirror_mode": {"name": "ipython", "version": 3}}
    for number, cell in enumerate(nb["cells"]):
        cell["id"] = f"a{number:07x}-jlab"
        if cell["cell_type"] == "code":
            cell["execution_count"] = number + 1
            cell["metadata"]["execution"] = {"iopub.execute_input": "2026-11-30T01:02:03.456Z"}
            cell["metadata"]["scrolled"] = True
            cell["outputs"] = [{"output_type": "execute_result", "execution_count": number + 1,
                                "data": {"text/plain": ["26"]}, "metadata": {}}]
    return nb


def experiment_edited() -> dict:
    # The student changed the experiment (it is never run by the grader) and left a half-written idea below.
    nb = mutants.filled()
    i = next(i for i, c in enumerate(nb["cells"]) if "EPOCHS" in "".join(c["source"]))
    cell = nb["cells"][i]
    cell["source"] = "".join(cell["source"]).replace("isgpu = False", "isgpu = True")
    nb["cells"].insert(i + 1, code_cell("# TODO: plot the losses\nplt.plot(losses)\n"))
    return nb


# name -> (notebook, exact points per part, a phrase the English feedback must contain or None)
CORPUS = {
    "helper_cell_above": (helper_cell_above, FULL, None),
    "helper_at_call_time": (helper_at_call_time, FULL, None),
    "split_over_two_cells": (split_over_two_cells, FULL, None),
    "imports_and_constants": (imports_and_constants, FULL, None),
    # train_one_epoch missing: the training part, and the batch moves it would have shown (device, 4 points).
    "renamed_train": (renamed_train, with_parts(training=0, device=6), "did you rename it? (train_epoch"),
    "deleted_train": (deleted_train, with_parts(training=0, device=6), "train_one_epoch was not found"),
    "train_metadata_stripped": (train_metadata_stripped, FULL, "matched by the names they define"),
    "all_metadata_stripped": (all_metadata_stripped, FULL, "matched by the names they define"),
    "line_magics": (line_magics, FULL, None),
    "cell_magic": (cell_magic, FULL, None),
    "installs": (installs, FULL, "skipped"),
    "lone_surrogate": (lone_surrogate, FULL, None),
    # A 0-d tensor with the right value: only the float type check (2 points) is lost, and it names the type.
    "evaluate_tensor": (evaluate_tensor, with_parts(evaluate=8), "(Tensor)"),
    "evaluate_numpy_float": (evaluate_numpy_float, FULL, None),  # numpy.float64 is a float
    "evaluate_numpy_float32": (evaluate_numpy_float32, with_parts(evaluate=8), "(float32)"),
    "ten_epochs": (ten_epochs, FULL, "took too long while running cell"),
    "prints_a_megabyte": (prints_a_megabyte, FULL, None),
    "windows_line_endings": (windows_line_endings, FULL, None),
    "non_ascii": (non_ascii, FULL, None),
    "saved_by_colab": (saved_by_colab, FULL, None),
    "saved_by_jupyterlab4": (saved_by_jupyterlab4, FULL, None),
    "experiment_edited": (experiment_edited, FULL, None),
}


def notebooks() -> dict[str, tuple[dict, dict, str | None]]:
    return {name: (copy.deepcopy(build()), expected, phrase) for name, (build, expected, phrase) in CORPUS.items()}


def write(nb: dict, path) -> None:
    # ensure_ascii keeps a lone surrogate as the escape "\udce9", the way Jupyter writes it
    path.write_text(json.dumps(nb, indent=1), encoding="utf-8")
