"""Pure domain logic: validation, actors, the rolling graph, the rule, snapshots.

The hot modules may be compiled in place by mypyc (`make compile`). Python imports a
compiled module before its source, so a compiled module left over from an older source
would run old code: importing the package refuses that, and says what to run.
"""

from pathlib import Path


def refuse_stale_compiled_modules(here: Path) -> None:
    """ImportError if a compiled module in `here` is older than its source."""
    for compiled in here.glob("*.so"):
        source = here / f"{compiled.name.partition('.')[0]}.py"
        if source.exists() and source.stat().st_mtime > compiled.stat().st_mtime:
            raise ImportError(
                f"graph/{compiled.name} was compiled from an older graph/{source.name}: "
                "run `make compile`, or `make clean-compiled` to run the source"
            )


def compiled() -> bool:
    """Whether the stateful core runs compiled (mypyc) rather than interpreted."""
    from graph import window

    return (window.__file__ or "").endswith(".so")


refuse_stale_compiled_modules(Path(__file__).parent)
