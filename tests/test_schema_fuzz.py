"""Schemathesis generates requests from the app's own OpenAPI schema.

No generated request may produce a 5xx or a response that contradicts the
schema. The requests go to a live server on 127.0.0.1 with an admin token,
so every operation is reached past authentication.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.conftest import service_token

# Limits such as the maximum page size are settings, so the schema cannot state
# them and a schema-valid request may get a documented 422; that check is off.
AUTH = {"Authorization": f"Bearer {service_token(scopes=('admin',))}"}
EXAMPLES_PER_OPERATION = 25


@pytest.mark.slow
def test_generated_requests_follow_schema(live_server: str) -> None:
    raw = httpx.get(f"{live_server}/docs/openapi.json").json()
    schema = schemathesis.openapi.from_dict(raw)
    schema.config.update(base_url=live_server)
    operations: list[Any] = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 10

    for operation in operations:
        check_operation(operation)


def check_operation(operation: Any) -> None:
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(case=operation.as_strategy())
    def run(case: Any) -> None:
        case.call_and_validate(headers=AUTH, excluded_checks=[positive_data_acceptance])

    run()
