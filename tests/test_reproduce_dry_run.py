"""scripts/reproduce_dry_run.sh (docs/REPRODUCE.md's dry run per section): its refusals. The dry runs themselves take
minutes of CPU each and are run by hand (their times are in docs/REPRODUCE.md)."""
import os
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, 'scripts', 'reproduce_dry_run.sh')


def run(*args):
    return subprocess.run(['bash', SCRIPT, *args], capture_output=True, text=True, timeout=60)


def test_unknown_section_is_refused_before_any_work(tmp_path):
    proc = run('celeba', str(tmp_path / 'work'))
    assert proc.returncode == 2 and 'usage:' in proc.stderr
    assert not (tmp_path / 'work').exists()


def test_work_folder_inside_the_repository_is_refused(tmp_path):
    inside = os.path.join(REPO, 'experiments', 'dry_run_test_never_made')
    proc = run('laat', inside)
    assert proc.returncode == 2 and 'inside the repository' in proc.stderr, proc.stderr
    assert not os.path.exists(inside)


def test_a_folder_the_script_did_not_make_is_refused(tmp_path):
    """An existing, non-empty WORK without the script's marker (a user's folder) is refused and left as it was."""
    work = tmp_path / 'mine'
    work.mkdir()
    (work / 'options').write_text('my file')
    proc = run('laat', str(work))
    assert proc.returncode == 2 and 'not made by this script' in proc.stderr, proc.stderr
    assert sorted(p.name for p in work.iterdir()) == ['options'] and (work / 'options').read_text() == 'my file'
