"""Operator classes built on first access, so that importing a stage's core does not import the SDK.

Holoscan (under the MONAI Deploy SDK) takes seconds to import and warns about the
stack size; tests, training and the DICOM node use the stage cores without it.
"""

from __future__ import annotations

from typing import Any, Callable


def lazy_operator(module_globals: dict[str, Any], name: str, build: Callable[[], type]) -> Callable[[str], Any]:
    """Return a module ``__getattr__`` that builds operator class ``name`` once, on first access.

    Args:
        module_globals: The stage module's ``globals()``.
        name: Public name of the operator class.
        build: Function that imports the SDK and returns the class.
    """
    module = module_globals["__name__"]

    def __getattr__(attr: str) -> Any:
        if attr != name:
            raise AttributeError(f"module {module!r} has no attribute {attr!r}")
        cls = build()
        cls.__module__, cls.__qualname__ = module, name
        module_globals[name] = cls
        return cls

    return __getattr__
