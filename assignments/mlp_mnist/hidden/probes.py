"""The lab's probes, grader-side (observe.load_probes): the hidden inputs for linear_forward, what its steps
are given and what they write. Never released. The inputs travel as shapes and seeds; the sandbox draws the
tensors from them and the checks draw the same ones here to compute the expected outputs with F.linear.

Each probe: (group, x's shape, weight's shape, bias's shape or None). A group is one check.
"""

from labkit.records import RECORDS as STANDARD

LINEAR = [
    ("batch", [4, 5], [3, 5], [3]), ("batch", [7, 13], [10, 13], [10]), ("batch", [2, 784], [128, 784], [128]),
    ("batch", [1, 3], [6, 3], [6]),
    ("no_batch", [5], [3, 5], [3]), ("no_batch", [784], [16, 784], [16]), ("no_batch", [1], [2, 1], [2]),
    ("no_bias", [6, 4], [2, 4], None), ("no_bias", [9], [4, 9], None),
    ("invalid", [4, 5], [3, 6], [3]), ("invalid", [4, 5], [3, 5], [4]), ("invalid", [5], [5], None),
    ("invalid", [2, 3, 5], [4, 5], [4]),
]
SEED = 20251130  # of the first probe's tensors; probe i draws from SEED + i

PROBES = {"linear_forward": LINEAR, "seed": SEED}
# What the sandbox is given (the plan's "probes"): shapes and seeds, in order.
SANDBOX = {"linear_probes": [[x, w, b, SEED + i] for i, (_, x, w, b) in enumerate(LINEAR)]}
# What the lab's steps (runtime.py) write: the standard steps' records and the linear step's.
RECORDS = {**STANDARD, "linear": ({"results"}, 1)}
