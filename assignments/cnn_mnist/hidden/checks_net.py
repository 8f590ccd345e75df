"""Part 2: the network is the lecture's and computes the lecture's function of its own weights (the standard
checks, labkit/checks.py, which take the expected layers from the answer key's Net), and fc1's input size
comes from the Part 1 functions."""

import pytest

from autograder.judge import fail
from labkit.checks import built, check_builds, check_layers, check_parameters, check_output, forward_check  # noqa: F401, I001

check_forward = forward_check("conv1・conv2・fc1 の後の ReLU、プーリングの位置、最後の log_softmax を確認してください。",
                              "check the ReLU after conv1, conv2 and fc1, where the pooling goes, and the final "
                              "log_softmax.")


@pytest.mark.check("net", "fc1 の入力サイズをパート 1 の関数で計算", "fc1's input size computed with the Part 1 functions",
                   weight=1)
def check_fc1_from_shape_functions(ctx):
    calls = built(ctx).get("shape_calls", [])
    missing = [f for f in ("conv2d_output_size", "pool2d_output_size") if f not in calls]
    if missing:
        fail(f"Net の中で {', '.join(missing)} が呼ばれていません。432 と直接書かず、関数で計算してください。",
             f"Net does not call {', '.join(missing)}: compute fc1's input size with your functions instead of typing 432.")
