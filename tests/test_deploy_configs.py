"""The shipped Dagster instance configurations load against Dagster's own schemas.

No cluster runs here, so the scale-out samples are validated by loading: every ``dagster.yaml``
through ``dagster_instance_config`` (the function ``DagsterInstance`` uses), the Docker run
launcher by constructing it from its config, and the Helm ``values.yaml`` by rendering its run
launcher and concurrency sections the way the chart's instance ConfigMap does and validating
them against ``K8sRunLauncher``'s and the instance's config schemas.
"""

import re
from pathlib import Path

import pytest
import yaml
from dagster._config import validate_config
from dagster._core.instance.config import (
    dagster_instance_config,
    dagster_instance_config_schema,
)
from dagster._serdes import ConfigurableClassData

from pipeline.definitions import _DAGSTER_YAML

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
PG_ENV = {"DAGSTER_PG_HOST": "db.internal", "DAGSTER_PG_PORT": "5433", "DAGSTER_PG_USER": "dagster",
          "DAGSTER_PG_PASSWORD": "s3cr:t", "DAGSTER_PG_DB": "dagster"}
ENV_FIELDS = {"hostname": "DAGSTER_PG_HOST", "port": "DAGSTER_PG_PORT", "username": "DAGSTER_PG_USER",
              "password": "DAGSTER_PG_PASSWORD", "db_name": "DAGSTER_PG_DB"}
#: Top-level keys of Dagster's Helm chart (its values.schema.json) that the sample may set.
HELM_TOP_LEVEL = {"dagsterWebserver", "dagster-user-deployments", "postgresql", "generatePostgresqlPasswordSecret",
                  "generateCeleryConfigSecret", "rabbitmq", "redis", "flower", "ingress", "imagePullSecrets",
                  "computeLogManager", "scheduler", "runLauncher", "pythonLogs", "dagsterDaemon", "busybox",
                  "migrate", "telemetry", "serviceAccount", "global", "retention", "additionalInstanceConfig",
                  "concurrency"}


def _load(tmp_path: Path, text: str) -> dict:
    (tmp_path / "dagster.yaml").write_text(text)
    config, custom_class = dagster_instance_config(str(tmp_path))
    assert custom_class is None
    return config


@pytest.fixture()
def pg_env(monkeypatch):
    for key, value in PG_ENV.items():
        monkeypatch.setenv(key, value)


@pytest.mark.parametrize("name", ["dagster.postgres.yaml", "dagster.docker.yaml"])
def test_instance_yaml_is_valid_and_keeps_run_safety(tmp_path, name):
    config = _load(tmp_path, (DEPLOY / name).read_text())
    default = _load(tmp_path, _DAGSTER_YAML)
    # the same run queue, tag limit, pools and retention as the laptop instance
    assert config["concurrency"] == default["concurrency"]
    assert config["retention"] == default["retention"]
    # credentials are environment references, never literals
    db = config["storage"]["postgres"]["postgres_db"]
    assert {key: db[key] for key in ENV_FIELDS} == {key: {"env": env} for key, env in ENV_FIELDS.items()}


def test_postgres_url_is_built_from_the_environment(tmp_path, pg_env):
    from dagster._config import process_config
    from dagster_postgres.utils import pg_config, pg_url_from_config

    config = _load(tmp_path, (DEPLOY / "dagster.postgres.yaml").read_text())
    processed = process_config(pg_config(), config["storage"]["postgres"])
    assert processed.success, processed.errors
    # the password is quoted; the psycopg2 driver is named (SQLAlchemy 2.1 would pick psycopg 3)
    assert pg_url_from_config(processed.value) == "postgresql+psycopg2://dagster:s3cr%3At@db.internal:5433/dagster"


def test_a_misspelt_key_is_rejected(tmp_path):
    text = (DEPLOY / "dagster.postgres.yaml").read_text().replace("tag_concurrency_limits", "tag_concurency_limits")
    with pytest.raises(Exception, match="tag_concurency_limits"):
        _load(tmp_path, text)


def test_docker_run_launcher_is_built_from_the_sample(tmp_path, pg_env, monkeypatch):
    dagster_docker = pytest.importorskip("dagster_docker")
    from dagster._core.launcher import RunLauncher

    monkeypatch.setenv("DAGSTER_RUN_IMAGE", "registry.example.com/trading-pipeline:0.1.0")
    monkeypatch.setenv("DAGSTER_DOCKER_NETWORK", "trading")
    launcher_cfg = _load(tmp_path, (DEPLOY / "dagster.docker.yaml").read_text())["run_launcher"]
    launcher = ConfigurableClassData(launcher_cfg["module"], launcher_cfg["class"],
                                     yaml.safe_dump(launcher_cfg["config"])).rehydrate(RunLauncher)
    assert isinstance(launcher, dagster_docker.DockerRunLauncher)
    assert launcher.image == "registry.example.com/trading-pipeline:0.1.0"
    assert launcher.networks == ["trading"]
    # runs get the storage credentials and the backfill event settings
    assert set(PG_ENV) <= set(launcher.env_vars)
    assert "DAGSTER_EVENT_BATCH_SIZE=1000" in launcher.env_vars


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _k8s_launcher_config(values: dict) -> dict:
    """The K8sRunLauncher config the chart's instance ConfigMap renders from ``values``."""
    section = values["runLauncher"]["config"]["k8sRunLauncher"]
    config = {}
    for key, value in section.items():
        if key in ("envSecrets", "envConfigMaps"):
            value = [item["name"] for item in value]
        config[_snake(key)] = value
    # what the chart adds itself
    config.update(instance_config_map="trading-dagster-instance", postgres_password_secret=values["global"]["postgresqlSecretName"])
    return config


def test_helm_values_render_valid_k8s_run_launcher_config():
    dagster_k8s = pytest.importorskip("dagster_k8s")
    values = yaml.safe_load((DEPLOY / "values.yaml").read_text())
    assert set(values) <= HELM_TOP_LEVEL
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    result = validate_config(dagster_k8s.K8sRunLauncher.config_type(), _k8s_launcher_config(values))
    assert result.success, [e.message for e in result.errors]
    # a misspelt key would be caught the same way
    bad = {**_k8s_launcher_config(values), "job_namepsace": "x"}
    assert not validate_config(dagster_k8s.K8sRunLauncher.config_type(), bad).success


def test_helm_values_keep_run_safety_and_point_at_the_code_location():
    values = yaml.safe_load((DEPLOY / "values.yaml").read_text())
    runs, pools = values["concurrency"]["runs"], values["concurrency"]["pools"]
    rendered = {"concurrency": {"runs": {"max_concurrent_runs": runs["maxConcurrentRuns"],
                                         "tag_concurrency_limits": runs["tagConcurrencyLimits"]},
                                "pools": {"default_limit": pools["defaultLimit"]}}}
    assert validate_config(dagster_instance_config_schema(), rendered).success
    assert rendered["concurrency"] == yaml.safe_load(_DAGSTER_YAML)["concurrency"]
    assert values["postgresql"]["enabled"] is False and values["generatePostgresqlPasswordSecret"] is False
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    module = deployment["dagsterApiGrpcArgs"][deployment["dagsterApiGrpcArgs"].index("--module-name") + 1]
    assert module == "pipeline.definitions"


def test_documented_env_vars_exist_in_operations_doc():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "operations.md").read_text()
    names = set(re.findall(r"\{env: (\w+)\}", (DEPLOY / "dagster.docker.yaml").read_text()))
    assert names and all(name in doc for name in names), names - {n for n in names if n in doc}

