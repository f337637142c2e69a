"""The compiled core (`make compile`) never runs code older than its source."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from graph import refuse_stale_compiled_modules


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
