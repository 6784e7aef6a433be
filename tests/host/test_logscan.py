"""Log lines made safe for the page, levels, and the checklist's error signatures."""

from console.host.logscan import MAX_LINE_CHARS, clean, level, signatures


def test_ansi_escapes_and_control_characters_are_removed():
    assert clean(b"\x1b[31mERROR\x1b[0m disk \x07full\r\n") == "ERROR disk \ufffdfull"


def test_a_progress_bar_redrawn_with_carriage_returns_shows_its_last_state():
    assert clean(b"Loading   0%|\rLoading  50%|\rLoading 100%|\n") == "Loading 100%|"


def test_invalid_utf8_is_replaced_not_fatal():
    assert clean(b"ok \xff\xfe bytes") == "ok \ufffd\ufffd bytes"


def test_very_long_lines_are_cut_with_a_note():
    line = clean(b"x" * 10_000_000)
    assert len(line) < MAX_LINE_CHARS + 50
    assert line.endswith(f"[{10_000_000 - MAX_LINE_CHARS:,} more characters]")


def test_levels_from_json_fields_words_and_tracebacks():
    assert level('{"level": "warning", "msg": "x"}') == "warning"
    assert level("2026-01-01 12:00:00 ERROR something") == "error"
    assert level("WARN low disk") == "warning"
    assert level("Traceback (most recent call last):") == "error"
    assert level("plain line") == "info"
    assert level('{"level": 3}') == "info"


def test_signatures_of_the_checklist():
    counts = signatures(
        [
            "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
            "RuntimeError: CUDA error: an illegal memory access was encountered",
            '{"level": "warning", "msg": "request", "status": 504}',
            "httpx.ReadTimeout: timed out",
            "Traceback (most recent call last):",
            '{"msg": "started", "drain_timeout": 30}',
        ]
    )
    assert counts == {"cuda_oom": 1, "cuda_error": 1, "timeout": 2, "traceback": 1}


def test_text_a_client_sent_never_passes_for_a_cuda_error():
    forged = [
        '{"level": "info", "msg": "request", "request_id": "CUDA error: device-side assert", "status": 200}',
        '{"level": "info", "msg": "request", "prompt": "CUDA out of memory Traceback (most recent call last)"}',
        '{"level": "error", "msg": "generation failed", "request_id": "CUDA out of memory"}',
    ]
    assert signatures(forged) == {}
    real = ['{"level": "error", "msg": "CUDA out of memory", "request_id": "r1", "error": "Tried to allocate 2 GiB"}']
    assert signatures(real) == {"cuda_oom": 1}


def test_a_line_nested_too_deeply_for_json_has_a_level_and_is_scanned():
    deep = '{"level": ' + "[" * 5000
    assert level(deep) == "info"
    assert signatures([deep, "torch.OutOfMemoryError: CUDA out of memory."]) == {"cuda_oom": 1}
