from server.errors import describe_validation_errors


def test_validation_error_locations_become_openai_params():
    message, param = describe_validation_errors(
        [{"loc": ("body", "messages", 0, "content"), "msg": "Input should be a valid string", "type": "string_type"}]
    )
    assert param == "messages[0].content"
    assert message == "messages[0].content: Input should be a valid string"


def test_invalid_json_is_reported_as_such():
    message, param = describe_validation_errors(
        [{"loc": ("body", 9), "msg": "JSON decode error", "type": "json_invalid", "ctx": {"error": "Expecting value"}}]
    )
    assert message == "request body is not valid JSON: Expecting value" and param is None
