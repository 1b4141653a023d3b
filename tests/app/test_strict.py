"""Strict configs (issue 16): every key checked, every failure one line naming the field.

The fuzz test composes random bad overrides for every group with Hydra's ``compose()`` (no
subprocess) and runs task=evaluate in-process, exactly as ``python -m dse`` does: each case must
end in a result whose metrics are finite or in one ``dse: error: ...`` line naming the field.
"""
import dataclasses
import json
import math
import typing

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from dse.app.main import run
from dse.app.schema import DseConfig
from dse.app.strict import check_config, explain, nearest
from dse.core.design import DesignError


def _leaves(schema, prefix=""):
    """Every scalar key of the schema, dotted (free-form dict/list fields excluded)."""
    out = []
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        tp = hints[f.name]
        sub = tp if dataclasses.is_dataclass(tp) else next((a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)), None)
        if sub is not None:
            out += _leaves(sub, f"{prefix}{f.name}.")
        elif typing.get_origin(tp) not in (list, dict) and tp not in (list, dict):
            out.append(f"{prefix}{f.name}")
    return out


LEAVES = _leaves(DseConfig)


def _outcome(make_cfg, tmp_path, monkeypatch, capsys, *overrides):
    """('error', line) or ('result', result.json) of `python -m dse task=evaluate OVERRIDES`, in-process."""
    monkeypatch.chdir(tmp_path)
    try:
        cfg = make_cfg("task=evaluate", *overrides)
    except Exception as e:  # composition: main() prints explain(e)
        msg = explain(e)
        assert msg is not None, f"{overrides}: {type(e).__name__} would reach the user as a traceback: {e}"
        return "error", f"dse: error: {msg}"
    try:
        run(cfg)
    except SystemExit as e:
        assert e.code == 2, overrides
        err = capsys.readouterr().err.strip()
        return "error", err
    except Exception as e:
        msg = explain(e)
        assert msg is not None, f"{overrides}: {type(e).__name__} would reach the user as a traceback: {e}"
        return "error", f"dse: error: {msg}"
    return "result", json.loads((tmp_path / "result.json").read_text())


BAD = ["abc", "'[1, 2]'", "-1", "0", "1e30", "-1e30", "nan", "inf", "-inf", "2.5"]


@settings(max_examples=40, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(key=st.sampled_from(LEAVES), value=st.sampled_from(BAD), unknown=st.booleans(), plus=st.booleans())
def test_fuzz_overrides_end_in_a_result_or_one_line(make_cfg, tmp_path, monkeypatch, capsys, key, value, unknown, plus):
    if key in ("task.name", "hardware.ideal", "smooth"):
        return  # task.name picks the task (its errors are tested below); these are switches
    field = key + "zz" if unknown else key
    override = ("+" if plus or unknown else "") + f"{field}={value}"
    kind, out = _outcome(make_cfg, tmp_path, monkeypatch, capsys, override)
    if kind == "error":
        assert out.startswith("dse: error: ") and "\n" not in out, (override, out)
        assert field in out or field.split(".")[-1] in out, (override, out)
    else:
        assert not unknown, (override, "an unknown key was accepted")
        bad = {k: v for k, v in out.items() if isinstance(v, float) and not math.isfinite(v)}
        assert not bad, (override, bad)


@pytest.mark.parametrize("override, needle", [
    ("+workload.batchh=3", "did you mean 'workload.batch'"),
    ("+quant.w_bitz=4", "did you mean 'quant.w_bits'"),
    ("+model.n_expertz=8", "model.n_expertz: unknown key"),
    ("+hardware.mem_bww=1", "did you mean 'hardware.mem_bw'"),
    ("+hardware.peak_flops.fp9=1", "hardware.peak_flops.fp9: unknown key"),
    ("+optimize.constraints.max_ttft_z=0.1", "did you mean 'optimize.constraints.max_ttft_s'"),
    ("+optimize.stepz=3", "did you mean 'optimize.steps'"),
    ("+sweep.chunksize=3", "did you mean 'sweep.chunk_size'"),
    ("+conventions.overlapp=sum", "did you mean 'conventions.overlap'"),
    ("+accuracy.EE=1", "accuracy.EE: unknown key"),
    ("+foo=1", "foo: unknown key"),
])
def test_unknown_keys_are_one_error_with_the_nearest_keys(make_cfg, override, needle):
    # before issue 16, `+` added these silently (the dense model was evaluated with +model.n_experts)
    cfg = make_cfg(override)
    with pytest.raises(DesignError, match=needle.replace("(", r"\(").replace(".", r"\.")):
        check_config(cfg)


def test_task_params_are_typed_by_the_tasks_yaml(make_cfg):
    with pytest.raises(DesignError, match="did you mean 'task.params.quick'"):
        check_config(make_cfg("task=validate", "+task.params.quik=true"))
    with pytest.raises(DesignError, match="task.params.quick='yes': must be a bool"):
        check_config(make_cfg("task=validate", "task.params.quick=yes"))
    with pytest.raises(DesignError, match="task=evaluate takes no params"):
        check_config(make_cfg("task=evaluate", "+task.params.x=1"))
    check_config(make_cfg("task=validate", "task.params.quick=true"))


def test_composition_errors_become_one_line(make_cfg):
    for override, needle in (("workload.batch=many", "workload.batch"), ("workload.foo=3", "workload.foo"),
                             ("model=llama9", "model=llama9: no such model"),
                             ("hardware=h100", "did you mean")):
        with pytest.raises(Exception) as e:
            make_cfg(override)
        msg = explain(e.value)
        assert msg is not None and needle in msg and "\n" not in msg, msg


def test_nearest_keys():
    assert nearest("batchh", ["batch", "prompt_len", "gen_len"]) == ["batch"]
    assert nearest("zzz", ["batch"]) == []


def test_optimize_schema_covers_the_optimizers_settings_and_constraints():
    # one source of truth: every Settings/Constraints field is a config key (else `optimize.X` is rejected)
    from dse.app.schema import ConstraintsConfig, OptimizeConfig
    from dse.explore.optimize import Constraints, Settings
    keys = {f.name for f in dataclasses.fields(OptimizeConfig)}
    assert {f.name for f in dataclasses.fields(Settings)} <= keys
    assert {f.name for f in dataclasses.fields(Constraints)} <= {f.name for f in dataclasses.fields(ConstraintsConfig)}
