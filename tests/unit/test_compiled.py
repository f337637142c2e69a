"""The compiled core (`make compile`) never runs code older than its source."""

import dataclasses
import inspect
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from graph import compiled, refuse_stale_compiled_modules
from graph.aliases import Resolution
from graph.contract import Report
from graph.records import Handled
from graph.window import Applied, Outcome


def test_a_compiled_module_older_than_its_source_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "window.py"
    built = tmp_path / "window.cpython-311-x86_64-linux-gnu.so"
    source.write_text("")
    built.write_bytes(b"")
    os.utime(source, (1_000, 1_000))
    os.utime(built, (2_000, 2_000))
    refuse_stale_compiled_modules(tmp_path)  # compiled after its source: fine

    os.utime(source, (3_000, 3_000))  # the source was edited since
    with pytest.raises(ImportError, match="make compile"):
        refuse_stale_compiled_modules(tmp_path)


def test_a_compiled_module_without_a_source_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / "other.cpython-311-x86_64-linux-gnu.so").write_bytes(b"")
    refuse_stale_compiled_modules(tmp_path)


def test_the_linkwatch_command_runs_from_any_directory(tmp_path: Path) -> None:
    # Compiled, the core needs mypyc's shared library from the project root, which the
    # editable install does not map: `make run` failed with ModuleNotFoundError.
    command = Path(sys.executable).parent / "linkwatch"
    ran = subprocess.run(
        [str(command), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == 0, ran.stderr
    assert "usage: linkwatch" in ran.stdout


# Built once or more per report. A dataclass's generated `__init__` is Python source that
# mypyc does not compile, so each of these writes its own ("Performance", change 23).
BUILT_PER_REPORT = [
    (Report, ("r", "chirp", 1.0, "other", "o", "v", "Kent", {})),
    (Resolution, ("actor",)),
    (Applied, (Outcome.ACCEPTED,)),
    (Handled, ()),
]


@pytest.mark.parametrize(
    "cls, args", BUILT_PER_REPORT, ids=lambda value: getattr(value, "__name__", "")
)
def test_what_is_built_per_report_is_built_by_compiled_code(cls: type, args: tuple) -> None:
    if not compiled():
        pytest.skip("the core runs interpreted (`make clean-compiled`)")
    assert not isinstance(cls.__dict__["__init__"], types.FunctionType), cls.__name__
    built = cls(*args)
    assert built == cls(*args)  # still a dataclass: compared by its fields
    assert [field.name for field in dataclasses.fields(built)] == list(
        inspect.signature(cls).parameters
    )


def test_a_default_list_is_new_for_each_object() -> None:
    first, second = Handled(), Handled()
    first.outcomes.append(Outcome.ACCEPTED)
    first.sends.append(("actor", {}))
    assert second == Handled([], [], [])
