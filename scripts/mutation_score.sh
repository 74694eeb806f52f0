#!/usr/bin/env bash
# Mutation score of the fast unit tests (README, "Tests"): mutmut (a maintained mutation tester) plants one small bug at a
# time (an operator, a constant, an argument, a swapped or dropped value) in the networks (fsr_arch/), the losses
# (fsr_losses/) and the dataset's augmentation and degradations (fsr_data/face_dataset.py, degradations.py), runs the
# unit tests that reach the mutated function (not the slow trainings, not the GPU tests: see [mutmut] in setup.cfg), and
# counts the mutants that no test kills. Not part of CI (about 30 CPU minutes on 2 cores for fsr_arch alone).
# Usage: bash scripts/mutation_score.sh [MUTANT_GLOB ...]     e.g.  bash scripts/mutation_score.sh "fsr_arch.*"
#        (default: every mutant of the configured paths). Results: mutants/ (git-ignored), `python -m mutmut browse`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
$PY -c "import mutmut" 2>/dev/null || $PY -m pip install --quiet --disable-pip-version-check mutmut==3.8.1
rm -rf mutants
export OMP_NUM_THREADS=1
# mutmut exits non-zero when mutants survive; the score below is the result.
$PY -m mutmut run --max-children "${MUTMUT_CHILDREN:-2}" "$@" >mutants.log 2>&1 || true
$PY -m mutmut export-cicd-stats >/dev/null 2>&1 || true
$PY - "$@" <<'PYEOF'
import collections
import json
import subprocess
import sys

out = subprocess.run([sys.executable, '-m', 'mutmut', 'results', '--all', 'true'], capture_output=True, text=True).stdout
per = collections.defaultdict(collections.Counter)
for line in out.splitlines():
    if ':' not in line:
        continue
    name, status = (x.strip() for x in line.rsplit(':', 1))
    module = name.split('.x')[0].rsplit('.', 1)[0] if '.x' in name else name.rsplit('.', 1)[0]
    per[module][status] += 1
total = collections.Counter()
print(f'{"module":40s} {"killed":>7s} {"survived":>9s} {"other":>6s} {"score":>6s}')
for module in sorted(per):
    c = per[module]
    total.update(c)
    other = sum(v for k, v in c.items() if k not in ('killed', 'survived'))
    done = c['killed'] + c['survived']
    print(f'{module:40s} {c["killed"]:7d} {c["survived"]:9d} {other:6d} {100 * c["killed"] / max(done, 1):5.1f}%')
done = total['killed'] + total['survived']
print(f'{"all":40s} {total["killed"]:7d} {total["survived"]:9d} '
      f'{sum(v for k, v in total.items() if k not in ("killed", "survived")):6d} {100 * total["killed"] / max(done, 1):5.1f}%')
print('statuses:', dict(total))
PYEOF
