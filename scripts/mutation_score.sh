#!/usr/bin/env bash
# Mutation score of the fast unit tests (docs/tests.md): mutmut (a maintained mutation tester) plants one small bug at a
# time (an operator, a constant, an argument, a swapped or dropped value) in the networks (fsr_arch/), the losses
# (fsr_losses/) and the dataset's augmentation and degradations (fsr_data/face_dataset.py, degradations.py), runs the
# unit tests that reach the mutated function (not the slow trainings, not the GPU tests: see [mutmut] in setup.cfg), and
# counts the mutants that no test kills. Not part of CI (about 30 CPU minutes on 2 cores for fsr_arch alone).
# Usage: bash scripts/mutation_score.sh [MUTANT_GLOB ...]     e.g.  bash scripts/mutation_score.sh "fsr_arch.*"
#        (default: every mutant of the configured paths). Results: mutants/ (git-ignored), `python -m mutmut browse`.
# One module with its own tests (faster: the stats pass runs only those tests), in a scratch copy of the tracked files:
#   MUTMUT_ONLY=fsr_arch/laat_arch.py MUTMUT_TESTS="tests/test_laat_golden.py tests/test_laat.py" \
#       bash scripts/mutation_score.sh
# A seeded random sample (an unbiased estimate with its 95% interval, in bounded time):
#   MUTMUT_SAMPLE=0.1 bash scripts/mutation_score.sh "fsr_arch.*"      (MUTMUT_SEED, default 0)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
$PY -c "import mutmut" 2>/dev/null || $PY -m pip install --quiet --disable-pip-version-check mutmut==3.8.1
if [ -n "${MUTMUT_ONLY:-}${MUTMUT_TESTS:-}" ]; then
  scratch=$(mktemp -d /tmp/fsr_mutation_XXXX)
  git ls-files -z | xargs -0 cp --parents -t "$scratch"
  $PY - "$scratch/setup.cfg" <<'PYEOF'
import os
import re
import sys

path = sys.argv[1]
text = open(path).read()
only, tests = os.environ.get('MUTMUT_ONLY', '').split(), os.environ.get('MUTMUT_TESTS', '').split()
if only:
    text = re.sub(r'only_mutate =\n(    .*\n)+', 'only_mutate =\n' + ''.join(f'    {o}\n' for o in only), text)
if tests:
    text = text.replace('pytest_add_cli_args =\n', 'pytest_add_cli_args_test_selection =\n' +
                        ''.join(f'    {t}\n' for t in tests) + 'pytest_add_cli_args =\n')
open(path, 'w').write(text)
PYEOF
  echo "mutation run in $scratch (only: ${MUTMUT_ONLY:-all configured}; tests: ${MUTMUT_TESTS:-all fast})"
  cd "$scratch"
fi
rm -rf mutants
export OMP_NUM_THREADS=1
# mutmut exits non-zero when mutants survive; the score below is the result.
if [ -n "${MUTMUT_SAMPLE:-}" ]; then
  # A seeded random sample of the mutants (fraction MUTMUT_SAMPLE of each module): an unbiased estimate of the score in
  # a bounded time (every mutant of fsr_arch takes hours on 2 cores). The first call only generates the mutants.
  $PY -m mutmut run "__generate_only__" >mutants.log 2>&1 || true
  mapfile -t SAMPLE < <($PY - "$@" <<'PYEOF'
import collections
import fnmatch
import os
import random
import subprocess
import sys

out = subprocess.run([sys.executable, '-m', 'mutmut', 'results', '--all', 'true'], capture_output=True, text=True).stdout
names = sorted(line.rsplit(':', 1)[0].strip() for line in out.splitlines() if ':' in line)
if sys.argv[1:]:
    names = [n for n in names if any(fnmatch.fnmatch(n, g) for g in sys.argv[1:])]
per = collections.defaultdict(list)
for n in names:
    per[n.split('.x')[0]].append(n)
rng = random.Random(int(os.environ.get('MUTMUT_SEED', '0')))
fraction = float(os.environ['MUTMUT_SAMPLE'])
for module in sorted(per):
    for n in sorted(rng.sample(per[module], max(1, round(fraction * len(per[module]))))):
        print(n)
PYEOF
)
  echo "sampled ${#SAMPLE[@]} mutants (MUTMUT_SAMPLE=$MUTMUT_SAMPLE, seed ${MUTMUT_SEED:-0})"
  $PY -m mutmut run --max-children "${MUTMUT_CHILDREN:-2}" "${SAMPLE[@]}" >>mutants.log 2>&1 || true
else
  $PY -m mutmut run --max-children "${MUTMUT_CHILDREN:-2}" "$@" >mutants.log 2>&1 || true
fi
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
    # fsr_arch.common.xǁClassǁmethod__mutmut_3 (methods) or fsr_arch.common.x_function__mutmut_3 (functions)
    per[name.split('.x')[0]][status] += 1
# A mutant that no test reaches ("no tests") is a bug that no test catches: it counts against the score like a survivor.
# Timeouts count as killed (the tests noticed); "not checked" (the run was cut short) are left out and shown.
KILLED, MISSED = ('killed', 'timeout'), ('survived', 'no tests')
total = collections.Counter()
print(f'{"module":32s} {"killed":>7s} {"survived":>9s} {"no tests":>9s} {"other":>6s} {"score":>6s}  95% CI')


def row(label, c):
    killed, missed = sum(c[k] for k in KILLED), sum(c[k] for k in MISSED)
    other = sum(v for k, v in c.items() if k not in KILLED + MISSED)
    n = killed + missed
    p = killed / max(n, 1)
    # Wilson 95% interval of the kill rate (meaningful for a sampled run, MUTMUT_SAMPLE)
    z = 1.96
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n) if n else 0, (z / (1 + z * z / n)) * (
        (p * (1 - p) / n + z * z / (4 * n * n))**0.5) if n else 0
    print(f'{label:32s} {killed:7d} {c["survived"]:9d} {c["no tests"]:9d} {other:6d} {100 * p:5.1f}%  '
          f'[{100 * (centre - half):.0f}-{100 * (centre + half):.0f}%]')


for module in sorted(per):
    total.update(per[module])
    row(module, per[module])
for package in sorted({m.split('.')[0] for m in per}):
    row(package + ' (all)', sum((per[m] for m in per if m.split('.')[0] == package), collections.Counter()))
row('all', total)
print('statuses:', dict(total))
PYEOF
