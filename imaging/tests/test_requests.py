import json
from types import SimpleNamespace

import pytest

from conversations.exceptions import BadRequest
from imaging.services import (
    image_prompt_from_text,
    image_tool_arguments,
    image_tool_result,
    image_tool_schema,
)


@pytest.mark.parametrize(
    ("text", "prompt"),
    [
        ("/image a red fox", "a red fox"),
        ("  /image   a red fox \n in snow ", "a red fox \n in snow"),
        ("image: a red fox", "a red fox"),
        ("image:a red fox", "a red fox"),
        ("/image", ""),
        ("/images of foxes", None),
        ("draw an image: a fox", None),
        ("Image: a fox", None),
        ("what is an image?", None),
    ],
)
def test_image_requests_are_recognised_by_their_prefix(text, prompt):
    assert image_prompt_from_text(text) == prompt


def test_tool_schema_offers_only_the_configured_sizes(settings):
    settings.IMAGE_SIZES = ["512x512", "1024x1024"]

    schema = image_tool_schema()

    size = schema["function"]["parameters"]["properties"]["size"]
    assert size["enum"] == ["512x512", "1024x1024"]
    assert json.loads(json.dumps(schema)) == schema


def test_tool_arguments_give_prompt_and_a_known_size(settings):
    settings.IMAGE_SIZES = ["1024x1024", "1536x1024"]

    assert image_tool_arguments('{"prompt": "a fox", "size": "1536x1024"}') == (
        "a fox",
        "1536x1024",
    )
    assert image_tool_arguments({"prompt": "a fox", "size": "9x9"}) == ("a fox", None)
    assert image_tool_arguments('{"prompt": "a fox"}') == ("a fox", None)


@pytest.mark.parametrize("arguments", ["{not json", "{}", '{"prompt": 3}', "[]"])
def test_malformed_tool_arguments_are_a_bad_request(arguments):
    with pytest.raises(BadRequest):
        image_tool_arguments(arguments)


def test_tool_result_tells_the_model_what_happened():
    done = SimpleNamespace(
        status="complete", width=64, height=32, revised_prompt="a fox, watercolour"
    )
    failed = SimpleNamespace(status="failed", error_message="Refused.")

    assert json.loads(image_tool_result(done))["status"] == "complete"
    assert json.loads(image_tool_result(done))["revised_prompt"] == "a fox, watercolour"
    assert json.loads(image_tool_result(failed)) == {
        "status": "failed",
        "error": "Refused.",
    }
