"""Part 2: the network is the lab's MLP and computes its function of its own weights (the standard checks,
labkit/checks.py, which take the expected layers from the answer key's MLP)."""

from labkit.checks import check_builds, check_layers, check_parameters, check_output, forward_check  # noqa: F401, I001

check_forward = forward_check("平坦化（x.flatten(1)）、fc1 の後の ReLU、最後の log_softmax を確認してください。",
                              "check the flattening (x.flatten(1)), the ReLU after fc1 and the final log_softmax.")
