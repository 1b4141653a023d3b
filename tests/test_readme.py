"""The README's code blocks run as a test (issue 16: its own Python API example failed at jax.grad).

- Every ```python block is executed as written, in order, in one namespace per block.
- Every ``python -m dse ...`` line of a ```bash block is composed by Hydra with its overrides
  (each combination of a ``-m`` comma list) and passes the strict-config check, so every key and
  value the README shows exists and is legal. The ``task=evaluate`` commands (seconds each) are
  also run in-process, exactly as the CLI runs them; the long tasks (the default study, optimize,
  validate, serve, accuracy, ...) are run by their own tests and the benchmark.
"""
import itertools
import re
import shlex
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(lang):
    text = README.read_text()
    return [m.group(1) for m in re.finditer(rf"^```{lang}\n(.*?)^```", text, re.S | re.M)]


def _commands():
    """(args, multirun) of every `python -m dse ...` line of the bash blocks (continuations joined)."""
    out = []
    for block in _blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            for part in line.split("&&"):
                part = part.strip()
                if not part.startswith("python -m dse") or part.startswith("python -m dse."):
                    continue
                args = shlex.split(part)[3:]
                if any(a.startswith("--") for a in args):
                    continue  # --help, --cfg: Hydra's own
                multirun = "-m" in args
                out.append(([a for a in args if a != "-m"], multirun))
    return out


COMMANDS = _commands()


def test_readme_has_code_to_run():
    assert len(_blocks("python")) >= 2 and len(COMMANDS) >= 10


@pytest.mark.parametrize("i", range(len(_blocks("python"))))
def test_python_blocks_run(i, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(_blocks("python")[i], f"README.md python block {i}", "exec"), {"__name__": "__readme__"})


def _expand(args, multirun):
    """A -m command's jobs: each combination of its comma lists (the basic sweeper's rule)."""
    if not multirun:
        return [args]
    choices = []
    for a in args:
        key, _, val = a.partition("=")
        if "," in val and not val.startswith(("[", "{", "range(")):
            choices.append([f"{key}={v}" for v in val.split(",")])
        else:
            choices.append([a])
    return [list(c) for c in itertools.product(*choices)]


@pytest.mark.parametrize("args, multirun", COMMANDS, ids=[" ".join(a) or "(default study)" for a, _ in COMMANDS])
def test_shell_commands_compose_and_the_quick_ones_run(args, multirun, make_cfg, tmp_path, monkeypatch, capsys):
    from dse.app.main import register_studies, run
    from dse.app.strict import check_config

    register_studies()
    for job in _expand(args, multirun)[:4]:
        overrides = [a for a in job if not a.startswith("hydra.")]
        if any("path/to" in a for a in overrides):
            overrides = [a for a in overrides if "path/to" not in a]  # a placeholder for the user's file
        if any(a.startswith("sweep.shard=") for a in overrides):
            overrides = [a if not a.startswith("sweep.shard=") else "sweep.shard=0" for a in overrides]
        cfg = make_cfg(*overrides)
        check_config(cfg)
        if cfg.task.name == "evaluate" and not any("hf_config" in a or "engine" in a for a in job):
            monkeypatch.chdir(tmp_path)
            run(cfg)
            assert (tmp_path / "result.json").exists()
