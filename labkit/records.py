"""What labkit.steps writes, known to both sides: the records (kind -> (fields every one carries, how many at
most)), and what it reports of each layer of a network. Plain data: it runs in the sandbox too.

A lab's hidden/probes.py adds RECORDS to its own; the engine rejects any record of a kind no one declared.
"""

LAYER_KEYS = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "in_features",
              "out_features", "ceil_mode")

RECORDS = {
    "device": ({"cases"}, 1),
    "net": ({"ok"}, 1),
    "evaluate": ({"ok"}, 1),
}
