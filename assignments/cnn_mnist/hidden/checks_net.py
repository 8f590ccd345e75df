"""Part 2: the network is the lecture's, and computes the lecture's function of its own weights."""

import pytest
import torch

from autograder.judge import fail
from autograder.observe import tensors

LAYERS = {
    "conv1": ("Conv2d", {"in_channels": 1, "out_channels": 2, "kernel_size": [3, 3], "stride": [1, 1], "padding": [0, 0]}),
    "conv2": ("Conv2d", {"in_channels": 2, "out_channels": 3, "kernel_size": [3, 3], "stride": [1, 1], "padding": [0, 0]}),
    "pool": ("MaxPool2d", {"kernel_size": 2, "stride": 2}),
    "fc1": ("Linear", {"in_features": 432, "out_features": 16}),
    "fc2": ("Linear", {"in_features": 16, "out_features": 10}),
}


def built(ctx):
    """The net record, or fail with why there is none."""
    return ctx.record("net", "net", "Net()")


def forward_output(ctx, record):
    if record.get("forward_error"):
        error = ctx.describe(record["forward_error"], "forward の実行中に", "running forward")
        fail(error.ja, error.en)
    out = (tensors(record.get("output")) or {}).get("output")
    if out is None:
        fail("forward の出力を読み取れませんでした。", "the output of forward could not be read.")
    return out


def normalise(value):
    return value[0] if isinstance(value, list) and len(set(value)) == 1 else value


@pytest.mark.check("net", "Net() を作成できる", "Net() can be built", weight=1)
def check_builds(ctx):
    built(ctx)


@pytest.mark.check("net", "層の種類と大きさ", "layer types and sizes", weight=1)
def check_layers(ctx):
    layers = built(ctx).get("layers", {})
    for name, (kind, expected) in LAYERS.items():
        got = layers.get(name) or {}
        if got.get("class") != kind:
            fail(f"self.{name} は nn.{kind} であるべきですが、{got.get('class') or 'ありません'}。",
                 f"self.{name} should be an nn.{kind}, but is {got.get('class') or 'missing'}.")
        for key, value in expected.items():
            if normalise(got.get(key)) != normalise(value):
                fail(f"self.{name} の {key} が {got.get(key)} です。講義の表と見比べてください。",
                     f"self.{name} has {key} = {got.get(key)}; compare it with the lecture's table.")


@pytest.mark.check("net", "パラメータ数 7,175", "7,175 trainable parameters", weight=1)
def check_parameters(ctx):
    params = built(ctx).get("params", [])
    count = 0
    for p in params:
        if p.get("trainable"):
            n = 1
            for d in p.get("shape", []):
                n *= d
            count += n
    if count != 7175:
        fail(f"学習可能なパラメータが {count} 個です（7,175 個になるはずです）。",
             f"the network has {count} trainable parameters; it should have 7,175.")


@pytest.mark.check("net", "fc1 の入力サイズをパート 1 の関数で計算", "fc1's input size computed with the Part 1 functions",
                   weight=1)
def check_fc1_from_shape_functions(ctx):
    calls = built(ctx).get("shape_calls", [])
    missing = [f for f in ("conv2d_output_size", "pool2d_output_size") if f not in calls]
    if missing:
        fail(f"Net の中で {', '.join(missing)} が呼ばれていません。432 と直接書かず、関数で計算してください。",
             f"Net does not call {', '.join(missing)}: compute fc1's input size with your functions instead of typing 432.")


@pytest.mark.check("net", "出力は (N, 10) の対数確率", "output is (N, 10) log-probabilities", weight=1)
def check_output(ctx):
    record = built(ctx)
    out = forward_output(ctx, record)
    if tuple(out.shape) != (16, 10):
        fail(f"入力 (16, 1, 28, 28) に対する出力の形が {tuple(out.shape)} です（(16, 10) になるはずです）。",
             f"for an input of shape (16, 1, 28, 28) the output has shape {tuple(out.shape)}, not (16, 10).")
    total = torch.logsumexp(out.double(), dim=1)
    if not torch.allclose(total, torch.zeros_like(total), atol=1e-4):
        fail("出力の各行が対数確率になっていません（exp の和が 1 になりません）。最後に F.log_softmax(x, dim=1) を使います。",
             "the rows of the output are not log-probabilities (their exp does not sum to 1): end with "
             "F.log_softmax(x, dim=1).")


@pytest.mark.check("net", "forward の計算順序（ReLU・プーリング・log_softmax）", "forward: ReLUs, pooling and log_softmax in order",
                   weight=2)
def check_forward(ctx):
    record = built(ctx)
    out = forward_output(ctx, record)
    state = tensors(record.get("weights"))
    lecture = ctx.reference.Net()
    try:
        lecture.load_state_dict(state or {}, strict=True)
    except (RuntimeError, KeyError, TypeError):
        fail("パラメータの名前か形が講義の Net と違うため、forward を比べられません。",
             "the parameter names or shapes differ from the lecture's Net, so forward cannot be compared.")
    probe = torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(ctx.seed + 1))
    with torch.no_grad():
        expected = lecture(probe)
    if out.shape != expected.shape or not torch.allclose(out, expected, atol=1e-4):
        fail("同じ重みで講義の Net と出力が一致しません。conv1・conv2・fc1 の後の ReLU、プーリングの位置、"
             "最後の log_softmax を確認してください。",
             "with the same weights, the output differs from the lecture's Net: check the ReLU after conv1, "
             "conv2 and fc1, where the pooling goes, and the final log_softmax.")
