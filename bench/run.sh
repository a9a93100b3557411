#!/bin/sh
# run.sh BIN -- engine throughput on a real corpus (make bench).
#
# Model: random bert-base-shaped weights (12 layers, hidden 768, 12 heads,
# intermediate 3072, real bert-base-cased vocabulary), made once under
# models/.  Corpus: 2,000 fortunes (bench/corpus.sh).  Throughput counts
# real tokens: the wordpieces of each text plus [CLS] and [SEP]; there is no
# padding to count.  Timings never decide a test; this only prints.
set -eu
bin=$1
threads=${ZB_BENCH_THREADS:-2}
texts=${ZB_BENCH_TEXTS:-2000}
model=models/bench-base
mkdir -p bench/out models
if [ ! -f "$model.zbm" ]; then
    echo "making $model.zbm (random bert-base-shaped weights)"
    "$bin/zbert-model" random --layers 12 --hidden 768 --heads 12 --intermediate 3072 \
        --vocab worker/vocab/bert-base-cased.txt --seed 7 -o "$model"
    "$bin/zbert-model" convert "$model" -o "$model.zbm"
fi
sh bench/corpus.sh "$texts" bench/out/corpus.txt

echo
echo "== zbert-embed, $threads threads, sentence vectors (cls), $texts fortunes"
for run in 1 2 3; do
    "$bin/zbert-embed" --model "$model.zbm" --threads "$threads" --level sentence \
        --format npy --stats < bench/out/corpus.txt 2>&1 > bench/out/vectors.npy |
        sed -n 's/^zbert-embed: stats /run '"$run"': /p'
done
