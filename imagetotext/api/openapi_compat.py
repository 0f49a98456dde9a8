"""The OpenAPI document's part for the APIs of other tools: Ollama's chat and model listing, and
OpenAI's chat completions and models (imagetotext.api.openapi puts it in the document)."""

from __future__ import annotations

from typing import Any

from imagetotext.api.openapi import (
    ERRORS,
    GENERATE_REPLY,
    MODEL_404,
    UPLOAD_ERRORS,
    Schema,
    array,
    content,
    errors,
    field,
    obj,
    ok,
    operation,
    ref,
)

NANOSECONDS = "Ollama metric (durations in nanoseconds)."
FLORENCE_NOTE = (
    "A Florence-2 or built-in OCR model may be named too: it reads the one image and ignores the text "
    "(its task comes from the model's default); several images are refused for it (400)."
)
EXAMPLE_CHAT = {
    "model": "llava:7b",
    "messages": [{"role": "user", "content": "What is in this picture?", "images": ["iVBORw0KGgo…"]}],
    "stream": False,
}
EXAMPLE_CHAT_REPLY = {
    "model": "llava:7b",
    "created_at": "2026-12-02T10:00:01.5Z",
    "message": {"role": "assistant", "content": "A red square on a white background."},
    "done": True,
    "done_reason": "stop",
    "total_duration": 1_500_000_000,
    "eval_count": 9,
}
EXAMPLE_OPENAI = {
    "model": "llava:7b",
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo…"}},
            ],
        }
    ],
}
EXAMPLE_COMPLETION = {
    "id": "chatcmpl-43",
    "object": "chat.completion",
    "created": 1796205601,
    "model": "llava:7b",
    "system_fingerprint": "fp_imagetotext",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "A red square on a white background."},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 600, "completion_tokens": 9, "total_tokens": 609},
}
OPENAI_ERRORS = {
    400: "Malformed request (`invalid_request_error`): no image, an image that is not a data URL (remote URLs "
    "are refused unless the administrator allows them), a part or role not supported, `n` other than 1.",
    401: "No API key, or an unknown, expired or revoked one (`authentication_error`).",
    403: "The API key may not call this API (`permission_error`).",
    404: "No model of that name (`not_found_error`, code `model_not_found`).",
    405: "No online agent serves the model, or a wrong HTTP method.",
    413: ERRORS[413],
    429: ERRORS[429],
    500: "The job failed or did not finish in time (`api_error`).",
}

MODEL_DETAILS = obj(
    "What Ollama reports of a model (Florence-2 and OCR models get their own family).",
    {
        name: field("string", "As Ollama reports it.")
        for name in ("parent_model", "format", "family", "parameter_size", "quantization_level")
    }
    | {"families": array({"type": "string"})},
    additionalProperties=True,
)
OLLAMA_MESSAGE = obj(
    "One chat message; every image of every message is one of the job's images.",
    {
        "role": field("string", "Lower-cased by the server.", enum=["system", "user", "assistant"]),
        "content": field("string", "The message's text."),
        "images": array(field("string", "Raw base64, without a `data:` prefix.")),
    },
    ("role",),
)
REPLY_MESSAGE = obj(
    "The model's answer.",
    {"role": field("string", "Always `assistant`."), "content": field("string", "The text (a piece when streaming).")},
)
CHAT_REPLY = {key: value for key, value in GENERATE_REPLY.items() if key not in ("response", "context")}

SCHEMAS: dict[str, Schema] = {
    "OllamaChatRequest": obj(
        "Ollama's chat request: at least one image in its messages.",
        {
            "model": field("string", "Vision model, e.g. `llava:7b`."),
            "messages": array(OLLAMA_MESSAGE) | {"minItems": 1},
            "stream": field("boolean", "Stream NDJSON chunks (default true)."),
            **{
                name: {"description": "Passed to Ollama as it is."}
                for name in ("options", "format", "keep_alive", "think")
            },
        },
        ("model", "messages"),
    ),
    "OllamaChatResponse": obj(
        "Ollama's chat reply (also each NDJSON line when streaming; the last has `done: true` and the metrics).",
        {**CHAT_REPLY, "message": REPLY_MESSAGE},
        additionalProperties=True,
    ),
    "OllamaModel": obj(
        "A model this server can run for images (one entry per name, over every online agent).",
        {
            "name": field("string", "The model's name, e.g. `llava:7b`."),
            "model": field("string", "The same name."),
            "modified_at": field("string", "When an agent last reported it.", format="date-time"),
            "size": field("integer", "Bytes on disk, when the agent reported it (else 0)."),
            "digest": field("string", "The agent's digest, or a stable hash of the name."),
            "details": MODEL_DETAILS,
            "capabilities": array({"type": "string"}, "As Ollama's /api/show reports, e.g. `vision`."),
        },
        additionalProperties=True,
    ),
    "OllamaTagsResponse": obj("Ollama's model list.", {"models": array(ref("OllamaModel"))}, ("models",)),
    "OllamaShowRequest": obj(
        "Which model to describe.",
        {"model": field("string", "The model's name."), "name": field("string", "Older clients' name for `model`.")},
    ),
    "OllamaShowResponse": obj(
        "Ollama's description of a model.",
        {
            "details": MODEL_DETAILS,
            "model_info": {"type": "object", "description": "Architecture facts, when the agent reported them."},
            "capabilities": array({"type": "string"}),
            "modified_at": field("string", "When an agent last reported it.", format="date-time"),
            **{name: field("string", "Empty: not known here.") for name in ("modelfile", "parameters", "template")},
        },
        additionalProperties=True,
    ),
    "OllamaVersionResponse": obj("The Ollama API version this server speaks.", {"version": field("string", "")}),
    "OllamaPsResponse": obj(
        "The models running jobs on this server now.",
        {
            "models": array(
                obj(
                    "A running model.",
                    {
                        "name": field("string", "The model's name."),
                        "model": field("string", "The same name."),
                        "size": field("integer", "Bytes, when known."),
                        "digest": field("string", ""),
                        "details": MODEL_DETAILS,
                        "expires_at": field("string", "", format="date-time"),
                        "size_vram": field("integer", ""),
                    },
                    additionalProperties=True,
                )
            )
        },
        ("models",),
    ),
    "OpenAiChatRequest": obj(
        "OpenAI's chat completion request; at least one image, as a data URL.",
        {
            "model": field("string", "A model from /v1/models."),
            "messages": array(
                obj(
                    "A message; `developer` is taken as `system`.",
                    {
                        "role": field("string", "", enum=["system", "developer", "user", "assistant"]),
                        "content": {
                            "description": "Text, or a list of `text` and `image_url` parts.",
                            "anyOf": [{"type": "string"}, array(ref("OpenAiContentPart"))],
                        },
                    },
                    ("role", "content"),
                )
            )
            | {"minItems": 1},
            "stream": field("boolean", "Server-sent events ending with `data: [DONE]` (default false)."),
            "stream_options": obj("", {"include_usage": field("boolean", "Send a usage chunk before [DONE].")}),
            "max_tokens": field("integer", "Sent to Ollama as `num_predict`."),
            "max_completion_tokens": field("integer", "The same, newer name."),
            "temperature": field("number", "Sent to Ollama's options."),
            "top_p": field("number", "Sent to Ollama's options."),
            "seed": field("integer", "Sent to Ollama's options."),
            "stop": {"description": "A string or a list; sent to Ollama's options."},
            "response_format": {"description": "`json_object` or `json_schema`: Ollama's `format`."},
            "n": field("integer", "Only 1."),
        },
        ("model", "messages"),
    ),
    "OpenAiContentPart": obj(
        "A part of a message's content.",
        {
            "type": field("string", "", enum=["text", "image_url"]),
            "text": field("string", "For `text` parts."),
            "image_url": {
                "description": "For `image_url` parts: `{url, detail}` or the URL alone; a `data:image/…;base64,` "
                "URL (remote URLs only when the administrator allows them: OPENAI_IMAGE_URLS).",
            },
        },
        ("type",),
    ),
    "OpenAiChatCompletion": obj(
        "The completion (`stream: false`); with `stream: true`, `chat.completion.chunk` events carry `delta`s.",
        {
            "id": field("string", "`chatcmpl-` and the job's id."),
            "object": field("string", "`chat.completion`, or `chat.completion.chunk` when streaming."),
            "created": field("integer", "Unix seconds."),
            "model": field("string", ""),
            "system_fingerprint": field("string", ""),
            "choices": array(
                obj(
                    "The one choice.",
                    {
                        "index": field("integer", ""),
                        "message": REPLY_MESSAGE,
                        "delta": {"type": "object", "description": "When streaming: the new piece of text."},
                        "finish_reason": field("string", "`stop`, or `length` when max_tokens cut it."),
                    },
                )
            ),
            "usage": obj(
                "Token counts, when the backend reported them.",
                {name: field("integer", "") for name in ("prompt_tokens", "completion_tokens", "total_tokens")},
            ),
        },
    ),
    "OpenAiErrorResponse": obj(
        "OpenAI's error shape.",
        {
            "error": obj(
                "",
                {
                    "message": field("string", ""),
                    "type": field("string", "Follows the status, e.g. `invalid_request_error`."),
                    "param": {"description": "The field at fault, or null."},
                    "code": {"description": "e.g. `model_not_found`, or null."},
                },
            )
        },
    ),
    "OpenAiModel": obj(
        "A model this server can run for images.",
        {
            "id": field("string", "The model's name."),
            "object": field("string", "`model`."),
            "created": field("integer", "Unix seconds."),
            "owned_by": field("string", "The kind of agent that runs it: `ollama`, `comfyui` or `local`."),
        },
    ),
    "OpenAiModelList": obj("", {"object": field("string", "`list`."), "data": array(ref("OpenAiModel"))}),
}


def openai_errors(statuses: tuple[int, ...]) -> dict[str, Any]:
    return {
        str(status): {"description": OPENAI_ERRORS[status], "content": content(ref("OpenAiErrorResponse"))}
        for status in statuses
    }


def ollama_operations() -> dict[str, Any]:
    chat = operation(
        "OllamaChat",
        "Ollama's chat API (streams by default)",
        "A chat about one or more images: each becomes one of the job's images and reaches the backend in "
        "its message. With `stream` (the default) the reply is NDJSON: `done: false` chunks as the model "
        "writes, then the `done: true` line with the metrics (or an error line). " + FLORENCE_NOTE,
        {
            "200": ok(
                "The answer.",
                "OllamaChatResponse",
                EXAMPLE_CHAT_REPLY,
                **content(ref("OllamaChatResponse"), None, "application/x-ndjson"),
            ),
            **errors(
                (*UPLOAD_ERRORS, 500),
                "OllamaErrorResponse",
                e404=MODEL_404,
                e400=ERRORS[400] + " Also: no image, images not raw base64, `tools` or a tool message.",
            ),
        },
        tag="Ollama",
        requestBody={"required": True, "content": content(ref("OllamaChatRequest"), EXAMPLE_CHAT)},
    )
    listing = {"security": [{"bearer": []}], "tag": "Ollama"}
    lookup_errors = errors((401, 403, 429), "OllamaErrorResponse")
    tags = operation(
        "OllamaTags",
        "The models this server can run for images, as Ollama lists them",
        "One entry per model name, over every enabled, online agent (Ollama, ComfyUI's Florence-2, the built-in OCR).",
        {"200": ok("The models.", "OllamaTagsResponse", None), **lookup_errors},
        **listing,
    )
    show = operation(
        "OllamaShow",
        "One model, as Ollama describes it",
        "The name is matched as everywhere here: exact, with `:latest`, or a Florence-2 short name.",
        {
            "200": ok("The model.", "OllamaShowResponse", None),
            **errors(
                (400, 401, 403, 404, 429),
                "OllamaErrorResponse",
                e400="`model` is missing, or the body is not JSON.",
                e404="No listed model of that name (`model 'x' not found`).",
            ),
        },
        requestBody={"required": True, "content": content(ref("OllamaShowRequest"), {"model": "llava:7b"})},
        **listing,
    )
    ps = operation(
        "OllamaPs",
        "The models running jobs on this server now",
        'Empty (`{"models": []}`) when nothing runs.',
        {"200": ok("The running models.", "OllamaPsResponse", {"models": []}), **lookup_errors},
        **listing,
    )
    version = operation(
        "OllamaVersion",
        "The Ollama API version this server speaks",
        "No API key needed: Ollama clients use it as a health check.",
        {"200": ok("The version.", "OllamaVersionResponse", None)},
        tag="Ollama",
        security=[],
    )
    return {
        "/api/chat": {"post": chat},
        "/api/tags": {"get": tags},
        "/api/show": {"post": show},
        "/api/ps": {"get": ps},
        "/api/version": {"get": version},
    }


def openai_operations() -> dict[str, Any]:
    completions = operation(
        "OpenAiChatCompletions",
        "OpenAI-compatible chat completions with images",
        "Each `image_url` part becomes one of the job's images; the backend is Ollama's chat. `max_tokens`, "
        "`temperature`, `top_p`, `seed`, `stop` and `response_format` go to Ollama's options and format. "
        "With `stream: true` the reply is server-sent events: a `chat.completion.chunk` per piece of text, "
        "a finish chunk, a usage chunk if `stream_options.include_usage`, then `data: [DONE]`. " + FLORENCE_NOTE,
        {
            "200": ok(
                "The completion.",
                "OpenAiChatCompletion",
                EXAMPLE_COMPLETION,
                **content(ref("OpenAiChatCompletion"), None, "text/event-stream"),
            ),
            **openai_errors((400, 401, 403, 404, 405, 413, 429, 500)),
        },
        tag="OpenAI",
        requestBody={"required": True, "content": content(ref("OpenAiChatRequest"), EXAMPLE_OPENAI)},
    )
    models = operation(
        "OpenAiModels",
        "The models this server can run for images, as OpenAI lists them",
        "The same models as /api/tags.",
        {"200": ok("The models.", "OpenAiModelList", None), **openai_errors((401, 403, 429))},
        tag="OpenAI",
    )
    model = operation(
        "OpenAiModel",
        "One model",
        "",
        {"200": ok("The model.", "OpenAiModel", None), **openai_errors((401, 403, 404, 429))},
        tag="OpenAI",
        parameters=[
            {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}, "example": "llava:7b"}
        ],
    )
    return {
        "/v1/chat/completions": {"post": completions},
        "/v1/models": {"get": models},
        "/v1/models/{model}": {"get": model},
    }
