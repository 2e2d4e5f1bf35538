#!/usr/bin/env bash
# Mutation check (issue 18 item 2): does a deliberately broken line in the node, tokens, links
# and web layers make a test fail? cosmic-ray mutates one line at a time and runs the fast
# unit test modules that cover that file; a mutant no test notices "survives".
#
#   bash scripts/mutation.sh [SAMPLE] [SEED]     # SAMPLE mutants per file (default 60), seeded
#   MUTATION_ONLY="node links" bash scripts/mutation.sh   # only those files (by base name)
#
# CPU-bounded on purpose (a shared 2-core machine): only those four files, only their fast
# test modules as the runner (trial -x: it stops at the first failure), a random sample of the
# mutants (the same for a given SEED), and a time limit per mutant. It works on a copy of the
# tracked files in a temporary folder, never on the working tree. Reports (every surviving
# mutant as a diff) go to test-artifacts/mutation/; docs/testing.md has the last run.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SAMPLE="${1:-60}"
SEED="${2:-18}"
REPO="$PWD"
OUT="$REPO/test-artifacts/mutation"
[[ -x .venv/bin/python ]] || bash scripts/setup.sh || exit 1
.venv/bin/python -c "import cosmic_ray" 2>/dev/null || .venv/bin/python -m pip install -q ".[mutation]" || exit 1
PY="$REPO/.venv/bin/python"
work="$(mktemp -d "${TMPDIR:-/tmp}/qewd-mutation.XXXXXX")"
trap 'rm -rf "$work"' EXIT
git ls-files -z | tar --null -T - -cf - | (cd "$work" && tar xf -)
mkdir -p "$OUT"

# file | the test modules that run for each of its mutants
targets=(
  "qewd_twisted/core/node.py|tests.test_node tests.test_token_attacks tests.test_documented tests.test_edges.NodeEdgeTests"
  "qewd_twisted/auth/tokens.py|tests.test_tokens tests.test_token_attacks tests.test_edges.TokenEdgeTests"
  "qewd_twisted/mesh/links.py|tests.test_links tests.test_replicas tests.test_edges.LinkEdgeTests"
  "qewd_twisted/transports/site.py|tests.test_framing tests.integration.test_websocket tests.test_documented.WebSocketEndpointTests tests.test_token_attacks.SocketTests"
)

cd "$work"
for target in "${targets[@]}"; do
  file="${target%%|*}"; tests="${target#*|}"
  name="$(basename "$file" .py)"
  if [[ -n "${MUTATION_ONLY:-}" && " $MUTATION_ONLY " != *" $name "* ]]; then continue; fi
  [[ -f "$file" ]] || { echo "[mutation] $file not found: skipped"; continue; }
  cat >"$name.toml" <<TOML
[cosmic-ray]
module-path = "$file"
timeout = 120.0
excluded-modules = []
test-command = "$PY -m twisted.trial -x --temp-directory=_trial_temp_mut $tests"

[cosmic-ray.distributor]
name = "local"
TOML
  rm -f "$name.sqlite"
  "$PY" -m cosmic_ray.cli init "$name.toml" "$name.sqlite" || exit 1
  "$PY" - "$name.sqlite" "$SAMPLE" "$SEED" <<'PYEOF'
import random, sys
from cosmic_ray.work_db import use_db, WorkDB
from cosmic_ray.work_item import WorkResult, WorkerOutcome
path, sample, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
import ast

def annotation_lines(source_path):
    """Lines inside annotations: with `from __future__ import annotations` they are never
    evaluated, so a mutant there is equivalent (it cannot be killed): left out."""
    tree = ast.parse(open(source_path).read())
    lines = set()
    for node in ast.walk(tree):
        notes = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns:
            notes.append(node.returns)
        if isinstance(node, ast.arg) and node.annotation:
            notes.append(node.annotation)
        if isinstance(node, ast.AnnAssign):
            notes.append(node.annotation)
        for n in notes:
            lines.update(range(n.lineno, n.end_lineno + 1))
    return lines

with use_db(path, WorkDB.Mode.open) as db:
    # job ids are random: order by place and operator so a seed always draws the same sample
    items = sorted(db.pending_work_items, key=lambda item: (
        item.mutations[0].start_pos, item.mutations[0].operator_name,
        item.mutations[0].occurrence))
    notes = annotation_lines(items[0].mutations[0].module_path) if items else set()
    live = [i for i in items if i.mutations[0].start_pos[0] not in notes]
    keep = set(i.job_id for i in random.Random(seed).sample(live, min(sample, len(live))))
    for item in items:
        if item.job_id not in keep:
            db.set_result(item.job_id, WorkResult(output="not in the sample",
                                                  worker_outcome=WorkerOutcome.SKIPPED))
    print(f"[mutation] {path}: {len(items)} mutants, {len(items) - len(live)} in annotations, "
          f"{len(keep)} of the others sampled (seed {seed})")
PYEOF
  started=$(date +%s)
  "$PY" -m cosmic_ray.cli exec "$name.toml" "$name.sqlite" || exit 1
  "$REPO/.venv/bin/cr-report" --show-diff --surviving-only "$name.sqlite" >"$OUT/$name.txt" 2>&1
  "$PY" - "$name.sqlite" "$file" "$(( $(date +%s) - started ))" <<'PYEOF' | tee -a "$OUT/$name.txt"
import sys
from cosmic_ray.work_db import use_db, WorkDB
from cosmic_ray.work_item import TestOutcome, WorkerOutcome
path, file, seconds = sys.argv[1], sys.argv[2], sys.argv[3]
killed = survived = other = 0
survivors = []
with use_db(path, WorkDB.Mode.open) as db:
    for item, result in db.completed_work_items:
        if result.worker_outcome == WorkerOutcome.SKIPPED:
            continue
        if result.test_outcome == TestOutcome.KILLED:
            killed += 1
        elif result.test_outcome == TestOutcome.SURVIVED:
            survived += 1
            m = item.mutations[0]
            survivors.append(f"  {file}:{m.start_pos[0]} {m.operator_name} #{m.occurrence}")
        else:
            other += 1
print(f"[mutation] {file}: {killed} killed, {survived} survived, {other} incompetent/other "
      f"of {killed + survived + other} run, {seconds} s")
print("\n".join(survivors))
PYEOF
done
