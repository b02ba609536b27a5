#!/usr/bin/env bash
# The search runs behind results/search (issue 9): table 1 and the predictor's supervision.
# Resumable: rerun the same command after any interruption (finished problems are skipped).
# Two jobs share a 2-core machine, one torch thread each:
#   results/search/run_all.sh supervision   # skip+loop, 64 simulations: 20, then 40, then up to 150 train problems per family
#   results/search/run_all.sh table1        # skip and loop, 32 simulations: 20, then 40 train problems per family
set -euo pipefail
OUT="$(cd "$(dirname "$0")" && pwd)"
POLAR="${POLAR:-python -m polar.cli}"
data() {  # train-split spec of a family with at most 150 problems (level 1 has 51 train problems)
  case "$1" in
    L1) echo "synthetic:1:51:train" ;;
    L2|L3|L4|L5) echo "synthetic:${1#L}:150:train" ;;
    words) echo "words:150:train" ;;
  esac
}
FAMILIES="L1 L2 L3 L4 L5 words"
case "${1:-}" in
  supervision)
    for limit in 20 40 150; do
      for f in $FAMILIES; do
        $POLAR search --data "$(data $f)" --space skip+loop --sims 64 --limit $limit --seed 0 --threads 1 \
          --batch-size 64 --out "$OUT/skip_loop/$f.jsonl"
      done
    done ;;
  table1)
    for limit in 20 40; do
      for f in $FAMILIES; do
        for space in skip loop; do
          $POLAR search --data "$(data $f)" --space $space --sims 32 --limit $limit --seed 0 --threads 1 \
            --batch-size 64 --out "$OUT/$space/$f.jsonl"
        done
      done
    done ;;
  *) echo "usage: $0 supervision|table1" >&2; exit 2 ;;
esac
