"""The ``dse`` console script (``[project.scripts]`` in pyproject.toml) is ``python -m dse``."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest



def _script() -> str:
    path = Path(sys.executable).with_name("dse")  # installed next to this interpreter by `pip install .`
    found = str(path) if path.exists() else shutil.which("dse")
    if not found:
        pytest.fail("the `dse` console script is not installed: `pip install .` installs it")
    return found


def _run(cmd, cwd):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the installed package, as a user runs it
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


def test_console_script_equals_python_m_dse(tmp_path):
    args = ["task=evaluate", "model=gpt2", "quant=w8a8", "--cfg", "job"]
    script = _run([_script(), *args], tmp_path)
    module = _run([sys.executable, "-m", "dse", *args], tmp_path)
    assert script.returncode == 0 and module.returncode == 0, script.stderr + module.stderr
    assert script.stdout == module.stdout and "name: gpt2" in script.stdout
    where = _run([_script(), "--info", "searchpath"], tmp_path)  # it reads the installed package's configs
    main = re.search(r"\|\s*main\s*\|\s*file://(\S+)", where.stdout)
    assert main and (Path(main.group(1)) / "config.yaml").exists(), where.stdout


def test_console_script_reports_errors_like_the_module(tmp_path):
    p = _run([_script(), "task=evaluate", "workload.batch=0"], tmp_path)
    assert p.returncode == 2 and p.stderr.startswith("dse: error: workload.batch=0"), p.stderr[-2000:]
    assert "Traceback" not in p.stderr
