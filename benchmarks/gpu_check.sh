#!/usr/bin/env bash
# The GPU check: every test with a CUDA device present, in two steps: those not marked cuda (the CLI tests
# pick CUDA when there is one; the multi-process tests run on CPU/gloo, which needs no second GPU), then the
# CUDA-path tests (pytest -m cuda), then bench.py --device cuda --short --bf16 (CodeT5-small and -base shapes; the suite in
# float32, same generated text as the thesis, and under bf16 autocast). No step stops the others. Prints one
# table (step, time, result), then the failing tests' lines. Sized for one GPU in under 15 minutes.
#
#   benchmarks/gpu_check.sh [--dry-run]     # --dry-run: print the steps, run nothing
#
# Without a CUDA device it says so in one line and exits 0. Logs and the bench JSON go to
# $GPU_CHECK_OUT (default: gpu_check_out/ in the repository root).
set -uo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python}"
out="${GPU_CHECK_OUT:-gpu_check_out}"
steps=(
  "tests|600|$python -m pytest -q -p no:cacheprovider -rfE -m 'not cuda'"
  "cuda tests|300|$python -m pytest -q -p no:cacheprovider -rfE -m cuda"
  "bench|600|$python bench.py --device cuda --short --bf16 --json $out/bench.json"
)
if [[ "${1:-}" == "--dry-run" ]]; then
  for step in "${steps[@]}"; do IFS="|" read -r name limit command <<<"$step"; echo "$name (${limit} s at most): $command"; done
  exit 0
fi
if ! "$python" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check: no CUDA device available (torch.cuda.is_available() is False); nothing to check"
  exit 0
fi
mkdir -p "$out"
"$python" -c "import torch; print('gpu_check:', torch.cuda.get_device_name(0), '| torch', torch.__version__, '| CUDA', torch.version.cuda, '|', torch.cuda.device_count(), 'device(s)')"
started=$SECONDS
rows=()
failures=()
status=0
for step in "${steps[@]}"; do
  IFS="|" read -r name limit command <<<"$step"
  log="$out/${name// /_}.log"
  begin=$SECONDS
  echo "running $name: $command (log $log)"
  timeout "$limit" bash -c "$command" >"$log" 2>&1
  rc=$?
  seconds=$((SECONDS - begin))
  if [[ "$name" == bench ]]; then
    result=$([[ $rc -eq 0 ]] && echo "ok: $(tail -n 4 "$log" | tr '\n' ' ')MISMATCH lines: $(grep -c MISMATCH "$log")" \
             || echo "FAILED (exit $rc)")  # float32 only: bf16 lines never say MISMATCH
  else  # pytest's last line, e.g. "3 failed, 420 passed, 9 skipped in 200.1s"
    result="$(grep -E '(passed|failed|error|skipped|deselected|no tests ran)' "$log" | tail -n 1 | tr -d '=' | xargs)"
    [[ $rc -eq 124 ]] && result="TIMED OUT after $limit s; $result"
    [[ $rc -eq 0 || -n "$result" ]] || result="FAILED (exit $rc)"
    while IFS= read -r line; do failures+=("$name: $line"); done < <(grep -E '^(FAILED|ERROR) ' "$log")
  fi
  [[ $rc -eq 0 ]] || status=1
  rows+=("$(printf '%-12s %6d s  %-6s %s' "$name" "$seconds" "$([[ $rc -eq 0 ]] && echo ok || echo "rc $rc")" "$result")")
done
echo
echo "gpu_check summary ($((SECONDS - started)) s in all)"
printf '%-12s %8s  %-6s %s\n' "step" "time" "exit" "result"
printf '%s\n' "${rows[@]}"
if ((${#failures[@]})); then
  echo
  printf '%s\n' "${failures[@]}"
fi
exit $status
