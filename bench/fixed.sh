#!/bin/sh
# fixed.sh VOCAB L N OUT -- N texts that each tokenize to exactly L wordpieces
# ([CLS] and [SEP] included): L-2 words drawn from the vocabulary's plain
# ASCII-letter entries, each of which is a single wordpiece.  Deterministic
# (a Park-Miller generator, exact in awk's doubles, seeded by L).  run.sh
# checks the lengths with zbert-embed --tokenize-only.
set -eu
vocab=$1
len=$2
n=$3
out=$4
[ "$len" -ge 3 ] || { echo "fixed.sh: length must be >= 3" >&2; exit 2; }
LC_ALL=C awk -v L="$len" -v N="$n" '
    /^[A-Za-z][A-Za-z]+$/ { w[nw++] = $0 }
    END {
        if (nw == 0) { print "fixed.sh: no plain words in the vocabulary" > "/dev/stderr"; exit 1 }
        x = 12345 + L
        for (t = 0; t < N; t++) {
            line = ""
            for (i = 0; i < L - 2; i++) {
                x = (x * 16807) % 2147483647
                line = line (i ? " " : "") w[x % nw]
            }
            print line
        }
    }' "$vocab" > "$out"
