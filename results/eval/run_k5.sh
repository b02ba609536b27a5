#!/usr/bin/env bash
# The evaluation behind results/eval/test_k5 (in distribution) and results/eval/ood_k5 (out of
# distribution), issue 12. Resumable: rerun the same command after any interruption.
# Two jobs share a 2-core machine, one torch thread each:
#   results/eval/run_k5.sh test    # synthetic test split: all 36 level-1 problems, 100 per other level, 100 word problems
#   results/eval/run_k5.sh ood     # first 100 test problems of GSM8K, MAWPS, ASDiv (../shared/data)
# The predictor: results/predictor/skip_loop_r5 (polar train --max-runs 5 on results/search/skip_loop);
# CKPT=NAME evaluates results/predictor/NAME instead, into test_k5_NAME / ood_k5_NAME:
#   CKPT=skip_loop_full results/eval/run_k5.sh test
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
DATA="${POLAR_DATA:-$ROOT/../shared/data}"
POLAR="${POLAR:-python -m polar.cli}"
SEARCH=("$ROOT"/results/search/skip_loop/{L1,L2,L3,L4,L5,words}.jsonl)
CKPT="${CKPT:-skip_loop_r5}"
SUFFIX=""; [ "$CKPT" = skip_loop_r5 ] || SUFFIX="_$CKPT"
common=(--checkpoint "$ROOT/results/predictor/$CKPT"
        --methods polar base_greedy base_sample shortgpt best_static random_single_edit random_segment
        --search "${SEARCH[@]}" --train-data synthetic:1:40:train --k 5 --seed 0 --threads "${THREADS:-1}")
case "${1:-}" in
  test)
    $POLAR eval "${common[@]}" --data synthetic:1:36:test --data synthetic:2:100:test --data synthetic:3:100:test \
      --data synthetic:4:100:test --data synthetic:5:100:test --data words:100:test --out "$HERE/test_k5$SUFFIX" ;;
  ood)
    $POLAR eval "${common[@]}" --data "gsm8k:$DATA/gsm8k/test.jsonl" --data "mawps:$DATA/mawps/test.jsonl" \
      --data "asdiv:$DATA/asdiv/ASDiv.xml" --limit 100 --out "$HERE/ood_k5$SUFFIX" ;;
  *) echo "usage: $0 test|ood" >&2; exit 2 ;;
esac
