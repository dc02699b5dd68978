"""Property-based fuzzing of every operation in the OpenAPI spec (schemathesis strategies + hypothesis)
against a real server: no input, valid or not, may produce a 5xx, 4xx answers carry a JSON ``detail``, and
every documented response matches its schema (``response_schema_conformance``: e.g. datetimes with offset),
and every status code answered is documented for its operation (``status_code_conformance``, issue #22).

(schemathesis' own pytest plugin does not run under pytest 9, so the strategies are driven directly.)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

schemathesis = pytest.importorskip(
    "schemathesis", reason="schemathesis not installed (pip install schemathesis)"
)
from apitest_support import Server, add_user, seed_warnings  # noqa: E402
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import response_schema_conformance, status_code_conformance  # noqa: E402

#: Examples per operation and mode (``CSPON_FUZZ_EXAMPLES`` scales them up for a longer run).
_SCALE = float(os.environ.get("CSPON_FUZZ_EXAMPLES", "1"))
EXAMPLES = {GenerationMode.POSITIVE: int(12 * _SCALE), GenerationMode.NEGATIVE: int(6 * _SCALE)}


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root: Path = tmp_path_factory.mktemp("fuzz")
    srv = Server(root / "cspon.db", root / "data", root / "serve.log").start()
    seed_warnings(srv.db_url, "810000", "2018Q1", 3)
    yield srv
    srv.stop()


@pytest.mark.parametrize("mode", list(EXAMPLES), ids=lambda m: m.value)
def test_no_server_errors(fuzz_server: Server, mode: GenerationMode) -> None:
    token = add_user(fuzz_server.db_url, f"fuzz-admin-{mode.value}", "admin")
    schema = schemathesis.openapi.from_url(f"{fuzz_server.base}/api/v1/openapi.json")
    headers = {"Authorization": f"Bearer {token}"}
    failures: list[str] = []
    violations: list[str] = []
    undocumented: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20

    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES[mode],
            phases=[Phase.explicit, Phase.generate],
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def run(case: schemathesis.Case) -> None:
            response = case.call(base_url=fuzz_server.base, headers=headers, timeout=60)
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path} query={case.query} body={case.body!r:.200} "
                    f"-> {response.status_code}: {response.text[:300]}"
                )
            elif response.status_code >= 400 and "json" in response.headers.get("content-type", ""):
                assert "detail" in response.json(), response.text
            try:
                case.validate_response(response, checks=[response_schema_conformance])
            except (Exception, BaseExceptionGroup) as exc:  # schemathesis: a non-conforming response -> a group
                violations.append(f"{case.method} {case.formatted_path} -> {response.status_code}: {exc!s:.400}")
            try:
                case.validate_response(response, checks=[status_code_conformance])
            except (Exception, BaseExceptionGroup) as exc:
                undocumented.append(f"{case.method} {case.formatted_path} -> {response.status_code}: {exc!s:.200}")

        try:
            run()
        except Unsatisfiable:  # e.g. no invalid input exists for an operation without parameters
            assert mode is GenerationMode.NEGATIVE, operation.label
    assert not failures, "\n".join(failures[:20])
    assert not violations, f"{len(violations)} response-schema violations:\n" + "\n".join(violations[:10])
    assert not undocumented, f"{len(undocumented)} undocumented status codes:\n" + "\n".join(undocumented[:10])
