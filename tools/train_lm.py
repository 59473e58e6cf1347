"""Train the character-level language model of issue 15 and commit it as int8
(docs/llm.md; the model and file format: compiler/llm_model.py, compiler/torch_models.CharLM).

    .venv/bin/python -m tools.train_lm [--steps N] [--qat-steps N] [--out compiler/data/char_lm.npz]
                                       [--checkpoint build/char_lm_float.pt] [--from-checkpoint]

``make`` never runs this: the committed ``compiler/data/char_lm.npz`` is its output.

Steps (one invocation, one CPU thread, ``torch.manual_seed(SEED)``):

1. data: ``README.md`` + ``docs/*.md`` of the repository, sorted by path and concatenated
   (:func:`compiler.llm_model.corpus_text`); the vocabulary is built from it
   (:class:`compiler.llm_model.Vocab`: printable ASCII and newline seen at least 3 times, every
   other character ``'?'``); the last ``VAL_FRACTION`` of the characters is held out for the
   validation loss, the rest is trained on;
2. training: :class:`compiler.torch_models.CharLM` (d_model 128, 2 layers, 4 heads, SwiGLU 352,
   learned positions, context 256), AdamW (betas 0.9/0.95, weight decay 0.1 on matrices only),
   ``STEPS`` float steps of ``BATCH`` random windows of 257 characters (inputs 256, targets
   shifted by one), learning rate ``LR`` with ``WARMUP`` linear warm-up steps then cosine decay
   to ``LR/10``, gradients clipped at norm 1, plus a range penalty (``PENALTY``, ``LIMITS``,
   :class:`ActQuant`) that keeps the residual stream and the SwiGLU product within about +-8:
   the importer gives the whole residual stream ONE symmetric int8 scale set by its largest
   value, and without the penalty a few outliers (up to ~23 after block 2, ~37 in the SwiGLU
   product) made that step 0.19 against typical values of 1-2. Optionally (``--qat-steps N``,
   default ``QAT_STEPS`` = 0) N quantization-aware steps follow (:func:`qat_forward`: the
   forward pass as the int8 graph computes it, fake-quantized with straight-through gradients:
   per-channel int8 weights, both embedding rows at the residual stream's scale, every
   activation the importer quantizes per tensor at scales from a running average of the
   batches' ranges, the attention's int8 scores and 1/127 probabilities), learning rate
   ``QAT_LR`` cosine to ``QAT_LR/10``, the penalty still on; measured in docs/llm.md, they did
   not beat the same number of float steps, so the committed weights have none. The float
   weights go to ``--checkpoint`` (``build/``, not committed); ``--from-checkpoint`` skips
   training and reuses them. The model's structure and exported graph are those of plain
   float training: the penalty and quantizers hang on :func:`compiler.torch_models._tap`,
   which is ``None`` outside training;
3. import: ``CALIBRATION`` windows of 256 training characters (seeded positions) are embedded
   and calibrate the body's int8 import (:func:`compiler.llm_model.import_char_lm`, i.e.
   ``torch.export`` + :func:`compiler.torch_import.import_exported`); the token and position
   tables are quantized at the graph input's scale (zero point 0);
4. the file: graph, vocabulary, tables, scales and the record below
   (:func:`compiler.llm_model.save`); then the measurements stored in the record: teacher-forced
   next-character accuracy and cross-entropy of the float model and of the int8 graph on the
   interpreter, and how often their predictions agree (:func:`compare`, ``EVAL_WINDOWS``
   training and held-out windows), greedy samples of both from ``PROMPTS``
   (:meth:`compiler.llm_model.CharLMPack.greedy`), and the regression pin of
   tests/test_llm_model.py (``PIN_*``: the int8 greedy continuation computed here, stored in the
   file's ``train`` record; the test recomputes it).

How the committed weights were made (this script with its defaults, at the commit that added
them; the text's SHA-256 and the commit of the text are in the file's ``train`` record):

* data: 444,719 characters (422,483 trained on, 22,236 held out), vocabulary 96 symbols
  (2,490 characters map to '?');
* seed 0, 1800 steps x 16 windows x 256 characters (7.4 M characters, ~17 passes), lr 3e-3;
  range penalty 1.0 above +-8 on the residual stream and the SwiGLU product; no
  quantization-aware steps;
* loss (cross-entropy, nats/character): train 1.13 (mean of the last 50 steps), held-out 1.60;
* teacher-forced on 16 training / 16 held-out windows (``eval`` in the record): accuracy float
  66.7 % / 55.9 %, int8 graph 65.7 % / 54.9 %, the two agree on 90.4 % / 89.0 % of positions;
  cross-entropy float 1.17 / 1.57, int8 1.21 / 1.61; residual stream scale 0.066 (0.185
  without the penalty, docs/llm.md);
* wall time: training 818 s on one thread of a shared 2-core machine (load ~3); import,
  measurements and samples 83 s.

Reproducing: the same text (``git show <commit>:docs/...``, the commit the record names, read
when the run started; the record holds its SHA-256) and this script give the same float weights
on the same torch build and CPU (torch's CPU kernels are deterministic on one thread: two runs
here logged the same losses step for step; another CPU or torch version can round
differently).
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from compiler import llm_model
from compiler.llm_model import CONTEXT, D_MODEL, HEADS, LAYERS, Vocab
from compiler.torch_models import CharLM

SEED = 0
STEPS, BATCH, LR, WARMUP = 1800, 16, 3e-3, 50
#: quantization-aware steps after the STEPS float steps (learning rate QAT_LR, cosine to /10);
#: none by default: 1400 float + 400 of them did not beat 1800 float steps (docs/llm.md)
QAT_STEPS, QAT_LR = 0, 1e-3
#: range penalty: PENALTY * sum over the elements of (|a| - LIMITS[point])^2 where |a| exceeds
#: the limit, per position, added to the loss at every step (float and QAT): keeps the outliers
#: that set the importer's per-tensor max scales small
LIMITS = dict(residual=8.0, mul=8.0)
PENALTY = 1.0
QAT_MOMENTUM = 0.9          #: running average of the batch ranges that set the QAT scales
WEIGHT_DECAY = 0.1
VAL_FRACTION = 0.05
CALIBRATION = 16
EVAL_WINDOWS = 16           #: teacher-forced windows per split for the float/int8 comparison
PROMPT, SAMPLE_CHARS = "The compiler", 64
PROMPTS = (PROMPT, "The queue controller", "Each PE")
#: the regression pin of tests/test_llm_model.py: the int8 graph at sequence length PIN_SEQ
PIN_PROMPT, PIN_CHARS, PIN_SEQ = "The compiler", 32, 48
CHECKPOINT = os.path.join("build", "char_lm_float.pt")


def git_commit():
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def lr_at(step, steps=STEPS):
    """Float steps: ``WARMUP`` linear warm-up steps, then cosine from LR to LR/10 at ``steps``."""
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    t = (step - WARMUP) / max(1, steps - WARMUP)
    return LR * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def batches(data, gen, batch):
    starts = torch.randint(0, len(data) - CONTEXT - 1, (batch,), generator=gen)
    w = torch.stack([data[s:s + CONTEXT + 1] for s in starts.tolist()])
    return w[:, :-1], w[:, 1:]


@torch.no_grad()
def evaluate(model, data, windows=32):
    """Mean cross-entropy over ``windows`` evenly spaced non-overlapping windows of ``data``."""
    model.eval()
    n = min(windows, (len(data) - 1) // (CONTEXT + 1))
    starts = np.linspace(0, len(data) - CONTEXT - 2, n).astype(int)
    w = torch.stack([data[s:s + CONTEXT + 1] for s in starts])
    loss = F.cross_entropy(model(w[:, :-1]).flatten(0, 1), w[:, 1:].flatten()).item()
    model.train()
    return loss


#: the taps (compiler.torch_models._tap) of the residual stream: the graph input, the adds and the
#: projections into them share ONE symmetric int8 scale after the import (torch_import's
#: plan_adds); the attention operands are symmetric (zero point 0), the rest asymmetric
RESIDUAL = ("input", "add1", "add2", "out", "w2")
SYMMETRIC = ("q", "k", "v")


class ActQuant:
    """The training-time ``act_quant`` of :class:`compiler.torch_models.CharLMBody`'s modules
    (:func:`compiler.torch_models._tap`): the range penalty (:data:`LIMITS`) always, and with
    :attr:`quantize` the importer's per-tensor int8 quantization simulated at every tap
    (fake quantization, straight-through gradients): one symmetric scale for the whole residual
    stream, symmetric q/k/v, asymmetric ranges widened to 0 elsewhere, each from a running
    average of the batches' ranges; inside the attention the int8 scores (symmetric, from their
    range) and the probabilities at 1/127, as the graph's ``attention`` computes them."""

    def __init__(self, model, limits=LIMITS, momentum=QAT_MOMENTUM):
        self.names = {id(m): n for n, m in model.named_modules()}
        self.modules = [m for m in model.modules() if hasattr(type(m), "act_quant")]
        self.limits, self.momentum = dict(limits), momentum
        self.ranges = {}                    #: tap key -> [lo, hi]
        self.quantize = False
        self.penalty = 0.0

    def install(self, on=True):
        for m in self.modules:
            m.act_quant = self if on else None

    def key(self, module, point):
        return "residual" if point in RESIDUAL else f"{self.names[id(module)]}.{point}"

    def qparams(self, key):
        lo, hi = self.ranges[key]
        if key == "residual" or key.rsplit(".", 1)[-1] in SYMMETRIC + ("scores",):
            return max(abs(lo), abs(hi)) / 127 or 1.0, 0
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        scale = (hi - lo) / 255 or 1.0
        return scale, int(np.clip(round(-128 - lo / scale), -128, 127))

    def observe(self, key, x):
        lo, hi = float(x.detach().min()), float(x.detach().max())
        r = self.ranges.setdefault(key, [lo, hi])
        m = self.momentum
        r[0], r[1] = m * r[0] + (1 - m) * lo, m * r[1] + (1 - m) * hi

    def fake_quant(self, key, x):
        scale, zp = self.qparams(key)
        return torch.fake_quantize_per_tensor_affine(x, scale, zp, -128, 127)

    def limit(self, what, x, weight=None):
        t = self.limits.get(what)
        if t is not None:
            over = (x.abs() - t).relu().pow(2)
            self.penalty = self.penalty + (over if weight is None else over * weight).sum() \
                / (x.shape[0] * x.shape[-2])

    def take_penalty(self):
        p, self.penalty = self.penalty, 0.0
        return p

    def __call__(self, module, point, x):
        key = self.key(module, point)
        self.limit("residual" if key == "residual" else point, x)
        if not self.quantize:
            return x
        self.observe(key, x)
        return self.fake_quant(key, x)

    def attention(self, module, q, k, v, causal):
        if not (self.quantize or "scores" in self.limits):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        key = f"{self.names[id(module)]}.scores"
        s = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
        keep = torch.ones(s.shape[-2:], dtype=torch.bool)
        keep = keep.tril() if causal else keep
        self.limit("scores", s, keep)
        if self.quantize:
            self.observe(key, s.masked_fill(~keep, 0.0))
            s = self.fake_quant(key, s)
        p = torch.softmax(s.masked_fill(~keep, float("-inf")), -1)
        if self.quantize:
            p = torch.fake_quantize_per_tensor_affine(p, 1 / 127, 0, 0, 127)
        return p @ v


def weight_fake_quant(w):
    """A linear's weight ``[out, in]`` at the importer's per-output-channel symmetric int8
    (straight-through gradient)."""
    scale = w.detach().abs().amax(1, keepdim=True).clamp_min(1e-12) / 127
    return w + (torch.clamp(torch.round(w / scale), -127, 127) * scale - w).detach()


def qat_forward(model, aq, idx):
    """``model(idx)`` as the int8 graph computes it (``aq.quantize`` on): the body's linear
    weights per-channel int8, both embedding rows quantized at the residual stream's scale before
    they are added (the file's ``tok_q``/``pos_q``), every tap fake-quantized by ``aq``."""
    params = dict(model.named_parameters())
    body = {k[len("body."):]: weight_fake_quant(v) if v.dim() == 2 else v
            for k, v in params.items() if k.startswith("body.")}
    tok = params["tok.weight"][idx] * model.embed_scale
    pos = params["pos.weight"][:idx.shape[-1]] * model.embed_scale
    if "residual" in aq.ranges:
        scale, _ = aq.qparams("residual")
        tok, pos = (torch.fake_quantize_per_tensor_affine(t, scale, 0, -128, 127)
                    for t in (tok, pos))
    return torch.func.functional_call(model.body, body, (tok + pos,))


def qat_lr_at(step, steps=QAT_STEPS):
    return QAT_LR * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / max(1, steps))))


def train(model, train_data, val_data, steps, qat_steps, log=print):
    """``steps`` float steps then ``qat_steps`` quantization-aware ones, the range penalty in
    both (:class:`ActQuant`); one optimizer throughout."""
    embeds = {id(model.tok.weight), id(model.pos.weight)}
    decay = [p for p in model.parameters() if p.dim() == 2 and id(p) not in embeds]
    other = [p for p in model.parameters() if not (p.dim() == 2 and id(p) not in embeds)]
    opt = torch.optim.AdamW([dict(params=decay, weight_decay=WEIGHT_DECAY),
                             dict(params=other, weight_decay=0.0)], lr=LR, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(SEED)
    aq = ActQuant(model)
    aq.install()
    model.train()
    losses, t0, record = [], time.time(), {}
    try:
        for step in range(steps + qat_steps):
            qat = step >= steps
            if qat and not aq.quantize:
                record.update(float_train_loss=float(np.mean(losses[-50:])),
                              float_wall_s=round(time.time() - t0, 1))
                aq.quantize = True
            lr = qat_lr_at(step - steps, qat_steps) if qat else lr_at(step, steps)
            for g in opt.param_groups:
                g["lr"] = lr
            x, y = batches(train_data, gen, BATCH)
            logits = qat_forward(model, aq, x) if qat else model(x)
            ce = F.cross_entropy(logits.flatten(0, 1), y.flatten())
            penalty = aq.take_penalty()
            loss = ce + PENALTY * penalty
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(ce.item())
            if step % 100 == 0 or step == steps + qat_steps - 1:
                res = aq.ranges.get("residual", [0.0, 0.0])
                pen = float(torch.as_tensor(penalty).detach())
                log(f"step {step:5d}  {'qat ' if qat else ''}loss {ce.item():.4f}  penalty "
                    f"{pen:.4f}  lr {lr:.2e}  residual {res[0]:.2f}..{res[1]:.2f}  "
                    f"{time.time() - t0:6.0f} s")
    finally:
        aq.install(False)
    record.update(train_loss=float(np.mean(losses[-50:])), val_loss=evaluate(model, val_data),
                  train_wall_s=round(time.time() - t0, 1))
    return record


@torch.no_grad()
def float_greedy(model, vocab, prompt, n):
    """The float model's greedy continuation (the last CONTEXT characters as the window)."""
    model.eval()
    ids = list(vocab.encode(prompt))
    for _ in range(n):
        ctx = torch.tensor(ids[-CONTEXT:])[None]
        ids.append(int(model(ctx)[0, -1].argmax()))
    return vocab.decode(ids)


def eval_windows(train_data, val_data, n=EVAL_WINDOWS):
    """``n`` training windows at seeded positions and ``n`` evenly spaced held-out windows of
    CONTEXT + 1 characters (inputs and the next characters)."""
    gen = np.random.default_rng(SEED + 1)
    tr = [train_data[s:s + CONTEXT + 1].numpy()
          for s in gen.integers(0, len(train_data) - CONTEXT - 1, n)]
    va = [val_data[s:s + CONTEXT + 1].numpy()
          for s in np.linspace(0, len(val_data) - CONTEXT - 2, n).astype(int)]
    return dict(train=tr, held_out=va)


@torch.no_grad()
def compare(model, pack, windows):
    """Teacher-forced next-character prediction of the float model and of the int8 graph (the
    integer interpreter; its logits dequantized) on ``windows``: accuracy of each, how often
    their argmaxes agree, cross-entropy of each (nats/character)."""
    model.eval()
    graph = pack.graph()
    out = dict(windows=len(windows), positions=len(windows) * CONTEXT)
    fl, ql, ys = [], [], []
    for w in windows:
        fl.append(model(torch.as_tensor(w[:-1])[None])[0].double())
        q = pack.logits(graph, w[:-1]).astype(np.float64)
        ql.append(torch.as_tensor((q - pack.output["zero_point"]) * pack.output["scale"]))
        ys.append(torch.as_tensor(w[1:]))
    f, q, y = torch.cat(fl), torch.cat(ql), torch.cat(ys)
    fa, qa = f.argmax(-1), q.argmax(-1)
    rate = lambda hit: float(hit.double().mean())       # noqa: E731
    out.update(float_acc=rate(fa == y), int8_acc=rate(qa == y), agree=rate(fa == qa),
               float_loss=float(F.cross_entropy(f, y)), int8_loss=float(F.cross_entropy(q, y)))
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--qat-steps", type=int, default=QAT_STEPS)
    ap.add_argument("--out", default=llm_model.DATA_FILE)
    ap.add_argument("--checkpoint", default=CHECKPOINT)
    ap.add_argument("--from-checkpoint", action="store_true",
                    help="skip training, import the float weights of --checkpoint")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(SEED)

    text, text_commit = llm_model.corpus_text(), git_commit()     # the commit the text is read at
    vocab = Vocab.build(text)
    data = torch.as_tensor(vocab.encode(text))
    split = int(len(data) * (1 - VAL_FRACTION))
    train_data, val_data = data[:split], data[split:]
    print(f"text: {len(text)} characters from {len(llm_model.corpus_files())} files, "
          f"vocabulary {len(vocab)}: {vocab.symbols!r}; {split} trained on, "
          f"{len(data) - split} held out; {int((data == vocab.unk).sum())} characters map to "
          f"{llm_model.UNK!r}")

    model = CharLM(len(vocab), D_MODEL, LAYERS, HEADS, CONTEXT)
    print(f"parameters: {sum(p.numel() for p in model.parameters())} "
          f"(body {sum(p.numel() for p in model.body.parameters())})")
    if args.from_checkpoint:
        state = torch.load(args.checkpoint)
        model.load_state_dict(state["model"])
        record = state["record"]
    else:
        record = train(model, train_data, val_data, args.steps, args.qat_steps)
        record.update(seed=SEED, steps=args.steps, batch=BATCH, lr=LR, warmup=WARMUP,
                      weight_decay=WEIGHT_DECAY, schedule="linear warm-up, cosine to lr/10",
                      optimizer="AdamW betas (0.9, 0.95), grad clip 1.0",
                      qat_steps=args.qat_steps, qat_lr=QAT_LR, qat_schedule="cosine to lr/10",
                      qat_momentum=QAT_MOMENTUM, range_limits=LIMITS, range_penalty=PENALTY,
                      torch=str(torch.__version__))
        os.makedirs(os.path.dirname(os.path.abspath(args.checkpoint)), exist_ok=True)
        torch.save(dict(model=model.state_dict(), record=record), args.checkpoint)
    print(f"trained: {record}")

    t0 = time.time()
    gen = np.random.default_rng(SEED)
    cal = [train_data[s:s + CONTEXT].numpy()
           for s in gen.integers(0, len(train_data) - CONTEXT, CALIBRATION)]
    imported, tok_q, pos_q, scale = llm_model.import_char_lm(model, cal)
    clipped = [float(np.mean(np.abs(q) == 127)) for q in (tok_q, pos_q)]
    (out_t, out_qp, _), = imported.outputs
    (in_name, in_qp, _), = imported.inputs
    record.update(data="README.md + docs/*.md sorted by path, concatenated",
                  characters=len(text), text_sha256=llm_model.text_sha256(text),
                  text_commit=text_commit, val_fraction=VAL_FRACTION,
                  calibration_windows=CALIBRATION, embedding_clipped=clipped)
    config = dict(d_model=D_MODEL, layers=LAYERS, heads=HEADS, context=CONTEXT,
                  vocab=len(vocab))
    save_kw = dict(graph=imported.graph, vocab=vocab, config=config,
                   input=dict(name=in_name, scale=in_qp.scale, zero_point=in_qp.zero_point),
                   output=dict(name=out_t.name, scale=out_qp.scale,
                               zero_point=out_qp.zero_point),
                   tok_q=tok_q, pos_q=pos_q, embedding_scale=scale)
    llm_model.save(args.out, train=record, **save_kw)
    pack = llm_model.load(args.out)
    windows = eval_windows(train_data, val_data)
    record["eval"] = {split: compare(model, pack, w) for split, w in windows.items()}
    samples = [dict(prompt=p, float=float_greedy(model, vocab, p, SAMPLE_CHARS),
                    int8=pack.greedy(p, SAMPLE_CHARS)) for p in PROMPTS]
    sample_f, sample_q = samples[0]["float"], samples[0]["int8"]
    pin = pack.greedy(PIN_PROMPT, PIN_CHARS, seq=PIN_SEQ)
    record.update(sample_prompt=PROMPT, sample_float=sample_f, sample_int8=sample_q,
                  samples=samples[1:],
                  pin=dict(prompt=PIN_PROMPT, chars=PIN_CHARS, seq=PIN_SEQ, text=pin),
                  import_wall_s=round(time.time() - t0, 1))
    llm_model.save(args.out, train=record, **save_kw)
    print(f"embedding tables: scale {scale:.5g}, clipped fraction tok {clipped[0]:.4f} "
          f"pos {clipped[1]:.4f}")
    print(f"logits: scale {out_qp.scale:.5g}, zero point {out_qp.zero_point}")
    print(f"wrote {args.out}: {os.path.getsize(args.out)} bytes")
    for split, e in record["eval"].items():
        print(f"teacher-forced, {e['windows']} {split} windows: accuracy float "
              f"{e['float_acc']:.1%} int8 {e['int8_acc']:.1%}, agree {e['agree']:.1%}; loss "
              f"float {e['float_loss']:.3f} int8 {e['int8_loss']:.3f}")
    for smp in samples:
        print(f"float greedy: {smp['float']!r}")
        print(f"int8  greedy: {smp['int8']!r}")
    print(f"pin (seq {PIN_SEQ}): {pin!r}")
    print(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
