"""Grader-side: the hidden checks of the standard steps (labkit/steps.py): the network, the device switch, the
training loop (believed only through the judge's replay), evaluation, and the accuracy of the trained weights.

A lab's hidden/checks_*.py imports the checks it grades; pytest collects them there like its own (their
points come from that lab's [points] and [check_points]). The network's expected layers, parameter count
and function come from the answer key's class (assignment.toml: model), never from a second definition.
`forward_check(hint_ja, hint_en)` makes the forward check with the lab's own hint.
"""

import math

import pytest
import torch

from autograder import datasets
from autograder.judge import fail, number, type_name
from autograder.observe import tensors

from .records import LAYER_KEYS  # what the sandbox reports of each layer

NET_PROBE_BATCH = 16  # observe.plan_for's net_probe_batch: the images the network's forward is probed with


# --- the network -----------------------------------------------------------------------------------------
def built(ctx):
    """The net record, or fail with why there is none."""
    return ctx.record("net", "net", f"{ctx.assignment.model}()")


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


def expected_layers(ctx) -> dict:
    """attribute -> (class name, {key: value}) of the answer key's network, as the sandbox reports layers."""
    layers = {}
    for name, layer in ctx.model().named_children():
        info = {}
        for key in LAYER_KEYS:
            if hasattr(layer, key):
                value = getattr(layer, key)
                info[key] = list(value) if isinstance(value, tuple) else value
        layers[name] = (type(layer).__name__, info)
    return layers


def probe(ctx) -> torch.Tensor:
    """The images the sandbox probed the student's forward with (labkit.steps.ClassifierSteps.net)."""
    shape = datasets.PROVIDERS[ctx.assignment.dataset].SHAPE
    return torch.randn(NET_PROBE_BATCH, *shape, generator=torch.Generator().manual_seed(ctx.seed + 1))


@pytest.mark.check("net", "ネットワークを作成できる", "the network can be built", weight=1)
def check_builds(ctx):
    built(ctx)


@pytest.mark.check("net", "層の種類と大きさ", "layer types and sizes", weight=1)
def check_layers(ctx):
    layers = built(ctx).get("layers", {})
    for name, (kind, expected) in expected_layers(ctx).items():
        got = layers.get(name) or {}
        if got.get("class") != kind:
            fail(f"self.{name} は nn.{kind} であるべきですが、{got.get('class') or 'ありません'}。",
                 f"self.{name} should be an nn.{kind}, but is {got.get('class') or 'missing'}.")
        for key, value in expected.items():
            if normalise(got.get(key)) != normalise(value):
                fail(f"self.{name} の {key} が {got.get(key)} です。ノートブックの表と見比べてください。",
                     f"self.{name} has {key} = {got.get(key)}; compare it with the notebook's table.")


@pytest.mark.check("net", "学習可能なパラメータ数", "the number of trainable parameters", weight=1)
def check_parameters(ctx):
    expected = sum(p.numel() for p in ctx.model().parameters() if p.requires_grad)
    count = 0
    for p in built(ctx).get("params", []):
        if p.get("trainable"):
            n = 1
            for d in p.get("shape", []):
                n *= d
            count += n
    if count != expected:
        fail(f"学習可能なパラメータが {count:,} 個です（{expected:,} 個になるはずです）。",
             f"the network has {count:,} trainable parameters; it should have {expected:,}.")


@pytest.mark.check("net", "出力は (N, クラス数) の対数確率", "output is (N, classes) log-probabilities", weight=1)
def check_output(ctx):
    record = built(ctx)
    out = forward_output(ctx, record)
    x = probe(ctx)
    with torch.no_grad():
        shape = tuple(ctx.model()(x).shape)
    if tuple(out.shape) != shape:
        fail(f"入力 {tuple(x.shape)} に対する出力の形が {tuple(out.shape)} です（{shape} になるはずです）。",
             f"for an input of shape {tuple(x.shape)} the output has shape {tuple(out.shape)}, not {shape}.")
    total = torch.logsumexp(out.double(), dim=1)
    if not torch.allclose(total, torch.zeros_like(total), atol=1e-4):
        fail("出力の各行が対数確率になっていません（exp の和が 1 になりません）。最後に F.log_softmax(x, dim=1) を使います。",
             "the rows of the output are not log-probabilities (their exp does not sum to 1): end with "
             "F.log_softmax(x, dim=1).")


def forward_check(hint_ja: str, hint_en: str, weight: float = 2):
    """The check that the student's forward computes the answer key's function of the student's own weights,
    with the lab's hint of what to look at (its activations, the order of its layers)."""

    @pytest.mark.check("net", "forward の計算が表のとおり", "forward computes what the table says", weight=weight)
    def check_forward(ctx):
        record = built(ctx)
        out = forward_output(ctx, record)
        state = tensors(record.get("weights"))
        model = ctx.assignment.model
        reference = ctx.model()
        try:
            reference.load_state_dict(state or {}, strict=True)
        except (RuntimeError, KeyError, TypeError):
            fail(f"パラメータの名前か形が課題の {model} と違うため、forward を比べられません。",
                 f"the parameter names or shapes differ from the lab's {model}, so forward cannot be compared.")
        with torch.no_grad():
            expected = reference(probe(ctx))
        if out.shape != expected.shape or not torch.allclose(out, expected, atol=1e-4):
            fail(f"同じ重みで課題の {model} と出力が一致しません。{hint_ja}",
                 f"with the same weights, the output differs from the lab's {model}: {hint_en}")

    return check_forward


# --- the device switch, the loop, evaluation -------------------------------------------------------------
def device_case(ctx, asked, cuda):
    record = ctx.record("device", "get_device", "get_device", need_ok=False)
    case = record.get("cases", {}).get(f"{asked}-{cuda}") or {}
    situation_ja = f"get_device({asked})（CUDA {'あり' if cuda else 'なし'}）"
    situation_en = f"get_device({asked}) with CUDA {'available' if cuda else 'unavailable'}"
    if not case.get("ok"):
        error = ctx.describe(case.get("error"), f"{situation_ja} の実行中に", f"running {situation_en}")
        fail(error.ja, error.en)
    if not case.get("is_device"):
        fail(f"{situation_ja} が torch.device ではなく {case.get('type')} を返しました。",
             f"{situation_en} returned {case.get('type')}, not a torch.device.")
    return case


@pytest.mark.check("device", "GPU を使わないときは CPU", "CPU when the GPU is not asked for")
def check_cpu(ctx):
    for cuda in (False, True):
        if device_case(ctx, False, cuda)["type"] != "cpu":
            fail("use_gpu=False のときは CUDA があっても torch.device('cpu') を返します。",
                 "with use_gpu=False return torch.device('cpu'), even when CUDA is available.")


@pytest.mark.check("device", "GPU があれば CUDA", "CUDA when asked for and available")
def check_gpu(ctx):
    if device_case(ctx, True, True)["type"] != "cuda":
        fail("use_gpu=True で CUDA が使えるときは torch.device('cuda') を返します。",
             "with use_gpu=True and CUDA available, return torch.device('cuda').")


@pytest.mark.check("device", "CUDA がなければ CPU と通知", "CPU with a notice when CUDA is missing")
def check_fallback(ctx):
    case = device_case(ctx, True, False)
    if case["type"] != "cpu":
        fail("CUDA が使えないときは torch.device('cpu') を返します。", "without CUDA, return torch.device('cpu').")
    if not case.get("printed"):
        fail("GPU を求められたのに CUDA が使えないときは、そのことを print で知らせてください。",
             "when the GPU is asked for but CUDA is unavailable, say so with print.")


def training(ctx, *, need_ok=True):
    """The loop's record, believed only when the grader's replay of its steps leads to the weights it left
    (autograder/replay.py): otherwise every check that reads it loses, with the replay's reason."""
    record = ctx.record("training", "train_one_epoch", "train_one_epoch", need_ok=need_ok)
    verdict = ctx.training_verdict()
    if not verdict.verified:
        fail(verdict.message.ja, verdict.message.en)
    return record


def events(record) -> str:
    value = record.get("events")
    return value if isinstance(value, str) else ""


def counts(record, key) -> dict:
    value = record.get(key)
    return value if isinstance(value, dict) else {}


def passes(record) -> list[int]:
    """Batches taken in each pass over the loader ("e" starts a pass)."""
    return [p.count("b") for p in events(record).split("e")[1:]]


def full_passes(ctx, record) -> int:
    """The loop must go through every batch of every epoch: a loop that returns early proves nothing. (A loop
    that first peeks at one batch makes a short pass of its own: that costs nothing.) Returns the batches of
    the full passes."""
    t = ctx.assignment.training
    per_epoch = -(-len(ctx.data.train_labels) // t.batch_size)  # the images the loader serves: all but the holdout
    full = [n for n in passes(record) if n == per_epoch]
    if len(full) != t.epochs:
        done = max(passes(record), default=0) if len(full) < t.epochs else sum(full)
        expected = per_epoch if len(full) < t.epochs else per_epoch * t.epochs
        fail(f"ミニバッチを {done} 個しか処理していません（{expected} 個あります）。loader のすべてのミニバッチで学習してください。"
             if done < expected else f"{done} 個のミニバッチを処理しました（1 エポックは {expected} 個）。loader を 1 周だけしてください。",
             f"only {done} of the {expected} batches were used: train on every batch the loader gives."
             if done < expected else f"{done} batches were used where one epoch is {expected}: go over the loader once.")
    return sum(full)


@pytest.mark.check("device", "ミニバッチを device に移す", "every batch moved to the device", weight=2, observed=True)
def check_batches_moved(ctx):
    record = training(ctx, need_ok=False)
    batches = events(record).count("b")
    if batches == 0:
        if record.get("error"):
            error = ctx.describe(record["error"], "train_one_epoch の実行中に", "running train_one_epoch")
            fail(error.ja, error.en)
        fail("train_one_epoch が loader からミニバッチを一つも取り出していません。",
             "train_one_epoch never took a batch from the loader.")
    moves, forwards = counts(record, "moves"), counts(record, "forwards")
    if forwards.get("unmoved", 0) or moves.get("images", 0) < batches:
        fail("画像のミニバッチを device に移さずにモデルに渡しています。images = images.to(device) を使ってください。",
             "image batches reach the model without being moved to the device: use images = images.to(device).")
    if moves.get("labels", 0) < batches:
        fail("ラベルのミニバッチを device に移していません。labels = labels.to(device) を使ってください。",
             "label batches are not moved to the device: use labels = labels.to(device).")
    if forwards.get("model_elsewhere", 0):
        fail("モデルが device 上にないまま学習しています。", "the model is not on the device during training.")
    if moves.get("wrong_device", 0):
        fail("ミニバッチを引数の device とは別のデバイスに移しています。", "batches are moved to a device other than the one passed in.")


@pytest.mark.check("training", "train_one_epoch が最後まで動き float を返す", "train_one_epoch runs and returns a float")
def check_runs(ctx):
    record = training(ctx)
    full_passes(ctx, record)
    for value in record.get("returned") or []:
        if not isinstance(value, dict) or value.get("type") != "float":
            value = value if isinstance(value, dict) else {}
            shown = value.get("class") or value.get("type")
            fail(f"戻り値が float ではなく {shown} です。loss.item() で Python の数にしてください。",
                 f"it returned {shown}, not a float: use loss.item() to get a Python number.")


@pytest.mark.check("training", "学習モード（model.train()）", "training mode (model.train())", observed=True)
def check_train_mode(ctx):
    forwards = counts(training(ctx), "forwards")
    if not forwards.get("count"):
        fail("モデルが一度も呼ばれていません。", "the model was never called.")
    if forwards.get("train_mode", 0) < forwards["count"]:
        fail("学習中にモデルが評価モードになっています。ループの最初で model.train() を呼んでください。",
             "the model was in evaluation mode during training: call model.train() at the start.")


@pytest.mark.check("training", "zero_grad → backward → step を毎回", "zero_grad, backward and step for every batch", weight=2)
def check_steps(ctx):
    record = training(ctx)
    backward, steps = False, 0
    # The trace says, at each backward pass, whether the gradients had been cleared (k) or not (K), however
    # the loop cleared them: optimizer.zero_grad(), model.zero_grad() or by hand.
    for event in events(record):
        if event == "K":
            fail("前のミニバッチの勾配が残ったまま backward しています。毎回 optimizer.zero_grad() を呼んでください。",
                 "backward runs on top of the previous batch's gradients: call optimizer.zero_grad() for every batch.")
        elif event == "k":
            backward = True
        elif event == "s":
            if not backward:
                fail("loss.backward() の前に optimizer.step() を呼んでいます。", "optimizer.step() is called before loss.backward().")
            backward, steps = False, steps + 1
    batches = full_passes(ctx, record)
    if steps != batches:
        fail(f"{batches} 個のミニバッチに対して optimizer.step() が {steps} 回でした。ミニバッチごとに 1 回です。",
             f"optimizer.step() ran {steps} times for {batches} batches; it should run once per batch.")


@pytest.mark.check("training", "損失が下がる", "the loss falls")
def check_loss_falls(ctx):
    training(ctx)
    # Measured here, on held-out images, from the weights before (computed here) and after (replayed).
    before, after = ctx.initial_state(), ctx.trained_state()
    losses = [ctx.holdout_loss(state) if state else None for state in (before, after)]
    if None in losses:
        fail("学習前後の重みを読み取れませんでした。", "the weights before and after training could not be read.")
    first, last = losses
    if not last < 0.8 * first:
        fail(f"学習しても損失が十分に下がりませんでした（{first:.3f} → {last:.3f}）。",
             f"training did not lower the loss enough ({first:.3f} → {last:.3f}).")


@pytest.mark.check("training", "戻り値はミニバッチ損失の平均", "returns the mean batch loss")
def check_returns_mean(ctx):
    record = training(ctx)
    losses = ctx.training_verdict().last_pass_losses()  # as the replay computed them, not as the run said
    returned = record["returned"][-1] if record.get("returned") else {}
    value = number(returned)  # a 0-d tensor with the right mean loses only check_runs, for its type
    if value is None or not losses:
        fail("損失の平均を数で返してください。", "return the mean loss as a number (a float).")
    if not isinstance(value, (int, float)):  # nan and inf arrive as their names
        fail(f"train_one_epoch が {value} を返しました。このエポックの損失の平均を返してください。",
             f"train_one_epoch returned {value}, not this epoch's mean loss.")
    mean = sum(losses) / len(losses)
    if not math.isclose(value, mean, rel_tol=2e-3, abs_tol=1e-4):
        fail(f"戻り値 {value:.4f} がこのエポックの損失の平均と違います。",
             f"the returned value {value:.4f} is not this epoch's mean loss.")


def evaluation(ctx):
    return ctx.record("evaluate", "evaluate", "evaluate")


@pytest.mark.check("evaluate", "0 以上 1 以下の float を返す", "returns a float in [0, 1]")
def check_evaluate_returns(ctx):
    value = evaluation(ctx)["returned"] or {}
    if value.get("type") != "float" or not 0 <= value.get("value", -1) <= 1:
        shown = value.get("value", value.get("repr"))
        fail(f"戻り値 {shown!r}（{type_name(value)}）は 0 以上 1 以下の float ではありません。",
             f"the returned {shown!r} ({type_name(value)}) is not a float in [0, 1].")


@pytest.mark.check("evaluate", "正解率の値が正しい", "the accuracy is right", weight=2)
def check_evaluate_value(ctx):
    record = evaluation(ctx)
    value = record["returned"] or {}
    state = tensors(record.get("weights"))
    truth = ctx.holdout_accuracy(state) if state else None
    if truth is None:
        fail("評価したモデルの重みを読み取れませんでした。", "the weights of the evaluated model could not be read.")
    held = number(value)  # its type is check_evaluate_returns's business, not this check's
    if not isinstance(held, (int, float)) or not math.isclose(held, truth, abs_tol=1e-6):
        fail(f"evaluate が {value.get('value', value.get('repr'))!r} を返しましたが、同じモデルとデータの正解率と違います。"
             "正解数をサンプル数で割っているか確認してください。",
             f"evaluate returned {value.get('value', value.get('repr'))!r}, which is not the accuracy of that model on "
             "that data: divide the number of correct predictions by the number of samples.")


def no_evaluation_forward_with(ctx, flag: str, ja: str, en: str) -> None:
    """Lose the check unless evaluate() called the model, and none of those calls had `flag` set (a counter
    of harness.Spy: train_mode, grad_enabled)."""
    forwards = counts(evaluation(ctx), "forwards")
    if not forwards.get("count"):
        fail("evaluate がモデルを一度も呼んでいません。", "evaluate never called the model.")
    if forwards.get(flag):
        fail(ja, en)


@pytest.mark.check("evaluate", "評価モード（model.eval()）", "evaluation mode (model.eval())", observed=True)
def check_eval_mode(ctx):
    no_evaluation_forward_with(ctx, "train_mode", "評価中にモデルが学習モードのままです。最初に model.eval() を呼んでください。",
                               "the model stayed in training mode during evaluation: call model.eval() first.")


@pytest.mark.check("evaluate", "勾配を計算しない（torch.no_grad()）", "no gradients (torch.no_grad())", observed=True)
def check_no_grad(ctx):
    no_evaluation_forward_with(ctx, "grad_enabled", "評価中に勾配を計算しています。with torch.no_grad(): の中で計算してください。",
                               "gradients are computed during evaluation: compute inside with torch.no_grad():.")


@pytest.mark.check("training", "学習した重みのテスト正解率", "test accuracy of the weights your loop trained")
def check_accuracy(ctx):
    record = training(ctx)
    state = ctx.trained_state()
    if state is None:
        fail("学習した重みを読み取れませんでした。", "the trained weights could not be read.")
    accuracy = ctx.test_accuracy(state)
    model = ctx.assignment.model
    if accuracy is None:
        fail(f"学習した重みが課題の {model} の形と合いません。", f"the trained weights do not fit the lab's {model}.")
    ctx.findings.accuracy = accuracy  # the grader retrains with a second seed when this is near the threshold
    a = ctx.assignment.accuracy
    if accuracy >= a.threshold:
        return
    fraction = max(0.0, (accuracy - a.floor) / (a.threshold - a.floor))
    note_ja = f"（{model} は課題の {model} に置き換えて学習しました）" if record.get("substituted_net") else ""
    note_en = f" (your loop trained the lab's {model} in place of yours)" if record.get("substituted_net") else ""
    fail(f"テスト正解率 {accuracy:.4f} は満点の基準 {a.threshold:.2f} に届きませんでした{note_ja}。",
         f"test accuracy {accuracy:.4f} is below {a.threshold:.2f}, needed for full points{note_en}.", fraction=fraction)
