#!/usr/bin/env bash
# Run script.py once per cell of a sweep (alpha x temperature x any other setting x seed); resumable.
#
# Usage:
#   bash sweep.sh alpha|temp [--alphas "0.0 0.5 1.0"] [--temps "2.0"] [--seeds "42 43 44"]
#                            [--axis NAME --values "V1 V2"]... [--results_dir DIR] [--dry_run]
#                            [-- EXTRA_ARGS_FOR_SCRIPT_PY...]
#   bash sweep.sh --axis NAME --values "V1 V2" [--axis NAME2 --values "..."]... [--alphas ...] [--temps ...]
#                 [--seeds ...] [--results_dir DIR] [--dry_run] [-- EXTRA_ARGS...]
#   bash sweep.sh ... --slurm [--submit] [--partition P] [--gpus 1] [--cpus 8]
#                     [--time 04:00:00] [--mem 32G] [-- EXTRA_ARGS...]
#     writes <results_dir>/sweep_<mode>.sbatch, a SLURM job array with one task per cell, each running
#     this script for its one cell (same command, same skip-if-done rule); --submit also runs sbatch.
#
#   --axis NAME --values "..." sweeps any flag of script.py (NAME is its name without the dashes, e.g.
#   student_model_name); alpha, temp (temperature) and seed as NAME are the same as --alphas, --temps,
#   --seeds. Without a mode (alpha|temp) only the axes named are swept (alpha and temperature keep
#   script.py's defaults unless --alphas/--temps or ALPHAS/TEMPS are given) and the results go to
#   results_<first NAME>/. Plot any axis with: python sweep_graphs.py --axis NAME.
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
#   $PYTHON $SCRIPT_PY --alpha_kl_loss_weight A --temperature T [--NAME V]... --seed S --output_dir RUN_DIR EXTRA_ARGS...
# with RUN_DIR = <results_dir>/alpha_<A>_temp_<T>[_<NAME>_<V>]..._seed_<S> (one <prefix>_<value> per swept
# setting, in that order; characters of V other than letters, digits and ._+- written as %XX), its
# output appended to RUN_DIR/run.log.
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

canonical_text() {  # any other setting's value, as given
    printf '%s\n' "$1"
}

canonical_seed() {
    [[ $1 =~ ^[0-9]+$ ]] || die "not a non-negative integer seed: '$1'"
    printf '%d\n' "$((10#$1))"
}

canonical_list() {  # canonical_list number|seed|text NAME "VALUES...": print the distinct canonical values
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
original_args=("$@")
mode=${1:-}
case $mode in
    alpha) default_alphas="0.0 0.1 0.25 0.5 0.75 0.9 1.0" default_temps="2.0" results_dir=results_alpha; shift ;;
    temp) default_alphas="0.5" default_temps="0.5 1 2 4 8" results_dir=results_temp; shift ;;
    -h | --help) usage; exit 0 ;;
    --?*) mode="" default_alphas="" default_temps="" results_dir="" ;;  # no mode: only the settings named
    *) usage >&2; die "first argument must be 'alpha' or 'temp', got '${mode}' (or start with --axis NAME --values \"V1 V2\")" ;;
esac
alphas=${ALPHAS:-$default_alphas}
temps=${TEMPS:-$default_temps}
seeds=${SEEDS:-42 43 44}
dry_run=0
slurm=0 submit=0 partition="" gpus=1 cpus=8 time_limit="04:00:00" mem="32G"
extra_args=()
axis_names=() axis_values=()  # the swept settings other than alpha, temperature and seed
pending_axis="" named=()  # named: every --axis NAME, in order
set_axis() {  # set_axis NAME VALUES: --axis NAME --values VALUES
    case $1 in
        alpha | alpha_kl_loss_weight) alphas=$2 ;;
        temp | temperature | T) temps=$2 ;;
        seed) seeds=$2 ;;
        *)
            [[ $1 =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "--axis '$1' is not a flag name of script.py (letters, digits, _)"
            [[ " ${axis_names[*]} " != *" $1 "* ]] || die "--axis $1 given twice"
            axis_names+=("$1") axis_values+=("$2") ;;
    esac
}
while (($# > 0)); do
    case $1 in
        --alphas | --temps | --seeds | --results_dir | --partition | --gpus | --cpus | --time | --mem | --axis | --values)
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
                --axis) [[ -z $pending_axis ]] || die "--axis $pending_axis needs --values"; pending_axis=$2 ;;
                --values)
                    [[ -n $pending_axis ]] || die "--values must follow --axis NAME"
                    set_axis "$pending_axis" "$2"
                    [[ -n $results_dir || -n $mode ]] || results_dir=results_$pending_axis
                    named+=("$pending_axis") pending_axis="" ;;
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
[[ -z $pending_axis ]] || die "--axis $pending_axis needs --values"
if [[ -z $mode ]]; then
    ((${#named[@]} > 0)) || die "without 'alpha' or 'temp' first, name the swept setting: --axis NAME --values \"V1 V2\""
    mode=$(IFS=x; echo "${named[*]}")
fi
for arg in "${extra_args[@]+"${extra_args[@]}"}"; do
    for name in "${axis_names[@]+"${axis_names[@]}"}"; do
        if [[ $arg == "--$name" || $arg == "--$name="* ]]; then
            die "'$arg' is set per cell by sweep.sh (--axis $name)"
        fi
    done
    case $arg in
        --alpha_kl_loss_weight* | --temperature* | --seed* | --output_dir*)
            die "'$arg' is set per cell by sweep.sh; use --alphas/--temps/--seeds/--results_dir" ;;
    esac
done
if [[ -n $default_alphas || -n $alphas ]]; then alphas=$(canonical_list number alphas "$alphas"); fi
if [[ -n $default_temps || -n $temps ]]; then temps=$(canonical_list number temps "$temps"); fi
seeds=$(canonical_list seed seeds "$seeds")
for i in "${!axis_names[@]}"; do
    axis_values[i]=$(canonical_list text "${axis_names[i]}" "${axis_values[i]}")
done
[[ -n $results_dir ]] || die "--results_dir is empty"
PYTHON=${PYTHON:-python}
SCRIPT_PY=${SCRIPT_PY:-"$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/script.py"}

# ---- the swept settings, in run-directory order: (flag, directory prefix, values) -------------
flags=() prefixes=() lists=()
[[ -z $alphas ]] || { flags+=(alpha_kl_loss_weight) prefixes+=(alpha) lists+=("$alphas"); }
[[ -z $temps ]] || { flags+=(temperature) prefixes+=(temp) lists+=("$temps"); }
for i in "${!axis_names[@]}"; do
    flags+=("${axis_names[i]}") prefixes+=("${axis_names[i]}") lists+=("${axis_values[i]}")
done
flags+=(seed) prefixes+=(seed) lists+=("$seeds")
cells=("")  # every combination, one space-separated value per swept setting
for list in "${lists[@]}"; do
    read -ra values <<<"$list"
    next=()
    for cell in "${cells[@]}"; do
        for value in "${values[@]}"; do
            next+=("${cell:+$cell }$value")
        done
    done
    cells=("${next[@]}")
done
total=${#cells[@]}

dir_part() {  # a value as a run-directory name part: letters, digits and ._+- kept, others as %XX
    local LC_ALL=C value=$1 out="" char i
    for ((i = 0; i < ${#value}; i++)); do
        char=${value:i:1}
        if [[ $char =~ [A-Za-z0-9._+-] ]]; then out+=$char; else out+=$(printf '%%%02X' "'$char"); fi
    done
    printf '%s' "$out"
}

cell_parts() {  # cell_parts "V1 V2 ...": set run_dir, label and cell_flags for one cell
    local -a values
    read -ra values <<<"$1"
    local i parts=()
    label="" cell_flags=()
    for i in "${!values[@]}"; do
        parts+=("${prefixes[i]}_$(dir_part "${values[i]}")")
        label+="${label:+ }${prefixes[i]}=${values[i]}"
        cell_flags+=("--${flags[i]}" "${values[i]}")
    done
    run_dir="$results_dir/$(IFS=_; echo "${parts[*]}")"
}

if ((slurm)); then  # one SLURM array task per cell, each running this script for its one cell
    mkdir -p "$results_dir"
    results_abs=$(cd "$results_dir" && pwd)
    batch_file="$results_abs/sweep_${mode}.sbatch"
    task_mode=""
    [[ $mode == alpha || $mode == temp ]] && task_mode="$mode "
    task_axes=""
    for i in "${!prefixes[@]}"; do
        task_axes+=" --axis ${prefixes[i]} --values \"\${values[$i]}\""
    done
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
        echo "# Written by: $(quoted bash "${BASH_SOURCE[0]}" "${original_args[@]}")"
        echo "# Swept: ${prefixes[*]}"
        echo "set -euo pipefail"
        echo "cells=("
        for cell in "${cells[@]}"; do
            echo "    $(quoted "$cell")"
        done
        echo ")"
        echo 'read -ra values <<<"${cells[$SLURM_ARRAY_TASK_ID]}"'
        echo "cd $(quoted "$(pwd)")"
        echo "export PYTHON=$(quoted "$PYTHON") SCRIPT_PY=$(quoted "$SCRIPT_PY")"
        passed_on=""
        ((${#extra_args[@]} > 0)) && passed_on=" -- $(quoted "${extra_args[@]}")"
        echo "exec bash $(quoted "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/sweep.sh") ${task_mode}${task_axes# }" \
            "--results_dir $(quoted "$results_abs")$passed_on"
    } >"$batch_file"
    echo "wrote $batch_file: $total array tasks (one per ${prefixes[*]} cell; finished cells are skipped)"
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

grid=""
for i in "${!prefixes[@]}"; do
    grid+="${grid:+ }${prefixes[i]}s=[${lists[i]}]"
done
echo "sweep $mode: $grid -> $total runs in $results_dir/"
for cell in "${cells[@]}"; do
    k=$((k + 1))
    cell_parts "$cell"
    cmd=("$PYTHON" "$SCRIPT_PY" "${cell_flags[@]}" --output_dir "$run_dir" "${extra_args[@]+"${extra_args[@]}"}")
    if [[ -f $run_dir/distillation_summary.json ]]; then
        echo "[$k/$total] skip $label ($run_dir/distillation_summary.json exists)"
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
        failures+=("$label (busy: another run holds $run_dir)")
        echo "[$k/$total] BUSY $label: another run holds $run_dir; left alone" >&2
        continue
    fi
    echo "[$k/$total] $label -> $run_dir/run.log"
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
        failures+=("$label (exit $status, see $log)")
        echo "[$k/$total] FAILED $label (exit $status); last lines of $log:" >&2
        tail -n 5 "$log" | sed 's/^/    /' >&2
    fi
done

report
if ((${#failures[@]} > 0)); then
    echo "failed runs:" >&2
    printf '  %s\n' "${failures[@]}" >&2
    exit 1
fi
