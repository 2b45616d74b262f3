"""The soak of ``make soak``, short: 8 writers stream and save stories for 20 seconds."""

from __future__ import annotations

from rel_helpers import load_soak


def test_eight_writers_for_twenty_seconds_lose_nothing_and_see_no_server_error():
    result = load_soak().run_soak(users=8, seconds=20, max_new_tokens=32)
    assert result["errors_5xx"] == 0, result["statuses"]
    assert result["transport_errors"] == {} and result["stream_errors"] == 0, result
    # Every writer got at least one story written and saved in 20 seconds.
    assert result["stories_saved"] >= 8, result
    assert result["stories_saved"] == result["stories_generated"], result
    assert result["stories_lost"] == 0
    assert result["stories_altered"] == 0
    assert result["stories_mixed_up"] == 0
    assert result["server_exit_code"] == 0, "the server did not stop cleanly on Ctrl+C"
