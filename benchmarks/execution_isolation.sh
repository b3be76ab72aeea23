#!/usr/bin/env bash
# Cost of the sandbox: evaluate_execution.py before it (OLD tree: one JVM per project, the JVM's checks only)
# and after it (NEW tree: bubblewrap, --isolation candidate and leak) on the demo's 53 records of
# commons-codec, commons-csv, jsoup and commons-io (3 candidates each, taken from demo/execution/execution.jsonl.gz).
# Usage: flock -x /work/cpu.lock benchmarks/execution_isolation.sh OLD_TREE NEW_TREE JAVA_ROOT OUT_DIR
# OLD_TREE, NEW_TREE: checkouts (git archive <commit> | tar -x -C DIR); JAVA_ROOT: demo/fetch_java_sources.sh's.
# The main classes are built once (by OLD, timed as old_cold) and copied, so the other three runs time the
# test builds and the candidates only.
set -u
OLD=$1 NEW=$2 JAVA_ROOT=$3 B=$4
PY=${PYTHON:-python}
REPOS="commons-codec commons-csv jsoup commons-io"
mkdir -p "$B" && rm -rf "$B"/w? "$B"/o_*
zcat "$NEW/demo/execution/execution.jsonl.gz" | $PY -c "
import json, sys
keep, by = set(sys.argv[1].split()), {}
for row in map(json.loads, sys.stdin):
    by.setdefault(row['index'], {k: row[k] for k in ('repo', 'test_path', 'test_method')})[row['candidate']] = row['text']
print(''.join(json.dumps(v) + '\n' for _, v in sorted(by.items()) if v['repo'] in keep), end='')" "$REPOS" > "$B/preds.jsonl"
ARGS="--predictions $B/preds.jsonl --java_root $JAVA_ROOT --projects $NEW/demo/java_projects.json"
grep -m1 'model name' /proc/cpuinfo; uptime
t() { local name=$1 tree=$2; shift 2; local s=$(date +%s.%N)
      (cd "$tree" && "$PY" evaluate_execution.py $ARGS --output_dir "$B/o_$name" "$@" > "$B/$name.log" 2>&1)
      echo "$name rc=$? $(echo "$(date +%s.%N) - $s" | bc) s"; }
t old_cold "$OLD" --work_dir "$B/w0"
for w in w1 w2 w3; do for repo in $REPOS; do mkdir -p "$B/$w/$repo"; cp -a "$B/w0/$repo/main" "$B/$w/$repo/"; done; done
t old_warm "$OLD" --work_dir "$B/w1"
t new_candidate "$NEW" --work_dir "$B/w2" --isolation candidate
t new_leak "$NEW" --work_dir "$B/w3" --isolation leak
uptime
