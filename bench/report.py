#!/usr/bin/python3
"""Builds the benchmark table from the files bench/run.sh leaves in OUT_DIR.

    report.py OUT_DIR

Prints Markdown on stdout and writes OUT_DIR/results.md.  Reads (each one
optional except the corpus ids and the engine's run):
    meta.json               machine and settings, written by run.sh
    ids.jsonl               the corpus tokenized by zbert-embed --tokenize-only
    sgemm.json              bench/sgemm_probe.c output
    zbert.err, zbert.npy    the engine run (--stats line, [CLS] rows)
    zbert.detail.jsonl      the engine's wordpiece rows of the first texts
    zbert8.err, zbert8.npy, zbert8.detail.jsonl   the same for the int8 bundle
    NAME.json, NAME.cls.f32, NAME.detail.f32   a peer's run (bert_torch.py / ort_peer.js)
    NAME.rss                peak RSS in KiB (/usr/bin/time -f %M)
    NAME.skip               why a row did not run
    fixed.L.zbert.err, fixed.L.zbert8.err, fixed.L.ort.json   fixed-length runs
    lat.zbert.json, lat.zbert8.json, lat.service.json, lat.service8.json, lat.ort.json
                                               latency
numpy is needed only for the vector differences.
"""
import json
import os
import re
import sys

try:
    import numpy as np
except ImportError:  # diffs are then reported as n/a
    np = None

DETAIL_NOTE = "all rows"


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_text(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def zbert_stats(path):
    """The figures of zbert-embed's --stats line, or None."""
    text = read_text(path) or ""
    m = re.search(r"stats (.*)", text)
    if not m:
        return None
    kv = dict(p.split("=", 1) for p in m.group(1).split())
    return {"texts": int(kv["texts"]), "tokens": int(kv["tokens"]),
            "seconds": float(kv["seconds"]), "batches": int(kv["batches"])}


def flops_per_token(meta, length_sq_over_len):
    """GEMM FLOPs per real token: 2*M*N*K for every linear layer, plus the
    two attention matmuls (scores Q K^T and context P V: 2*T*H each per token
    of a length-T sequence), at the token-weighted sequence length."""
    h, i, layers = meta["hidden"], meta["intermediate"], meta["layers"]
    linear = 2.0 * (4 * h * h + 2 * h * i) * layers
    attention = 4.0 * h * length_sq_over_len * layers
    return linear, attention


def fmt_num(x, digits=0):
    if x is None:
        return "–"
    return "{:,.{d}f}".format(x, d=digits)


def fmt_diff(x):
    if x is None:
        return "n/a"
    return "%.1e" % x


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    p = lambda name: os.path.join(out, name)  # noqa: E731
    meta = load_json(p("meta.json")) or {}
    ids = []
    with open(p("ids.jsonl")) as f:
        for line in f:
            ids.append(json.loads(line)["ids"])
    lens = [len(x) for x in ids]
    tok_total = sum(lens)
    weighted_len = sum(n * n for n in lens) / tok_total
    lin, att = flops_per_token(meta, weighted_len)
    fpt = lin + att

    sgemm = load_json(p("sgemm.json"))
    bound_rate = None
    if sgemm:
        best = max(sgemm["rows"], key=lambda r: r["layer"])
        bound_rate = best["layer"]
        bound_m = best["m"]

    def bound_tokens(flops):
        return bound_rate * 1e9 / flops if bound_rate else None

    corpus_bound = bound_tokens(fpt)

    # --- vectors -------------------------------------------------------------
    def load_detail(name):
        rows = {}
        if os.path.exists(p(name)):
            with open(p(name)) as f:
                for line in f:
                    o = json.loads(line)
                    if o.get("ids") != ids[o["index"]]:
                        sys.exit("report.py: %s text %d: ids differ from ids.jsonl"
                                 % (name, o["index"]))
                    rows[o["index"]] = np.asarray(o["vectors"], dtype=np.float32)
        return rows

    zcls = None
    zdetail = {}
    if np is not None and os.path.exists(p("zbert.npy")):
        zcls = np.load(p("zbert.npy"))
        zdetail = load_detail("zbert.detail.jsonl")

    def int8_accuracy():
        """min cosine and max abs diff of the int8 rows against fp32's: the
        [CLS] rows of the corpus, all rows of the detail texts."""
        if np is None or zcls is None or not os.path.exists(p("zbert8.npy")):
            return None
        q = np.load(p("zbert8.npy")).astype(np.float64)
        f = zcls.astype(np.float64)
        d8 = load_detail("zbert8.detail.jsonl")
        keys = sorted(k for k in d8 if k in zdetail)
        qa = np.concatenate([d8[k] for k in keys]).astype(np.float64)
        fa = np.concatenate([zdetail[k] for k in keys]).astype(np.float64)

        def cos(a, b):
            return float(((a * b).sum(1) / np.linalg.norm(a, axis=1)
                          / np.linalg.norm(b, axis=1)).min())
        return dict(cls_cos=cos(q, f), cls_abs=float(np.abs(q - f).max()),
                    all_cos=cos(qa, fa), all_abs=float(np.abs(qa - fa).max()),
                    n_cls=q.shape[0], n_all=qa.shape[0], n_texts=len(keys))

    def diffs(name, res, cls_path, detail_path):
        """Max abs difference of the [CLS] rows and of all rows of the detail
        texts against the engine's."""
        if np is None or zcls is None:
            return None, None
        h = zcls.shape[1]
        stride = res.get("stride", 1)
        sel = list(range(0, len(ids), stride))[:res["texts"]]
        cls = np.fromfile(cls_path, dtype=np.float32).reshape(-1, h)
        dc = float(np.abs(cls - zcls[sel]).max()) if len(sel) else None
        dd = None
        k = res.get("detail", 0)
        if k and os.path.exists(detail_path) and all(i in zdetail for i in sel[:k]):
            rows = np.fromfile(detail_path, dtype=np.float32).reshape(-1, h)
            ref = np.concatenate([zdetail[i] for i in sel[:k]])
            if rows.shape != ref.shape:
                sys.exit("report.py: %s: %d detail rows, the engine has %d"
                         % (name, rows.shape[0], ref.shape[0]))
            dd = float(np.abs(rows - ref).max())
        return dc, dd

    def others(name):
        """Share of the CPU other processes took while NAME ran, as text."""
        t = read_text(p(name + ".others"))
        if t is None or not t.isdigit():
            return "?"
        return ("**%s %%**" if int(t) >= 10 else "%s %%") % t

    def rss(name):
        t = read_text(p(name + ".rss"))
        try:
            return int(t.split()[-1]) / 1024.0
        except (AttributeError, ValueError, IndexError):
            return None

    # --- rows ----------------------------------------------------------------
    rows = []  # dicts: name, texts, tokens, seconds, rss, dc, dd, note / skip
    z = zbert_stats(p("zbert.err"))
    if z is None:
        sys.exit("report.py: no stats line in %s" % p("zbert.err"))
    if z["tokens"] != tok_total or z["texts"] != len(ids):
        sys.exit("report.py: the engine ran %d texts / %d tokens, the corpus ids have %d / %d"
                 % (z["texts"], z["tokens"], len(ids), tok_total))
    rows.append(dict(name="zbert engine (zbert-embed)", rss=rss("zbert"), dc=0.0, dd=0.0,
                     others=others("zbert"),
                     note="length-sorted packed batches, no padding; %d encoder calls"
                     % z["batches"], **{k: z[k] for k in ("texts", "tokens", "seconds")}))
    z8 = zbert_stats(p("zbert8.err"))
    acc8 = int8_accuracy()
    if z8 is not None:
        note = "int8 bundle (per-row weight scales, dynamic per-row activations)"
        if acc8:
            note += "; min cosine vs fp32 %.5f ([CLS] rows) / %.5f (all rows)" % (
                acc8["cls_cos"], acc8["all_cos"])
        rows.append(dict(name="zbert engine int8", rss=rss("zbert8"),
                         dc=acc8["cls_abs"] if acc8 else None,
                         dd=acc8["all_abs"] if acc8 else None, others=others("zbert8"),
                         note=note, **{k: z8[k] for k in ("texts", "tokens", "seconds")}))

    def peer(name, key):
        skip = read_text(p(key + ".skip"))
        res = load_json(p(key + ".json"))
        if skip or res is None:
            rows.append(dict(name=name, skip=skip or "did not run (see the log above)"))
            return
        dc, dd = diffs(name, res, p(key + ".cls.f32"), p(key + ".detail.f32"))
        note = []
        if res.get("stride", 1) > 1:
            note.append("every %d%s text (%d texts)" % (res["stride"],
                        {2: "nd", 3: "rd"}.get(res["stride"], "th"), res["texts"]))
        if res.get("padded_tokens") and res["padded_tokens"] > res["tokens"]:
            note.append("padding %.0f %% extra" % (100.0 * (res["padded_tokens"] /
                                                             res["tokens"] - 1)))
        rows.append(dict(name=name, texts=res["texts"], tokens=res["tokens"],
                         seconds=res["seconds"], rss=rss(key), dc=dc, dd=dd, others=others(key),
                         note="; ".join(note)))

    peer("PyTorch, batch 8", "pt8")
    peer("PyTorch, one at a time", "pt1")
    peer("ONNX Runtime, batch 8", "ort8")
    peer("ONNX Runtime, one at a time", "ort1")
    peer("zbert service (broker + workers)", "service")

    ort_best = max([r["tokens"] / r["seconds"] for r in rows
                    if r["name"].startswith("ONNX") and "skip" not in r] or [0]) or None

    lines = []
    w = lines.append
    w("## zbert benchmark — %s" % meta.get("date", ""))
    w("")
    w("Machine: %s, %s threads for every system; load average %s at the start, %s at the end; "
      "other processes used %s %% of the CPU during the measurements%s."
      % (meta.get("cpu", "?"), meta.get("threads", "?"), meta.get("load_start", "?"),
         meta.get("load_end", "?"), meta.get("others_pct", "?"),
         " — **the machine was busy: figures are low and noisy**"
         if meta.get("busy") else ""))
    w("Model: random bert-base-shaped weights (%d layers, hidden %d, %d heads, intermediate %d), "
      "%s, the same model.safetensors for every system." % (
          meta.get("layers", 0), meta.get("hidden", 0), meta.get("heads", 0),
          meta.get("intermediate", 0), meta.get("model", "?")))
    w("Peers: PyTorch %s (Debian python3-torch %s, Hugging Face-style module in plain torch, "
      "eval, no_grad, float32); ONNX Runtime %s (npm onnxruntime-node, CPU, ONNX export of "
      "that module, opset 14, graph optimisation `all`, intra-op threads = %s)."
      % (meta.get("torch_version") or "–", meta.get("torch_deb") or "–",
         meta.get("ort_version") or "–", meta.get("threads", "?")))
    w("Corpus: %d fortunes, %s real tokens ([CLS]/[SEP] included), mean %.1f tokens per text "
      "(token-weighted %.1f), tokenized once by zbert; the same ids go to every system."
      % (len(ids), fmt_num(tok_total), tok_total / len(ids), weighted_len))
    if sgemm:
        w("sgemm probe (OpenBLAS `cblas_sgemm`, %d threads, %s): layer-weighted GFLOP/s %s; "
          "bound = %.1f GFLOP/s (M = %d) / %.1f MFLOP per token (%.1f linear + %.2f attention "
          "at the corpus lengths) = **%s tokens/s**." % (
              sgemm["threads"], sgemm["openblas"].split(" ")[1],
              ", ".join("M=%d: %.1f" % (r["m"], r["layer"]) for r in sgemm["rows"]),
              bound_rate, bound_m, fpt / 1e6, lin / 1e6, att / 1e6, fmt_num(corpus_bound)))
    w("")
    w("| system | tokens/s | texts/s | ratio to best ONNX Runtime | fraction of sgemm bound "
      "| peak RSS (MiB) | max abs diff vs zbert ([CLS] rows / all rows of %d texts) "
      "| other processes' CPU | notes |" % meta.get("detail", 0))
    w("|---|---:|---:|---:|---:|---:|---|---:|---|")
    for r in rows:
        if "skip" in r:
            w("| %s | – | – | – | – | – | – | – | skipped: %s |" % (r["name"], r["skip"]))
            continue
        tps = r["tokens"] / r["seconds"]
        w("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            r["name"], fmt_num(tps), fmt_num(r["texts"] / r["seconds"], 1),
            "%.2f×" % (tps / ort_best) if ort_best else "–",
            "%.0f %%" % (100 * tps / corpus_bound) if corpus_bound else "–",
            fmt_num(r["rss"]),
            "0 (reference)" if r["name"] == "zbert engine (zbert-embed)"
            else "%s / %s" % (fmt_diff(r["dc"]), fmt_diff(r["dd"])),
            r["others"], r.get("note", "")))
    if corpus_bound:
        w("| *sgemm bound (OpenBLAS, M = %d)* | %s | | %s | 100 %% | | | | |"
          % (bound_m, fmt_num(corpus_bound),
             "%.2f×" % (corpus_bound / ort_best) if ort_best else "–"))
    if acc8:
        w("")
        w("int8 accuracy against the fp32 engine: min cosine %.6f and max abs diff %.3g over the "
          "%d [CLS] rows of the corpus; min cosine %.6f and max abs diff %.3g over all %d rows of "
          "the first %d texts." % (acc8["cls_cos"], acc8["cls_abs"], acc8["n_cls"],
                                   acc8["all_cos"], acc8["all_abs"], acc8["n_all"],
                                   acc8["n_texts"]))
    w("")
    w("Other processes' CPU: the share of the machine's CPU time (all cores) that processes "
      "outside this benchmark used while that row ran; 10 % or more (bold) means the row's "
      "figures are low and noisy.")
    w("")
    w("Timed spans: zbert-embed from the model being ready to the last output row (its `--stats`: "
      "tokenizing, encoding, writing sentence vectors); the peers from the first timed batch to "
      "the last row copied out, after loading and one untimed warm-up batch. Peak RSS is the "
      "whole process (/usr/bin/time), mapped weights included.")

    # --- fixed lengths --------------------------------------------------------
    fixed = meta.get("fixed", [])
    if fixed:
        w("")
        w("### Fixed sequence lengths (every text exactly L tokens, no padding anywhere)")
        w("")
        w("| L | texts | zbert tokens/s | zbert int8 tokens/s | ONNX Runtime batch 8 tokens/s "
          "| zbert / ORT | int8 / ORT | sgemm bound at L | zbert fraction | ORT fraction "
          "| other processes' CPU (zbert / int8 / ORT) |")
        w("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for f in fixed:
            n_len, n_texts = f["length"], f["texts"]
            zs = zbert_stats(p("fixed.%d.zbert.err" % n_len))
            z8s = zbert_stats(p("fixed.%d.zbert8.err" % n_len))
            o = load_json(p("fixed.%d.ort.json" % n_len))
            zt = zs["tokens"] / zs["seconds"] if zs else None
            z8t = z8s["tokens"] / z8s["seconds"] if z8s else None
            ot = o["tokens"] / o["seconds"] if o else None
            b = bound_tokens(sum(flops_per_token(meta, n_len)))
            w("| %d | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s / %s / %s |" % (
                n_len, n_texts, fmt_num(zt), fmt_num(z8t),
                fmt_num(ot) if o else "skipped",
                "%.2f×" % (zt / ot) if zt and ot else "–",
                "%.2f×" % (z8t / ot) if z8t and ot else "–", fmt_num(b),
                "%.0f %%" % (100 * zt / b) if zt and b else "–",
                "%.0f %%" % (100 * ot / b) if ot and b else "–",
                others("fixed.%d.zbert" % n_len), others("fixed.%d.zbert8" % n_len),
                others("fixed.%d.ort" % n_len)))

    # --- latency ---------------------------------------------------------------
    lz = load_json(p("lat.zbert.json"))
    lo = load_json(p("lat.ort.json"))
    lz8 = load_json(p("lat.zbert8.json"))
    ls = load_json(p("lat.service.json"))
    ls8 = load_json(p("lat.service8.json"))
    if lz or lo:
        w("")
        w("### Latency of one short text (%s; process start and model load excluded)"
          % meta.get("latency_text", "?"))
        w("")
        w("| system | tokens | median ms | p90 ms | min ms | runs | other processes' CPU |")
        w("|---|---:|---:|---:|---:|---:|---:|")
        for name, key, r in (("zbert engine (embedder API, batch of 1)", "lat.zbert", lz),
                             ("zbert engine int8", "lat.zbert8", lz8),
                             ("zbert service end to end (client → broker → one worker → "
                              "client)", "lat.service", ls),
                             ("zbert service end to end, int8 bundle", "lat.service8", ls8),
                             ("ONNX Runtime (session.run, batch of 1)", "lat.ort", lo)):
            if r is None:
                w("| %s | – | – | – | – | skipped | – |" % name)
            else:
                w("| %s | %d | %.2f | %.2f | %.2f | %d | %s |" % (
                    name, r["tokens"], r["median_ms"], r["p90_ms"], r["min_ms"], r["runs"],
                    others(key)))
    for note in meta.get("notes", []):
        w("")
        w(note)

    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    with open(p("results.md"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
