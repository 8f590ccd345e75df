"""The lab's probes, grader-side (observe.load_probes): the hidden inputs for the shape functions, what its
steps are given and what they write. Never released; the expected answers are not here either: the checks ask
real nn.Conv2d / nn.MaxPool2d outside the sandbox.

Each probe: (group, args, kwargs). A group is one check; the sandbox sees only args and kwargs.
"""

from labkit.records import RECORDS as STANDARD

CONV = [
    ("basic", (28, 3), {}), ("basic", (26, 3), {}), ("basic", (32, 5), {}), ("basic", (11, 1), {}),
    ("stride", (28, 3), {"stride": 2}), ("stride", (28, 5), {"stride": 3}), ("stride", (17, 4), {"stride": 2}),
    ("padding", (28, 3), {"padding": 1}), ("padding", (13, 5), {"padding": 2, "stride": 2}),
    ("padding", (6, 7), {"padding": 3}),
    ("dilation", (28, 3), {"dilation": 2}), ("dilation", (20, 3), {"stride": 2, "padding": 1, "dilation": 3}),
    ("pairs", ((28, 20), 3), {}), ("pairs", ((28, 20), (3, 5)), {"stride": (1, 2)}),
    ("pairs", ((9, 30), (2, 4)), {"stride": 3, "padding": (1, 0)}),
    ("invalid", (2, 3), {}), ("invalid", (28, 0), {}), ("invalid", (28, 3), {"stride": 0}),
    ("invalid", (28, 3), {"padding": -1}), ("invalid", (0, 3), {}), ("invalid", (28, 3), {"dilation": 0}),
    ("invalid", (5, 3), {"dilation": 3}),
]

POOL = [
    ("basic", (24, 2, 2), {}), ("basic", (7, 2, 2), {}), ("basic", (10, 3, 1), {}),
    ("default_stride", (24, 2), {}), ("default_stride", (9, 3), {}), ("default_stride", (13, 2), {}),
    ("ceil_mode", (7, 2), {"ceil_mode": True}), ("ceil_mode", (8, 3, 2), {"ceil_mode": True}),
    ("ceil_mode", (5, 2, 2), {"padding": 1, "ceil_mode": True}), ("ceil_mode", (13, 4, 3), {"ceil_mode": True}),
    ("padding_dilation", (7, 3, 2), {"padding": 1}), ("padding_dilation", (20, 3, 2), {"dilation": 2}),
    ("padding_dilation", (16, 3, 1), {"padding": 1, "dilation": 2}),
    ("pairs", ((24, 13), 2), {"ceil_mode": True}), ("pairs", ((24, 12), (2, 3)), {}),
    ("invalid", (10, 2), {"padding": 2}), ("invalid", (1, 2), {}), ("invalid", (10, 0), {}),
    ("invalid", (10, 2), {"stride": 0}),
]

PROBES = {"conv2d_output_size": CONV, "pool2d_output_size": POOL}
# What the sandbox is given (the plan's "probes"): the calls only, in order.
SANDBOX = {"shape_probes": {name: [[list(args), kwargs] for _, args, kwargs in probes]
                            for name, probes in PROBES.items()}}
# What the lab's steps (runtime.py) write: the standard steps' records and one per shape function.
RECORDS = {**STANDARD, "shapes": ({"function", "results"}, len(PROBES))}
