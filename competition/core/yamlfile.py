"""Settings read from YAML or JSON (a `--config` file, a `--space` file, a `--set` value), bounded: at most
1 MiB of text and YAML_NODES values once aliases are expanded (a few hundred bytes of aliases can stand for
billions of values), nested at most YAML_DEPTH deep; `yaml.safe_load` only, so tags never run code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from competition.core.errors import UserError
from competition.core.fileio import read_user_text

CONFIG_BYTES = 1 << 20  # a settings or search-space file is a few hundred bytes; 1 MiB is a mistake
YAML_NODES, YAML_DEPTH = 10_000, 32  # values a settings file may hold once aliases are expanded, and nesting


def bounded(data: Any, source: str) -> Any:
    """`data` when it is small once YAML aliases are expanded (a few hundred bytes of aliases can stand for
    billions of values) and shallow; one UserError naming `source` otherwise."""
    count, stack = 0, [(data, 0)]
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > YAML_NODES or depth > YAML_DEPTH:
            why = f"more than {YAML_NODES:,} values" if count > YAML_NODES else f"nested over {YAML_DEPTH} deep"
            raise UserError(f"{source}: {why} (YAML aliases expanded); settings are a flat mapping")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for pair in value.items() for v in pair)
        elif isinstance(value, (list, tuple)):
            stack.extend((v, depth + 1) for v in value)
    return data


def _load_yaml(text: str, source: str) -> Any:
    try:
        return bounded(yaml.safe_load(text), source)
    except RecursionError:
        raise UserError(f"{source}: nested too deeply to be settings") from None


def parse_value(text: str) -> Any:
    """A --set value as YAML would read it: numbers, booleans, null, lists; anything else stays a string."""
    try:
        return _load_yaml(text, f"--set value {text[:40]!r}")
    except yaml.YAMLError:
        return text


def read_config_file(path: Path) -> dict[str, Any]:
    """Settings from a YAML or JSON file (a mapping of keys to values)."""
    path = Path(path)
    text = read_user_text(path, "settings file", CONFIG_BYTES)
    try:
        data = _load_yaml(text, str(path))
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML/JSON: {str(e).splitlines()[0][:200]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: a config file must be a mapping of settings, got {type(data).__name__}")
    return data
