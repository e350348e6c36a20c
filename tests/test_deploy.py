"""The deployment files read as their tools read them, and agree with the bot: the compose file,
the systemd unit, Prometheus' configuration and alert rules, Grafana's provisioning and dashboard,
every metric they name one the running bot exports."""

from __future__ import annotations

import configparser
import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bot.runtime import Runtime
from services.sender import DEFAULT_REQUEST_TIMEOUT
from standins.feed_server import FeedServer
from standins.telegram import FakeTelegramServer
from tests.test_token_pipeline_e2e import bot_on_feed

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
# Runtime.stop: polling is given 10 s to end, then the sends in flight their request timeout.
STOP_BUDGET = 10 + DEFAULT_REQUEST_TIMEOUT + Runtime.shutdown_drain_seconds
_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d)$")
_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
# Series Prometheus itself makes, or that the client library exports for every process.
NOT_OURS = {"up", "process_resident_memory_bytes", "process_start_time_seconds", "process_cpu_seconds_total"}


def seconds(text: str) -> float:
    match = _DURATION.match(str(text))
    assert match, text
    return int(match.group(1)) * _SECONDS[match.group(2)]


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def compose() -> dict[str, Any]:
    return load_yaml(ROOT / "docker-compose.yml")


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(DEPLOY / "prometheus" / "alerts.yml")["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    return json.loads((DEPLOY / "grafana" / "dashboards" / "alertbot.json").read_text())


def test_compose_takes_passwords_from_the_environment_and_stops_gracefully() -> None:
    services = compose()["services"]
    redis, postgres, bot = services["redis"], services["postgres"], services["bot"]
    assert "--requirepass" in " ".join(redis["command"]) and "$$REDIS_PASSWORD" in " ".join(redis["command"])
    assert redis["environment"]["REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?")
    assert postgres["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    assert "${REDIS_PASSWORD" in bot["environment"]["REDIS_URL"]
    assert "${POSTGRES_PASSWORD" in bot["environment"]["DATABASE_URL"]
    assert "alertbot:alertbot@" not in json.dumps(services)  # no password written in the file
    assert seconds(bot["stop_grace_period"]) > STOP_BUDGET
    assert bot["hostname"] and bot["environment"]["CONSUMER_NAME"]  # a stable consumer name
    for name, service in services.items():
        logging = service["logging"]
        assert logging["driver"] == "json-file" and logging["options"]["max-size"], name
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"]
        for volume in services[name]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), source
    token_file = re.search(r"> (\S+metrics_token)", " ".join(services["prometheus"]["entrypoint"]))
    assert token_file is not None
    scrape = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    [job] = scrape["scrape_configs"]
    assert job["authorization"]["credentials_file"] == token_file.group(1)
    assert job["static_configs"][0]["targets"] == ["bot:8080"]
    assert scrape["rule_files"] == ["/etc/prometheus/alerts.yml"]


def test_systemd_unit_restarts_on_failure_and_waits_for_the_drain() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string((DEPLOY / "alertbot.service").read_text())
    service = unit["Service"]
    assert service["Restart"] == "on-failure"
    assert float(service["TimeoutStopSec"]) > seconds(compose()["services"]["bot"]["stop_grace_period"])
    assert service["EnvironmentFile"].startswith("/etc/")
    assert service["User"] not in ("", "root") and service["ExecStart"].endswith("alertbot run")
    assert service["RestartPreventExitStatus"] == "2"  # a bad setting is not fixed by restarting
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_alert_rules_are_complete() -> None:
    rules = alert_rules()
    assert len(rules) >= 10
    assert len({rule["alert"] for rule in rules}) == len(rules)
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["expr"].strip() and rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]
        if "for" in rule:
            seconds(rule["for"])


def test_grafana_provisions_the_datasource_the_dashboard_uses() -> None:
    [source] = load_yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    [provider] = load_yaml(DEPLOY / "grafana" / "provisioning" / "dashboards" / "alertbot.yml")["providers"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in compose()["services"]["grafana"]["volumes"] if ":" in v}
    assert mounts[provider["options"]["path"]] == "./deploy/grafana/dashboards"
    board = dashboard()
    assert board["uid"] and board["title"]
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    graphs = [panel for panel in board["panels"] if panel["type"] != "row"]
    assert len(graphs) >= 20
    for panel in graphs:
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
        assert panel["targets"] and all(target["expr"].strip() for target in panel["targets"]), panel["title"]


def referenced_metrics() -> set[str]:
    exprs = [rule["expr"] for rule in alert_rules()]
    exprs += [t["expr"] for panel in dashboard()["panels"] for t in panel.get("targets", [])]
    names: set[str] = set()
    for expr in exprs:
        names.update(re.findall(r"\b(?:alertbot|process)_[a-z0-9_]+\b", expr))
    return names


async def test_every_metric_the_dashboard_and_rules_name_is_exported(
    redis_url: str, database_url: str, tmp_path: Path
) -> None:
    async with FakeTelegramServer() as telegram, FeedServer([]) as feed:
        async with bot_on_feed(feed, telegram, redis_url, database_url, tmp_path, []) as runtime:
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{runtime.http_port}/metrics") as response:
                    text = await response.text()
    exported: set[str] = set()
    for family in text_string_to_metric_families(text):
        exported.add(family.name)
        exported.update(sample.name for sample in family.samples)
        if family.type == "counter":
            exported.add(family.name + "_total")
        if family.type == "histogram":
            exported.update(family.name + suffix for suffix in ("_bucket", "_count", "_sum"))
    missing = sorted(name for name in referenced_metrics() - exported if name not in NOT_OURS)
    assert missing == [], missing
    assert len(referenced_metrics()) >= 25
