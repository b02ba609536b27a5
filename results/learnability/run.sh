#!/usr/bin/env bash
# The learnability study and the scorers behind results/learnability (issue 19), from the sweep
# matrices of results/sweep (run_all.sh). Resumable: trained scorers are reused (polar train --out
# resumes or reuses a folder); the analysis is a pure function of the files (seconds to minutes).
#   results/learnability/run.sh scorers   # results/predictor/scorer_text, scorer_llm (train: *_train, model choice: *_validation)
#   results/learnability/run.sh study     # results/learnability/{findings.md,summary.json,*.png} on the test splits
#   results/learnability/run.sh val-study # the same analysis with validation as the held-out split (results/learnability/validation)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
POLAR="${POLAR:-python -m polar.cli}"
SW="$ROOT/results/sweep"
FAMILIES="L1 L2 L3 L4 L5 words"
files() { for f in $FAMILIES; do echo "$SW/$1/${f}_$2.jsonl"; done; }
OOD="gsm8k mawps asdiv"  # test-only families (no training problems): reported, outside the in-distribution average
present() { for f in $FAMILIES $OOD; do [ -f "$SW/$1/${f}_$2.jsonl" ] && echo "$SW/$1/${f}_$2.jsonl"; done; true; }  # samples: those swept so far
for f in "$SW"/programs/*.jsonl.gz "$SW"/samples/*.jsonl.gz; do  # unpack committed matrices
  [ -f "$f" ] && [ ! -f "${f%.gz}" ] && gunzip -kc "$f" > "${f%.gz}"
done
TRAIN=($(files programs train)); VAL=($(files programs validation)); TEST=($(present programs test))  # + OOD swept so far
T="${THREADS:-1}"
case "${1:-}" in
  scorers)
    $POLAR train --head scorer --features text --sweep "${TRAIN[@]}" --val-sweep "${VAL[@]}" --seed 0 --threads "$T" \
      --out "$ROOT/results/predictor/scorer_text"
    $POLAR train --head scorer --features llm --model default --sweep "${TRAIN[@]}" --val-sweep "${VAL[@]}" --seed 0 \
      --threads "$T" --out "$ROOT/results/predictor/scorer_llm" ;;
  study)
    $POLAR analyze-sweep --train "${TRAIN[@]}" --val "${VAL[@]}" --test "${TEST[@]}" --samples $(present samples test) \
      --val-samples $(present samples validation) \
      --scorer "$ROOT/results/predictor/scorer_text" --scorer-llm "$ROOT/results/predictor/scorer_llm" --model default \
      --seed 0 --threads "$T" --out "$HERE" ;;
  val-study)
    $POLAR analyze-sweep --train "${TRAIN[@]}" --test "${VAL[@]}" --samples $(present samples validation) \
      --scorer "$ROOT/results/predictor/scorer_text" --scorer-llm "$ROOT/results/predictor/scorer_llm" --model default \
      --seed 0 --threads "$T" --out "$HERE/validation" ;;
  *) echo "usage: $0 scorers|study|val-study" >&2; exit 2 ;;
esac
