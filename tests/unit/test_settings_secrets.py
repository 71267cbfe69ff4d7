"""Secrets in settings: `kafka.sasl_password` is a SecretStr that `settings show`, reprs and
validation errors never reveal, and environment values of text settings stay text (a numeric
password needs no JSON quoting) while numbers and lists still parse as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from twin_stream.cli import app
from twin_stream.config.settings import REVEAL_SECRETS, Settings, SettingsError, load_settings
from twin_stream.kafka_io import client_options

PASSWORD = "s3cr3t-Pa55"


def test_a_numeric_password_from_the_environment_is_text() -> None:
    s = load_settings(environ={"TWIN_KAFKA__SASL_PASSWORD": "12345"})
    assert s.kafka.sasl_password is not None
    assert s.kafka.sasl_password.get_secret_value() == "12345"


def test_other_environment_values_still_parse() -> None:
    s = load_settings(
        environ={
            "TWIN_KAFKA__BOOTSTRAP_SERVERS": "broker-1:9093,broker-2:9093",
            "TWIN_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
            "TWIN_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
            "TWIN_KAFKA__SASL_USERNAME": "007",  # text setting: stays "007", not 7
            "TWIN_ENGINE__MAX_GAP_S": "120",
            "TWIN_TOPICS__PARTITIONS": "8",
            "TWIN_TOPICS__INPUT": "123",  # a topic named by digits
            "TWIN_MODELS__ENABLED": '["eq_cycles"]',
            "TWIN_FLEET__DEFAULTS__CURRENT_SIGN": "-1",
            "TWIN_FLEET__BATTERIES__B1__CHEMISTRY": "LFP",
            "TWIN_FLEET__BATTERIES__B1__CAPACITY_AH": "50",
            "TWIN_BROKER_HOME": "/not/a/setting",
        }
    )
    assert s.kafka.bootstrap_servers == "broker-1:9093,broker-2:9093"
    assert s.kafka.security_protocol == "SASL_SSL"
    assert s.kafka.sasl_mechanism == "SCRAM-SHA-512"
    assert s.kafka.sasl_username == "007"
    assert s.engine.max_gap_s == 120.0
    assert s.topics.partitions == 8
    assert s.topics.input == "123"
    assert s.models.enabled == ["eq_cycles"]
    assert s.fleet.defaults.current_sign == -1
    assert s.fleet.batteries["b1"].chemistry == "LFP"
    assert s.fleet.batteries["b1"].capacity_ah == 50.0


def test_a_number_setting_from_the_environment_still_must_be_a_number() -> None:
    with pytest.raises(SettingsError, match=r"engine\.max_gap_s: .*\(got 'soon'\)"):
        load_settings(environ={"TWIN_ENGINE__MAX_GAP_S": "soon"})


def test_secrets_are_hidden_in_repr_and_dumps_but_reach_the_client() -> None:
    s = load_settings(
        environ={
            "TWIN_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "TWIN_KAFKA__SASL_USERNAME": "twin",
            "TWIN_KAFKA__SASL_PASSWORD": PASSWORD,
        }
    )
    assert PASSWORD not in repr(s)
    assert PASSWORD not in str(s)
    assert PASSWORD not in s.model_dump_json()
    assert s.model_dump(mode="json")["kafka"]["sasl_password"] == "***"
    assert client_options(s.kafka)["sasl_plain_password"] == PASSWORD
    # a settings file for another process keeps it, and reads back the same
    again = Settings.model_validate_json(s.model_dump_json(context=REVEAL_SECRETS))
    assert again.kafka.sasl_password is not None
    assert again.kafka.sasl_password.get_secret_value() == PASSWORD


def test_settings_show_masks_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWIN_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("TWIN_KAFKA__SASL_USERNAME", "twin")
    monkeypatch.setenv("TWIN_KAFKA__SASL_PASSWORD", PASSWORD)
    result = CliRunner().invoke(app, ["settings", "show"])
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output
    shown = json.loads(result.output)
    assert shown["kafka"]["sasl_password"] == "***"
    assert shown["kafka"]["sasl_username"] == "twin"

    result = CliRunner().invoke(app, ["settings", "check"])
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output
    assert "password set" in result.output


def test_settings_show_without_a_password_shows_null(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TWIN_KAFKA__SASL_PASSWORD", "TWIN_KAFKA"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(app, ["settings", "show"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["kafka"]["sasl_password"] is None


def test_an_invalid_value_next_to_the_password_does_not_leak_it(tmp_path: Path) -> None:
    f = tmp_path / "s.json"
    f.write_text(json.dumps({"kafka": {"security_protocol": "BOGUS", "sasl_password": PASSWORD}}))
    with pytest.raises(SettingsError) as info:
        load_settings(f, environ={})
    assert "kafka.security_protocol" in str(info.value)
    assert PASSWORD not in str(info.value)

    env = {"TWIN_KAFKA__SASL_PASSWORD": PASSWORD, "TWIN_KAFKA__SECURITY_PROTOCOL": "BOGUS"}
    with pytest.raises(SettingsError) as info:
        load_settings(environ=env)
    assert PASSWORD not in str(info.value)


def test_an_invalid_password_is_not_echoed(tmp_path: Path) -> None:
    f = tmp_path / "s.json"
    f.write_text(json.dumps({"kafka": {"sasl_password": 987654321}}))  # not a string
    with pytest.raises(SettingsError) as info:
        load_settings(f, environ={})
    message = str(info.value)
    assert "kafka.sasl_password" in message
    assert "(got ***)" in message
    assert "987654321" not in message


def test_a_malformed_section_holding_a_secret_is_not_echoed(tmp_path: Path) -> None:
    f = tmp_path / "s.json"
    f.write_text(json.dumps({"kafka": ["twin", PASSWORD]}))  # a list, not an object
    with pytest.raises(SettingsError) as info:
        load_settings(f, environ={})
    assert "kafka: Input should be a valid dictionary" in str(info.value)
    assert PASSWORD not in str(info.value)
    # a section without secrets still shows what it got
    f.write_text(json.dumps({"engine": [1, 2]}))
    with pytest.raises(SettingsError, match=r"\(got \[1, 2\]\)"):
        load_settings(f, environ={})


def test_settings_check_errors_do_not_leak(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWIN_KAFKA__SASL_PASSWORD", PASSWORD)
    monkeypatch.setenv("TWIN_KAFKA__SASL_MECHANISM", "MD5")
    result = CliRunner().invoke(app, ["settings", "check"])
    assert result.exit_code == 2
    assert "kafka.sasl_mechanism" in result.output
    assert PASSWORD not in result.output
