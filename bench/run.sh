#!/bin/sh
# run.sh BIN TOOLS -- make bench: zbert against PyTorch and ONNX Runtime, in one
# run, on one model and one corpus, printed as one table (also written to
# bench/out/results.md).
#
#   BIN    where zbert-embed and zbert-model are (bin)
#   TOOLS  where the Makefile built sgemm_probe and zbert_latency (build/bench)
#
# Model: random bert-base-shaped weights (12 layers, hidden 768, 12 heads,
# intermediate 3072, real bert-base-cased vocabulary), made once under
# models/ (bench-base/ in Hugging Face layout, bench-base.zbm, and
# bench-base.onnx exported from the PyTorch peer's module).  Corpus: 2,000
# fortunes (bench/corpus.sh), tokenized once by zbert-embed --tokenize-only;
# the peers get those ids.  Throughput counts real tokens: each text's
# wordpieces plus [CLS] and [SEP], never padding.
#
# Rows: the engine, fp32 and int8 (bench-base-int8.zbm, made by
# zbert-model convert --quantize int8, with its accuracy against fp32); the
# service (bench/service.sh); PyTorch (bench/bert_torch.py) and ONNX Runtime
# (bench/node/ort_peer.js), each in length-sorted batches of 8 and one text
# at a time.  Then fixed sequence lengths (zbert fp32 and int8, ONNX Runtime)
# and the latency of one short text (engine fp32 and int8, the service end
# to end with one worker of all the threads, ONNX Runtime).  A peer that is not installed is
# skipped with a message saying how to install it (make bench-deps).
#
# Knobs (environment): ZB_BENCH_TEXTS (2000), ZB_BENCH_THREADS (2),
# ZB_BENCH_SINGLE_STRIDE (4: the one-at-a-time peers embed every 4th text),
# ZB_BENCH_FIXED_TOKENS (8192 tokens per fixed length), ZB_BENCH_LATENCY_RUNS
# (50), ZB_BENCH_WAIT_IDLE (0: seconds to wait for a busy machine to become
# idle before starting; the table says when it was not).  Timings never
# decide a test; this only measures and prints.
set -eu
[ $# -eq 2 ] || { echo "usage: run.sh BIN TOOLS" >&2; exit 2; }
bin=$1
tools=$2
texts=${ZB_BENCH_TEXTS:-2000}
threads=${ZB_BENCH_THREADS:-2}
stride=${ZB_BENCH_SINGLE_STRIDE:-4}
fixed_tokens=${ZB_BENCH_FIXED_TOKENS:-8192}
lat_runs=${ZB_BENCH_LATENCY_RUNS:-50}
wait_idle=${ZB_BENCH_WAIT_IDLE:-0}
detail=16
lengths="16 128 512"
lat_text="I love NLP, and a short text is embedded alone."
model=models/bench-base
vocab=engine/vocab/bert-base-cased.txt
out=bench/out
py=/usr/bin/python3
t_start=$(date +%s)

say() { printf '[%4ds] %s\n' $(($(date +%s) - t_start)) "$*" >&2; }
die() { echo "run.sh: $*" >&2; exit 1; }

# Percentage of CPU time idle over one second: other processes running
# during the benchmark make every figure low and noisy, so say so.
idle_pct() {
    a=$(head -n 1 /proc/stat)
    sleep 1
    b=$(head -n 1 /proc/stat)
    printf '%s\n%s\n' "$a" "$b" | awk '{ idle = $5 + $6; tot = 0
        for (i = 2; i <= NF; i++) tot += $i
        if (NR == 1) { i0 = idle; t0 = tot } else printf "%d", 100 * (idle - i0) / (tot - t0) }'
}

# our_cpu FILE -- CPU seconds used so far by this script's finished
# children, from `times` output saved in FILE (`times` must run in this
# shell itself: a subshell has no finished children of its own).
our_cpu() {
    sed -n 2p "$1" | awk '{ t = 0
        for (i = 1; i <= 2; i++) { split($i, a, "m"); sub("s", "", a[2]); t += a[1] * 60 + a[2] }
        printf "%.2f", t }'
}

# busy_others STAT0 STAT1 OURS -- percent of the machine's CPU time (all
# cores) that other processes used between two /proc/stat lines, given the
# CPU seconds this script's children used meanwhile.
busy_others() {
    printf '%s\n%s\n' "$1" "$2" | awk -v ours="$3" -v hz="$(getconf CLK_TCK)" '
        { idle = $5 + $6; tot = 0; for (i = 2; i <= NF; i++) tot += $i
          if (NR == 1) { i0 = idle; t0 = tot } else { busy = (tot - t0) - (idle - i0); all = tot - t0 } }
        END { o = 100 * (busy - ours * hz) / all; printf "%d", o < 0 ? 0 : o }'
}

# failed NAME -- NAME's program failed: its row says so and the run goes on.
failed() {
    rm -f "$out/$1.json"
    echo "failed (see the messages printed before the table)" > "$out/$1.skip"
    say "$1 failed"
}

# timed NAME CMD... -- runs CMD, recording its peak RSS in $out/NAME.rss and
# the share of the CPU other processes took meanwhile in $out/NAME.others.
timed() {
    name=$1
    shift
    st0=$(head -n 1 /proc/stat)
    times > "$out/$name.t0"
    rc=0
    if [ -x /usr/bin/time ]; then
        /usr/bin/time -f %M -o "$out/$name.rss" "$@" || rc=$?
    else
        "$@" || rc=$?
    fi
    st1=$(head -n 1 /proc/stat)
    times > "$out/$name.t1"
    used=$(echo "$(our_cpu "$out/$name.t1") $(our_cpu "$out/$name.t0")" | awk '{ print $1 - $2 }')
    busy_others "$st0" "$st1" "$used" > "$out/$name.others"
    rm -f "$out/$name.t0" "$out/$name.t1"
    return $rc
}

# ids FILE_IN FILE_OUT -- zbert's tokenization, one {"index","ids",...} per line.
tokenize() {
    "$bin/zbert-embed" --model "$model.zbm" --tokenize-only --level wordpiece < "$1" > "$2"
    ! grep -q '"error"' "$2" || die "$1: zbert-embed rejected some texts (see $2)"
}

for t in "$bin/zbert-embed" "$bin/zbert-model" "$tools/sgemm_probe" "$tools/zbert_latency"; do
    [ -x "$t" ] || die "$t missing (run: make bench)"
done
[ -x "$py" ] || die "$py missing (apt-get install python3): it builds the table"
rm -rf "$out"
mkdir -p "$out" models

idle0=$(idle_pct)
waited=0
while [ "$idle0" -lt 85 ] && [ "$waited" -lt "$wait_idle" ]; do
    [ "$waited" -gt 0 ] || say "machine busy (${idle0} % idle): waiting up to $wait_idle s for it"
    sleep 9
    waited=$((waited + 10))
    idle0=$(idle_pct)
done
load0=$(cut -d ' ' -f 1-3 /proc/loadavg)
say "machine idle ${idle0} % before the run (load average $load0)"
[ "$idle0" -ge 85 ] || say "WARNING: other processes are using the CPU; figures will be low and noisy"

# --- model and corpus -------------------------------------------------------
if [ ! -f "$model/model.safetensors" ]; then
    say "making $model (random bert-base-shaped weights)"
    rm -rf "$model" "$model.zbm" "$model.onnx"
    "$bin/zbert-model" random --layers 12 --hidden 768 --heads 12 --intermediate 3072 \
        --vocab "$vocab" --seed 7 -o "$model" >&2
fi
# A rebuilt converter may write a newer bundle format: convert again.
if [ ! -f "$model.zbm" ] || [ "$bin/zbert-model" -nt "$model.zbm" ]; then
    say "converting $model to $model.zbm"
    "$bin/zbert-model" convert "$model" -o "$model.zbm" >&2
fi
if [ ! -f "$model-int8.zbm" ] || [ "$model.zbm" -nt "$model-int8.zbm" ] ||
        [ "$bin/zbert-model" -nt "$model-int8.zbm" ]; then
    say "quantizing $model.zbm to $model-int8.zbm"
    "$bin/zbert-model" convert "$model.zbm" -o "$model-int8.zbm" --quantize int8 >&2
fi
sh bench/corpus.sh "$texts" "$out/corpus.txt" >&2
tokenize "$out/corpus.txt" "$out/ids.jsonl"
[ "$(wc -l < "$out/ids.jsonl")" -eq "$texts" ] || die "corpus has fewer than $texts texts"

# --- peers available? ---------------------------------------------------------
have_torch=0
have_ort=0
if "$py" -c 'import torch, numpy' 2>/dev/null; then
    have_torch=1
    torch_version=$("$py" -c 'import torch; print(torch.__version__)')
    torch_deb=$(dpkg-query -W -f '${Version}' python3-torch 2>/dev/null || echo "?")
else
    torch_skip="python3-torch not installed (make bench-deps, or apt-get install python3-torch)"
    say "PyTorch: skipped: $torch_skip"
fi
if ! command -v node > /dev/null; then
    ort_skip="Node.js not installed (make bench-deps, or apt-get install nodejs)"
elif ! (cd bench/node && node -e "require('onnxruntime-node')") 2>/dev/null; then
    ort_skip="onnxruntime-node not installed (make bench-deps, or: cd bench/node && npm ci --ignore-scripts)"
elif [ $have_torch -eq 0 ]; then
    ort_skip="the ONNX file is exported from the PyTorch module: needs python3-torch (make bench-deps)"
else
    have_ort=1
    ort_version=$(cd bench/node && node -e "console.log(require('onnxruntime-node').env.versions.node)")
fi
[ $have_ort -eq 1 ] || say "ONNX Runtime: skipped: $ort_skip"
if [ $have_ort -eq 1 ] && { [ ! -f "$model.onnx" ] || [ "$model/model.safetensors" -nt "$model.onnx" ] ||
        [ bench/bert_torch.py -nt "$model.onnx" ]; }; then
    say "exporting $model.onnx from the PyTorch module"
    "$py" bench/bert_torch.py export "$model" "$model.onnx" 2>"$out/export.log" ||
        { cat "$out/export.log" >&2; die "ONNX export failed"; }
fi

# --- measurements from here: watch what else uses the CPU -----------------------
stat0=$(head -n 1 /proc/stat)
times > "$out/times0"

# --- sgemm probe ----------------------------------------------------------------
say "sgemm probe (OpenBLAS, $threads threads, M = 32, 128, 512)"
"$tools/sgemm_probe" --threads "$threads" > "$out/sgemm.json"

# --- corpus throughput ------------------------------------------------------------
# engine NAME BUNDLE -- the corpus through zbert-embed ($out/NAME.npy, the
# [CLS] rows; NAME.err, its --stats line), then every row of the first
# texts, for the all-rows comparisons (not timed).
engine() {
    say "zbert engine ($2): $texts texts"
    timed "$1" "$bin/zbert-embed" --model "$2" --threads "$threads" --level sentence \
        --pooling cls --format npy --stats < "$out/corpus.txt" > "$out/$1.npy" \
        2> "$out/$1.err" || { cat "$out/$1.err" >&2; die "zbert-embed ($2) failed"; }
    sed -n 's/^zbert-embed: stats /    /p' "$out/$1.err" >&2
    head -n $((detail * stride)) "$out/corpus.txt" |
        "$bin/zbert-embed" --model "$2" --threads "$threads" --level wordpiece \
            > "$out/$1.detail.jsonl"
}
engine zbert "$model.zbm"
engine zbert8 "$model-int8.zbm"

# The service: enabled once its programs exist.  bench/service.sh BIN MODEL
# CORPUS OUT THREADS starts a broker and workers with THREADS threads in all,
# sends CORPUS through them, and writes OUT.json {"texts","tokens","seconds"}
# (tokens as the engine counts them), OUT.cls.f32 (the [CLS] rows in input
# order) and OUT.rss (peak RSS in KiB of broker + workers).
if [ -x "$bin/zbert-broker" ] && [ -x "$bin/zbert-worker" ]; then
    if [ -f bench/service.sh ]; then
        say "zbert service: $texts texts"
        svc0=$(head -n 1 /proc/stat)
        times > "$out/service.t0"
        sh bench/service.sh "$bin" "$model.zbm" "$out/corpus.txt" "$out/service" "$threads" ||
            echo "bench/service.sh failed (see the log above)" > "$out/service.skip"
        times > "$out/service.t1"
        svc_cpu=$(echo "$(our_cpu "$out/service.t1") $(our_cpu "$out/service.t0") \
            $(cat "$out/service.cpu" 2>/dev/null || echo 0)" | awk '{ print $1 - $2 + $3 }')
        busy_others "$svc0" "$(head -n 1 /proc/stat)" "$svc_cpu" > "$out/service.others"
        rm -f "$out/service.t0" "$out/service.t1"
    else
        echo "bin/zbert-broker and bin/zbert-worker exist, bench/service.sh not written yet" \
            > "$out/service.skip"
    fi
else
    echo "bin/zbert-broker and bin/zbert-worker not built yet" > "$out/service.skip"
fi

if [ $have_torch -eq 1 ]; then
    say "PyTorch, batch 8: $texts texts"
    timed pt8 "$py" bench/bert_torch.py run "$model" "$out/ids.jsonl" "$out/pt8" \
        --batch 8 --threads "$threads" --detail "$detail" || failed pt8
    say "PyTorch, one at a time: every ${stride}th text"
    timed pt1 "$py" bench/bert_torch.py run "$model" "$out/ids.jsonl" "$out/pt1" \
        --batch 1 --stride "$stride" --threads "$threads" --detail "$detail" || failed pt1
else
    echo "$torch_skip" > "$out/pt8.skip"
    echo "$torch_skip" > "$out/pt1.skip"
fi

if [ $have_ort -eq 1 ]; then
    say "ONNX Runtime, batch 8: $texts texts"
    timed ort8 node bench/node/ort_peer.js run "$model.onnx" "$out/ids.jsonl" "$out/ort8" \
        --batch 8 --threads "$threads" --detail "$detail" || failed ort8
    say "ONNX Runtime, one at a time: every ${stride}th text"
    timed ort1 node bench/node/ort_peer.js run "$model.onnx" "$out/ids.jsonl" "$out/ort1" \
        --batch 1 --stride "$stride" --threads "$threads" --detail "$detail" || failed ort1
else
    echo "$ort_skip" > "$out/ort8.skip"
    echo "$ort_skip" > "$out/ort1.skip"
fi

# --- fixed sequence lengths -----------------------------------------------------------
fixed_json=""
for len in $lengths; do
    n=$((fixed_tokens / len))
    [ "$n" -ge 8 ] || n=8
    f="$out/fixed.$len"
    sh bench/fixed.sh "$vocab" "$len" "$n" "$f.txt"
    tokenize "$f.txt" "$f.ids.jsonl"
    got=$(sed 's/.*"ids":\[\([^]]*\)\].*/\1/' "$f.ids.jsonl" | awk -F, '{ print NF }' | sort -u)
    [ "$got" = "$len" ] || die "$f.txt: texts tokenize to $got pieces, not $len"
    for v in zbert:"$model.zbm" zbert8:"$model-int8.zbm"; do
        name=${v%%:*}
        say "fixed length $len: $n texts, zbert engine (${v#*:})"
        timed "fixed.$len.$name" "$bin/zbert-embed" --model "${v#*:}" --threads "$threads" \
            --level sentence --format npy --stats < "$f.txt" > /dev/null 2> "$f.$name.err" ||
            { cat "$f.$name.err" >&2; say "zbert-embed (${v#*:}) failed at length $len"; }
    done
    if [ $have_ort -eq 1 ]; then
        say "fixed length $len: $n texts, ONNX Runtime batch 8"
        timed "fixed.$len.ort" node bench/node/ort_peer.js run "$model.onnx" "$f.ids.jsonl" \
            "$f.ort" --batch 8 --threads "$threads" || failed "fixed.$len.ort"
    fi
    fixed_json="$fixed_json${fixed_json:+,}{\"length\":$len,\"texts\":$n}"
done

# --- latency of one short text ------------------------------------------------------------
say "latency: one short text, $lat_runs runs"
echo "$lat_text" > "$out/lat.txt"
timed lat.zbert "$tools/zbert_latency" --model "$model.zbm" --threads "$threads" \
    --runs "$lat_runs" < "$out/lat.txt" > "$out/lat.zbert.json" || failed lat.zbert
timed lat.zbert8 "$tools/zbert_latency" --model "$model-int8.zbm" --threads "$threads" \
    --runs "$lat_runs" < "$out/lat.txt" > "$out/lat.zbert8.json" || failed lat.zbert8
# service_latency NAME BUNDLE PORT -- one short text end to end through the
# service: a broker and one worker with every thread (one text cannot be
# split between workers); writes $out/NAME.json and $out/NAME.others.
service_latency() {
    ldir=$(mktemp -d /tmp/zbert-bench-latency.XXXXXX)
    if deploy/local-cluster start --model "$2" --workers 1 --threads "$threads" \
            --bin "$bin" --clients "tcp://127.0.0.1:$3" \
            --backend "tcp://127.0.0.1:$(($3 + 1))" --dir "$ldir" > /dev/null; then
        lat0=$(head -n 1 /proc/stat)
        times > "$out/$1.t0"
        "$tools/zbert_latency" --broker "tcp://127.0.0.1:$3" --runs "$lat_runs" \
            < "$out/lat.txt" > "$out/$1.json" || failed "$1"
        times > "$out/$1.t1"
        # the broker's and the worker's CPU count as ours (they run detached)
        lat_cpu=0
        for f in "$ldir"/*.pid; do
            t=$(sed 's/^.*) //' "/proc/$(cat "$f")/stat" 2>/dev/null | awk '{ print $12 + $13 }')
            lat_cpu=$((lat_cpu + ${t:-0}))
        done
        lat_cpu=$(echo "$lat_cpu $(getconf CLK_TCK) $(our_cpu "$out/$1.t1") \
            $(our_cpu "$out/$1.t0")" | awk '{ print $1 / $2 + $3 - $4 }')
        busy_others "$lat0" "$(head -n 1 /proc/stat)" "$lat_cpu" > "$out/$1.others"
        rm -f "$out/$1.t0" "$out/$1.t1"
        svc_cpu=$(echo "${svc_cpu:-0} $lat_cpu" | awk '{ print $1 + $2 }')
        deploy/local-cluster stop --dir "$ldir" > /dev/null 2>&1 || true
    else
        failed "$1"
    fi
    rm -rf "$ldir"
}
if [ -x "$bin/zbert-broker" ] && [ -x "$bin/zbert-worker" ]; then
    lport=$((30000 + $$ % 10000))
    service_latency lat.service "$model.zbm" "$lport"
    service_latency lat.service8 "$model-int8.zbm" $((lport + 2))
fi
if [ $have_ort -eq 1 ]; then
    tokenize "$out/lat.txt" "$out/lat.ids.jsonl"
    timed lat.ort node bench/node/ort_peer.js latency "$model.onnx" "$out/lat.ids.jsonl" "$out/lat.ort" \
        --runs "$lat_runs" --threads "$threads" || failed lat.ort
fi

# --- the table ---------------------------------------------------------------------------
stat1=$(head -n 1 /proc/stat)
times > "$out/times1"
# ours: this script's children, plus the detached brokers and workers of the service rows
ours=$(echo "$(our_cpu "$out/times1") $(our_cpu "$out/times0") ${svc_cpu:-0}" |
    awk '{ print $1 - $2 + $3 }')
others=$(busy_others "$stat0" "$stat1" "$ours")
say "other processes used ${others} % of the CPU during the measurements"
busy=false
[ "$others" -lt 10 ] || busy=true
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
notes=""
[ -x /usr/bin/time ] ||
    notes="\"Peak RSS not measured: /usr/bin/time missing (make bench-deps, or apt-get install time).\""
cat > "$out/meta.json" <<EOF
{"date": "$(date -u '+%Y-%m-%d %H:%M UTC')", "cpu": "$(nproc) × $cpu", "threads": $threads,
 "load_start": "$load0, ${idle0} % idle", "load_end": "$(cut -d ' ' -f 1-3 /proc/loadavg)",
 "others_pct": $others,
 "busy": $busy, "layers": 12, "hidden": 768, "heads": 12, "intermediate": 3072,
 "model": "$model.zbm / $model/model.safetensors / $model.onnx", "detail": $detail,
 "torch_version": "${torch_version:-}", "torch_deb": "${torch_deb:-}",
 "ort_version": "${ort_version:-}",
 "fixed": [$fixed_json], "latency_text": "\"$lat_text\"", "notes": [$notes]}
EOF
say "done in $(($(date +%s) - t_start)) s"
echo
"$py" bench/report.py "$out"
