#!/bin/sh
# seed-card.sh -- Spark NLP compatibility against the seed's model card.
#
# The bert_base_cased model card of Spark NLP (2020-08-25, results added
# 2021-03-18, computed with Spark NLP 2.7.x) publishes the first two values
# of each token vector for "I love NLP".  With the real bert-base-cased
# weights, `zbert-embed --compat sparknlp` must give the same values within
# 1e-3: I -> row 1, love -> row 2, NLP -> row 3 (the row of its first piece
# "NL"; "NLP" is fed as NL ##P).
#
# Needs the real model, which is a download (not part of `make test`):
#   bin/zbert-model fetch bert-base-cased models/bert-base-cased
# Without it the script says so and exits 0.
#
#   sh tests/acceptance/seed-card.sh [MODEL]     (default models/bert-base-cased)
# ZB_BIN says where the programs are (default bin).
set -eu
BIN=${ZB_BIN:-bin}
MODEL=${1:-models/bert-base-cased}
if [ ! -e "$MODEL/model.safetensors" ] && [ ! -f "$MODEL" ]; then
    echo "seed-card: skipped: no model at $MODEL (download it with:" \
         "$BIN/zbert-model fetch bert-base-cased models/bert-base-cased)"
    exit 0
fi
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3
out=$(echo "I love NLP" | "$BIN/zbert-embed" --model "$MODEL" --compat sparknlp \
      --format sparknlp-json)
printf '%s\n' "$out" | "$PY" -c '
import json, sys
card = {"I": [0.43879568576812744, -0.40160006284713745],
        "love": [0.21737590432167053, -0.3865768313407898],
        "NLP": [-0.16226479411125183, -0.053727392107248306]}
rows = {"I": "146", "love": "1567", "NLP": "21239"}
line = json.loads(sys.stdin.readline())
ann = line["annotations"]
ok = len(ann) == 3
worst = 0.0
for a in ann:
    t = a["result"]
    want = card.get(t)
    if want is None or a["metadata"]["pieceId"] != rows[t] or len(a["embeddings"]) != 768:
        print("seed-card: unexpected annotation %s" % json.dumps(a)[:200]); ok = False; continue
    got = a["embeddings"][:2]
    d = max(abs(g - w) for g, w in zip(got, want))
    worst = max(worst, d)
    print("seed-card: %-4s got [%.8f, %.8f] card [%.8f, %.8f] |diff| %.2e"
          % (t, got[0], got[1], want[0], want[1], d))
    if d > 1e-3: ok = False
print("seed-card: %s (max |diff| %.2e, tolerance 1e-3)" % ("PASS" if ok else "FAIL", worst))
sys.exit(0 if ok else 1)
'
