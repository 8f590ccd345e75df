"""Part 1: linear_forward computes what torch's linear layer computes, on hidden shapes (a batch, one sample,
no bias) and refuses shapes that do not fit, written with matrix products rather than torch's layer."""

import pytest
import torch

from autograder.judge import fail
from autograder.observe import tensors

FUNCTION = "linear_forward"
HINTS = {
    "batch": ("x @ weight.T + bias の形は (N, out_features) です。", "x @ weight.T + bias has shape (N, out_features)."),
    "no_batch": ("x が 1 次元 (in_features,) のときは (out_features,) を返します。",
                 "for a 1-D x of shape (in_features,), return shape (out_features,)."),
    "no_bias": ("bias が None のときは足しません。", "when bias is None, add nothing."),
    "invalid": ("形が合わないときは ValueError を送出します。", "raise ValueError when the shapes do not fit."),
}


def draw(x_shape, w_shape, b_shape, seed):
    """The probe's tensors, drawn as the sandbox drew them (runtime.py, Probes.linear)."""
    generator = torch.Generator().manual_seed(seed)
    x, w = torch.randn(x_shape, generator=generator), torch.randn(w_shape, generator=generator)
    return x, w, torch.randn(b_shape, generator=generator) if b_shape is not None else None


def expected(x, w, b):
    """F.linear's answer, or None where the shapes do not fit (the notebook asks for ValueError there)."""
    fits = (x.dim() in (1, 2) and w.dim() == 2 and x.shape[-1] == w.shape[1]
            and (b is None or tuple(b.shape) == (w.shape[0],)))
    return torch.nn.functional.linear(x, w, b) if fits else None


def shape_text(shape) -> str:
    return "None" if shape is None else f"({', '.join(map(str, shape))}{',' if len(shape) == 1 else ''})"


def linear_record(ctx):
    error = ctx.cell_error(FUNCTION)
    if error:
        fail(error.ja, error.en)
    record = ctx.obs.first("linear")
    if record is None or not isinstance(record.get("results"), list):
        why = ctx.stopped_why()
        fail(f"{FUNCTION} のテストまで到達しませんでした（{why.ja}）。", f"grading never reached {FUNCTION} ({why.en}).")
    return record


def judge_group(ctx, group):
    record = linear_record(ctx)
    hint_ja, hint_en = HINTS[group]
    probes, results = ctx.probes[FUNCTION], record["results"]
    for i, (g, x_shape, w_shape, b_shape) in enumerate(probes):
        if g != group:
            continue
        call = f"{FUNCTION}(x{shape_text(x_shape)}, weight{shape_text(w_shape)}, bias{shape_text(b_shape)})"
        result = results[i] if i < len(results) and isinstance(results[i], dict) else None
        if result is None:
            fail(f"{call} の結果がありません。", f"no result for {call}.")
        error = result.get("error") if isinstance(result.get("error"), dict) else {}
        if error.get("type") == "NotImplementedError":
            fail(f"{FUNCTION} はまだ実装されていません。", f"{FUNCTION} is not implemented yet.")
        if not result.get("ok") and error.get("type") == "NameError":
            missing = ctx.describe(error, f"{call} の実行中に", f"running {call}")
            fail(missing.ja, missing.en)
        want = expected(*draw(x_shape, w_shape, b_shape, ctx.probes["seed"] + i))
        if want is None:
            if result.get("ok") or error.get("type") != "ValueError":
                got = "値を返しました" if result.get("ok") else f"{error.get('type')} が送出されました"
                got_en = "returned a value" if result.get("ok") else f"raised {error.get('type')}"
                fail(f"{call} は ValueError を送出すべきですが、{got}。{hint_ja}",
                     f"{call} should raise ValueError, but {got_en}. {hint_en}")
            continue
        if not result.get("ok"):
            fail(f"{call} で {error.get('type')} が送出されました: {error.get('message', '')}",
                 f"{call} raised {error.get('type')}: {error.get('message', '')}")
        out = (tensors(result.get("output")) or {}).get("y")
        if out is None:
            fail(f"{call} の戻り値を読み取れませんでした。", f"the result of {call} could not be read.")
        if tuple(out.shape) != tuple(want.shape):
            fail(f"{call} の戻り値の形が {tuple(out.shape)} です（{tuple(want.shape)} になるはずです）。{hint_ja}",
                 f"{call} returned shape {tuple(out.shape)}, not {tuple(want.shape)}. {hint_en}")
        if not torch.allclose(out, want, rtol=1e-4, atol=1e-4):
            fail(f"{call} の値が nn.Linear の結果と違います。{hint_ja}",
                 f"{call} returned values that differ from nn.Linear's. {hint_en}")


@pytest.mark.check("linear", "ミニバッチ (N, in) の入力", "a batch of inputs (N, in)", weight=2)
def check_batch(ctx):
    judge_group(ctx, "batch")


@pytest.mark.check("linear", "1 サンプル (in,) の入力", "one sample (in,)")
def check_no_batch(ctx):
    judge_group(ctx, "no_batch")


@pytest.mark.check("linear", "bias なし", "no bias")
def check_no_bias(ctx):
    judge_group(ctx, "no_bias")


@pytest.mark.check("linear", "形が合わないときは ValueError", "ValueError when the shapes do not fit")
def check_invalid(ctx):
    judge_group(ctx, "invalid")


@pytest.mark.check("linear", "行列の積で書く（F.linear を使わない）", "written with matrix products, not F.linear",
                   observed=True)
def check_by_hand(ctx):
    record = linear_record(ctx)
    if not any(isinstance(r, dict) and r.get("ok") for r in record["results"]):
        fail(f"{FUNCTION} が一度も値を返しませんでした。", f"{FUNCTION} never returned a value.")
    if record.get("used_torch_linear"):
        fail(f"{FUNCTION} が torch の線形層（F.linear か nn.Linear）を呼んでいます。x @ weight.T + bias を自分で計算してください。",
             f"{FUNCTION} calls torch's linear layer (F.linear or nn.Linear): compute x @ weight.T + bias yourself.")
