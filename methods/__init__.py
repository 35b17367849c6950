"""The table of training methods: one module per method (`methods/NAME.py`, each a `methods.base.Method`), in the
order `--method` lists them. Everything the rest of the tool knows about a method comes from here: its flags with
their defaults and help, what its record keeps, its step, its figures, the flags that scale its loss. Adding a
method is one module here (and its presets and docs)."""
from typing import Dict, List

from methods import catrs, consistency, gaussian, macer, smoothadv, smoothmix, stability
from methods.base import Method, Param

METHODS: Dict[str, Method] = {m.METHOD.name: m.METHOD for m in (macer, gaussian, smoothadv, stability, consistency,
                                                               smoothmix, catrs)}
DEFAULT = 'macer'  # the paper's


def register(method: Method) -> None:
    """Add a method to the table (a test's toy method; a module of this package adds itself above)."""
    METHODS[method.name] = method


def flag_names() -> List[str]:
    """Every flag of every method, in the order they are first declared."""
    names: List[str] = []
    for method in METHODS.values():
        names += [f for f in method.flags if f not in names]
    return names


def declarations(flag: str) -> Dict[str, Param]:
    """{method: its declaration} of one flag."""
    return {name: m.flags[flag] for name, m in METHODS.items() if flag in m.flags}


def methods_of(flag: str) -> List[str]:
    return list(declarations(flag))
