#!/bin/sh
# demo.sh BIN MODEL -- embed the seed sentence with a small random model.
#
# Makes MODEL (a Hugging Face directory) and MODEL.zbm once, from the real
# bert-base-cased vocabulary with random weights, then prints the token
# table of "I love NLP".  The vectors are random: this shows the machinery,
# not meaning.  For real vectors: bin/zbert-model fetch bert-base-cased DIR,
# then bin/zbert-model convert DIR -o bert-base-cased.zbm.
set -eu
bin=$1
model=$2
if [ ! -f "$model.zbm" ]; then
    echo "making the demo model $model.zbm (random weights, real bert-base-cased vocabulary)"
    mkdir -p "$(dirname "$model")"
    "$bin/zbert-model" random --layers 2 --hidden 128 --heads 4 --intermediate 512 \
        --vocab worker/vocab/bert-base-cased.txt --seed 1 -o "$model"
    "$bin/zbert-model" convert "$model" -o "$model.zbm"
fi
echo
echo "NOTE: the demo model's weights are RANDOM, so its vectors carry no meaning."
echo
echo "I love NLP" | "$bin/zbert-embed" --model "$model.zbm" --format table
