#!/usr/bin/env bash
# The issue-19/21 evaluation: the shipped scorer PoLar (results/predictor/$CKPT, chosen on validation)
# beside every baseline and the three online routers, k = 5, in one polar eval run per split.
# Resumable: rerun the same command after any interruption. One torch thread per job:
#   results/eval/run_scorer_k5.sh test   # -> scorer_test_k5: 36 level-1 test problems, 100 of levels 2-5, 100 word problems
#   results/eval/run_scorer_k5.sh ood    # -> scorer_ood_k5: the first 100 test problems of GSM8K, MAWPS, ASDiv
#   results/eval/run_scorer_k5.sh mix-test / mix-ood  # -> scorer_mix_{test,ood}_k5: the same without the routers, plus
#       polar_mix with the M:T the learnability study chose on validation (results/learnability/summary.json)
# best_static is the static set cover on the training sweep matrices (results/sweep/programs/*_train),
# as the learnability study defines it; ShortGPT's Block Influence is measured on 40 level-1 train prompts.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
DATA="${POLAR_DATA:-$ROOT/../shared/data}"
POLAR="${POLAR:-python -m polar.cli}"
CKPT="${CKPT:-scorer_text}"
SW="$ROOT/results/sweep/programs"
for f in "$SW"/*_train.jsonl.gz; do [ -f "${f%.gz}" ] || gunzip -kc "$f" > "${f%.gz}"; done
TRAIN_SWEEP=("$SW"/{L1,L2,L3,L4,L5,words}_train.jsonl)
ROUTERS=("$ROOT"/results/routers/{drllm,mindskip,flexidepth})
METHODS=(polar base_greedy base_sample shortgpt best_static random_single_edit)
EXTRA=(--methods "${METHODS[@]}" drllm mindskip flexidepth --routers "${ROUTERS[@]}")
OUT=scorer
case "${1:-}" in mix-*)
  MIX="$(python -c "import json, sys; c = json.load(open(sys.argv[1]))['mixes_chosen_on_validation']['scorer (text)']
print(f\"{c['m']}:{c['temperature']:g}\")" "$ROOT/results/learnability/summary.json")"
  EXTRA=(--methods "${METHODS[@]}" polar_mix --mix "$MIX"); OUT=scorer_mix ;;
esac
common=(--checkpoint "$ROOT/results/predictor/$CKPT" "${EXTRA[@]}"
        --train-sweep "${TRAIN_SWEEP[@]}" --train-data synthetic:1:40:train
        --k 5 --seed 0 --threads "${THREADS:-1}")
case "${1:-}" in
  test|mix-test)
    $POLAR eval "${common[@]}" --data synthetic:1:36:test --data synthetic:2:100:test --data synthetic:3:100:test \
      --data synthetic:4:100:test --data synthetic:5:100:test --data words:100:test --out "$HERE/${OUT}_test_k5" ;;
  ood|mix-ood)
    $POLAR eval "${common[@]}" --data "gsm8k:$DATA/gsm8k/test.jsonl" --data "mawps:$DATA/mawps/test.jsonl" \
      --data "asdiv:$DATA/asdiv/ASDiv.xml" --limit 100 --out "$HERE/${OUT}_ood_k5" ;;
  *) echo "usage: $0 test|ood|mix-test|mix-ood" >&2; exit 2 ;;
esac
