#!/bin/sh
# corpus.sh N OUT -- a fixed sample of N real texts: Debian's fortunes, one
# fortune per line (its lines joined by single spaces), taken in file-name
# order from the English collection.  Deterministic for a given package
# version.
set -eu
n=$1
out=$2
dir=/usr/share/games/fortunes
[ -d "$dir" ] || { echo "corpus.sh: $dir missing (apt-get install fortunes)" >&2; exit 1; }
find "$dir" -maxdepth 1 -type f ! -name '*.dat' ! -name '*.u8' | LC_ALL=C sort |
    while read -r f; do cat "$f"; printf '\n%%\n'; done |
    awk 'BEGIN { RS = "\n%\n"; n = 0 }
         { gsub(/[ \t\r\n]+/, " "); sub(/^ /, ""); sub(/ $/, "");
           if (length($0) > 0 && n < '"$n"') { print; n++ } }' > "$out"
echo "corpus: $(wc -l < "$out") fortunes, $(wc -c < "$out") bytes -> $out"
