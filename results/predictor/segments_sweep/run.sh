#!/usr/bin/env bash
# The paper's segment predictor (polar train --head segments) retrained on the dense sweep
# matrices (results/sweep/programs/*_train.jsonl.gz) united with the skip_loop search results,
# with and without the reference code's anti-collapse remedies (issue 19 item 4).
#
#   bash results/predictor/segments_sweep/run.sh [variant ...]   # default: all variants
#   bash results/predictor/segments_sweep/run.sh && python results/predictor/segments_sweep/evaluate.py
#
# Resumable: a variant whose checkpoint is complete (model.safetensors, and config.json with the
# final history) is skipped; an interrupted one resumes from its train_state.pt. The gzipped
# matrices are unpacked (with their .library.json) into $DATA (a temp dir), never into
# results/sweep. One CPU thread. Environment: EPOCHS (default: polar's 30), DATA.
set -euo pipefail
cd "$(dirname "$0")/../../.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
HERE=results/predictor/segments_sweep
[[ ! -f .venv/bin/activate ]] || . .venv/bin/activate
DATA=${DATA:-${TMPDIR:-/tmp}/polar_segments_sweep_data}
FAMILIES=(L1 L2 L3 L4 L5 words)

mkdir -p "$DATA"
for f in "${FAMILIES[@]}"; do
  for split in train validation; do
    src=results/sweep/programs/${f}_${split}.jsonl
    if [[ ! -s $DATA/${f}_${split}.jsonl || $src.gz -nt $DATA/${f}_${split}.jsonl ]]; then
      gzip -dc "$src.gz" > "$DATA/${f}_${split}.jsonl.tmp" && mv "$DATA/${f}_${split}.jsonl.tmp" "$DATA/${f}_${split}.jsonl"
    fi
    cp "$src.library.json" "$DATA/${f}_${split}.jsonl.library.json"  # read_sweep: <file>.library.json
  done
done

SWEEP=() SEARCH=()
for f in "${FAMILIES[@]}"; do SWEEP+=("$DATA/${f}_train.jsonl"); SEARCH+=("results/search/skip_loop/$f.jsonl"); done

declare -A FLAGS=(
  [plain]=""
  [anti]="--anti-original-lambda 0.5"
  [lenpref]="--lenpref-beta 0.05"
  [dropfull]="--drop-full-if-shorter"
  [all]="--anti-original-lambda 0.5 --lenpref-beta 0.05 --drop-full-if-shorter"
  [nonorm]="--no-per-problem-normalize"
)
# <variant>_seed<N>: the same with --seed N (a check that the outcome is not one seed's)
VARIANTS=("$@")
[[ ${#VARIANTS[@]} -gt 0 ]] || VARIANTS=(plain anti lenpref dropfull all nonorm lenpref_seed1 all_seed1)
EPOCH_FLAG=()
[[ -z ${EPOCHS:-} ]] || EPOCH_FLAG=(--epochs "$EPOCHS")

for v in "${VARIANTS[@]}"; do
  base=${v%_seed*} seed=0
  [[ $base == "$v" ]] || seed=${v##*_seed}
  [[ -v FLAGS[$base] && $seed =~ ^[0-9]+$ ]] || { echo "unknown variant $v (one of ${!FLAGS[*]}, optionally _seedN)" >&2; exit 2; }
  out=$HERE/$v
  if [[ -f $out/model.safetensors ]] && grep -q '"epochs_run"' "$out/config.json" 2>/dev/null; then
    echo "== $v: done ($out), skipped"
    continue
  fi
  mkdir -p "$out"
  # shellcheck disable=SC2206
  cmd=(python -m polar.cli train --head segments --sweep "${SWEEP[@]}" --search "${SEARCH[@]}"
       --max-runs 5 --seed "$seed" --threads 1 "${EPOCH_FLAG[@]}" ${FLAGS[$base]} --out "$out")
  echo "== $v: ${cmd[*]}" | tee -a "$out/train.log"
  start=$SECONDS
  set +e  # progress bars (\r-separated) are dropped from the log, the finished ones kept
  "${cmd[@]}" 2>&1 | tr '\r' '\n' | awk '!/[0-9]+%\|/ || /100%\|/' >> "$out/train.log"
  rc=${PIPESTATUS[0]}
  set -e
  [[ $rc -eq 0 ]] || { echo "$v failed (exit $rc), see $out/train.log" >&2; exit 1; }
  echo "== $v: $((SECONDS - start)) s" | tee -a "$out/train.log"
done
