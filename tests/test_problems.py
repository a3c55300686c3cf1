"""The one table from domain errors (shared/errors.py) to problem+json answers, without HTTP."""

import json

import pytest

from shared import errors
from shared.api.http import PROBLEMS, problem_of


@pytest.mark.parametrize(
    ("error", "status", "title", "members"),
    [
        (errors.NotFound("no connection"), 404, "Not found", {}),
        (errors.Conflict("runs already", replayId="r1"), 409, "Conflict", {"replayId": "r1"}),
        (errors.LimitReached("at most 3"), 409, "Limit reached", {}),
        (errors.InvalidField("Since", "too old"), 400, "Validation failed", {}),
        (errors.Invalid("bad", {"Uid": ["Field required"]}), 400, "Validation failed", {}),
        (errors.VerificationFailed("QueueName", "no such queue"), 400, "Verification failed", {}),
        (errors.OverBudget("later", 2.5), 429, "Too many requests", {}),
        (errors.ConsentNotGranted("admin_consent", "refused"), 400, "Consent not granted", {}),
        (errors.Unavailable("no storage"), 503, "Unhealthy", {}),
    ],
)
def test_each_domain_error_has_its_answer(
    error: Exception, status: int, title: str, members: dict[str, str]
) -> None:
    answer = problem_of(error).response()
    body = json.loads(answer.get_body())
    assert (answer.status_code, body["title"]) == (status, title)
    assert members.items() <= body.items()


def test_field_errors_name_the_field() -> None:
    body = json.loads(
        problem_of(errors.VerificationFailed("QueueName", "gone")).response().get_body()
    )
    assert body["errors"] == {"QueueName": ["gone"]} and "?verify=false" in body["detail"]
    over = problem_of(errors.OverBudget("later", 2.5)).response()
    assert "Retry-After" in over.headers


def test_every_domain_error_of_shared_errors_is_in_the_table() -> None:
    domain = {
        v for v in vars(errors).values() if isinstance(v, type) and v.__module__ == errors.__name__
    }
    assert domain == set(PROBLEMS)


def test_the_refusals_the_audit_records_are_the_domain_errors_answered_4xx() -> None:
    """The audit (shared/service/audit.py) records a change that raised one of REFUSALS as
    refused, nothing changed: exactly the domain errors the table answers with a 4xx."""
    examples = [
        errors.NotFound("x"), errors.Conflict("x"), errors.LimitReached("x"),
        errors.InvalidField("F", "x"), errors.Invalid("x", {}), errors.Forbidden("x"),
        errors.VerificationFailed("Q", "x"), errors.OverBudget("x", 1.0),
        errors.ConsentNotGranted("F", "x"), errors.Unavailable("x"),
    ]  # fmt: skip
    assert {type(e) for e in examples} == set(PROBLEMS)  # one of each row of the table
    for error in examples:
        refused = isinstance(error, errors.REFUSALS)
        assert refused == (400 <= problem_of(error).status < 500), error


def test_a_connection_uid_is_read_under_either_public_route_name() -> None:
    """`{uid}` (connections) and `{connectionUid}` (messages): one reader, one 404 when bad."""
    import uuid

    from shared.api.http import ApiError, Call, connection_uid

    uid = uuid.uuid4()
    assert connection_uid(Call("a", {"uid": str(uid)})) == uid
    assert connection_uid(Call("a", {"connectionUid": str(uid), "messageUid": "x"})) == uid
    with pytest.raises(ApiError) as bad:
        connection_uid(Call("a", {"connectionUid": "not-a-uuid"}))
    assert bad.value.status == 404
