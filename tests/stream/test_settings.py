"""Settings from the environment: typed, and a misspelled SENTISTREAM_* name is an error that names it."""

from __future__ import annotations

import string
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.settings import OTHER_VARIABLES, PREFIX, Settings, SettingsError


def test_a_misspelled_variable_is_rejected_with_the_closest_real_name() -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"SENTISTREAM_BATCH_SIZ": "32"})
    message = str(raised.value)
    assert "SENTISTREAM_BATCH_SIZ " in message and "did you mean SENTISTREAM_BATCH_SIZE?" in message


def test_an_unknown_name_with_no_close_setting_is_still_named() -> None:
    with pytest.raises(SettingsError, match="SENTISTREAM_QQQQQQQQQQQQQQQQ"):
        Settings.from_env({"SENTISTREAM_QQQQQQQQQQQQQQQQ": "1"})


def test_variables_read_outside_settings_and_other_prefixes_pass() -> None:
    env = {name: "/tmp/x" for name in OTHER_VARIABLES} | {"PATH": "/usr/bin", "SENTISTREAMX": "1"}
    assert Settings.from_env(env) == Settings()


def test_values_are_converted_to_their_field_types() -> None:
    settings = Settings.from_env({
        "SENTISTREAM_WINDOWS": " 1m, 5m ,,1h",
        "SENTISTREAM_MEDIA_ALLOW_HOSTS": "a.example,b.example:8080",
        "SENTISTREAM_KAFKA_IS_TANSU": "yes",
        "SENTISTREAM_MEDIA_TIMEOUT_S": "2.5",
        "SENTISTREAM_BATCH_SIZE": "7",
        "SENTISTREAM_HOME": "~/sentistream-home",
        "SENTISTREAM_CHECKPOINT": "~/model.pt",
    })
    assert settings.windows == ("1m", "5m", "1h") and settings.window_lengths_s == (60, 300, 3600)
    assert settings.media_allow_hosts == ("a.example", "b.example:8080")
    assert settings.kafka_is_tansu is True and settings.media_timeout_s == 2.5 and settings.batch_size == 7
    assert settings.home == Path.home() / "sentistream-home"
    assert settings.run_dir == Path.home() / "sentistream-home" / "run"
    assert settings.checkpoint == Path.home() / "model.pt"


def test_an_empty_value_means_the_default() -> None:
    assert Settings.from_env({"SENTISTREAM_BATCH_SIZE": "", "SENTISTREAM_KAFKA": ""}) == Settings()


@pytest.mark.parametrize(("name", "value"), [
    ("SENTISTREAM_BATCH_SIZE", "abc"),
    ("SENTISTREAM_BATCH_SIZE", "0"),
    ("SENTISTREAM_SCORING", "maybe"),
    ("SENTISTREAM_MEDIA_TIMEOUT_S", "fast"),
    ("SENTISTREAM_DEVICE", "tpu"),
    ("SENTISTREAM_WINDOWS", "1m,1x"),
])
def test_a_bad_value_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_construction_in_code_ignores_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTISTREAM_BATCH_SIZE", "3")
    assert Settings().batch_size == 64 and Settings(batch_size=5).batch_size == 5
    assert Settings.from_env().batch_size == 3


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValueError):
        settings.batch_size = 1  # type: ignore[misc]
    assert hash(settings) == hash(Settings())


@given(st.text(alphabet=string.ascii_uppercase + string.digits + "_", min_size=1, max_size=30))
def test_every_prefixed_name_is_a_setting_or_rejected_by_name(suffix: str) -> None:
    name = PREFIX + suffix
    known = name in Settings.variable_names() or name in OTHER_VARIABLES
    try:
        Settings.from_env({name: ""})
    except SettingsError as exc:
        assert not known and name in str(exc)
    else:
        assert known


@given(st.integers(min_value=1, max_value=10**12))
def test_any_positive_integer_text_is_a_batch_size(n: int) -> None:
    assert Settings.from_env({"SENTISTREAM_BATCH_SIZE": f" {n} "}).batch_size == n


@given(st.lists(st.sampled_from(["30s", "1m", "5m", "1h", "1d"]), min_size=1, max_size=5))
def test_comma_separated_windows_round_trip(windows: list[str]) -> None:
    assert Settings.from_env({"SENTISTREAM_WINDOWS": ",".join(windows)}).windows == tuple(windows)
