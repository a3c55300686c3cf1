"""A record's RequestMetadata: one model, and the JSON text on the wire exactly as it was
(same keys, same order, same spacing, absent keys left out)."""

from shared.models.records import DeliveryError, ErrorCategory, RequestMetadata


def test_a_successful_delivery_keeps_five_keys_in_this_order() -> None:
    metadata = RequestMetadata(
        queue_name="orders", message_id="m-1", attempt=1, size_bytes=312, offloaded=False
    )
    assert metadata.to_text() == (
        '{"QueueName": "orders", "MessageId": "m-1", "Attempt": 1, "SizeBytes": 312, '
        '"Offloaded": false}'
    )


def test_a_failed_offloaded_delivery_adds_blob_name_then_error() -> None:
    metadata = RequestMetadata(
        queue_name="orders",
        message_id="m-1",
        attempt=3,
        size_bytes=402,
        offloaded=True,
        blob_name="acme/e-1/c-1.json",
        error=DeliveryError(
            category=ErrorCategory.CONFIGURATION,
            type="MessagingEntityNotFoundError",
            message='queue "orders" not found: café',
        ),
    )
    assert metadata.to_text() == (
        '{"QueueName": "orders", "MessageId": "m-1", "Attempt": 3, "SizeBytes": 402, '
        '"Offloaded": true, "BlobName": "acme/e-1/c-1.json", "Error": {"Category": '
        '"Configuration", "Type": "MessagingEntityNotFoundError", "Message": '
        '"queue \\"orders\\" not found: caf\\u00e9"}}'
    )
    assert RequestMetadata.from_text(metadata.to_text()) == metadata


def test_records_without_metadata_read_as_none() -> None:
    assert RequestMetadata.from_text("{}") is None
    assert RequestMetadata.from_text("not json") is None
