#!/usr/bin/env bash
# The routers behind results/routers (issue 21), trained on the predictor's training problems
# (the train splits of levels 1-5 and the word problems: 51 + 5 x 150 = 801), one torch thread.
# Resumable: rerun after any interruption (each training resumes from its train_state.pt).
#   nohup results/routers/run.sh > results/routers/train.log 2>&1 &
# DR.LLM: labels from the skip+loop search of those problems (results/search/skip_loop), 10 epochs.
# MindSkip, FlexiDepth: the LM loss on prompt + gold answer; 2 epochs (CPU budget; the
# references train longer on GPUs).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
POLAR="${POLAR:-python -m polar.cli}"
T="${THREADS:-1}"
DATA=(--data synthetic:1:51:train --data synthetic:2:150:train --data synthetic:3:150:train
      --data synthetic:4:150:train --data synthetic:5:150:train --data words:150:train)
$POLAR train-router --kind drllm --search "$ROOT"/results/search/skip_loop/{L1,L2,L3,L4,L5,words}.jsonl \
  --seed 0 --threads "$T" --out "$HERE/drllm"
$POLAR train-router --kind mindskip "${DATA[@]}" --epochs 2 --seed 0 --threads "$T" --out "$HERE/mindskip"
$POLAR train-router --kind flexidepth "${DATA[@]}" --epochs 2 --seed 0 --threads "$T" --out "$HERE/flexidepth"
