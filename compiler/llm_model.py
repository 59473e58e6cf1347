"""The character-level language model of issue 15 (docs/llm.md): its vocabulary, the committed
int8 file ``compiler/data/char_lm.npz`` (saved by ``tools/train_lm.py``), the loader that rebuilds
the imported graph for ``compile_graph``, and the NumPy reference that generates greedy text with
the graph's integer interpreter (:func:`compiler.graph.interpret`). Nothing here imports torch;
the PyTorch model is :class:`compiler.torch_models.CharLM` and :func:`import_char_lm` imports it
(torch is then imported lazily).

The model: token embedding + LEARNED position embedding (tables, looked up outside the graph) ->
``LAYERS`` LLaMA-style decoder blocks (RMSNorm, causal 4-head attention, SwiGLU) -> final
RMSNorm -> LM head linear. The imported graph is the body: its input ``x`` ``[1, S, D_MODEL]`` is
the int8 sum of the two embedding rows of every position, its output the int8 logits ``[1, S,
vocab]``; the host picks the next character from the logits of the last position (greedy:
argmax, the lowest index on a tie).

**Embedding rows on the chip.** The importer quantizes the graph input symmetrically (it feeds
the first residual add: zero point 0, scale ``s``). The file holds both tables quantized at that
scale and zero point 0 (``tok_q``, ``pos_q``); the input row of position ``p`` holding token
``t`` is the vector unit's saturating add ``clamp(tok_q[t] + pos_q[p], -128, 127)``
(:func:`golden.ops.add_sat`), which a DMA of each row plus an ``add`` computes on the chip.

**Vocabulary** (:class:`Vocab`): the characters of the training text that are printable ASCII
(space .. ``~``) or newline and occur at least ``MIN_COUNT`` times, sorted by code point, plus
``'?'``; every other character (non-ASCII such as box drawing, arrows, dashes, ``×``; tabs;
rare ASCII) maps to ``'?'``. At most 128 symbols.

**File format** (``np.load(path, allow_pickle=False)``; :func:`save`, :func:`load`): the array
``manifest`` is UTF-8 JSON bytes: ``format`` (``FORMAT``), ``vocab`` (the symbols as one string),
``config`` (d_model, layers, heads, context, vocab size), ``input`` / ``output`` (graph tensor
name, scale, zero point), ``embedding_scale``, ``train`` (how the weights were made: data,
seed, steps, lr, loss, wall time, text SHA-256, git commit), ``graph`` (the imported graph: name,
output names and one entry per node: op, name, input names, attributes, output shape, dtype,
scale, zero point). Every NumPy value (constants' data, per-channel scales, integer attributes
such as ``mult``/``shift``/``bias``/``gamma``/LUT tables) is an array of the file named in the
manifest as ``{"array": key}``; ``tok_q`` and ``pos_q`` are the int8 embedding tables.
"""
import glob
import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from golden import ops

from .graph import Graph, Node, Tensor, interpret

__all__ = ["FORMAT", "CONTEXT", "D_MODEL", "LAYERS", "HEADS", "MIN_COUNT", "UNK", "DATA_FILE",
           "Vocab", "corpus_files", "corpus_text", "CharLMPack", "save", "load", "graph_to_arrays",
           "graph_from_arrays", "import_char_lm"]

FORMAT = "kaki-char-lm-1"
CONTEXT, D_MODEL, LAYERS, HEADS = 256, 128, 2, 4
MIN_COUNT = 3               #: a printable ASCII character rarer than this in the text maps to UNK
UNK = "?"
DATA_FILE = os.path.join(os.path.dirname(__file__), "data", "char_lm.npz")
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------- data, vocabulary
def corpus_files(root=_REPO):
    """The training text's files: ``README.md`` and ``docs/*.md`` of ``root``, sorted by their
    path relative to ``root`` (so README.md comes first)."""
    rel = ["README.md"] + [os.path.relpath(p, root) for p in glob.glob(os.path.join(root, "docs",
                                                                                    "*.md"))]
    return [os.path.join(root, p) for p in sorted(rel)]


def corpus_text(root=_REPO):
    """The files of :func:`corpus_files` read as UTF-8 and concatenated (nothing in between)."""
    parts = []
    for p in corpus_files(root):
        with open(p, encoding="utf-8") as f:
            parts.append(f.read())
    return "".join(parts)


@dataclass(frozen=True)
class Vocab:
    """Character vocabulary: ``symbols[i]`` is the character of id ``i``; unknown characters
    encode as the id of :data:`UNK`."""
    symbols: str

    @classmethod
    def build(cls, text, min_count=MIN_COUNT):
        counts = Counter(text)
        keep = {c for c, n in counts.items()
                if n >= min_count and (c == "\n" or " " <= c <= "~")} | {UNK}
        vocab = cls("".join(sorted(keep)))
        assert len(vocab) <= 128
        return vocab

    def __len__(self):
        return len(self.symbols)

    @property
    def unk(self):
        return self.symbols.index(UNK)

    def encode(self, text):
        ids = {c: i for i, c in enumerate(self.symbols)}
        return np.array([ids.get(c, self.unk) for c in text], np.int64)

    def decode(self, ids):
        return "".join(self.symbols[int(i)] for i in ids)

    def normalize(self, text):
        """``text`` with every character outside the vocabulary replaced by ``'?'``."""
        return self.decode(self.encode(text))


# ----------------------------------------------------------------------------- graph <-> arrays
def _pack_value(v, key, arrays):
    if isinstance(v, np.ndarray):
        arrays[key] = v
        return {"array": key}
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v)
    if isinstance(v, str):
        return v
    if isinstance(v, tuple):
        return {"tuple": [_pack_value(x, f"{key}.{i}", arrays) for i, x in enumerate(v)]}
    raise TypeError(f"{key}: cannot store a {type(v).__name__}")


def _unpack_value(v, arrays):
    if isinstance(v, dict):
        if "array" in v:
            return arrays[v["array"]]
        return tuple(_unpack_value(x, arrays) for x in v["tuple"])
    return v


def graph_to_arrays(graph, prefix="g"):
    """``graph`` -> (JSON-able description, {array key: NumPy array}); :func:`graph_from_arrays`
    rebuilds the same nodes, attributes and integer parameters (no builder is re-run)."""
    arrays, nodes = {}, []
    for i, n in enumerate(graph.nodes):
        t, key = n.output, f"{prefix}{i}"
        nodes.append(dict(
            op=n.op, name=n.name, inputs=[x.name for x in n.inputs],
            attrs={k: _pack_value(v, f"{key}.{k}", arrays) for k, v in n.attrs.items()},
            shape=list(t.shape), dtype=t.dtype, scale=_pack_value(t.scale, f"{key}.scale", arrays),
            zero_point=int(t.zero_point),
            data=None if t.data is None else _pack_value(t.data, f"{key}.data", arrays)))
    return dict(name=graph.name, outputs=[t.name for t in graph.outputs], nodes=nodes), arrays


def graph_from_arrays(desc, arrays, seq=None, batch=None):
    """The inverse of :func:`graph_to_arrays`. ``seq``: give every non-constant tensor of shape
    ``[1, S, C]`` sequence length ``seq`` instead (the same computation on fewer or more
    positions: every op of this model acts per position, and the causal attention's query ``i``
    sees keys ``0..i`` whatever the length); ``batch``: that many sequences instead of 1."""
    g, tensors = Graph(desc["name"]), {}
    for d in desc["nodes"]:
        shape = tuple(d["shape"])
        if (seq is not None or batch is not None) and d["data"] is None and len(shape) == 3:
            shape = (int(batch or shape[0]), int(seq or shape[1]), shape[2])
        node = Node(d["op"], d["name"], [tensors[x] for x in d["inputs"]],
                    {k: _unpack_value(v, arrays) for k, v in d["attrs"].items()})
        data = None if d["data"] is None else _unpack_value(d["data"], arrays)
        scale = _unpack_value(d["scale"], arrays)
        node.output = Tensor(d["name"], shape, d["dtype"], scale, d["zero_point"], node, data)
        g.nodes.append(node)
        tensors[d["name"]] = node.output
    g.outputs = [tensors[x] for x in desc["outputs"]]
    return g.verify()


# ----------------------------------------------------------------------------- the packed model
@dataclass
class CharLMPack:
    """The committed int8 model: :meth:`graph` for ``compile_graph`` and :func:`interpret`,
    :meth:`embed` for its input, :meth:`greedy` for the reference generation."""
    vocab: Vocab
    config: dict
    tok_q: np.ndarray           #: int8 [vocab, d_model] at embedding_scale, zero point 0
    pos_q: np.ndarray           #: int8 [context, d_model] at embedding_scale, zero point 0
    embedding_scale: float
    input: dict                 #: graph input: name, scale, zero_point
    output: dict                #: graph output (logits): name, scale, zero_point
    train: dict                 #: how the weights were made
    graph_desc: dict
    arrays: dict = field(repr=False)

    @property
    def context(self):
        return int(self.config["context"])

    def graph(self, seq=None, batch=None):
        """The imported graph (a new Graph each call): input ``[batch, seq, d_model]`` int8
        summed embeddings -> int8 logits ``[batch, seq, vocab]``; ``seq`` defaults to the
        context (256), ``batch`` to 1."""
        if seq is not None and not 1 <= seq <= self.context:
            raise ValueError(f"seq {seq} outside 1..{self.context}")
        if batch is not None and not 1 <= batch:
            raise ValueError(f"batch {batch}: must be at least 1")
        return graph_from_arrays(self.graph_desc, self.arrays,
                                 None if seq in (None, self.context) else seq,
                                 None if batch == 1 else batch)

    def embed(self, ids, seq=None):
        """int8 graph input ``[1, seq, d_model]`` for token ids at positions 0..len(ids)-1; the
        positions after them (up to ``seq``, default len(ids)) hold token 0 (causal attention:
        they do not change the earlier positions' logits)."""
        ids = np.asarray(ids, np.int64)
        seq = len(ids) if seq is None else seq
        if not 1 <= len(ids) <= seq <= self.context:
            raise ValueError(f"{len(ids)} tokens, seq {seq}: need 1 <= tokens <= seq <= "
                             f"{self.context}")
        full = np.zeros(seq, np.int64)
        full[:len(ids)] = ids
        x = ops.add_sat(self.tok_q[full], self.pos_q[:seq])
        return x.reshape(1, seq, -1).astype(np.int8)

    def logits(self, graph, ids):
        """int8 logits ``[len(ids), vocab]`` of ``ids`` through ``graph`` (its sequence length
        at least len(ids)) on the integer interpreter."""
        seq = graph.inputs[0].shape[1]
        out = interpret(graph, {self.input["name"]: self.embed(ids, seq)})
        return out[self.output["name"]][0, :len(ids)]

    def greedy(self, prompt, n, seq=None, graph=None):
        """The prompt (normalized to the vocabulary) followed by ``n`` greedily generated
        characters: per character, the whole window (the last ``seq`` characters, default the
        context) runs through the prefill graph on the integer interpreter and the last
        position's int8 logits are arg-maxed (lowest id on a tie). Slow by design: the
        reference, no KV cache."""
        graph = graph or self.graph(seq)
        window = graph.inputs[0].shape[1]
        ids = list(self.vocab.encode(prompt))
        if not ids:
            raise ValueError("empty prompt")
        for _ in range(n):
            ctx = ids[-window:]
            ids.append(int(np.argmax(self.logits(graph, ctx)[-1])))
        return self.vocab.decode(ids)


def save(path, *, graph, vocab, config, input, output, tok_q, pos_q, embedding_scale, train):
    desc, arrays = graph_to_arrays(graph)
    manifest = dict(format=FORMAT, vocab=vocab.symbols, config=config, input=input,
                    output=output, embedding_scale=float(embedding_scale), train=train,
                    graph=desc)
    blob = np.frombuffer(json.dumps(manifest, sort_keys=True).encode(), np.uint8)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as f:
        np.savez_compressed(f, manifest=blob, tok_q=tok_q.astype(np.int8),
                            pos_q=pos_q.astype(np.int8), **arrays)


def load(path=DATA_FILE):
    """The committed file -> :class:`CharLMPack`."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    m = json.loads(arrays.pop("manifest").tobytes().decode())
    if m.get("format") != FORMAT:
        raise ValueError(f"{path}: format {m.get('format')!r}, expected {FORMAT!r}")
    return CharLMPack(Vocab(m["vocab"]), m["config"], arrays.pop("tok_q"), arrays.pop("pos_q"),
                      m["embedding_scale"], m["input"], m["output"], m["train"], m["graph"],
                      arrays)


# ----------------------------------------------------------------------------- torch -> file
def import_char_lm(model, calibration_ids):
    """Trained :class:`compiler.torch_models.CharLM` + calibration windows (int token ids
    ``[CONTEXT]`` each) -> (ImportedModel of the body, int8 tok table, int8 pos table, scale).
    The body is exported on the first window's embeddings and calibrated on all windows
    (:func:`compiler.torch_import.import_exported`); the embedding tables are quantized at the
    graph input's scale, zero point 0 (the importer makes it symmetric: it feeds a residual add)."""
    import torch

    from .torch_import import import_exported

    model = model.eval()
    with torch.no_grad():
        xs = [model.embed(torch.as_tensor(np.asarray(w), dtype=torch.long)[None])
              for w in calibration_ids]
        ep = torch.export.export(model.body, (xs[0],))
        imported = import_exported(ep, [(x,) for x in xs], name="char_lm")
        (_, qp, _), = imported.inputs
        if qp.zero_point != 0:
            raise ValueError(f"graph input zero point {qp.zero_point}: expected the symmetric "
                             f"quantization of a residual stream")
        tok_q, pos_q = (qp.quantize(t.numpy()) for t in model.tables())
    return imported, tok_q, pos_q, float(qp.scale)


def text_sha256(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
