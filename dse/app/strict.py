"""Strict configs and one-line errors: every key of a composed config is checked against its schema.

Hydra's ``+key=value`` adds a key even to a structured (struct) node, and a free-form ``dict``
section accepts anything, so a misspelled or not-yet-existing key used to be ignored silently
(``+model.n_experts=8`` evaluated the dense model). :func:`check_config` walks the composed
config against the schema dataclasses of :mod:`dse.app.schema` — every section, whatever fields
others add to it later — and against each task's own ``params`` (the keys and types its
``conf/task/<name>.yaml`` declares), and raises one :class:`DesignError` naming the key and the
nearest valid keys (``difflib``). :func:`explain` turns any error a command can meet (Hydra's
composition and override errors, OmegaConf type errors, file-system errors) into one line.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
import typing
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from dse.core.design import DesignError


def nearest(key: str, valid, n: int = 3) -> list[str]:
    """The valid keys closest to ``key`` (difflib ratio >= 0.5), best first."""
    return difflib.get_close_matches(str(key), sorted(map(str, valid)), n=n, cutoff=0.5)


def unknown_key_message(path: str, valid) -> str:
    near = nearest(path.rsplit(".", 1)[-1], valid)
    hint = f"did you mean {', '.join(repr(_join(path, k)) for k in near)}? " if near else ""
    return (f"{path}: unknown key; {hint}valid keys here: {sorted(map(str, valid))} "
            "(README lists every key; `python -m dse --cfg job` prints the composed config)")


def _join(path: str, key: str) -> str:
    head = path.rsplit(".", 1)[0] if "." in path else ""
    return f"{head}.{key}" if head else key


def _dataclass_of(tp):
    """The dataclass inside a type hint (``X``, ``Optional[X]``), else None."""
    if dataclasses.is_dataclass(tp):
        return tp
    for arg in typing.get_args(tp):
        if dataclasses.is_dataclass(arg):
            return arg
    return None


def check_keys(node, schema, path: str = "") -> None:
    """Every key of ``node`` (a DictConfig or dict) is a field of the dataclass ``schema``; recurse into
    fields that are dataclasses themselves. Free-form fields (``dict``, ``list``) are left to their
    own validation (``space`` by the space parser, ``task.params`` by :func:`check_task_params`)."""
    if node is None or not isinstance(node, (DictConfig, dict)):
        return
    hints = typing.get_type_hints(schema)
    names = [f.name for f in dataclasses.fields(schema)]
    for key in node.keys():
        full = f"{path}{key}"
        if key not in names:
            raise DesignError(unknown_key_message(full, names))
        sub = _dataclass_of(hints.get(key))
        if sub is not None:
            check_keys(node[key], sub, full + ".")


def _kind(v) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, (list, tuple, ListConfig)):
        return "list"
    if isinstance(v, (dict, DictConfig)):
        return "mapping"
    if v is None:
        return "null"
    return "string"


def check_task_params(cfg) -> None:
    """``task.params`` against the task's own YAML (its keys and the kinds of their defaults)."""
    from dse.app.build import resource_dir

    name = cfg.task.name
    params = cfg.task.get("params") or {}
    path = resource_dir("conf") / "task" / f"{name}.yaml"
    declared = OmegaConf.to_container(OmegaConf.load(path), resolve=False).get("params") or {} if path.is_file() else {}
    for key in params.keys():
        if key not in declared:
            if not declared:
                raise DesignError(f"task.params.{key}: task={name} takes no params")
            raise DesignError(unknown_key_message(f"task.params.{key}", declared))
        want, got = _kind(declared[key]), _kind(params[key])
        if want != "null" and got != "null" and want != got:
            raise DesignError(f"task.params.{key}={params[key]!r}: must be a {want} like its default "
                              f"{declared[key]!r} (conf/task/{name}.yaml)")


def check_finite(node, path: str = "") -> None:
    """No NaN or infinity anywhere in the config: one error naming the key (ranges are checked later)."""
    if isinstance(node, (DictConfig, ListConfig)):
        node = OmegaConf.to_container(node, resolve=True)
    if isinstance(node, dict):
        for k, v in node.items():
            check_finite(v, f"{path}.{k}" if path else str(k))
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            check_finite(v, f"{path}[{i}]")
    elif isinstance(node, float) and not math.isfinite(node):
        raise DesignError(f"{path}={node}: must be a finite number")


def check_config(cfg) -> None:
    """Unknown keys anywhere (``+`` or not), task params, non-finite numbers → one DesignError."""
    from dse.app.schema import DseConfig

    check_keys(cfg, DseConfig)
    check_task_params(cfg)
    check_finite(cfg)


def explain(e: BaseException) -> str | None:
    """One line for an error a user can cause (None: a bug, shown as such)."""
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(e, DesignError):
        return str(e)
    if isinstance(e, OSError) and getattr(e, "filename", None):
        return (f"{e.filename}: {e.strerror}; choose a writable output directory "
                "(hydra.run.dir=..., or hydra.sweep.dir=... for -m)")
    cause = e
    while cause is not None and not isinstance(cause, OmegaConfBaseException):
        cause = cause.__cause__ or cause.__context__
    if cause is not None and getattr(cause, "full_key", None):
        msg = str(getattr(cause, "msg", "") or cause).strip().splitlines()[0]
        return f"{cause.full_key}: {msg}" + _schema_hint(cause)
    if type(e).__module__.startswith(("hydra", "omegaconf")):
        lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
        missing = re.search(r"Could not find '([^']+)/([^']+)'", str(e))
        if missing and any(ln.startswith("Available options") for ln in lines):
            options = lines[[i for i, ln in enumerate(lines) if ln.startswith("Available options")][0] + 1:]
            options = options[:next((i for i, o in enumerate(options) if o.startswith("Config search path")), len(options))]
            group, name = missing.groups()
            near = nearest(name, options)
            return (f"{group}={name}: no such {group}; " + (f"did you mean {near}? " if near else "")
                    + f"available: {', '.join(options)}")
        return "; ".join(lines) if lines else type(e).__name__
    return None


def _schema_hint(cause) -> str:
    """For 'Key X not in Y': the nearest valid keys of that section."""
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    if not isinstance(cause, (ConfigKeyError, ConfigAttributeError)):
        return ""
    from dse.app.schema import DseConfig
    parts = str(cause.full_key).split(".")
    schema: Any = DseConfig
    for p in parts[:-1]:
        hints = typing.get_type_hints(schema)
        schema = _dataclass_of(hints.get(p))
        if schema is None:
            return ""
    names = [f.name for f in dataclasses.fields(schema)]
    near = nearest(parts[-1], names)
    return (f"; did you mean {', '.join(repr('.'.join(parts[:-1] + [n])) for n in near)}?" if near else "") + \
        f"; valid keys here: {sorted(names)}"
