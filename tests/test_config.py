"""fastflow.cli.config: defaults, TOML, environment and command-line overrides, validation messages."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from fastflow.cli.config import Config, ConfigError, load_config

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "config.example.toml"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "fastflow.toml"
    p.write_text(text)
    return p


def test_defaults() -> None:
    c = load_config(env={})
    assert (c.collector.bind, c.collector.port, c.collector.rcvbuf, c.collector.batch,
            c.collector.reuseport) == ("0.0.0.0", 6343, 8388608, 1024, False)
    assert (c.store.depth, c.store.polling_interval) == (2, 10.0)
    assert c.expire_after == 30.0             # 3 polling intervals
    assert (c.api.bind, c.api.port, c.api.token) == ("127.0.0.1", 8008, "")
    assert c.scaler == {} and c.flows == {} and c.log.level == "info"


def test_example_file_loads_and_matches_defaults() -> None:
    c = load_config(EXAMPLE, env={})
    d = load_config(env={})
    assert c.collector == d.collector and c.api == d.api and c.log == d.log
    assert c.store.depth == d.store.depth and c.expire_after == d.expire_after
    raw = tomllib.loads(EXAMPLE.read_text())
    # every typed key is documented in the example
    for section, obj in (("collector", d.collector), ("api", d.api), ("log", d.log)):
        assert set(raw[section]) == set(vars(obj)), section
    assert "expire_after" in EXAMPLE.read_text()
    assert c.scaler["enabled"] is False and c.flows["enabled"] is True


def test_file_values(tmp_path: Path) -> None:
    p = write(tmp_path, """
[collector]
bind = "::"
port = 16343
reuseport = true
[store]
polling_interval = 5
depth = 8
[api]
port = 0
token = "abc"
[log]
level = "DEBUG"
[scaler]
enabled = true
[[scaler.services]]
service = "apache"
[flows]
definition_ttl = 60
""")
    c = load_config(p, env={})
    assert c.collector.bind == "::" and c.collector.port == 16343 and c.collector.reuseport
    assert c.store.polling_interval == 5.0 and isinstance(c.store.polling_interval, float)
    assert c.expire_after == 15.0
    assert c.api.port == 0 and c.api.token == "abc" and c.log.level == "debug"
    assert c.scaler == {"enabled": True, "services": [{"service": "apache"}]}
    assert c.flows == {"definition_ttl": 60}
    assert c.source == str(p)
    assert c.to_dict()["api"]["token"] == "***"


def test_explicit_expire_after(tmp_path: Path) -> None:
    c = load_config(write(tmp_path, "[store]\nexpire_after = 12.5\n"), env={})
    assert c.expire_after == 12.5


def test_env_overrides_file(tmp_path: Path) -> None:
    p = write(tmp_path, "[api]\nport = 9000\n")
    env = {"FASTFLOW_API_PORT": "8009", "FASTFLOW_COLLECTOR_REUSEPORT": "yes",
           "FASTFLOW_STORE_EXPIRE_AFTER": "45", "FASTFLOW_SCALER_ENABLED": "true",
           "FASTFLOW_SCALER_TOKEN": "tok en", "FASTFLOW_LOG_LEVEL": "warning",
           # variables of other tools are ignored
           "FASTFLOW_PURE_PYTHON": "1", "FASTFLOW_CORPUS": "/x", "HOME": "/root"}
    c = load_config(p, env=env)
    assert c.api.port == 8009 and c.collector.reuseport is True
    assert c.expire_after == 45.0 and c.log.level == "warning"
    assert c.scaler == {"enabled": True, "token": "tok en"}


def test_cli_overrides_env(tmp_path: Path) -> None:
    c = load_config(None, env={"FASTFLOW_API_PORT": "8009"},
                    overrides={"api.port": 7000, "collector.port": "0", "collector.bind": None})
    assert c.api.port == 7000 and c.collector.port == 0 and c.collector.bind == "0.0.0.0"
    # pass-through values from code are kept as given (only environment text is parsed)
    c = load_config(None, env={}, overrides={"scaler.token": "true", "scaler.enabled": False})
    assert c.scaler == {"token": "true", "enabled": False}


@pytest.mark.parametrize("text, message", [
    ("[collector]\nport = 70000\n", r"\[collector\] port: 70000 is not a port number"),
    ("[collector]\nport = \"6343\"\n", r"\[collector\] port \(file\): expected an integer"),
    ("[collector]\nport = true\n", "expected an integer"),
    ("[collector]\nprot = 1\n", r"unknown key 'prot' in \[collector\].*did you mean 'port'"),
    ("[colector]\nport = 1\n", r"unknown section \[colector\].*did you mean 'collector'"),
    ("[collector]\nbatch = 0\n", r"\[collector\] batch"),
    ("[collector]\nrcvbuf = -1\n", r"\[collector\] rcvbuf"),
    ("[collector]\nreuseport = 1\n", "expected true or false"),
    ("[collector]\nbind = \"not an address!\"\n", "not an IP address or host name"),
    ("[store]\ndepth = 1\n", r"\[store\] depth"),
    ("[store]\npolling_interval = 0\n", r"\[store\] polling_interval"),
    ("[store]\npolling_interval = nan\n", "finite"),
    ("[store]\nexpire_after = -3\n", r"\[store\] expire_after"),
    ("[api]\ntoken = 5\n", "expected a string"),
    ("[api]\ntoken = \"a b\"\n", "whitespace"),
    ("[log]\nlevel = \"loud\"\n", r"\[log\] level: 'loud' is not one of"),
    ("port = 6343\n", "must be a \\[section\\] table"),
    ("[collector\n", "not valid TOML"),
])
def test_validation_messages(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text), env={})


@pytest.mark.parametrize("env, message", [
    ({"FASTFLOW_API_PORT": "eighty"}, r"\[api\] port \(environment FASTFLOW_API_PORT\): cannot read"),
    ({"FASTFLOW_COLLECTOR_REUSEPORT": "maybe"}, "cannot read 'maybe' as bool"),
    ({"FASTFLOW_STORE_DEPHT": "3"}, "did you mean 'depth'"),
])
def test_env_validation(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(env=env)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config("/nonexistent/fastflow.toml", env={})


def test_config_error_is_value_error() -> None:
    assert issubclass(ConfigError, ValueError)
    assert isinstance(Config(), Config)


def test_origins_name_each_source(tmp_path: Path) -> None:
    f = tmp_path / "f.toml"
    f.write_text("[collector]\nport = 6400\n[flows]\nenabled = false\n")
    c = load_config(f, env={"FASTFLOW_API_PORT": "8010", "FASTFLOW_LOG_FORMAT": "JSON"},
                    overrides={"store.depth": 8})
    assert c.origin("collector", "port") == f"file {f}"
    assert c.origin("flows", "enabled") == f"file {f}"
    assert c.origin("api", "port") == "env FASTFLOW_API_PORT"
    assert c.origin("store", "depth") == "flag"
    assert c.origin("collector", "batch") == "default"
    assert c.log.format == "json"
    rows = {(s, k): (v, src) for s, k, v, src in c.effective()}
    assert rows[("api", "port")] == (8010, "env FASTFLOW_API_PORT")
    assert rows[("store", "expire_after")][1].startswith("default")


def test_log_format_is_checked() -> None:
    with pytest.raises(ConfigError, match=r"\[log\] format: 'xml' is not one of text, json"):
        load_config(env={"FASTFLOW_LOG_FORMAT": "xml"})
def test_collector_bounds_and_allow_list(tmp_path: Path) -> None:
    p = write(tmp_path, '[collector]\nagents = ["10.0.0.0/8", "2001:db8::/32"]\nmax_sources = 1000\n'
                        "dt_tolerance = -1\n")
    c = load_config(p, env={"FASTFLOW_COLLECTOR_MAX_AGENTS": "50"})
    assert c.collector.agents == ["10.0.0.0/8", "2001:db8::/32"]
    assert (c.collector.max_sources, c.collector.max_agents, c.collector.max_streams) == \
        (1000, 50, 131072)
    assert c.collector.dt_tolerance == -1.0
    env = load_config(env={"FASTFLOW_COLLECTOR_AGENTS": "10.1.0.0/16, 192.0.2.7"})
    assert env.collector.agents == ["10.1.0.0/16", "192.0.2.7"]
    assert load_config(env={}).collector.agents == []
    with pytest.raises(ConfigError, match=r"\[collector\] agents: 'nope' is not an address"):
        load_config(write(tmp_path, '[collector]\nagents = ["nope"]\n'), env={})
    with pytest.raises(ConfigError, match="expected a list of strings"):
        load_config(write(tmp_path, "[collector]\nagents = [1]\n"), env={})
    with pytest.raises(ConfigError, match=r"\[collector\] max_sources"):
        load_config(env={"FASTFLOW_COLLECTOR_MAX_SOURCES": "0"})
