"""A short schema-fuzzing run of both apps on every `make test`; `make fuzz` runs the long one."""

from __future__ import annotations

from tests.security.fuzzing import fuzz_both


def test_a_short_fuzz_finds_no_server_error_no_off_schema_answer_and_no_bypass() -> None:
    tallies = fuzz_both(examples=4)
    minimum = {"registry": 200, "serving": 30}
    for tally in tallies:
        assert tally.cases > minimum[tally.app], tally.summary()
        assert tally.auth_cases > 10, tally.summary()
        assert tally.server_errors == []
        assert tally.outside_schema == []
        assert tally.bypasses == []
