from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from activecall.config import ConfigError, load_config, masked, to_toml

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parents[2]
ACTIVECALL = str(Path(sys.executable).parent / "activecall")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "active-call.toml"
    path.write_text(text)
    return path


def problems_of(path: Path, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env or {})
    return info.value.problems


def test_defaults_without_a_file() -> None:
    config = load_config(None, env={})
    assert config.udp_port == 5060
    assert config.handler.type == "playbook"
    assert config.handler.default == "greeting.md"
    assert config.redis.url == "redis://127.0.0.1:6379/0"


def test_guide_example_with_playbook_handler_loads_unchanged() -> None:
    config = load_config(DATA / "guide-playbook.toml", env={})
    assert (config.addr, config.udp_port, config.tls_port) == ("0.0.0.0", 5060, 5061)
    assert (config.tls_cert_file, config.tls_key_file) == ("./certs/cert.pem", "./certs/key.pem")
    assert config.enable_srtp is True
    assert config.external_ip == "YOUR_PUBLIC_IP"
    assert (config.rtp_start_port, config.rtp_end_port) == (12000, 42000)
    assert (config.http_host, config.http_port) == ("0.0.0.0", 8080)
    (reg,) = config.sip_registrations
    assert (reg.name, reg.username, reg.password) == ("twilio", "active-call", "strongpassword")
    assert reg.server == reg.realm == "yourdomain.pstn.twilio.com"
    assert (config.handler.type, config.handler.default) == ("playbook", "greeting.md")


def test_guide_example_with_webhook_handler_loads_unchanged() -> None:
    config = load_config(DATA / "guide-webhook.toml", env={})
    assert config.handler.type == "webhook"
    assert config.handler.url == "http://localhost:8090/twilio-inbound"
    assert config.handler.method == "POST"


def test_the_repository_default_config_loads() -> None:
    config = load_config(REPO / "active-call.toml", env={})
    assert config.handler.default == "greeting.md"


def test_misspelt_key_names_the_closest_known_key(tmp_path: Path) -> None:
    path = write(tmp_path, 'tls_port = 5061\ntls_cert_fil = "c.pem"\ntls_key_file = "k.pem"\n')
    problems = problems_of(path)
    assert any("tls_cert_fil: unknown key; did you mean tls_cert_file?" in p for p in problems), problems


def test_misspelt_key_inside_a_section(tmp_path: Path) -> None:
    problems = problems_of(write(tmp_path, '[redis]\nulr = "redis://x"\n'))
    assert problems == ["redis.ulr: unknown key; did you mean url?"]


def test_misspelt_key_in_an_array_of_tables(tmp_path: Path) -> None:
    text = '[[sip_registrations]]\nname="a"\nusername="u"\npasword="p"\nserver="s"\n'
    problems = problems_of(write(tmp_path, text))
    assert "sip_registrations[0].pasword: unknown key; did you mean password?" in problems
    assert "sip_registrations[0].password: required key is missing" in problems


def test_wrong_type_names_the_key_and_the_expected_type(tmp_path: Path) -> None:
    problems = problems_of(write(tmp_path, 'udp_port = "5060"\nenable_srtp = 1\n'))
    assert "udp_port: expected an integer, got a string" in problems
    assert "enable_srtp: expected a boolean, got an integer" in problems


def test_bad_choice_suggests_a_valid_one(tmp_path: Path) -> None:
    problems = problems_of(write(tmp_path, '[handler]\ntype = "webhok"\nurl = "http://x"\n'))
    assert problems == [
        "handler.type: expected one of 'playbook', 'webhook', got 'webhok' (did you mean 'webhook'?)"
    ]


def test_webhook_handler_requires_a_url(tmp_path: Path) -> None:
    assert problems_of(write(tmp_path, '[handler]\ntype = "webhook"\n')) == [
        "handler.url: required when handler.type is 'webhook'"
    ]


def test_tls_port_requires_certificate_and_key(tmp_path: Path) -> None:
    assert problems_of(write(tmp_path, "tls_port = 5061\n")) == [
        "tls_port is set: tls_cert_file and tls_key_file are required"
    ]


def test_invalid_toml_is_reported(tmp_path: Path) -> None:
    (problem,) = problems_of(write(tmp_path, "udp_port = = 1\n"))
    assert problem.startswith("not valid TOML")


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "udp_port = 5060\n[redis]\nprefix = 'x:'\n")
    env = {
        "ACTIVECALL_UDP_PORT": "5070",
        "ACTIVECALL_ENABLE_SRTP": "true",
        "ACTIVECALL_REDIS__PREFIX": "y:",
        "ACTIVECALL_ACL__ALLOW": "54.172.60.0/30, 54.244.51.0/30",
        "REDIS_URL": "redis://127.0.0.1:7000/1",
        "ANTHROPIC_API_KEY": "sk-test",
    }
    config = load_config(path, env=env)
    assert config.udp_port == 5070
    assert config.enable_srtp is True
    assert config.redis.prefix == "y:"
    assert config.redis.url == "redis://127.0.0.1:7000/1"
    assert config.acl.allow == ["54.172.60.0/30", "54.244.51.0/30"]
    assert config.llm.api_key == "sk-test"


def test_unknown_or_mistyped_environment_variables_are_errors(tmp_path: Path) -> None:
    problems = problems_of(write(tmp_path, ""), env={"ACTIVECALL_UDP_PROT": "1", "ACTIVECALL_TLS_PORT": "x"})
    assert "environment ACTIVECALL_UDP_PROT: unknown key; did you mean ACTIVECALL_UDP_PORT?" in problems
    assert "environment ACTIVECALL_TLS_PORT: expected an integer, got 'x'" in problems


def test_masked_output_hides_secrets_and_round_trips() -> None:
    config = load_config(DATA / "guide-playbook.toml", env={"ANTHROPIC_API_KEY": "sk-secret"})
    text = to_toml(masked(config))
    assert "strongpassword" not in text and "sk-secret" not in text
    assert 'password = "********"' in text
    reloaded = load_config_from_text(text)
    assert reloaded.sip_registrations[0].username == "active-call"
    assert reloaded.tls_port == 5061


def load_config_from_text(text: str):  # type: ignore[no-untyped-def]
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as handle:
        handle.write(text)
    return load_config(handle.name, env={})


def test_check_config_command(tmp_path: Path) -> None:
    ok = subprocess.run(
        [ACTIVECALL, "check-config", str(DATA / "guide-playbook.toml")],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert ok.returncode == 0, ok.stderr
    assert 'tls_cert_file = "./certs/cert.pem"' in ok.stdout
    assert "strongpassword" not in ok.stdout
    bad = subprocess.run(
        [ACTIVECALL, "check-config", str(write(tmp_path, 'tls_cert_fil = "x"\n'))],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert bad.returncode == 1
    assert "did you mean tls_cert_file?" in bad.stderr


def test_a_media_priority_out_of_range_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"media.nice: must be between -20 and 19, got -30"):
        load_config(None, env={"ACTIVECALL_MEDIA__NICE": "-30"})
