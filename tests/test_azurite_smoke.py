from azure.data.tables import TableServiceClient


def test_azurite_answers_table_calls(storage_connection_string: str) -> None:
    service = TableServiceClient.from_connection_string(storage_connection_string)
    table = service.create_table_if_not_exists("smoke")
    table.upsert_entity({"PartitionKey": "p", "RowKey": "r", "Value": 1})
    assert table.get_entity("p", "r")["Value"] == 1
