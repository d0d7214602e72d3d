"""Structure of docker/compose.yaml (no compose plugin or engine on the dev machines)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

DOCKER = Path(__file__).resolve().parents[1] / "docker"


def load(name: str) -> dict:
    return yaml.safe_load((DOCKER / name).read_text())


def test_compose_services():
    c = load("compose.yaml")
    s = c["services"]
    assert set(s) == {"postgres", "mlflow", "api", "ray-head", "ray-worker"}
    mlflow = " ".join(s["mlflow"]["command"])
    assert "mlflow server" in mlflow and "--serve-artifacts" in mlflow
    assert "postgresql://" in mlflow and "@postgres:5432/" in mlflow
    assert any(v.startswith("mlartifacts:") for v in s["mlflow"]["volumes"])
    api = s["api"]["command"]
    assert api[:2] == ["recipe-search", "serve"] and "0.0.0.0" in api
    assert api[api.index("--tracking-uri") + 1] == "http://mlflow:5000"
    assert "--head" in s["ray-head"]["command"] and "--block" in s["ray-head"]["command"]
    assert "--address=ray-head:6379" in s["ray-worker"]["command"]
    for name in ("ray-head", "ray-worker"):
        assert s[name]["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert s["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert s["api"]["depends_on"]["mlflow"]["condition"] == "service_healthy"
    for svc in s.values():  # every service uses an image, built ones from docker/Dockerfile
        assert "image" in svc
        if "build" in svc:
            assert svc["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
            assert (DOCKER.parent / "docker" / "Dockerfile").exists()
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:")  # nothing published beyond loopback
    assert set(c["volumes"]) >= {"pgdata", "mlartifacts", "rsdata"}


def test_gpu_overlay_and_dockerfile():
    g = load("compose.gpu.yaml")
    for name in ("ray-head", "ray-worker"):
        svc = g["services"][name]
        assert svc["build"]["args"]["BASE"].startswith("nvidia/cuda:")
        assert svc["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    df = (DOCKER / "Dockerfile").read_text()
    assert "ARG BASE=python:3.11-slim" in df and "FROM ${BASE}" in df
    assert "pip install" in df and "USER rs" in df


def test_compose_matches_spec_schema():
    """Validate against the Compose Specification schema when one is available
    ($COMPOSE_SPEC_SCHEMA: path to compose-spec.json) or `docker compose` works."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        r = subprocess.run([docker, "compose", "-f", str(DOCKER / "compose.yaml"), "config", "-q"],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return
    path = os.environ.get("COMPOSE_SPEC_SCHEMA")
    if not path:
        pytest.skip("no `docker compose` plugin and no $COMPOSE_SPEC_SCHEMA")
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(Path(path).read_text())
    for name in ("compose.yaml", "compose.gpu.yaml"):
        errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(load(name))]
        assert not errors, (name, errors)
