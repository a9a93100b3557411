#!/usr/bin/python3
"""Independent float64 reference of the BERT encoder (Hugging Face BertModel
semantics, eval mode), written directly in PyTorch without `transformers`.

    bert_reference.py MODEL_DIR < cases.jsonl > expected.txt

MODEL_DIR is a Hugging Face directory (config.json, model.safetensors; names
with or without the `bert.` prefix, LayerNorm weight/bias or gamma/beta,
F32/F16/BF16).  Each input line is {"name": str, "ids": [int, ...]} with the
ids already framed by [CLS]/[SEP].  The output is the BERTREF text format read
by tests/fixture.c:

    BERTREF 1 <model dir name>
    case <i> <name>
    ids <T> <id>...
    hidden <T> <H>
    <T lines of H floats, %.9g of the float32 rounding of the float64 result>
    end

The reference runs each sequence alone, positions 0..T-1, token type 0.
Needs Debian's python3-torch (use /usr/bin/python3).
"""
import json
import math
import os
import struct
import sys

import numpy as np
import torch


def load_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        b, e = t["data_offsets"]
        raw = data[base + b:base + e]
        shape = t["shape"]
        dt = t["dtype"]
        if dt == "F32":
            a = np.frombuffer(raw, dtype="<f4").astype(np.float64)
        elif dt == "F16":
            a = np.frombuffer(raw, dtype="<f2").astype(np.float64)
        elif dt == "BF16":
            u = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            a = u.view(np.float32).astype(np.float64)
        else:
            continue
        out[name] = torch.from_numpy(a.reshape(shape).copy())
    return out


def canonical(tensors):
    """Maps every naming variant to plain names with weight/bias."""
    out = {}
    for name, t in tensors.items():
        n = name[5:] if name.startswith("bert.") else name
        n = n.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        out[n] = t
    return out


def layer_norm(x, g, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * g + b


def gelu(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def encode(w, cfg, ids):
    H = cfg["hidden_size"]
    A = cfg["num_attention_heads"]
    d = H // A
    eps = cfg.get("layer_norm_eps", 1e-12)
    T = len(ids)
    idx = torch.tensor(ids, dtype=torch.long)
    x = (w["embeddings.word_embeddings.weight"][idx]
         + w["embeddings.position_embeddings.weight"][:T]
         + w["embeddings.token_type_embeddings.weight"][0])
    x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
    for l in range(cfg["num_hidden_layers"]):
        p = "encoder.layer.%d." % l

        def lin(name, v):
            return v @ w[p + name + ".weight"].T + w[p + name + ".bias"]

        q = lin("attention.self.query", x).view(T, A, d).transpose(0, 1)
        k = lin("attention.self.key", x).view(T, A, d).transpose(0, 1)
        v = lin("attention.self.value", x).view(T, A, d).transpose(0, 1)
        s = q @ k.transpose(1, 2) / math.sqrt(d)
        s = torch.softmax(s, dim=-1)
        ctx = (s @ v).transpose(0, 1).reshape(T, H)
        a = lin("attention.output.dense", ctx)
        x = layer_norm(a + x, w[p + "attention.output.LayerNorm.weight"],
                       w[p + "attention.output.LayerNorm.bias"], eps)
        h = gelu(lin("intermediate.dense", x))
        o = lin("output.dense", h)
        x = layer_norm(o + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], eps)
    return x


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    model_dir = sys.argv[1]
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    w = canonical(load_safetensors(os.path.join(model_dir, "model.safetensors")))
    torch.set_grad_enabled(False)
    out = sys.stdout
    out.write("BERTREF 1 %s\n" % os.path.basename(os.path.normpath(model_dir)))
    for i, line in enumerate(sys.stdin):
        case = json.loads(line)
        ids = case["ids"]
        x = encode(w, cfg, ids).numpy().astype(np.float32)
        out.write("case %d %s\n" % (i, case.get("name", "case%d" % i)))
        out.write("ids %d %s\n" % (len(ids), " ".join(str(t) for t in ids)))
        out.write("hidden %d %d\n" % x.shape)
        for row in x:
            out.write(" ".join("%.9g" % v for v in row) + "\n")
        out.write("end\n")


if __name__ == "__main__":
    main()
