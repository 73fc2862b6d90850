"""A stage package's public face, loaded name by name (PEP 562).

Each stage package's `__init__` lists its public names by module; a name's module is imported the first time the
name is used. So a command imports what it calls and no more: `./run.sh check` or `leaderboard` answers in about
0.6 s without importing torch, torchvision or SMP (6.3-6.8 s when every face imported every module, on 2 cores;
benchmarks/bench_cli.py).

    __getattr__, __dir__, __all__ = public_face(__name__, {
        ".classes": ("ClassTable", "build_class_table"),  # a module of the package
        ".storage": ("open_storage", "serve_storage_proxy=serve_proxy"),  # public=name in the module
        "competition.core.tta": ("View", "parse_tta"),  # any other module
    })
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable


def public_face(
    package: str, modules: dict[str, tuple[str, ...]]
) -> tuple[Callable[[str], object], Callable[[], list[str]], list[str]]:
    """`__getattr__`, `__dir__` and `__all__` for `package` whose public names live in `modules` (a module name,
    relative to the package with a leading dot -> public names, each `name` or `public=name`)."""
    where: dict[str, tuple[str, str]] = {}
    for module, names in modules.items():
        for entry in names:
            public, _, name = entry.partition("=")
            where[public] = (module, name or public)
    # importing a module sets the package's attribute of that name to the module: a public name of the same name
    # would then be the module, wherever that import happens first
    shadowed = sorted({m[1:] for m in modules if m.startswith(".")} & set(where))
    if shadowed:
        raise ValueError(f"{package}: public names {shadowed} are also names of its modules; rename the modules")

    def __getattr__(public: str) -> object:
        if public not in where:
            raise AttributeError(f"module {package!r} has no attribute {public!r}")
        module, name = where[public]
        value = getattr(importlib.import_module(module, package), name)
        setattr(sys.modules[package], public, value)  # found by plain lookup from now on
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(where))

    return __getattr__, __dir__, list(where)
