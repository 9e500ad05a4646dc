"""Both token paths: tiktoken's real BPE code, and the offline estimate with one warning."""

from __future__ import annotations

import logging
import time

import pytest
import tiktoken

from coop import tokens


def byte_level_encoding() -> tiktoken.Encoding:
    """A real tiktoken Encoding with a tiny vocabulary: the 256 bytes plus a few merges. The
    public encodings must be downloaded, which this machine cannot do."""
    ranks = {bytes([b]): b for b in range(256)}
    for i, merged in enumerate([b"th", b"he", b"the", b" t", b" the"]):
        ranks[merged] = 256 + i
    return tiktoken.Encoding(
        "test-bytes", pat_str=r"\s?\w+|\s?[^\w\s]+|\s+", mergeable_ranks=ranks, special_tokens={}
    )


def test_tiktoken_path_counts_and_trims_exactly() -> None:
    tok = tokens.Tokenizer("test-model", byte_level_encoding())
    assert tok.exact
    assert tok.count("the") == 1 and tok.count(" the") == 1 and tok.count("abc") == 3
    trimmed = tok.trim("the cat sat", 3)
    assert tok.count(trimmed) == 3 and "the cat sat".startswith(trimmed)
    assert tok.trim("short", 100) == "short"
    assert tok.count("<|endoftext|>") > 1  # special-looking text is plain text, never an error


def test_unknown_model_falls_back_to_an_estimate_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="coop.tokens"):
        tok = tokens.for_model("llama3.1-unknown-to-tiktoken")
        tokens.for_model.cache_clear()
        tokens.for_model("llama3.1-unknown-to-tiktoken")
    assert not tok.exact
    assert len([r for r in caplog.records if "llama3.1" in r.getMessage()]) == 1
    assert tok.count("four words right here") >= 5  # conservative: over-counts English


def test_download_failure_falls_back_without_crashing(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A known model whose encoding cannot be fetched: an empty cache and a dead proxy on
    loopback make the download fail at once, online or not."""
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    tokens.for_model.cache_clear()
    tokens._warned.discard("gpt-4o")
    with caplog.at_level(logging.WARNING, logger="coop.tokens"):
        tok = tokens.for_model("gpt-4o")
    tokens.for_model.cache_clear()
    assert not tok.exact
    assert any("gpt-4o" in r.getMessage() for r in caplog.records)


def test_estimate_trim_respects_utf8_boundaries() -> None:
    tok = tokens.estimating("x")
    text = "🍅" * 50
    trimmed = tok.trim(text, 5)
    assert trimmed == "🍅" * 3 and tok.count(trimmed) <= 5
    assert tok.trim(text, 0) == ""


def test_a_stalled_download_is_given_up_on_in_bounded_time(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Where DNS does not answer, tiktoken's download hangs: the load is abandoned after
    LOAD_TIMEOUT and tokens are estimated, with one warning."""

    def stalls(model: str) -> tiktoken.Encoding:
        time.sleep(30)
        raise AssertionError("never reached")

    monkeypatch.setattr(tiktoken, "encoding_for_model", stalls)
    monkeypatch.setattr(tokens, "LOAD_TIMEOUT", 0.5)
    tokens.for_model.cache_clear()
    tokens._warned.discard("gpt-4.1")
    began = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="coop.tokens"):
        tok = tokens.for_model("gpt-4.1")
    tokens.for_model.cache_clear()
    assert not tok.exact and time.monotonic() - began < 2
    assert any("not loaded within 0.5s" in r.getMessage() for r in caplog.records)


def test_an_objective_without_an_encoding_estimates_at_once_and_silently(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Workers of an objective whose planner had no encoding neither try nor warn again."""

    def never(model: str) -> tiktoken.Encoding:
        raise AssertionError("a worker tried to load an encoding")

    monkeypatch.setattr(tiktoken, "encoding_for_model", never)
    tokens.for_model.cache_clear()
    with caplog.at_level(logging.WARNING, logger="coop.tokens"):
        tok = tokens.for_model("gpt-4o-mini", False)
    tokens.for_model.cache_clear()
    assert not tok.exact and not caplog.records
