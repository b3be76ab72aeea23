#!/usr/bin/env bash
# Run script.py once per (alpha, temperature, seed) cell of a sweep; resumable.
#
# Usage:
#   bash sweep.sh alpha|temp [--alphas "0.0 0.5 1.0"] [--temps "2.0"] [--seeds "42 43 44"]
#                            [--results_dir DIR] [--dry_run] [-- EXTRA_ARGS_FOR_SCRIPT_PY...]
#   bash sweep.sh alpha|temp ... --slurm [--submit] [--partition P] [--gpus 1] [--cpus 8]
#                            [--time 04:00:00] [--mem 32G] [-- EXTRA_ARGS...]
#     writes <results_dir>/sweep_<mode>.sbatch, a SLURM job array with one task per cell, each running
#     this script for its one cell (same command, same skip-if-done rule); --submit also runs sbatch.
#
#   alpha: sweeps ALPHAS (default "0.0 0.1 0.25 0.5 0.75 0.9 1.0") at TEMPS (default "2.0"),
#          into results_alpha/.
#   temp:  sweeps TEMPS (default "0.5 1 2 4 8") at ALPHAS (default "0.5"), into results_temp/.
#   Seeds default to "42 43 44". The grids can also come from the environment (ALPHAS, TEMPS,
#   SEEDS); an option beats the environment, which beats the default. Every list may hold several
#   values, so `sweep.sh alpha --temps "1 4"` runs a full alpha x T grid.
#
# Environment: PYTHON (default: python), SCRIPT_PY (default: script.py next to this file).
#
# Each cell runs
#   $PYTHON $SCRIPT_PY --alpha_kl_loss_weight A --temperature T --seed S --output_dir RUN_DIR EXTRA_ARGS...
# with RUN_DIR = <results_dir>/alpha_<A>_temp_<T>_seed_<S>, its output appended to RUN_DIR/run.log.
# Numbers are written in one canonical form, so "1", "1.0" and "1.00" are the same cell:
# alpha and T as plain decimals with at least one digit after the point and no trailing zeros
# (1 -> 1.0, .50 -> 0.5, 0.25 -> 0.25); seeds as integers without leading zeros. The same form is
# passed to script.py. A cell whose RUN_DIR/distillation_summary.json exists is skipped, so a rerun
# resumes and never overwrites finished work. A failed cell is logged and counted, the sweep goes
# on, and the script exits 1 at the end listing the failures. Retrying a failed cell keeps its old
# run.log (appended to) and moves its partial metrics.jsonl aside to metrics.jsonl.failed-<time>;
# when the failed attempt left checkpoints (extra args `-- --save_steps N`), the retry resumes from
# the latest one instead (--resume_from_checkpoint latest).
# A cell that a live script.py is running right now (another sweep, a twice-submitted array task:
# RUN_DIR/.run.lock is held) is left alone and reported as busy, which counts as a failure.
set -euo pipefail

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
}

die() {  # a usage error: one line, exit 2
    echo "sweep.sh: $*" >&2
    exit 2
}

canonical_number() {  # print $1 as a plain decimal with >= 1 fractional digit and no trailing zeros
    local value=$1
    [[ $value =~ ^([0-9]*)(\.([0-9]*))?$ && -n ${BASH_REMATCH[1]}${BASH_REMATCH[3]} ]] \
        || die "not a plain non-negative decimal number: '$value'"
    local whole=${BASH_REMATCH[1]} fraction=${BASH_REMATCH[3]}
    whole=$(sed 's/^0*//' <<<"$whole")
    fraction=$(sed 's/0*$//' <<<"$fraction")
    printf '%s.%s\n' "${whole:-0}" "${fraction:-0}"
}

canonical_seed() {
    [[ $1 =~ ^[0-9]+$ ]] || die "not a non-negative integer seed: '$1'"
    printf '%d\n' "$((10#$1))"
}

canonical_list() {  # canonical_list number|seed NAME "VALUES...": print the distinct canonical values
    local kind=$1 name=$2 value canon
    local -a values seen=()
    read -ra values <<<"$3"
    ((${#values[@]} > 0)) || die "$name is empty"
    for value in "${values[@]}"; do
        canon=$("canonical_$kind" "$value") || exit 2
        [[ " ${seen[*]} " == *" $canon "* ]] || seen+=("$canon")
    done
    echo "${seen[*]}"
}

quoted() {  # the arguments as one shell-quoted line
    printf '%q ' "$@" | sed 's/ $//'
}

hms() {  # seconds -> H:MM:SS
    printf '%d:%02d:%02d' $(($1 / 3600)) $(($1 % 3600 / 60)) $(($1 % 60))
}

# ---- command line ----------------------------------------------------------------------------
mode=${1:-}
case $mode in
    alpha) default_alphas="0.0 0.1 0.25 0.5 0.75 0.9 1.0" default_temps="2.0" results_dir=results_alpha ;;
    temp) default_alphas="0.5" default_temps="0.5 1 2 4 8" results_dir=results_temp ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "first argument must be 'alpha' or 'temp', got '${mode}'" ;;
esac
shift
alphas=${ALPHAS:-$default_alphas}
temps=${TEMPS:-$default_temps}
seeds=${SEEDS:-42 43 44}
dry_run=0
slurm=0 submit=0 partition="" gpus=1 cpus=8 time_limit="04:00:00" mem="32G"
extra_args=()
while (($# > 0)); do
    case $1 in
        --alphas | --temps | --seeds | --results_dir | --partition | --gpus | --cpus | --time | --mem)
            (($# >= 2)) || die "$1 needs a value"
            case $1 in
                --alphas) alphas=$2 ;;
                --temps) temps=$2 ;;
                --seeds) seeds=$2 ;;
                --results_dir) results_dir=$2 ;;
                --partition) partition=$2 ;;
                --gpus) gpus=$2 ;;
                --cpus) cpus=$2 ;;
                --time) time_limit=$2 ;;
                --mem) mem=$2 ;;
            esac
            shift 2 ;;
        --alphas=*) alphas=${1#*=}; shift ;;
        --temps=*) temps=${1#*=}; shift ;;
        --seeds=*) seeds=${1#*=}; shift ;;
        --results_dir=*) results_dir=${1#*=}; shift ;;
        --dry_run) dry_run=1; shift ;;
        --slurm) slurm=1; shift ;;
        --submit) slurm=1 submit=1; shift ;;
        -h | --help) usage; exit 0 ;;
        --) shift; extra_args=("$@"); break ;;
        *) die "unknown option '$1' (arguments for script.py go after --)" ;;
    esac
done
for arg in "${extra_args[@]+"${extra_args[@]}"}"; do
    case $arg in
        --alpha_kl_loss_weight* | --temperature* | --seed* | --output_dir*)
            die "'$arg' is set per cell by sweep.sh; use --alphas/--temps/--seeds/--results_dir" ;;
    esac
done
alphas=$(canonical_list number alphas "$alphas")
temps=$(canonical_list number temps "$temps")
seeds=$(canonical_list seed seeds "$seeds")
[[ -n $results_dir ]] || die "--results_dir is empty"
PYTHON=${PYTHON:-python}
SCRIPT_PY=${SCRIPT_PY:-"$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/script.py"}

# ---- the sweep -------------------------------------------------------------------------------
read -ra alpha_list <<<"$alphas"
read -ra temp_list <<<"$temps"
read -ra seed_list <<<"$seeds"
total=$((${#alpha_list[@]} * ${#temp_list[@]} * ${#seed_list[@]}))

if ((slurm)); then  # one SLURM array task per cell, each running this script for its one cell
    mkdir -p "$results_dir"
    results_abs=$(cd "$results_dir" && pwd)
    batch_file="$results_abs/sweep_${mode}.sbatch"
    {
        echo "#!/usr/bin/env bash"
        echo "#SBATCH --job-name=distill-$mode"
        echo "#SBATCH --array=0-$((total - 1))"
        [[ -n $partition ]] && echo "#SBATCH --partition=$partition"
        ((gpus > 0)) && echo "#SBATCH --gpus=$gpus"
        echo "#SBATCH --cpus-per-task=$cpus"
        echo "#SBATCH --time=$time_limit"
        echo "#SBATCH --mem=$mem"
        echo "#SBATCH --output=$results_abs/slurm-%A_%a.out"
        echo "# Written by: $(quoted bash "${BASH_SOURCE[0]}" "$mode" --alphas "$alphas" --temps "$temps" --seeds "$seeds" --slurm)"
        echo "set -euo pipefail"
        echo "cells=("
        for alpha in "${alpha_list[@]}"; do
            for temp in "${temp_list[@]}"; do
                for seed in "${seed_list[@]}"; do
                    echo "    \"$alpha $temp $seed\""
                done
            done
        done
        echo ")"
        echo 'read -r alpha temp seed <<<"${cells[$SLURM_ARRAY_TASK_ID]}"'
        echo "cd $(quoted "$(pwd)")"
        echo "export PYTHON=$(quoted "$PYTHON") SCRIPT_PY=$(quoted "$SCRIPT_PY")"
        passed_on=""
        ((${#extra_args[@]} > 0)) && passed_on=" -- $(quoted "${extra_args[@]}")"
        echo "exec bash $(quoted "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/sweep.sh") $mode" \
            '--alphas "$alpha" --temps "$temp" --seeds "$seed"' \
            "--results_dir $(quoted "$results_abs")$passed_on"
    } >"$batch_file"
    echo "wrote $batch_file: $total array tasks (one per alpha x temp x seed cell; finished cells are skipped)"
    if ((submit)); then
        command -v sbatch >/dev/null || die "--submit: sbatch not found (is this a SLURM login node?)"
        sbatch "$batch_file"
    else
        echo "submit with: sbatch $batch_file"
    fi
    exit 0
fi
done_count=0 skipped=0 k=0
failures=()
SECONDS=0

report() {  # the final line; called on normal exit and on Ctrl-C
    ((dry_run)) && echo -n "dry run, nothing started: "
    echo "sweep $mode: $done_count done, $skipped skipped, ${#failures[@]} failed of $total in $(hms "$SECONDS")" \
        "(results in $results_dir/)"
}
trap 'echo; echo "interrupted at cell $k/$total" >&2; report; exit 130' INT

echo "sweep $mode: alphas=[$alphas] temps=[$temps] seeds=[$seeds] -> $total runs in $results_dir/"
for alpha in "${alpha_list[@]}"; do
    for temp in "${temp_list[@]}"; do
        for seed in "${seed_list[@]}"; do
            k=$((k + 1))
            run_dir="$results_dir/alpha_${alpha}_temp_${temp}_seed_${seed}"
            cmd=("$PYTHON" "$SCRIPT_PY" --alpha_kl_loss_weight "$alpha" --temperature "$temp" --seed "$seed"
                 --output_dir "$run_dir" "${extra_args[@]+"${extra_args[@]}"}")
            if [[ -f $run_dir/distillation_summary.json ]]; then
                echo "[$k/$total] skip alpha=$alpha temp=$temp seed=$seed ($run_dir/distillation_summary.json exists)"
                skipped=$((skipped + 1))
                continue
            fi
            if ((dry_run)); then
                echo "[$k/$total] would run: $(quoted "${cmd[@]}")"
                continue
            fi
            mkdir -p "$run_dir"
            lock_status=0  # 75: a live script.py holds the cell's lock (another sweep or array task runs it now)
            if command -v flock >/dev/null; then
                flock -n -E 75 "$run_dir/.run.lock" true 2>/dev/null || lock_status=$?
            fi
            if ((lock_status == 75)); then
                failures+=("alpha=$alpha temp=$temp seed=$seed (busy: another run holds $run_dir)")
                echo "[$k/$total] BUSY alpha=$alpha temp=$temp seed=$seed: another run holds $run_dir; left alone" >&2
                continue
            fi
            echo "[$k/$total] alpha=$alpha temp=$temp seed=$seed -> $run_dir/run.log"
            log=$run_dir/run.log
            printf '=== %s: %s\n' "$(date '+%Y-%m-%d %H:%M:%S')" "$(quoted "${cmd[@]}")" >>"$log"
            if compgen -G "$run_dir/checkpoints/checkpoint-*/state.pt" >/dev/null; then
                # a killed attempt left checkpoints (run with -- --save_steps N): continue it
                cmd+=(--resume_from_checkpoint latest)
                echo "resuming from the latest checkpoint in $run_dir/checkpoints" >>"$log"
            elif [[ -f $run_dir/metrics.jsonl ]]; then  # from an attempt that failed; script.py would append
                stale=$run_dir/metrics.jsonl.failed-$(date '+%Y%m%d-%H%M%S')
                if mv "$run_dir/metrics.jsonl" "$stale" 2>/dev/null; then  # a racing sweep may have moved it
                    echo "moved the failed attempt's metrics.jsonl to $stale" >>"$log"
                fi
            fi
            status=0
            "${cmd[@]}" >>"$log" 2>&1 || status=$?
            if ((status == 0)) && [[ ! -f $run_dir/distillation_summary.json ]]; then
                echo "script.py exited 0 but wrote no distillation_summary.json" >>"$log"
                status=missing-summary
            fi
            if [[ $status == 0 ]]; then
                done_count=$((done_count + 1))
            else
                failures+=("alpha=$alpha temp=$temp seed=$seed (exit $status, see $log)")
                echo "[$k/$total] FAILED alpha=$alpha temp=$temp seed=$seed (exit $status); last lines of $log:" >&2
                tail -n 5 "$log" | sed 's/^/    /' >&2
            fi
        done
    done
done

report
if ((${#failures[@]} > 0)); then
    echo "failed runs:" >&2
    printf '  %s\n' "${failures[@]}" >&2
    exit 1
fi
