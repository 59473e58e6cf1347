"""Train the character-level language model of issue 15 and commit it as int8
(docs/llm.md; the model and file format: compiler/llm_model.py, compiler/torch_models.CharLM).

    .venv/bin/python -m tools.train_lm [--steps N] [--out compiler/data/char_lm.npz]
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
   ``STEPS`` steps of ``BATCH`` random windows of 257 characters (inputs 256, targets shifted by
   one), learning rate ``LR`` with ``WARMUP`` linear warm-up steps then cosine decay to
   ``LR/10``, gradients clipped at norm 1; the float weights go to ``--checkpoint``
   (``build/``, not committed); ``--from-checkpoint`` skips training and reuses them;
3. import: ``CALIBRATION`` windows of 256 training characters (seeded positions) are embedded
   and calibrate the body's int8 import (:func:`compiler.llm_model.import_char_lm`, i.e.
   ``torch.export`` + :func:`compiler.torch_import.import_exported`); the token and position
   tables are quantized at the graph input's scale (zero point 0);
4. the file: graph, vocabulary, tables, scales and the record below
   (:func:`compiler.llm_model.save`), then greedy samples of the float model and of the int8
   graph on the interpreter (:meth:`compiler.llm_model.CharLMPack.greedy`) from ``PROMPT``, and the
   regression pin of tests/test_llm_model.py (``PIN_*``: the int8 greedy continuation computed
   here, stored in the file's ``train`` record; the test recomputes it).

How the committed weights were made (this script with its defaults, at the commit that added
them; the text's SHA-256 and the commit of the text are in the file's ``train`` record):

* data: 415,082 characters (394,327 trained on, 20,755 held out), vocabulary 96 symbols
  (2,423 characters map to '?');
* seed 0, 1400 steps x 16 windows x 256 characters (5.7 M characters, ~15 passes), lr 3e-3;
* loss (cross-entropy, nats/character): train 1.23 (mean of the last 50 steps), held-out 1.65;
  next-character accuracy on a training window: float 57.6 %, int8 graph 51.0 %;
* wall time: training 557 s on one thread of a shared 2-core machine; import + samples 17 s.

Reproducing: the same text (``git show <commit>:docs/...``; the record holds its SHA-256) and
this script give the same float weights on the same torch build and CPU (torch's CPU kernels
are deterministic on one thread; another CPU or torch version can round differently).
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
STEPS, BATCH, LR, WARMUP = 1400, 16, 3e-3, 50
WEIGHT_DECAY = 0.1
VAL_FRACTION = 0.05
CALIBRATION = 16
PROMPT, SAMPLE_CHARS = "The compiler", 64
#: the regression pin of tests/test_llm_model.py: the int8 graph at sequence length PIN_SEQ
PIN_PROMPT, PIN_CHARS, PIN_SEQ = "The compiler", 32, 48
CHECKPOINT = os.path.join("build", "char_lm_float.pt")


def git_commit():
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def lr_at(step):
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    t = (step - WARMUP) / max(1, STEPS - WARMUP)
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


def train(model, train_data, val_data, steps, log=print):
    embeds = {id(model.tok.weight), id(model.pos.weight)}
    decay = [p for p in model.parameters() if p.dim() == 2 and id(p) not in embeds]
    other = [p for p in model.parameters() if not (p.dim() == 2 and id(p) not in embeds)]
    opt = torch.optim.AdamW([dict(params=decay, weight_decay=WEIGHT_DECAY),
                             dict(params=other, weight_decay=0.0)], lr=LR, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(SEED)
    model.train()
    losses, t0 = [], time.time()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        x, y = batches(train_data, gen, BATCH)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if step % 100 == 0 or step == steps - 1:
            log(f"step {step:5d}  loss {loss.item():.4f}  lr {lr_at(step):.2e}  "
                f"{time.time() - t0:6.0f} s")
    wall = time.time() - t0
    return dict(train_loss=float(np.mean(losses[-50:])), val_loss=evaluate(model, val_data),
                train_wall_s=round(wall, 1))


@torch.no_grad()
def float_greedy(model, vocab, prompt, n):
    """The float model's greedy continuation (the last CONTEXT characters as the window)."""
    model.eval()
    ids = list(vocab.encode(prompt))
    for _ in range(n):
        ctx = torch.tensor(ids[-CONTEXT:])[None]
        ids.append(int(model(ctx)[0, -1].argmax()))
    return vocab.decode(ids)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--out", default=llm_model.DATA_FILE)
    ap.add_argument("--checkpoint", default=CHECKPOINT)
    ap.add_argument("--from-checkpoint", action="store_true",
                    help="skip training, import the float weights of --checkpoint")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(SEED)

    text = llm_model.corpus_text()
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
        record = train(model, train_data, val_data, args.steps)
        record.update(seed=SEED, steps=args.steps, batch=BATCH, lr=LR, warmup=WARMUP,
                      weight_decay=WEIGHT_DECAY, schedule="linear warm-up, cosine to lr/10",
                      optimizer="AdamW betas (0.9, 0.95), grad clip 1.0",
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
                  text_commit=git_commit(), val_fraction=VAL_FRACTION,
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
    sample_f = float_greedy(model, vocab, PROMPT, SAMPLE_CHARS)
    sample_q = pack.greedy(PROMPT, SAMPLE_CHARS)
    pin = pack.greedy(PIN_PROMPT, PIN_CHARS, seq=PIN_SEQ)
    record.update(sample_prompt=PROMPT, sample_float=sample_f, sample_int8=sample_q,
                  pin=dict(prompt=PIN_PROMPT, chars=PIN_CHARS, seq=PIN_SEQ, text=pin),
                  import_wall_s=round(time.time() - t0, 1))
    llm_model.save(args.out, train=record, **save_kw)
    print(f"embedding tables: scale {scale:.5g}, clipped fraction tok {clipped[0]:.4f} "
          f"pos {clipped[1]:.4f}")
    print(f"logits: scale {out_qp.scale:.5g}, zero point {out_qp.zero_point}")
    print(f"wrote {args.out}: {os.path.getsize(args.out)} bytes")
    print(f"float greedy: {sample_f!r}")
    print(f"int8  greedy: {sample_q!r}")
    print(f"pin (seq {PIN_SEQ}): {pin!r}")
    print(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
