"""Part 1: the shape functions agree with real nn.Conv2d / nn.MaxPool2d on the hidden probes."""

import warnings

import pytest
import torch

from autograder.judge import fail

CELLS = {"conv2d_output_size": "conv2d_output_size", "pool2d_output_size": "pool2d_output_size"}
HINTS = {
    "basic": ("式 ⌊(n + 2p − d(k − 1) − 1) / s⌋ + 1 を確認してください。", "check the formula ⌊(n + 2p − d(k − 1) − 1) / s⌋ + 1."),
    "stride": ("stride で割ってから 1 を足します。", "divide by the stride, then add 1."),
    "padding": ("パディングは両側に付きます（2p）。", "padding is added on both sides (2p)."),
    "dilation": ("ダイレーション d のカーネルは d(k − 1) + 1 の幅を覆います。", "a kernel with dilation d spans d(k − 1) + 1 pixels."),
    "pairs": ("int でも (高さ, 幅) の組でも受け取り、組なら組で返します。", "accept ints and (h, w) pairs, and answer a pair with a pair."),
    "invalid": ("不正な引数や 0 以下の出力では ValueError を送出します。", "raise ValueError for invalid arguments or a non-positive output."),
    "default_stride": ("stride を省略したときはカーネルサイズと同じです。", "when stride is omitted it equals the kernel size."),
    "ceil_mode": ("ceil_mode=True では切り上げますが、パディングの中だけから始まる最後の窓は数えません。",
                  "ceil_mode=True rounds up, but a last window that would start in the padding is dropped."),
    "padding_dilation": ("パディングとダイレーションも nn.MaxPool2d と同じように扱います。",
                         "treat padding and dilation as nn.MaxPool2d does."),
}


def torch_answer(function, args, kwargs):
    """What PyTorch itself produces for these arguments, or None where it refuses them."""
    size, kernel, *rest = args
    pair = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v)  # noqa: E731
    try:
        h, w = pair(size)
        x = torch.zeros(1, 1, h, w)
        if function == "conv2d_output_size":
            stride = rest[0] if rest else kwargs.get("stride", 1)
            with warnings.catch_warnings():  # a zero-sized kernel warns before it is refused
                warnings.simplefilter("ignore")
                layer = torch.nn.Conv2d(1, 1, kernel, stride=stride, padding=kwargs.get("padding", 0),
                                        dilation=kwargs.get("dilation", 1))
        else:
            names = ["stride", "padding", "dilation", "ceil_mode"]
            options = dict(zip(names, rest)) | kwargs
            layer = torch.nn.MaxPool2d(kernel, **options)
        with torch.no_grad():
            out = tuple(layer(x).shape[-2:])
    except (RuntimeError, ValueError, TypeError, ZeroDivisionError):
        return None
    if min(out) < 1:
        return None
    is_pair = any(isinstance(v, (tuple, list)) for v in [*args, *kwargs.values()])
    return out if is_pair else out[0]


def decode(value):
    kind = value.get("type")
    if kind in ("int", "bool", "float"):
        return value.get("value")
    if kind in ("tuple", "list"):
        return tuple(decode(v) for v in value.get("value", []))
    return value.get("repr", "?")


def call_text(function, args, kwargs):
    parts = [repr(tuple(a) if isinstance(a, list) else a) for a in args]
    parts += [f"{k}={tuple(v) if isinstance(v, list) else v!r}" for k, v in kwargs.items()]
    return f"{function}({', '.join(parts)})"


def same(observed: dict, expected) -> bool:
    if isinstance(expected, int):
        return observed.get("type") == "int" and observed.get("value") == expected
    return observed.get("type") in ("tuple", "list") and len(observed.get("value", [])) == 2 and all(
        v.get("type") == "int" and v.get("value") == e for v, e in zip(observed["value"], expected))


def judge_group(ctx, function, group):
    error = ctx.cell_error(CELLS[function])
    if error:
        fail(error.ja, error.en)
    record = next((r for r in ctx.obs.all("shapes") if r.get("function") == function), None)
    if record is None or not isinstance(record.get("results"), list):
        why = ctx.stopped_why()
        fail(f"{function} のテストまで到達しませんでした（{why.ja}）。", f"grading never reached {function} ({why.en}).")
    hint_ja, hint_en = HINTS[group]
    probes = ctx.probes[function]
    for (g, args, kwargs), result in zip(probes, record["results"] + [None] * (len(probes) - len(record["results"]))):
        if g != group:
            continue
        call = call_text(function, args, kwargs)
        expected = torch_answer(function, args, kwargs)
        if not isinstance(result, dict):
            fail(f"{call} の結果がありません。", f"no result for {call}.")
        error = result.get("error") or {}
        if error.get("type") == "NotImplementedError":
            fail(f"{function} はまだ実装されていません。", f"{function} is not implemented yet.")
        if expected is None:
            if result.get("ok"):
                fail(f"{call} は ValueError を送出すべきですが、{decode(result['value'])!r} を返しました。{hint_ja}",
                     f"{call} should raise ValueError, but returned {decode(result['value'])!r}. {hint_en}")
            if error.get("type") != "ValueError":
                fail(f"{call} は ValueError を送出すべきですが、{error.get('type')} が送出されました。{hint_ja}",
                     f"{call} should raise ValueError, but raised {error.get('type')}. {hint_en}")
            continue
        if not result.get("ok") and error.get("type") == "NameError":
            missing = ctx.describe(error, f"{call} の実行中に", f"running {call}")
            fail(missing.ja, missing.en)
        if not result.get("ok"):
            fail(f"{call} で {error.get('type')} が送出されました: {error.get('message', '')}",
                 f"{call} raised {error.get('type')}: {error.get('message', '')}")
        if not same(result["value"], expected):
            got = decode(result["value"])
            fail(f"{call} が {got!r}（{result['value'].get('type')}）を返しましたが、PyTorch の結果と違います。{hint_ja}",
                 f"{call} returned {got!r} ({result['value'].get('type')}), which is not what PyTorch gives. {hint_en}")


@pytest.mark.check("shapes", "畳み込み: 基本", "convolution: basic sizes")
def check_conv_basic(ctx):
    judge_group(ctx, "conv2d_output_size", "basic")


@pytest.mark.check("shapes", "畳み込み: ストライド", "convolution: stride")
def check_conv_stride(ctx):
    judge_group(ctx, "conv2d_output_size", "stride")


@pytest.mark.check("shapes", "畳み込み: パディング", "convolution: padding")
def check_conv_padding(ctx):
    judge_group(ctx, "conv2d_output_size", "padding")


@pytest.mark.check("shapes", "畳み込み: ダイレーション", "convolution: dilation")
def check_conv_dilation(ctx):
    judge_group(ctx, "conv2d_output_size", "dilation")


@pytest.mark.check("shapes", "畳み込み: (高さ, 幅) の組", "convolution: (h, w) pairs")
def check_conv_pairs(ctx):
    judge_group(ctx, "conv2d_output_size", "pairs")


@pytest.mark.check("shapes", "畳み込み: 不正な引数", "convolution: invalid arguments")
def check_conv_invalid(ctx):
    judge_group(ctx, "conv2d_output_size", "invalid")


@pytest.mark.check("shapes", "プーリング: 基本", "pooling: basic sizes")
def check_pool_basic(ctx):
    judge_group(ctx, "pool2d_output_size", "basic")


@pytest.mark.check("shapes", "プーリング: stride の省略", "pooling: default stride")
def check_pool_default_stride(ctx):
    judge_group(ctx, "pool2d_output_size", "default_stride")


@pytest.mark.check("shapes", "プーリング: ceil_mode", "pooling: ceil_mode")
def check_pool_ceil_mode(ctx):
    judge_group(ctx, "pool2d_output_size", "ceil_mode")


@pytest.mark.check("shapes", "プーリング: パディングとダイレーション", "pooling: padding and dilation")
def check_pool_padding_dilation(ctx):
    judge_group(ctx, "pool2d_output_size", "padding_dilation")


@pytest.mark.check("shapes", "プーリング: (高さ, 幅) の組", "pooling: (h, w) pairs")
def check_pool_pairs(ctx):
    judge_group(ctx, "pool2d_output_size", "pairs")


@pytest.mark.check("shapes", "プーリング: 不正な引数", "pooling: invalid arguments")
def check_pool_invalid(ctx):
    judge_group(ctx, "pool2d_output_size", "invalid")
