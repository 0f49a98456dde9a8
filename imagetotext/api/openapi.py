"""The OpenAPI 3.1 description of the JSON API, written by hand from what the views do.

Served as JSON by imagetotext.api.docs and rendered there as the /api/docs page; the tests
compare real replies with these schemas so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from agents.clients import florence
from imagetotext.conf import Conf
from imagetotext.images import ACCEPTED_FORMATS

VERSION = "1.0.0"
Schema = dict[str, Any]

DESCRIPTION = f"""\
A self-hosted image-to-text server whose JSON API mirrors
[ServiceStack AI Server](https://docs.servicestack.net/ai-server/image-to-text): the same paths
(`/api/{{RequestDtoName}}`), field names and reply shapes, so AI Server clients work unchanged.
`/api/generate` also speaks Ollama's generate API, so Ollama clients can point here too.

**Authentication.** Send an API key as `Authorization: Bearer ak-…`. Keys are created with
`manage.py createapikey NAME` or in the admin; a key may be restricted to some API names
(the operationIds below), expire, or be revoked. A missing, unknown, expired or revoked key gets
401; a key not allowed to call an API gets 403. A signed-in browser session also works, with
Django's CSRF token. Jobs belong to the key's owner: other owners' jobs answer 404. Each key (or
user) may make {Conf.RATE_LIMIT_PER_MINUTE} requests a minute (`API_RATE_LIMIT_PER_MINUTE`; 0 turns the
limit off); beyond that the answer is 429 with `Retry-After`.

**Fields.** Keys are case-insensitive (`RefId`, `refId` and `refid` are one field) and may be sent
in the query string, as multipart form fields, or in a JSON body; Ollama's own generate fields (`model`,
`prompt`, `images`, …) keep Ollama's lower-case names. Durations are XSD durations, as
ServiceStack writes a TimeSpan: `PT2.5S`, `PT1M30S`. Members that are null are left out.

**Errors** carry a ServiceStack `responseStatus`:
`{{"responseStatus": {{"errorCode": "...", "message": "...", "errors": [{{"errorCode", "fieldName", "message"}}]}}}}`;
`errors` names the offending field when there is one. The Ollama endpoints add Ollama's `error` member.
A body larger than its route can need (one image of the size allowed, in base64 on the Ollama
endpoints, plus 1 MB of fields) gets 413 before it is read; request headers over 16 kB get 431.

**Callbacks.** A queued request may name a `ReplyTo` URL (public http/https addresses only). When the
job ends, the server POSTs a `GenerationCallback` there, signed with
`{Conf.CALLBACK_SIGNATURE_HEADER}: sha256=<hex HMAC-SHA256 of the raw body>` keyed with the server's
callback secret; `X-Callback-Id` (the job's refId) lets receivers drop repeats. A non-2xx answer is
retried up to {Conf.CALLBACK_ATTEMPTS} times with exponential backoff; redirects are not followed.
ServiceStack's forms are understood: `PUT https://…` (POST, PUT or PATCH), `token@https://…` (Bearer),
`user:password@https://…` (Basic), `http.X-API-Key:value@https://…` (a header); `$NAME` credentials
(server environment variables) are refused.
"""

# Why each error status happens, by default; operations add their own reasons.
ERRORS = {
    400: "A field is missing or malformed (`errors[0].fieldName` says which).",
    401: "No API key, or an unknown, expired or revoked one (`Unauthorized`).",
    403: "The API key may not call this API, or a session call failed the CSRF check.",
    404: "No such job for this key's owner.",
    405: "Wrong HTTP method (`NotSupportedException`).",
    413: f"The image is larger than {Conf.MAX_UPLOAD_BYTES // 2**20} MB or has more than "
    f"{Conf.MAX_PIXELS:,} pixels (`ImageTooLarge`), or the request is larger than the route can need "
    "(`RequestTooLarge`; refused from its Content-Length, before it is read).",
    415: "The body is neither multipart/form-data, a form nor JSON (`UnsupportedMediaType`).",
    429: "This key or user spent its requests for the minute (`TooManyRequests`); wait `Retry-After` seconds.",
    500: "The job failed, was cancelled, or did not finish within "
    f"{Conf.SYNC_WAIT_SECONDS:g} s (`Timeout`); `message` says which.",
}
MODEL_404 = "The named model is not offered by any enabled agent (`NotFound`)."
AGENT_405 = ERRORS[405] + " Or: no online agent serves the model, or no model was named and no agent offers Florence-2."
IMAGE_400 = (
    ERRORS[400] + f" Also: the image is missing, not one of {ACCEPTED_FORMATS}, or corrupt; a RefId is in use; "
    "the model cannot read images; ReplyTo is not a public http(s) URL."
)
LOOKUP_400 = "Neither JobId nor RefId given, or JobId is not a number (`ArgumentException`)."
UPLOAD_ERRORS = (400, 401, 403, 404, 405, 413, 415, 429)  # and 500 when the call waits for the job
LOOKUP_ERRORS = (400, 401, 403, 404, 405, 429)
# Headers some error replies carry.
ERROR_HEADERS = {401: "WWW-Authenticate", 405: "Allow", 429: "Retry-After"}


# --- builders --------------------------------------------------------------------


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def field(type_: str, description: str, **extra: Any) -> Schema:
    return {"type": type_, "description": description, **extra}


def array(items: Schema, description: str = "") -> Schema:
    return {"type": "array", "items": items, **({"description": description} if description else {})}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def obj(description: str, properties: dict[str, Schema], required: tuple[str, ...] = (), **extra: Any) -> Schema:
    schema: Schema = {"type": "object", "description": description, "properties": properties, **extra}
    return schema | ({"required": list(required)} if required else {})


def query(name: str, schema: Schema, description: str, example: Any) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
        "example": example,
    }


def header(name: str, description: str) -> Schema:
    return {"name": name, "in": "header", "required": False, "schema": {"type": "string"}, "description": description}


def content(schema: Schema, example: Any = None, media: str = "application/json") -> dict[str, Any]:
    return {media: {"schema": schema} | ({"example": example} if example is not None else {})}


def ok(description: str, schema: str, example: Any, **more_media: dict[str, Any]) -> Schema:
    return {"description": description, "content": {**content(ref(schema), example), **more_media}}


def errors(statuses: tuple[int, ...], schema: str = "ErrorResponse", **reasons: str) -> dict[str, Any]:
    """Error responses: this operation's reason for a status (e404=...), else the default one."""
    out = {
        str(status): {"description": reasons.get(f"e{status}", ERRORS[status]), "content": content(ref(schema))}
        for status in statuses
    }
    for status in set(statuses) & set(ERROR_HEADERS):
        out[str(status)]["headers"] = {ERROR_HEADERS[status]: {"schema": {"type": "string"}}}
    return out


def operation(op_id: str, summary: str, description: str, responses: dict[str, Any], **extra: Any) -> Schema:
    return {
        "operationId": op_id,
        "summary": summary,
        "description": description,
        "tags": [extra.pop("tag")],
        "responses": responses,
        **extra,
    }


def multipart(fields: dict[str, Schema], example: dict[str, str]) -> Schema:
    schema = obj("Multipart form; every field but `image` may also go in the query string.", fields, ("image",))
    return {"required": True, "content": content(schema, example, "multipart/form-data")}


# --- schemas ---------------------------------------------------------------------

STATE = ref("BackgroundJobState")
DURATION = field("string", "XSD duration, e.g. `PT2.41S`.", pattern=r"^PT(\d+H)?(\d+M)?[\d.]+S$")
TEXT_OUTPUTS = array(ref("TextOutput"), "One entry holding the whole text.")
REF_ID = field("string", "Client-chosen id for the job (max 100, unique per owner); generated if not given.")
TAG = field("string", "Groups like requests (max 100); also read from a `Tag` header.")
REPLY_TO = field(
    "string",
    "URL to POST a GenerationCallback to when the job ends, optionally with a method and "
    "credentials (`PUT token@https://…`); also read from a `ReplyTo` header.",
)
JOB_LOOKUP = [
    query("JobId", {"type": "integer"}, "The job's id, as queueing returned it.", 42),
    query("RefId", {"type": "string"}, "The job's refId; used when JobId is not given.", "3f0c9b1e…"),
]

IMAGE_FIELDS: dict[str, Schema] = {
    "image": field("string", f"The image file part ({ACCEPTED_FORMATS}).", format="binary"),
    "Model": field(
        "string",
        "Model from /api/ActiveAiModels, e.g. `llava:7b`; an Ollama name without a tag "
        "means `:latest`. Empty: Florence-2 on a ComfyUI agent.",
    ),
    "Prompt": field(
        "string",
        f"Prompt for a vision model; default `{Conf.DEFAULT_PROMPT}`. Florence-2 reads it "
        "only for tasks that take text, e.g. `docvqa`.",
    ),
    "Task": field("string", f"Florence-2 task (not in AI Server); default `{florence.DEFAULT_TASK}`."),
    "Preset": field("string", "A preset's key (`caption`, `detailed`, `text`, `tags`, `alt`): its prompt and task."),
    "RefId": REF_ID,
    "Tag": TAG,
}

GENERATE_FIELDS: dict[str, Schema] = {
    "model": field("string", "Vision model, e.g. `llava:7b`."),
    "prompt": field("string", f"The prompt; default `{Conf.DEFAULT_PROMPT}`."),
    "images": array(
        field("string", "Raw base64, without a `data:` prefix."),
        "One image, or several for a vision model that reads more than one (in the order sent).",
    )
    | {"minItems": 1, "maxItems": Conf.MAX_IMAGES_PER_REQUEST},
    "stream": field("boolean", "Stream NDJSON chunks. Default true at /api/generate, false at /api/OllamaGeneration."),
    **{
        name: {"description": "Passed to Ollama as it is."}
        for name in ("options", "system", "format", "keep_alive", "template", "suffix", "raw", "think")
    },
}

GENERATE_REPLY: dict[str, Schema] = {
    "model": field("string", "The model that answered."),
    "created_at": field("string", "When the job ended.", format="date-time"),
    "response": field("string", "The generated text (a chunk of it when streaming)."),
    "done": field("boolean", "True on the final reply."),
    "done_reason": field("string", "Why generation stopped, e.g. `stop`."),
    "thinking": field("string", "Reasoning text, from thinking models asked to `think`."),
    "context": array({"type": "integer"}, "Ollama's context tokens."),
    **{
        name: field("integer", "Ollama metric (durations in nanoseconds).")
        for name in (
            "total_duration",
            "load_duration",
            "prompt_eval_count",
            "prompt_eval_duration",
            "eval_count",
            "eval_duration",
        )
    },
}

COUNTS = obj(
    "Items by state.",
    {name: field("integer", name) for name in ("queued", "running", "completed", "failed", "cancelled", "total")},
)
SKIPPED = array(
    obj("A file left out.", {"path": field("string", "Its path"), "reason": field("string", "Why")}),
    "Files or ZIP members left out, with why.",
)
BATCH_SCHEMAS: dict[str, Schema] = {
    "QueueImageToTextBatchResponse": obj(
        "The queued batch.",
        {
            "batchId": field("integer", "The batch's id."),
            "refId": field("string", "The batch's refId."),
            "total": field("integer", "Items queued."),
            "skipped": SKIPPED,
            "statusUrl": field("string", "Absolute GetBatchStatus URL.", format="uri"),
        },
    ),
    "BatchItem": obj(
        "One item.",
        {
            "path": field("string", "The file's name, with its folders inside a ZIP."),
            "jobId": field("integer", "Its job (UpdateBatchCaption takes it)."),
            "jobState": STATE,
            "text": field("string", "The caption kept: the edit, else Prefix + earlier caption + text + Suffix."),
            "originalText": field("string", "The model's own text."),
            "edited": field("boolean", "Whether the caption was edited."),
            "error": field("string", "Why it failed or was cancelled."),
        },
    ),
    "GetBatchStatusResponse": obj(
        "A batch: its state, counts, progress and a page of its items (also its ReplyTo body, with every item).",
        {
            "batchId": field("integer", "The batch's id."),
            "refId": field("string", "The batch's refId."),
            "name": field("string", "The ZIP's name, if any."),
            "state": field(
                "string",
                "`Queued` until an item starts, `Running` until every item ended, then `Completed`, or "
                "`Cancelled` if items were cancelled (failed items are counted, not a state).",
                enum=["Queued", "Running", "Completed", "Cancelled"],
            ),
            "counts": COUNTS,
            "rate": field("number", "Items ended per minute over the last five minutes."),
            "secondsLeft": field("integer", "At that rate; absent when unknown."),
            "finished": field("boolean", "Every item ended."),
            "skip": field("integer", "Items skipped before this page."),
            "take": field("integer", "Page size."),
            "items": array(ref("BatchItem")),
            "skipped": SKIPPED,
            "replyState": field("string", "In the ReplyTo body only: the request's `State`."),
        },
    ),
}

SCHEMAS: dict[str, Schema] = {
    "BackgroundJobState": {
        "type": "string",
        "enum": ["Queued", "Started", "Completed", "Failed", "Cancelled"],
        "description": "ServiceStack's job states; `Executed` is never used.",
    },
    "ResponseError": obj(
        "One field's error.",
        {
            "errorCode": field("string", "e.g. `ArgumentException`."),
            "fieldName": field("string", "The field, as documented."),
            "message": field("string", "What is wrong."),
        },
    ),
    "ResponseStatus": obj(
        "ServiceStack's error details.",
        {
            "errorCode": field("string", "e.g. `ArgumentException`, `NotFound`, `Unauthorized`, `ImageTooLarge`."),
            "message": field("string", "Human-readable reason."),
            "errors": array(ref("ResponseError"), "Per-field errors; empty when no field is to blame."),
        },
        ("errorCode", "message", "errors"),
    ),
    "ErrorResponse": obj("An error reply.", {"responseStatus": ref("ResponseStatus")}, ("responseStatus",)),
    "OllamaErrorResponse": obj(
        "An error from the Ollama endpoints (`error` is absent on 401/403 and wrong-method 405).",
        {"error": field("string", "Ollama's error text."), "responseStatus": ref("ResponseStatus")},
        ("responseStatus",),
    ),
    "TextOutput": obj("A generated text.", {"text": field("string", "The generated text.")}),
    "TextGenerationResponse": obj(
        "The text of a finished job.",
        {"results": TEXT_OUTPUTS, "duration": DURATION, "responseStatus": ref("ResponseStatus")},
    ),
    "QueueGenerationResponse": obj(
        "A queued job and where to ask about it.",
        {
            "jobId": field("integer", "The job's id."),
            "refId": field("string", "The job's refId."),
            "jobState": STATE,
            "status": field("string", "What is happening now, in words."),
            "statusUrl": field("string", "Absolute GetTextGenerationStatus URL for this job.", format="uri"),
            "responseStatus": ref("ResponseStatus"),
        },
    ),
    "GetTextGenerationStatusResponse": obj(
        "A job's state; `results` once Completed, `responseStatus` once Failed or Cancelled.",
        {
            "jobId": field("integer", "The job's id."),
            "refId": field("string", "The job's refId."),
            "jobState": STATE,
            "status": field("string", "What is happening now, in words."),
            "duration": DURATION,
            "results": TEXT_OUTPUTS,
            "responseStatus": ref("ResponseStatus"),
        },
    ),
    "OllamaGenerateRequest": obj(
        "Ollama's generate request, with its images.",
        {**GENERATE_FIELDS, "refId": REF_ID, "tag": TAG},
        ("model", "images"),
    ),
    "OllamaGenerateResponse": obj(
        "Ollama's generate reply (also each NDJSON line when streaming).", GENERATE_REPLY, additionalProperties=True
    ),
    "QueueOllamaGeneration": obj(
        "A queued Ollama generate request.",
        {"request": ref("OllamaGenerateRequest"), "refId": REF_ID, "replyTo": REPLY_TO, "tag": TAG},
        ("request",),
    ),
    "QueueOllamaGenerationResponse": obj(
        "A queued job; note `id`, not `jobId`, as in AI Server.",
        {
            "id": field("integer", "The job's id."),
            "refId": field("string", "The job's refId."),
            "statusUrl": field("string", "Absolute GetOllamaGenerationStatus URL for this job.", format="uri"),
            "responseStatus": ref("ResponseStatus"),
        },
    ),
    "GetOllamaGenerationStatusResponse": obj(
        "A job's state; `result` once Completed.",
        {
            "jobId": field("integer", "The job's id."),
            "refId": field("string", "The job's refId."),
            "jobState": STATE,
            "status": field("string", "What is happening now, in words."),
            "result": ref("OllamaGenerateResponse"),
            "responseStatus": ref("ResponseStatus"),
        },
    ),
    "ActiveAiModel": obj(
        "A model and the agents that offer it.",
        {
            "name": field("string", "Model name to send as Model."),
            "kind": field("string", "`ollama` or `comfyui`."),
            "task": field("string", "`vision`, `florence2` or `text`."),
            "acceptsImages": field("boolean", "Whether it can read images."),
            "agents": array({"type": "string"}, "Agent names, highest priority first (staff callers only)."),
        },
    ),
    "ActiveAiModelsResponse": obj(
        "Models of enabled, online agents.",
        {
            "results": array({"type": "string"}, "Model names, sorted (AI Server's field)."),
            "models": array(
                ref("ActiveAiModel"),
                "The same models with details (not in AI Server; callers with a key or session only).",
            ),
        },
    ),
    **BATCH_SCHEMAS,
    "GenerationCallback": obj(
        "POSTed to ReplyTo when a job ends (null members are sent).",
        {
            "state": nullable(field("string", "The request's `State`, echoed.")),
            "refId": field("string", "The job's refId."),
            "outputs": array({"type": "object"}, "File outputs, as in AI Server; always empty for image to text."),
            "textOutputs": array(ref("TextOutput"), "The text; empty unless the job completed."),
            "responseStatus": nullable(ref("ResponseStatus")),
        },
        ("refId", "outputs", "textOutputs"),
    ),
}

# --- operations ------------------------------------------------------------------

TEXT = "A red square on a white background."
REF = "3f0c9b1e4d2a4c8f9e7b6a5d4c3b2a10"
EXAMPLE_IMAGE = {"image": "@photo.jpg", "Model": "llava:7b", "Prompt": "What is in this picture?"}
EXAMPLE_GENERATE = {"model": "llava:7b", "prompt": "What is it?", "images": ["iVBORw0KGgo…"], "stream": False}
EXAMPLE_REPLY = {
    "model": "llava:7b",
    "created_at": "2025-05-09T10:00:02.41Z",
    "response": TEXT,
    "done": True,
    "done_reason": "stop",
    "total_duration": 2410000000,
    "eval_count": 9,
}
HOOK = "https://example.com/hook"


def status_url(op: str) -> str:
    return f"https://ai.example.com/api/{op}?RefId={REF}"


def callbacks(reply_to: str) -> dict[str, Any]:
    """The ReplyTo POST, described as an OpenAPI callback on the queue operations."""
    post = {
        "summary": "The job ended",
        "description": f"Signed: `{Conf.CALLBACK_SIGNATURE_HEADER}: sha256=<hex>`.",
        "parameters": [
            header(Conf.CALLBACK_SIGNATURE_HEADER, "`sha256=` + hex HMAC-SHA256 of the body."),
            header("X-Callback-Id", "The job's refId; the same on every attempt."),
            header("X-Callback-Attempt", "1 on the first attempt, then 2, 3, …"),
        ],
        "requestBody": {
            "required": True,
            "content": content(
                ref("GenerationCallback"),
                {
                    "state": "my-state",
                    "refId": REF,
                    "outputs": [],
                    "textOutputs": [{"text": TEXT}],
                    "responseStatus": None,
                },
            ),
        },
        "responses": {"2XX": {"description": "Delivered; anything else is retried."}},
    }
    return {"GenerationCallback": {f"{{$request.body#/{reply_to}}}": {"post": post}}}


def image_operations() -> dict[str, Any]:
    sync = operation(
        "ImageToText",
        "Convert an image to text and wait",
        "Runs the image through a vision model (Model set) or Florence-2 (no Model) and answers when the job ends.",
        {
            "200": ok("The text.", "TextGenerationResponse", {"results": [{"text": TEXT}], "duration": "PT2.41S"}),
            **errors((*UPLOAD_ERRORS, 500), e400=IMAGE_400, e404=MODEL_404, e405=AGENT_405),
        },
        tag="Image to text",
        parameters=[header("Tag", "Tag, if not sent as a field.")],
        requestBody=multipart(IMAGE_FIELDS, EXAMPLE_IMAGE),
    )
    queue_fields = {**IMAGE_FIELDS, "ReplyTo": REPLY_TO, "State": field("string", "Echoed in the callback.")}
    queue = operation(
        "QueueImageToText",
        "Queue an image",
        "Answers at once; poll `statusUrl` or wait for the ReplyTo callback.",
        {
            "200": ok(
                "The queued job.",
                "QueueGenerationResponse",
                {
                    "jobId": 42,
                    "refId": REF,
                    "jobState": "Queued",
                    "status": "Queued",
                    "statusUrl": status_url("GetTextGenerationStatus"),
                },
            ),
            **errors(UPLOAD_ERRORS, e400=IMAGE_400, e404=MODEL_404, e405=AGENT_405),
        },
        tag="Image to text",
        requestBody=multipart(queue_fields, EXAMPLE_IMAGE | {"ReplyTo": HOOK}),
        parameters=[header("Tag", "Tag, if not sent as a field."), header("ReplyTo", "ReplyTo, if not a field.")],
        callbacks=callbacks("ReplyTo"),
    )
    status = operation(
        "GetTextGenerationStatus",
        "A queued job's state and text",
        "Looks the job up by JobId, else RefId.",
        {
            "200": ok(
                "The job.",
                "GetTextGenerationStatusResponse",
                {
                    "jobId": 42,
                    "refId": REF,
                    "jobState": "Completed",
                    "status": "Completed",
                    "duration": "PT2.41S",
                    "results": [{"text": TEXT}],
                },
            ),
            **errors(LOOKUP_ERRORS, e400=LOOKUP_400),
        },
        tag="Image to text",
        parameters=JOB_LOOKUP,
    )
    return {
        "/api/ImageToText": {"post": sync},
        "/api/QueueImageToText": {"post": queue},
        "/api/GetTextGenerationStatus": {"get": status},
    }


BATCH_FIELDS: dict[str, Schema] = {
    "image": array(field("string", "An image file part.", format="binary"), "Several parts named `image`; or:"),
    "zip": field("string", "One ZIP; its images keep their folder paths.", format="binary"),
    **{name: IMAGE_FIELDS[name] for name in ("Model", "Prompt", "Preset", "Tag")},
    "Prefix": field("string", "Added before every caption as given, e.g. `sks photo, `."),
    "Suffix": field("string", "Added after every caption as given."),
    "Duplicates": field(
        "string",
        "An image the caller already had captioned with the same model and prompt: `again` (default) runs "
        "it, `reuse` takes that caption without running it, `append` runs it and adds to that caption.",
        enum=["again", "reuse", "append"],
    ),
    "RefId": REF_ID,
    "ReplyTo": field("string", "POSTed the GetBatchStatus document, every item in it, once every item ended."),
    "State": field("string", "Echoed as `replyState` in the callback."),
}
BATCH_EXAMPLE = {"zip": "@holiday.zip", "Model": "llava:7b", "Preset": "caption", "Prefix": "sks photo, "}
BATCH_LOOKUP = [
    query("BatchId", {"type": "integer"}, "The batch's id.", 7),
    query("RefId", {"type": "string"}, "The batch's refId; used when BatchId is not given.", "holiday-1"),
]


def batch_operations() -> dict[str, Any]:
    def simple(op_id: str, summary: str, body: dict[str, Schema], example: Any, reply: dict[str, Any]) -> Schema:
        kinds = {int: "integer", str: "string"}
        schema = obj(summary, {name: field(kinds[type(value)], name) for name, value in reply.items()})
        return operation(
            op_id,
            summary,
            "As a JSON body, a form or the query string.",
            {"200": {"description": summary, "content": content(schema, reply)}, **errors(LOOKUP_ERRORS)},
            tag="Batches",
            requestBody={"content": content(obj(summary, body), example)},
        )

    batch_id = {"BatchId": field("integer", "The batch's id."), "RefId": REF_ID}
    queue = operation(
        "QueueImageToTextBatch",
        "Queue many images as one batch",
        "Several `image` parts or one `zip` part (limits: BATCH_MAX_ITEMS images, BATCH_MAX_BYTES in all). A file "
        "that is not an image is skipped with its reason; a ZIP that is not one, or too large, is refused whole.",
        {
            "200": ok(
                "The batch.",
                "QueueImageToTextBatchResponse",
                {
                    "batchId": 7,
                    "refId": "holiday-1",
                    "total": 52,
                    "skipped": [],
                    "statusUrl": status_url("GetBatchStatus"),
                },
            ),
            **errors(UPLOAD_ERRORS, e400=IMAGE_400, e404=MODEL_404, e405=AGENT_405),
        },
        tag="Batches",
        requestBody={
            "required": True,
            "content": content(obj("Multipart form.", BATCH_FIELDS), BATCH_EXAMPLE, "multipart/form-data"),
        },
    )
    status = operation(
        "GetBatchStatus",
        "A batch's progress and items",
        "Items in the order queued, `Skip` and `Take` (default 100, at most 1000) page them.",
        {"200": ok("The batch.", "GetBatchStatusResponse", None), **errors(LOOKUP_ERRORS)},
        tag="Batches",
        parameters=[
            *BATCH_LOOKUP,
            query("Skip", {"type": "integer"}, "Items to skip.", 0),
            query("Take", {"type": "integer"}, "Items to return.", 100),
        ],
    )
    export = operation(
        "GetBatchExport",
        "The batch as a dataset",
        "`zip` (default): each image under its path, a .txt caption beside it, captions.csv and captions.jsonl; "
        "or just the `csv` or `jsonl`. Streamed.",
        {
            "200": {
                "description": "An attachment (Content-Disposition names it after the batch).",
                "content": {
                    **content(field("string", "The dataset ZIP.", format="binary"), media="application/zip"),
                    **content(field("string", "captions.csv"), media="text/csv"),
                    **content(field("string", "captions.jsonl"), media="application/x-ndjson"),
                },
            },
            **errors(LOOKUP_ERRORS),
        },
        tag="Batches",
        parameters=[*BATCH_LOOKUP, query("Format", {"type": "string"}, "zip, csv or jsonl", "zip")],
    )
    caption_body = {"JobId": field("integer", "The item's jobId."), "Caption": field("string", "At most 100,000.")}
    return {
        "/api/QueueImageToTextBatch": {"post": queue},
        "/api/GetBatchStatus": {"get": status},
        "/api/CancelBatch": {
            "post": simple(
                "CancelBatch", "Cancel the items not ended", batch_id, {"BatchId": 7}, {"batchId": 7, "cancelled": 3}
            )
        },
        "/api/RetryBatch": {
            "post": simple(
                "RetryBatch", "Run failed items again", batch_id, {"BatchId": 7}, {"batchId": 7, "retried": 1}
            )
        },
        "/api/UpdateBatchCaption": {
            "post": simple(
                "UpdateBatchCaption",
                "Keep an edited caption",
                caption_body,
                {"JobId": 42, "Caption": "sks, a cat"},
                {"jobId": 42, "batchId": 7, "text": "sks, a cat", "originalText": "a cat"},
            )
        },
        "/api/GetBatchExport": {"get": export},
    }


def generate_operation(op_id: str, default_stream: str) -> Schema:
    body = {"required": True, "content": content(ref("OllamaGenerateRequest"), EXAMPLE_GENERATE)}
    stream = content(ref("OllamaGenerateResponse"), None, "application/x-ndjson")
    return operation(
        op_id,
        f"Ollama's generate API ({default_stream})",
        "One image, or several for an Ollama vision model (Florence-2 and the OCR read one). With `stream`, the reply is "
        "NDJSON: `done: false` chunks as the model writes, then the `done: true` reply (or an error line).",
        {
            "200": ok("The generated text.", "OllamaGenerateResponse", EXAMPLE_REPLY, **stream),
            **errors(
                (*UPLOAD_ERRORS, 500),
                "OllamaErrorResponse",
                e404=MODEL_404,
                e405=AGENT_405,
                e400=ERRORS[400] + " Also: `model` or `images` missing, images not raw base64, more than "
                f"{Conf.MAX_IMAGES_PER_REQUEST}, or several for a model that reads one.",
            ),
        },
        tag="Ollama",
        requestBody=body,
    )


def ollama_operations() -> dict[str, Any]:
    queue = operation(
        "QueueOllamaGeneration",
        "Queue an Ollama generate request",
        "Answers at once; poll `statusUrl` or wait for the callback. `State` is not supported here.",
        {
            "200": ok(
                "The queued job.",
                "QueueOllamaGenerationResponse",
                {"id": 43, "refId": REF, "statusUrl": status_url("GetOllamaGenerationStatus")},
            ),
            **errors(
                UPLOAD_ERRORS,
                "OllamaErrorResponse",
                e404=MODEL_404,
                e405=AGENT_405,
                e400=ERRORS[400] + " Also: `request` is not an object.",
            ),
        },
        tag="Ollama",
        callbacks=callbacks("replyTo"),
        requestBody={
            "required": True,
            "content": content(ref("QueueOllamaGeneration"), {"request": EXAMPLE_GENERATE, "replyTo": HOOK}),
        },
    )
    status = operation(
        "GetOllamaGenerationStatus",
        "A queued Ollama job's state and reply",
        "Looks the job up by JobId, else RefId.",
        {
            "200": ok(
                "The job.",
                "GetOllamaGenerationStatusResponse",
                {"jobId": 43, "refId": REF, "jobState": "Completed", "status": "Completed", "result": EXAMPLE_REPLY},
            ),
            **errors(LOOKUP_ERRORS, e400=LOOKUP_400),
        },
        tag="Ollama",
        parameters=JOB_LOOKUP,
    )
    return {
        "/api/OllamaGeneration": {"post": generate_operation("OllamaGeneration", "no streaming by default")},
        "/api/generate": {"post": generate_operation("OllamaGenerate", "streams by default")},
        "/api/QueueOllamaGeneration": {"post": queue},
        "/api/GetOllamaGenerationStatus": {"get": status},
    }


def model_operations() -> dict[str, Any]:
    models = operation(
        "ActiveAiModels",
        "Models that can take work now",
        "No API key needed: anonymous callers get the model names, as from AI Server. With a key (or a "
        "session) `models` adds each model's kind and task, and for staff the agents offering it.",
        {
            "200": ok("The models.", "ActiveAiModelsResponse", {"results": ["llava:7b", "microsoft/Florence-2-base"]}),
            **errors(
                (401, 403, 429),
                e401="A key was sent, but it is unknown, expired or revoked (`Unauthorized`); send none instead.",
            ),
            "400": {
                "description": "Vision is not a boolean, or Provider is unknown.",
                "content": content(ref("ErrorResponse")),
            },
            "405": {"description": "Wrong HTTP method (empty body)."},
        },
        tag="Models",
        security=[],
        parameters=[
            query("Vision", {"type": "boolean"}, "true: only models that read images; false: only text ones.", True),
            query(
                "Provider",
                {"type": "string"},
                "`ollama`, `comfyui`, or AI Server's `OllamaAiProvider`/`Comfy`.",
                "ollama",
            ),
        ],
    )
    return {"/api/ActiveAiModels": {"get": models}}


def build_document() -> dict[str, Any]:
    """The whole OpenAPI document, as a plain dict ready for json.dumps."""
    from imagetotext.api import openapi_compat  # it builds on this module's builders and schemas

    return {
        "openapi": "3.1.0",
        "info": {"title": "Image to Text API", "version": VERSION, "description": DESCRIPTION},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "tags": [
            {"name": "Image to text"},
            {"name": "Batches"},
            {"name": "Ollama"},
            {"name": "OpenAI"},
            {"name": "Models"},
        ],
        "paths": {
            **image_operations(),
            **batch_operations(),
            **ollama_operations(),
            **openapi_compat.ollama_operations(),
            **openapi_compat.openai_operations(),
            **model_operations(),
        },
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "ak-…",
                    "description": "An API key `ak-…`, made with `manage.py createapikey NAME` or in the admin.",
                }
            },
            "schemas": SCHEMAS | openapi_compat.SCHEMAS,
        },
    }
