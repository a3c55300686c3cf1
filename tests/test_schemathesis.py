"""Schemathesis fuzzes the API from its own OpenAPI document over real HTTP: no 5xx, and
every response matches the schema (issue 2 acceptance: no input gets a 500)."""

import os
import subprocess
import sys
from pathlib import Path


def test_fuzzing_finds_no_server_error_and_no_schema_violation(
    api_host: str, api_key: str, tmp_path: Path
) -> None:
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        f"{api_host}/v1/openapi.json",
        "--header",
        f"Authorization: {api_key}",
        "--checks",
        "not_a_server_error,response_schema_conformance,status_code_conformance,"
        "content_type_conformance,response_headers_conformance",
        "--max-examples",
        os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "30"),
        "--phases",
        "examples,coverage,fuzzing",
        # One worker: with two, Hypothesis parses lambdas' source in two threads at once,
        # which CPython 3.11.7 can fail with "SystemError: AST constructor recursion depth
        # mismatch" (CPython gh-106905; seen once in CI here, the API not involved).
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--suppress-health-check",
        "all",
        "--no-color",
    ]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
