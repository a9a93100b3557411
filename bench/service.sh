#!/bin/sh
# service.sh BIN MODEL CORPUS OUT THREADS -- the corpus through the service.
#
# Starts a broker and workers on free loopback ports with THREADS threads in
# all (THREADS workers of one thread each: on one node, separate processes
# sharing the mapped bundle scale better than threads of one process),
# sends CORPUS through `zbert embed` (sentence vectors, cls, npy) and writes
#   OUT.json     {"texts","tokens","seconds"} (tokens as the workers count
#                them: wordpieces + [CLS]/[SEP], no padding)
#   OUT.cls.f32  the [CLS] rows in input order (the .npy data)
#   OUT.rss      peak RSS in KiB of broker + workers, summed
#   OUT.cpu      CPU seconds broker + workers used (they run detached, so the
#                caller's `times` does not count them)
# The wall time runs from the first text sent to the last vector written.
set -eu
bin=$1
model=$2
corpus=$3
out=$4
threads=$5
dir=$(mktemp -d /tmp/zbert-bench-service.XXXXXX)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
    echo $((20000 + $$ % 20000 + $1)); }
clients=tcp://127.0.0.1:$(port 1)
backend=tcp://127.0.0.1:$(port 2)
trap 'deploy/local-cluster stop --dir "$dir" > /dev/null 2>&1 || true; rm -rf "$dir"' EXIT INT TERM
deploy/local-cluster start --model "$model" --workers "$threads" --threads 1 --bin "$bin" \
    --clients "$clients" --backend "$backend" --dir "$dir" > /dev/null
t0=$(date +%s.%N)
"$bin/zbert" embed --broker "$clients" --level sentence --pooling cls --format npy \
    --progress never < "$corpus" > "$out.npy"
t1=$(date +%s.%N)
"$bin/zbert" status --broker "$clients" --json > "$dir/status.json"
rss=0
for f in "$dir"/*.pid; do
    kb=$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$(cat "$f")/status" 2>/dev/null || echo 0)
    rss=$((rss + ${kb:-0}))
done
echo "$rss" > "$out.rss"
# utime + stime (fields 14, 15 after the parenthesised name) in clock ticks
ticks=0
for f in "$dir"/*.pid; do
    t=$(sed 's/^.*) //' "/proc/$(cat "$f")/stat" 2>/dev/null | awk '{ print $12 + $13 }')
    ticks=$((ticks + ${t:-0}))
done
echo "$ticks $(getconf CLK_TCK)" | awk '{ printf "%.2f\n", $1 / $2 }' > "$out.cpu"
tokens=$(tr ',' '\n' < "$dir/status.json" | sed -n 's/.*"tokens":[^0-9]*\([0-9]*\).*/\1/p' |
    awk '{ s += $1 } END { print s + 0 }')
texts=$(wc -l < "$corpus")
seconds=$(echo "$t1 $t0" | awk '{ printf "%.3f", $1 - $2 }')
tail -c +129 "$out.npy" > "$out.cls.f32"
printf '{"texts":%d,"tokens":%d,"seconds":%s}\n' "$texts" "$tokens" "$seconds" > "$out.json"
echo "    service: texts=$texts tokens=$tokens seconds=$seconds workers=$threads x 1 thread" >&2
