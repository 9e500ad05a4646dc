"""Settings, endpoints and secret hygiene."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from coop import config
from coop.errors import CoopError


def test_redact_url_drops_credentials_and_query() -> None:
    assert config.redact_url("https://user:pw@host:8443/v1?key=abc") == "https://host:8443/v1"


def test_endpoint_needs_a_key_or_a_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(CoopError, match=r"OPENAI_API_KEY.*--llm offline"):
        config.local_endpoint(config.RunSettings())
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:11434/v1")
    assert config.local_endpoint(config.RunSettings()).base_url == "http://127.0.0.1:11434/v1"


def test_endpoint_repr_hides_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-very-secret-1234")
    assert "secret" not in repr(config.local_endpoint(config.RunSettings()))


def test_settings_never_hold_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-very-secret-1234")
    monkeypatch.setenv("OPENAI_BASE_URL", "https://u:p@example.invalid/v1")
    settings = config.new_settings(llm="openai")
    assert "secret" not in repr(settings) and "u:p" not in repr(settings)


def test_offline_settings_are_labeled_simulated() -> None:
    settings = config.new_settings(llm="offline", model="gpt-4o")
    assert settings.simulated and "simulated" in settings.label and settings.base_url is None


def test_check_objective() -> None:
    assert config.check_objective("  grow  ") == "grow"
    for bad in ("", "   ", "x" * 4001):
        with pytest.raises(CoopError):
            config.check_objective(bad)


def test_logging_filter_scrubs_secrets(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-log-leak-987654")
    root = logging.getLogger("coop")
    saved = root.handlers[:], root.propagate, root.level
    try:
        config.configure_logging(quiet=False)
        logging.getLogger("coop.test").info("calling with %s", "sk-log-leak-987654")
        err = capsys.readouterr().err
    finally:
        root.handlers[:], root.propagate, root.level = saved
    assert "calling with ***" in err and "sk-log-leak" not in err


def test_dotenv_is_read_and_real_env_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path
    (d / ".env").write_text("COOP_TEST_A=from-file\nCOOP_TEST_B=from-file\n")
    monkeypatch.chdir(d)
    monkeypatch.setenv("COOP_TEST_B", "from-env")
    monkeypatch.delenv("COOP_TEST_A", raising=False)
    config.load_env()
    assert os.environ["COOP_TEST_A"] == "from-file" and os.environ["COOP_TEST_B"] == "from-env"
    monkeypatch.delenv("COOP_TEST_A")
