#!/usr/bin/env bash
# The GPU check: every test on a CUDA device (the CLI tests pick CUDA when there is one; the cuda-named
# tests need it), then bench.py --device cuda --short --bf16 (CodeT5-small and -base shapes; the suite
# in float32, same generated text as the thesis, and under bf16 autocast), then a summary table. Sized
# for one GPU in under 8 minutes.
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
  "tests|600|$python -m pytest -q -x -p no:cacheprovider"
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
"$python" -c "import torch; print('gpu_check:', torch.cuda.get_device_name(0), '| torch', torch.__version__, '| CUDA', torch.version.cuda)"
started=$SECONDS
summary=()
status=0
for step in "${steps[@]}"; do
  IFS="|" read -r name limit command <<<"$step"
  log="$out/${name// /_}.log"
  begin=$SECONDS
  echo "== $name: $command"
  timeout "$limit" $command >"$log" 2>&1
  rc=$?
  seconds=$((SECONDS - begin))
  tail -n 60 "$log"
  verdict=$([[ $rc -eq 0 ]] && echo ok || echo "FAILED (exit $rc, log $log)")
  if [[ $rc -eq 0 && "$name" == bench* ]]; then
    figures=$(tail -n 4 "$log" | tr '\n' ' ')
    mismatches=$(grep -c "MISMATCH" "$log")  # float32 only: bf16 lines never say MISMATCH
    verdict="ok: $figures; MISMATCH lines: $mismatches"
  fi
  [[ $rc -eq 0 ]] || status=1
  summary+=("$(printf '%-12s %5d s  %s' "$name" "$seconds" "$verdict")")
done
echo
echo "gpu_check summary ($((SECONDS - started)) s in all)"
printf '%-12s %7s  %s\n' "step" "time" "result"
printf '%s\n' "${summary[@]}"
exit $status
