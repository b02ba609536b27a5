#!/usr/bin/env bash
# The program-library sweeps behind results/sweep (issue 19): every library entry on every problem.
# Resumable: rerun the same command after any interruption (finished problems are skipped).
# Two jobs share a 2-core machine, one torch thread each:
#   nohup results/sweep/run_all.sh a > results/sweep/logs/a.log 2>&1 &   # train splits, then test splits
#   nohup results/sweep/run_all.sh b > results/sweep/logs/b.log 2>&1 &   # validation splits, samples, GSM8K/MAWPS/ASDiv, their samples
# The committed matrices are the *.jsonl.gz copies: `results/sweep/run_all.sh gzip` writes them (at any
# time; a later session's jobs start from them: a missing *.jsonl is unpacked from its .gz first).
# Programs: the full program, every single skip / repeat of a block of 1-4 layers, and the 20 programs
# valid on the most problems of the skip+loop search (results/search/skip_loop). Samples: 24 samples
# of the full program at T = 0.3, 0.7 and 1.0 per problem (validation, test and out of distribution).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
DATA="${POLAR_DATA:-$ROOT/../shared/data}"
POLAR="${POLAR:-python -m polar.cli}"
SEARCH=("$ROOT"/results/search/skip_loop/{L1,L2,L3,L4,L5,words}.jsonl)
LIBRARY="full,skip:1-4,repeat:1-4,search:20"
SAMPLES="samples:0.3:24,samples:0.7:24,samples:1:24"
THREADS="${THREADS:-1}"
mkdir -p "$HERE/programs" "$HERE/samples" "$HERE/logs"
spec() {  # family split -> --data spec: train 150 (level 1: all 51), validation all (words 100), test 100 (level 1: all 36)
  local f=$1 s=$2
  case "$f/$s" in
    L1/train) echo "synthetic:1:51:train" ;;       L1/validation) echo "synthetic:1:13:validation" ;;
    L1/test) echo "synthetic:1:36:test" ;;
    L2/validation) echo "synthetic:2:62:validation" ;;  L3/validation) echo "synthetic:3:171:validation" ;;
    L4/validation) echo "synthetic:4:270:validation" ;; L5/validation) echo "synthetic:5:111:validation" ;;
    L?/train) echo "synthetic:${f#L}:150:train" ;;  L?/test) echo "synthetic:${f#L}:100:test" ;;
    words/train) echo "words:150:train" ;;  words/validation) echo "words:100:validation" ;;  words/test) echo "words:100:test" ;;
  esac
}
FAMILIES="L1 L2 L3 L4 L5 words"
restore() {  # out-file: resume from the committed .gz when the plain file is not here
  if [ ! -f "$1" ] && [ -f "$1.gz" ]; then gunzip -kc "$1.gz" > "$1"; fi
}
programs() {  # split
  for f in $FAMILIES; do
    restore "$HERE/programs/${f}_$1.jsonl"
    $POLAR sweep --data "$(spec $f $1)" --library "$LIBRARY" --from-search "${SEARCH[@]}" --seed 0 \
      --threads "$THREADS" --out "$HERE/programs/${f}_$1.jsonl"
  done
}
ood() {  # library out-name
  for n in gsm8k mawps asdiv; do restore "$HERE/$2/${n}_test.jsonl"; done
  $POLAR sweep --data "gsm8k:$DATA/gsm8k/test.jsonl" --limit 100 --library "$1" --from-search "${SEARCH[@]}" --seed 0 --threads "$THREADS" --out "$HERE/$2/gsm8k_test.jsonl"
  $POLAR sweep --data "mawps:$DATA/mawps/test.jsonl" --limit 100 --library "$1" --from-search "${SEARCH[@]}" --seed 0 --threads "$THREADS" --out "$HERE/$2/mawps_test.jsonl"
  $POLAR sweep --data "asdiv:$DATA/asdiv/ASDiv.xml" --limit 100 --library "$1" --from-search "${SEARCH[@]}" --seed 0 --threads "$THREADS" --out "$HERE/$2/asdiv_test.jsonl"
}
samples() {  # split
  for f in $FAMILIES; do
    restore "$HERE/samples/${f}_$1.jsonl"
    $POLAR sweep --data "$(spec $f $1)" --library "$SAMPLES" --seed 0 --threads "$THREADS" --out "$HERE/samples/${f}_$1.jsonl"
  done
}
case "${1:-}" in
  a) programs train; programs test; samples test ;;
  b) programs validation; samples validation; ood "$LIBRARY" programs; ood "$SAMPLES" samples ;;
  gzip) for f in "$HERE"/programs/*.jsonl "$HERE"/samples/*.jsonl; do [ -f "$f" ] && gzip -kf9 "$f"; done ;;
  *) echo "usage: $0 a|b|gzip" >&2; exit 2 ;;
esac
