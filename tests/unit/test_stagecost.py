"""The instruction count harness (`make bench-instructions`): what it runs and reads."""

import pytest

from streams import bench
from streams.stagecost import STAGES, instructions, run_stages


def test_each_stage_run_again_sees_the_same_input_and_changes_nothing() -> None:
    # A stage's count is (every stage once, then it again) - (every stage once): the
    # runs must differ only by that stage's work, on the same input.
    lines = bench.stream(3000)
    once = run_stages(lines)
    assert once["alerts"] > 0 and once["packs"] > 0 and once["identity_messages"] > 0
    for stage in STAGES:
        assert run_stages(lines, again=stage) == once, stage


def test_the_count_is_read_from_cachegrinds_summary() -> None:
    summary = "==41== \n==41== I   refs:      3,224,320,840\n"
    assert instructions(summary) == 3_224_320_840
    with pytest.raises(ValueError, match="no instruction count"):
        instructions("valgrind: command not found")
