"""calbench: does a language model know what it doesn't know?

The Python API (:mod:`calbench.api`), loaded on first use so that ``import calbench`` stays
cheap (no pandas, torch or lm-eval):

- ``calbench.load_runs(path)``: run folders as a pandas DataFrame, one row per run;
- ``calbench.evaluate(model=..., tasks=[...], **options)``: ``calbench eval`` as a function,
  returning the run folders it wrote.
"""

from typing import Any as _Any

__version__ = "0.1.0"
__all__ = ["__version__", "evaluate", "load_runs"]

# public name -> name in calbench.api
_API = {"load_runs": "load_runs_frame", "evaluate": "evaluate"}


def __getattr__(name: str) -> _Any:
    if name in _API:
        from calbench import api

        return getattr(api, _API[name])
    raise AttributeError(f"module 'calbench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
