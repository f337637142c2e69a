"""Pure domain logic: validation, actors, the rolling graph, the rule, snapshots.

The hot modules may be compiled in place by mypyc (`make compile`). Python imports a
compiled module before its source, so a compiled module left over from an older source
would run old code: importing the package refuses that, and says what to run.
"""

import sys
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


def find_shared_runtime(here: Path) -> None:
    """Make mypyc's shared library for the compiled modules importable.

    mypyc writes it beside the package, at the project's root, as a top-level module
    (`<hash>__mypyc`), and every compiled module imports it. The editable install maps
    only the packages, so the `linkwatch` command, run from anywhere but the root, could
    not import a compiled module (the image copies the library into site-packages)."""
    root = here.parent
    if any(root.glob("*__mypyc*.so")) and str(root) not in sys.path:
        sys.path.append(str(root))


def compiled() -> bool:
    """Whether the stateful core runs compiled (mypyc) rather than interpreted."""
    from graph import window

    return (window.__file__ or "").endswith(".so")


refuse_stale_compiled_modules(Path(__file__).parent)
find_shared_runtime(Path(__file__).parent)
