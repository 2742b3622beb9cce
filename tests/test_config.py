"""Configuration: file < environment < flags, and errors that name the key."""
from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import pytest

from server.cli import build_parser, flag_overrides
from server.cli import main as server_main
from server.config import ConfigError, ServerConfig, apply_reload, field_names, load_config

REPO = Path(__file__).resolve().parent.parent


def write_ini(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "server.ini"
    path.write_text(text)
    return path


def flags(*argv: str) -> dict:
    return flag_overrides(build_parser().parse_args(list(argv)))


def test_empty_file_and_environment_give_the_defaults(tmp_path):
    assert load_config(write_ini(tmp_path, "[server]\n"), env={}) == ServerConfig()


def test_file_then_environment_then_flags(tmp_path):
    ini = write_ini(tmp_path, "[server]\nport = 9000\npool_threads = 3\nlog_level = debug\nheartbeat_timeout = 45\n")
    env = {"MEETING_PORT": "9100", "MEETING_POOL_THREADS": "5"}
    config = load_config(ini, env=env, overrides=flags("--port", "9200"))
    assert config.port == 9200            # flag beats environment and file
    assert config.pool_threads == 5            # environment beats file
    assert config.heartbeat_timeout == 45.0  # file beats default
    assert config.log_level == "DEBUG"    # normalised
    assert config.host == "127.0.0.1"     # default


def test_set_flag_reaches_any_key_and_named_flags_win(tmp_path):
    config = load_config(write_ini(tmp_path, ""), env={"MEETING_SCRYPT_N": "2048"},
                         overrides=flags("--set", "scrypt_n=1024", "--set", "port=1", "--port", "2"))
    assert config.scrypt_n == 1024
    assert config.port == 2


def test_config_file_from_environment(tmp_path):
    ini = write_ini(tmp_path, "[server]\nport = 9300\n")
    assert load_config(None, env={"MEETING_CONFIG": str(ini)}).port == 9300


def test_test_suite_variables_are_not_server_keys(tmp_path):
    config = load_config(write_ini(tmp_path, ""), env={"MEETING_TEST_MYSQL_URL": "mysql://x@y/z"})
    assert config.port == 8600


def test_unknown_key_in_file_names_it(tmp_path):
    ini = write_ini(tmp_path, "[server]\nheartbeat_timout = 40\n")
    with pytest.raises(ConfigError, match="unknown configuration key 'heartbeat_timout'.*server.ini"):
        load_config(ini, env={})


def test_unknown_key_in_environment_names_it(tmp_path):
    with pytest.raises(ConfigError, match="'prot'.*environment"):
        load_config(write_ini(tmp_path, ""), env={"MEETING_PROT": "1"})


def test_unknown_key_on_the_command_line_names_it():
    with pytest.raises(ConfigError, match="'colour'"):
        flags("--set", "colour=blue")
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        flags("--set", "port")


def test_unknown_section_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"\[database\]"):
        load_config(write_ini(tmp_path, "[database]\nurl = x\n"), env={})


@pytest.mark.parametrize("key, value, why", [
    ("port", "eighty", "not a valid int"),
    ("port", "70000", "0-65535"),
    ("pool_threads", "0", "at least 1"),
    ("workers", "0", "at least 1"),
    ("redis", "localhost:6379", "redis://"),
    ("advertise", "node-a", "host:port"),
    ("heartbeat_interval", "1.5x", "not a valid float"),
    ("heartbeat_timeout", "5", "longer than heartbeat_interval"),
    ("log_level", "LOUD", "one of"),
    ("db", "postgres://x", "sqlite:///path"),
    ("scrypt_n", "1000", "power of two"),
    ("output_high_water", "10", "output_low_water < output_high_water"),
    ("tls_cert", "/nonexistent/cert.pem", "tls_cert"),
    ("shutdown_timeout", "0", "positive"),
    ("file_window", "100000", "at least one file chunk"),
])
def test_bad_values_name_the_key(tmp_path, key, value, why):
    ini = write_ini(tmp_path, f"[server]\n{key} = {value}\n")
    with pytest.raises(ConfigError) as info:
        load_config(ini, env={})
    message = str(info.value)
    assert f"'{key}'" in message and why in message


def test_bad_value_in_environment_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match="'workers'.*'many'.*auto"):
        load_config(write_ini(tmp_path, ""), env={"MEETING_WORKERS": "many"})


def test_unreadable_or_broken_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.ini", env={})
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(write_ini(tmp_path, "port = 1\n"), env={})


def test_derived_paths(tmp_path):
    config = load_config(write_ini(tmp_path, f"[server]\ndata_dir = {tmp_path}\n"), env={})
    assert config.spool_path == tmp_path / "spool"
    assert config.admin_socket_path == tmp_path / "admin.sock"


def test_reload_applies_runtime_keys_and_lists_the_rest():
    current = ServerConfig()
    new = ServerConfig(log_level="DEBUG", heartbeat_timeout=60.0, port=9999)
    applied, need_restart = apply_reload(current, new)
    assert sorted(applied) == ["heartbeat_timeout", "log_level"]
    assert need_restart == ["port"]
    assert current.log_level == "DEBUG" and current.port == 8600


def test_every_key_is_documented_and_in_the_example():
    operations = (REPO / "docs" / "OPERATIONS.md").read_text()
    example = (REPO / "scripts" / "server.ini.example").read_text()
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", operations, re.MULTILINE))
    in_example = set(re.findall(r"^[#;]? ?([a-z_]+) =", example, re.MULTILINE))
    missing_doc = [k for k in field_names() if k not in documented]
    missing_example = [k for k in field_names() if k not in in_example]
    assert not missing_doc, f"keys missing from docs/OPERATIONS.md: {missing_doc}"
    assert not missing_example, f"keys missing from scripts/server.ini.example: {missing_example}"


def test_example_config_loads(tmp_path):
    example = (REPO / "scripts" / "server.ini.example").read_text()
    config = load_config(write_ini(tmp_path, example), env={})
    assert config.port == 8600


def test_workers_is_a_process_count_or_auto(tmp_path):
    mysql = "mysql://u@127.0.0.1/meeting"
    config = load_config(write_ini(tmp_path, ""), env={},
                         overrides=flags("--workers", "auto", "--redis", "redis://127.0.0.1:6379", "--db", mysql))
    assert config.workers == (os.cpu_count() or 1)
    assert load_config(write_ini(tmp_path, ""), env={}).workers == 1


def test_node_name_defaults_to_the_host_name(tmp_path):
    config = load_config(write_ini(tmp_path, ""), env={})
    assert config.node_name == socket.gethostname()
    assert config.advertise == ""


@pytest.mark.parametrize("argv, why", [
    (("--workers", "2", "--redis", "redis://127.0.0.1:6379"), "workers = 2 needs a shared MySQL database"),
    (("--redis", "redis://127.0.0.1:6379"), "redis needs a shared MySQL database"),
    (("--workers", "3", "--db", "mysql://u@127.0.0.1/meeting"), "workers = 3 needs redis = redis://"),
])
def test_a_cluster_without_mysql_or_redis_is_refused(tmp_path, argv, why):
    with pytest.raises(ConfigError, match=why):
        load_config(write_ini(tmp_path, ""), env={}, overrides=flags(*argv))


def test_the_refusal_reaches_the_operator_at_start(tmp_path, capsys):
    code = server_main(["--config", str(write_ini(tmp_path, "")), "--workers", "2", "--redis", "redis://127.0.0.1:6379",
                        "--db", f"sqlite:///{tmp_path}/m.db", "--data-dir", str(tmp_path)])
    assert code == 2
    assert "workers = 2 needs a shared MySQL database" in capsys.readouterr().err
