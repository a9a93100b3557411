#!/bin/sh
# demo.sh BIN MODEL -- the seed sentence through the service.
#
# Makes MODEL (a Hugging Face directory) and MODEL.zbm once, from the real
# bert-base-cased vocabulary with random weights; starts a local broker and
# two workers (deploy/local-cluster); embeds "I love NLP" with `zbert embed`
# and prints its token table; stops the cluster.  The vectors are random:
# this shows the machinery, not meaning.  For real vectors:
#   bin/zbert-model fetch bert-base-cased DIR
#   bin/zbert-model convert DIR -o bert-base-cased.zbm
set -eu
bin=$1
model=$2
clients=${ZBERT_DEMO_CLIENTS:-tcp://127.0.0.1:5555}
backend=${ZBERT_DEMO_WORKERS:-tcp://127.0.0.1:5556}
if [ ! -f "$model.zbm" ]; then
    echo "making the demo model $model.zbm (random weights, real bert-base-cased vocabulary)"
    mkdir -p "$(dirname "$model")"
    "$bin/zbert-model" random --layers 2 --hidden 128 --heads 4 --intermediate 512 \
        --vocab engine/vocab/bert-base-cased.txt --seed 1 -o "$model"
    "$bin/zbert-model" convert "$model" -o "$model.zbm"
fi
dir=run/demo
trap 'deploy/local-cluster stop --dir "$dir" > /dev/null 2>&1 || true' EXIT INT TERM
deploy/local-cluster start --model "$model.zbm" --workers 2 --threads 1 --bin "$bin" \
    --clients "$clients" --backend "$backend" --dir "$dir"
echo
echo "NOTE: the demo model's weights are RANDOM, so its vectors carry no meaning."
echo
echo '$ echo "I love NLP" | zbert embed --format table'
echo "I love NLP" | "$bin/zbert" embed --broker "$clients" --format table
echo
"$bin/zbert" status --broker "$clients" | sed -n '/^WORKER/,$p'
