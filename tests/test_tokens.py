"""Both token paths: tiktoken's real BPE code, and the offline estimate with one warning."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

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
        tokens.codec.cache_clear()
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
    tokens.codec.cache_clear()
    tokens._warned.discard("gpt-4o")
    with caplog.at_level(logging.WARNING, logger="coop.tokens"):
        tok = tokens.for_model("gpt-4o")
    tokens.codec.cache_clear()
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
    tokens.codec.cache_clear()
    tokens._warned.discard("gpt-4.1")
    began = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="coop.tokens"):
        tok = tokens.for_model("gpt-4.1")
    tokens.codec.cache_clear()
    assert not tok.exact and time.monotonic() - began < 2
    assert any("not loaded within 0.5s" in r.getMessage() for r in caplog.records)


def test_an_objective_without_an_encoding_estimates_at_once_and_silently(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Workers of an objective whose planner had no encoding neither try nor warn again."""

    def never(model: str) -> tiktoken.Encoding:
        raise AssertionError("a worker tried to load an encoding")

    monkeypatch.setattr(tiktoken, "encoding_for_model", never)
    tokens.codec.cache_clear()
    with caplog.at_level(logging.WARNING, logger="coop.tokens"):
        tok = tokens.for_model("gpt-4o-mini", False)
    tokens.codec.cache_clear()
    assert not tok.exact and not caplog.records


def tokenizer_json(path: Path) -> Path:
    """A real Hugging Face tokenizer.json, trained here on a few lines (an open model's own
    cannot be downloaded on this machine): byte-level BPE, as Llama-family models use."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = ["Grow tomatoes on a balcony in pots with sun and water."] * 50
    trainer = trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(corpus, trainer)
    tok.save(str(path / "tokenizer.json"))
    return path / "tokenizer.json"


def test_an_open_models_tokenizer_json_counts_and_trims_exactly(tmp_path: Path) -> None:
    pytest.importorskip("tokenizers", reason="coop[tokenizers] is not installed")
    from tokenizers import Tokenizer

    path = tokenizer_json(tmp_path)
    tokens.codec.cache_clear()
    tok = tokens.for_model("smollm2", True, str(path))
    tokens.codec.cache_clear()
    reference = Tokenizer.from_file(str(path))
    text = "Grow tomatoes on a balcony, and write a guide: 🍅 in pots."
    assert tok.exact and tok.count(text) == len(reference.encode(text).ids)
    assert tok.count("tomatoes") < tok.count("xqzvw jkpq")  # learnt words are single tokens
    trimmed = tok.trim(text, 5)
    assert tok.count(trimmed) <= 5 and text.startswith(trimmed)
    tok.calibrate(10_000, 100)  # a codec's count is exact: the server's does not change it
    assert tok.count(text) == len(reference.encode(text).ids)


def test_a_tokenizer_that_cannot_be_had_falls_back_to_the_estimate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A name not in the local Hugging Face cache (nothing is downloaded here), or the library
    not installed: one warning that says so, and the estimate."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    tokens.codec.cache_clear()
    tokens._warned.clear()
    with caplog.at_level(logging.WARNING, logger="coop.tokens"):
        tok = tokens.for_model("open-model-a", True, "HuggingFaceTB/SmolLM2-135M-Instruct")
        monkeypatch.setitem(sys.modules, "tokenizers", None)  # as if not installed
        missing = tokens.for_model("open-model-b", True, str(tmp_path / "tokenizer.json"))
    tokens.codec.cache_clear()
    assert not tok.exact and not missing.exact
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2 and all("--tokenizer" in m for m in said)
    assert "pip install 'coop[tokenizers]'" in said[1]


def test_the_estimate_is_calibrated_by_the_servers_counts() -> None:
    """A model whose tokens are denser than the first guess (2 bytes a token): the estimate
    counts more once the server has counted enough, and keeps a margin; a few counts do not
    move it, and nonsense stays within bounds."""
    tok = tokens.estimating("open")
    text = "x" * 300
    assert tok.count(text) == 100
    tok.calibrate(400, 200)
    assert tok.count(text) == 100  # fewer than CALIBRATE_AFTER tokens counted: not yet
    tok.calibrate(1600, 800)
    assert tok.bytes_per_token == pytest.approx(2 / tokens.MARGIN)
    assert tok.count(text) == 173 and tok.count(tok.trim(text * 10, 50)) <= 50
    tok.calibrate(10**9, 1)
    assert tok.bytes_per_token <= tokens.BYTES_PER_TOKEN_RANGE[1]


def test_each_model_client_calibrates_its_own_estimate() -> None:
    """Two model clients of one model in one process (two runs of the Python API, each with
    its own server): the counts of one's server do not move the other's estimate."""
    tokens.codec.cache_clear()
    first = tokens.for_model("llama3.1-unknown-to-tiktoken")
    first.calibrate(1600, 800)  # its server counts 2 bytes a token
    second = tokens.for_model("llama3.1-unknown-to-tiktoken")
    assert first.bytes_per_token == pytest.approx(2 / tokens.MARGIN)
    assert second.bytes_per_token == tokens.BYTES_PER_TOKEN and not second.exact
    tokens.codec.cache_clear()
