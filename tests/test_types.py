"""The public API's type hints hold: mypy checks the modules a researcher calls from Python."""
import os
import subprocess
import sys

from conftest import ROOT

PUBLIC = ['checkpoint.py', 'macer.py', 'methods/losses.py', 'methods/attacks.py', 'rs/core.py', 'rs/stats.py', 'rs/results.py', 'rs/statslog.py',
          'rs/runfiles.py', 'rs/checks.py', 'rs/recompute.py', 'rs/runs.py']


def test_mypy_finds_no_error_in_the_public_api(tmp_path):
    r = subprocess.run([sys.executable, '-m', 'mypy', '--ignore-missing-imports', '--follow-imports=silent',
                        '--cache-dir', str(tmp_path / 'cache'), *PUBLIC], capture_output=True, text=True, cwd=ROOT,
                       timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f'no issues found in {len(PUBLIC)} source files' in r.stdout
    # the hints are there to be checked: every public function of these modules is annotated
    import ast
    bare = []
    for path in PUBLIC:
        tree = ast.parse(open(os.path.join(ROOT, path)).read())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and not node.name.startswith('_') and node.returns is None \
                    and node.name != '__init__':
                bare.append(f'{path}:{node.lineno} {node.name}')
    assert not bare, bare
