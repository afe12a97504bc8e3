"""Fixtures of the server tests: tiny models built once per session and an app with small limits."""

import pytest
from fastapi.testclient import TestClient

from pipelines.serve import create_app
from tests.unit.pipelines.serve.helpers import LIMITS, all_models


@pytest.fixture(scope="session")
def models() -> dict:
    return all_models()


@pytest.fixture(scope="session")
def app(models):
    return create_app(models, limits=LIMITS)


@pytest.fixture
def client(app):
    with TestClient(app) as c:
        yield c
