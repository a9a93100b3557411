#!/usr/bin/python3
"""PyTorch peer of the benchmark: a Hugging Face-style BertModel written in
plain torch (no `transformers`), float32, eval mode, loading the same
model.safetensors the engine converts.

    bert_torch.py run MODEL_DIR IDS.jsonl OUT --batch B [--stride S] [--detail K]
                      [--threads N]
    bert_torch.py export MODEL_DIR OUT.onnx

`run` embeds, with torch.set_num_threads(N) (default 2), the texts whose
index is a multiple of S (default 1: all), already tokenized (IDS.jsonl:
zbert-embed --tokenize-only output, one {"index":i,"ids":[...]} per line),
in length-sorted batches of B padded to the batch's longest text with an
attention mask.  One untimed warm-up batch
runs first.  It writes
    OUT.json        {"texts", "tokens" (real, no padding), "padded_tokens",
                     "seconds", "batch", "threads"}
    OUT.cls.f32     the last layer's [CLS] row of every text, in index order
    OUT.detail.f32  every row of the first K selected texts, concatenated
The timed span covers building the input tensors, the forward pass and
copying the rows out; it excludes loading and the warm-up.

`export` writes the same module as ONNX (opset 14): inputs input_ids and
attention_mask [batch, sequence] int64, output last_hidden_state
[batch, sequence, hidden], both axes dynamic.

Needs Debian's python3-torch (run with /usr/bin/python3).
"""
import argparse
import json
import math
import os
import struct
import sys
import time

import numpy as np
import torch
from torch import nn



# --- weights ---------------------------------------------------------------

def canonical_name(name):
    """Hugging Face BertModel state-dict name (no `bert.` prefix, LayerNorm
    weight/bias), or None for tensors the encoder does not use (pooler,
    cls.* heads)."""
    n = name[5:] if name.startswith("bert.") else name
    n = n.replace("LayerNorm.gamma", "LayerNorm.weight")
    n = n.replace("LayerNorm.beta", "LayerNorm.bias")
    return n if n.startswith("embeddings.") or n.startswith("encoder.") else None


def load_safetensors_into(model, path):
    """Reads a safetensors file (F32, F16, BF16) straight into the module's
    parameters, one tensor at a time, so the process never holds a second
    copy of the weights (its peak RSS is in the table)."""
    params = dict(model.state_dict())
    seen = set()
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        base = 8 + n
        for name, t in header.items():
            key = None if name == "__metadata__" else canonical_name(name)
            if key is None:
                continue
            if key not in params:
                sys.exit("bert_torch.py: %s: unexpected tensor %s" % (path, name))
            dst = params[key]
            if list(dst.shape) != list(t["shape"]):
                sys.exit("bert_torch.py: %s: %s has shape %s, expected %s"
                         % (path, name, t["shape"], list(dst.shape)))
            b, e = t["data_offsets"]
            f.seek(base + b)
            dt = t["dtype"]
            if dt == "F32" and e - b == dst.numel() * 4:
                f.readinto(memoryview(dst.numpy()).cast("B"))
            else:
                raw = f.read(e - b)
                if dt == "F16":
                    a = np.frombuffer(raw, dtype="<f2").astype(np.float32)
                elif dt == "BF16":
                    a = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
                else:
                    sys.exit("bert_torch.py: %s: %s has dtype %s" % (path, name, dt))
                dst.copy_(torch.from_numpy(a.reshape(t["shape"])))
            seen.add(key)
    missing = set(k for k in params if k not in seen)
    if missing:
        sys.exit("bert_torch.py: %s: missing tensors %s" % (path, ", ".join(sorted(missing))))


# --- the module (Hugging Face BertModel structure, eval semantics) ---------

class BertEmbeddings(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        h = cfg["hidden_size"]
        self.word_embeddings = nn.Embedding(cfg["vocab_size"], h)
        self.position_embeddings = nn.Embedding(cfg["max_position_embeddings"], h)
        self.token_type_embeddings = nn.Embedding(cfg.get("type_vocab_size", 2), h)
        self.LayerNorm = nn.LayerNorm(h, eps=cfg.get("layer_norm_eps", 1e-12))
        n = cfg["max_position_embeddings"]
        self.register_buffer("position_ids", torch.arange(n).unsqueeze(0), persistent=False)
        self.register_buffer("token_type_ids", torch.zeros(1, n, dtype=torch.long),
                             persistent=False)

    def forward(self, input_ids):
        t = input_ids.size(1)
        x = (self.word_embeddings(input_ids)
             + self.position_embeddings(self.position_ids[:, :t])
             + self.token_type_embeddings(self.token_type_ids[:, :t]))
        return self.LayerNorm(x)


class BertSelfAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        h = cfg["hidden_size"]
        self.heads = cfg["num_attention_heads"]
        self.head_dim = h // self.heads
        self.query = nn.Linear(h, h)
        self.key = nn.Linear(h, h)
        self.value = nn.Linear(h, h)

    def split(self, x):
        b, t, _ = x.shape
        return x.view(b, t, self.heads, self.head_dim).permute(0, 2, 1, 3)

    def forward(self, x, mask_add):
        q = self.split(self.query(x))
        k = self.split(self.key(x))
        v = self.split(self.value(x))
        s = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        p = torch.softmax(s + mask_add, dim=-1)
        c = torch.matmul(p, v).permute(0, 2, 1, 3).contiguous()
        return c.view(c.size(0), c.size(1), -1)


class BertSelfOutput(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        h = cfg["hidden_size"]
        self.dense = nn.Linear(h, h)
        self.LayerNorm = nn.LayerNorm(h, eps=cfg.get("layer_norm_eps", 1e-12))

    def forward(self, a, x):
        return self.LayerNorm(self.dense(a) + x)


class BertAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.self = BertSelfAttention(cfg)
        self.output = BertSelfOutput(cfg)

    def forward(self, x, mask_add):
        return self.output(self.self(x, mask_add), x)


class BertIntermediate(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.dense = nn.Linear(cfg["hidden_size"], cfg["intermediate_size"])
        self.act = nn.GELU()  # exact (erf) GELU, BERT's "gelu"

    def forward(self, x):
        return self.act(self.dense(x))


class BertOutput(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        h = cfg["hidden_size"]
        self.dense = nn.Linear(cfg["intermediate_size"], h)
        self.LayerNorm = nn.LayerNorm(h, eps=cfg.get("layer_norm_eps", 1e-12))

    def forward(self, i, x):
        return self.LayerNorm(self.dense(i) + x)


class BertLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.attention = BertAttention(cfg)
        self.intermediate = BertIntermediate(cfg)
        self.output = BertOutput(cfg)

    def forward(self, x, mask_add):
        a = self.attention(x, mask_add)
        return self.output(self.intermediate(a), a)


class BertEncoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(cfg) for _ in range(cfg["num_hidden_layers"]))

    def forward(self, x, mask_add):
        for layer in self.layer:
            x = layer(x, mask_add)
        return x


class BertModel(nn.Module):
    """last_hidden_state of Hugging Face's BertModel (no pooler)."""

    def __init__(self, cfg):
        super().__init__()
        self.embeddings = BertEmbeddings(cfg)
        self.encoder = BertEncoder(cfg)

    def forward(self, input_ids, attention_mask):
        # Padding keys get the most negative float added before softmax, as
        # Hugging Face does: their probability is exactly 0.
        m = attention_mask[:, None, None, :].to(torch.float32)
        mask_add = (1.0 - m) * torch.finfo(torch.float32).min
        return self.encoder(self.embeddings(input_ids), mask_add)


def load_model(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    if cfg.get("hidden_act", "gelu") != "gelu":
        sys.exit("bert_torch.py: hidden_act %r is not the exact gelu" % cfg.get("hidden_act"))
    model = BertModel(cfg)
    with torch.no_grad():
        load_safetensors_into(model, os.path.join(model_dir, "model.safetensors"))
    model.eval()
    return model, cfg


# --- commands ----------------------------------------------------------------

def read_ids(path):
    out = []
    with open(path) as f:
        for line in f:
            o = json.loads(line)
            if "ids" not in o:
                sys.exit("bert_torch.py: %s: line %d has no ids (%s)"
                         % (path, len(out) + 1, o.get("error", "?")))
            out.append(o["ids"])
    return out


def make_batches(ids, sel, batch):
    """Length-sorted batches of `batch` texts (stable: ties keep index order)."""
    order = sorted(sel, key=lambda i: len(ids[i]))
    return [order[i:i + batch] for i in range(0, len(order), batch)]


def batch_tensors(ids, group):
    t = max(len(ids[i]) for i in group)
    x = torch.zeros(len(group), t, dtype=torch.long)
    m = torch.zeros(len(group), t, dtype=torch.long)
    for r, i in enumerate(group):
        n = len(ids[i])
        x[r, :n] = torch.tensor(ids[i], dtype=torch.long)
        m[r, :n] = 1
    return x, m


def cmd_run(a):
    torch.set_num_threads(a.threads)
    torch.set_grad_enabled(False)
    model, cfg = load_model(a.model_dir)
    ids = read_ids(a.ids)
    sel = list(range(0, len(ids), a.stride))
    pos = {i: k for k, i in enumerate(sel)}
    batches = make_batches(ids, sel, a.batch)
    h = cfg["hidden_size"]
    cls = np.zeros((len(sel), h), dtype=np.float32)
    detail_set = set(sel[:a.detail])
    detail = {}

    with torch.no_grad():
        x, m = batch_tensors(ids, batches[0])
        model(x, m)  # warm-up, untimed
        t0 = time.perf_counter()
        padded = 0
        for group in batches:
            x, m = batch_tensors(ids, group)
            padded += x.numel()
            y = model(x, m).numpy()
            for r, i in enumerate(group):
                cls[pos[i]] = y[r, 0]
                if i in detail_set:
                    detail[i] = y[r, :len(ids[i])].copy()
        sec = time.perf_counter() - t0

    tokens = sum(len(ids[i]) for i in sel)
    cls.tofile(a.out + ".cls.f32")
    rows = [detail[i] for i in sel[:a.detail]]
    (np.concatenate(rows) if rows else np.zeros((0, h), np.float32)).tofile(a.out + ".detail.f32")
    res = {"texts": len(sel), "tokens": tokens, "padded_tokens": padded, "seconds": sec,
           "batch": a.batch, "threads": a.threads, "stride": a.stride, "detail": len(rows)}
    with open(a.out + ".json", "w") as f:
        json.dump(res, f)
    print("pytorch batch %d: %d texts, %d tokens (%d padded) in %.2f s: %.1f tokens/s"
          % (a.batch, len(sel), tokens, padded, sec, tokens / sec), file=sys.stderr)


def cmd_export(a):
    model, _ = load_model(a.model_dir)
    x = torch.tensor([[101, 1109, 3613, 102], [101, 1109, 102, 0]], dtype=torch.long)
    m = (x != 0).to(torch.long)
    tmp = a.out + ".tmp"
    with torch.no_grad():
        torch.onnx.export(model, (x, m), tmp, opset_version=14,
                          input_names=["input_ids", "attention_mask"],
                          output_names=["last_hidden_state"],
                          dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                                        "attention_mask": {0: "batch", 1: "sequence"},
                                        "last_hidden_state": {0: "batch", 1: "sequence"}},
                          do_constant_folding=True)
    os.replace(tmp, a.out)
    print("exported %s (%d bytes)" % (a.out, os.path.getsize(a.out)), file=sys.stderr)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("model_dir")
    r.add_argument("ids")
    r.add_argument("out")
    r.add_argument("--batch", type=int, default=8)
    r.add_argument("--stride", type=int, default=1)
    r.add_argument("--detail", type=int, default=0)
    r.add_argument("--threads", type=int, default=2)
    e = sub.add_parser("export")
    e.add_argument("model_dir")
    e.add_argument("out")
    a = p.parse_args()
    if a.cmd == "run":
        if a.batch < 1 or a.stride < 1 or a.threads < 1 or a.detail < 0:
            sys.exit("bert_torch.py: --batch, --stride, --threads must be >= 1, --detail >= 0")
        cmd_run(a)
    else:
        cmd_export(a)


if __name__ == "__main__":
    main()
