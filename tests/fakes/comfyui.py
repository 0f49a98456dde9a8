"""A fake ComfyUI server with the kijai Florence-2 nodes installed (protocols.md B.1-B.9)."""

from __future__ import annotations

import asyncio
import json
import mimetypes
import posixpath
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.base import RECORDED, FakeServer
from tests.fakes.comfyui_nodes import (
    FILE_TYPES,
    api_error,
    is_link,
    object_info,
    split_annotation,
    upstream,
    validate_prompt,
)

TEXT_INPUT_TASKS = ("referring_expression_segmentation", "caption_to_phrase_grounding", "docvqa")
TEXT_INPUT_ERROR = (
    "Text input (prompt) is only supported for 'referring_expression_segmentation', "
    "'caption_to_phrase_grounding', and 'docvqa'\n"
)
# What mode "execution_error" fails with: a realistic out-of-memory error.
FORCED_ERROR = (
    "torch.OutOfMemoryError",
    "Allocation on device \nThis error means you ran out of memory on your GPU.\n",
)
DEFAULT_CAPTIONS = {
    "caption": "A cat sitting on a wooden table.",
    "detailed_caption": "The image shows a grey tabby cat sitting on a wooden table next to a window.",
    "more_detailed_caption": "The image shows a grey tabby cat with green eyes sitting on a wooden table. "
    "Soft daylight comes through the window behind it.",
    "ocr": "OPEN DAILY 9AM - 5PM",
}
FEATURE_FLAGS = {"supports_preview_metadata": True, "max_upload_size": 104857600.0}
# A 1x1 PNG: what SaveImage and PreviewImage "produce".
TINY_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


@dataclass
class QueuedPrompt:
    number: float
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs: list[str]

    @property
    def client_id(self) -> str | None:
        return self.extra_data.get("client_id")

    def as_list(self) -> list[Any]:
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs]


class FakeComfyUI(FakeServer):
    """Fake ComfyUI. `caption_for(task)` is the exact text a run puts in the display node's output."""

    extra_modes = frozenset({"execution_error"})
    streaming_paths = frozenset({"/ws", "/api/ws"})

    def __init__(
        self,
        *,
        captions: dict[str, str] | None = None,
        run_seconds: float = 0.1,
        florence_installed: bool = True,
        custom_scripts_installed: bool = True,
        preview_any_installed: bool = True,
        installed_models: Iterable[str] = ("Florence-2-base",),
        latency: float = 0.0,
        mode: str = "ok",
    ) -> None:
        super().__init__(latency=latency, mode=mode)
        self.captions: dict[str, str] = {**DEFAULT_CAPTIONS, **(captions or {})}
        self.run_seconds = run_seconds
        self.florence_installed = florence_installed
        self.custom_scripts_installed = custom_scripts_installed
        self.preview_any_installed = preview_any_installed
        self.installed_models = list(installed_models)
        self.files: dict[tuple[str, str, str], bytes] = {}  # (type, subfolder, name) -> bytes
        self.history: dict[str, dict[str, Any]] = {}
        self._sockets: dict[str, tuple[web.WebSocketResponse, web.Request]] = {}
        self._pending: list[QueuedPrompt] = []
        self._running: QueuedPrompt | None = None
        self._current_node: str | None = None
        self._number = 0
        self._interrupt = asyncio.Event()
        self._wakeup = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None

    def caption_for(self, task: str, text_input: str = "") -> str:
        """The caption Florence2Run gives for `task`; set `captions[task]` to change it."""
        return self.captions.get(task, f"Florence-2 {task} output.")

    @property
    def running_prompt(self) -> str | None:
        """The prompt_id being executed now, if any."""
        return self._running.prompt_id if self._running else None

    def restart(self) -> None:
        """Restart in an instant, on the same port: the sockets close and, as ComfyUI keeps them in
        memory, the queue and the history are gone (a restart slower than a client's next request
        looks like mode "refuse" first)."""
        self._call(self._restart())

    async def _restart(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        for ws, _ in list(self._sockets.values()):
            await ws.close()
        self._sockets.clear()
        self._pending.clear()
        self.history.clear()
        await self.on_started()

    def add_file(self, name: str, data: bytes, *, type: str = "input", subfolder: str = "") -> None:
        """Put a file on the fake's disk, as if uploaded or produced by a run."""
        self.files[(type, subfolder, name)] = data

    # --- routes ----------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        routes = [
            ("GET", "/ws", self._websocket),
            ("POST", "/prompt", self._post_prompt),
            ("GET", "/prompt", self._get_prompt),
            ("GET", "/history", self._get_history),
            ("GET", "/history/{prompt_id}", self._get_history),
            ("POST", "/history", self._post_history),
            ("GET", "/queue", self._get_queue),
            ("POST", "/queue", self._post_queue),
            ("POST", "/interrupt", self._post_interrupt),
            ("POST", "/upload/image", self._upload_image),
            ("GET", "/view", self._view),
            ("GET", "/object_info", self._object_info),
            ("GET", "/object_info/{node_class}", self._object_info),
            ("GET", "/system_stats", self._system_stats),
        ]
        for prefix in ("", "/api"):  # ComfyUI serves every route under both
            for method, path, handler in routes:
                app.router.add_route(method, prefix + path, handler)

    async def on_started(self) -> None:
        # Fresh events: asyncio events bind to the first loop that waits on them, and a restart makes a new loop.
        self._interrupt, self._wakeup = asyncio.Event(), asyncio.Event()
        self._running = self._current_node = None
        self._worker = asyncio.create_task(self._work())

    async def on_stopping(self) -> None:
        if self._worker is not None:
            self._worker.cancel()

    async def on_mode_changed(self) -> None:
        if self.mode == "drop":  # the link dies under the open sockets too
            for _, request in self._sockets.values():
                if request.transport is not None:
                    request.transport.close()

    async def _post_prompt(self, request: web.Request) -> web.StreamResponse:
        body = _loads(request[RECORDED].body)
        if not isinstance(body, dict):
            return self.failure_response()  # ComfyUI does not catch this; aiohttp answers 500
        number = float(body["number"]) if "number" in body else self._take_number(body)
        if "prompt" not in body:
            return _rejected(api_error("no_prompt", "No prompt provided", "No prompt provided"))
        prompt_id = body.get("prompt_id", str(uuid.uuid4()))
        if not _is_canonical_uuid(prompt_id):
            return _rejected(
                api_error(
                    "invalid_prompt_id",
                    "prompt_id must be a valid UUID",
                    "prompt_id must be a UUID string in canonical lowercase hyphenated form; "
                    "omit it to let the server generate one",
                )
            )
        if not isinstance(body["prompt"], dict):
            return self.failure_response()
        error, node_errors, outputs = validate_prompt(body["prompt"], self.object_info(), self._has_input_file)
        if error is not None:
            return _rejected(error, node_errors)
        extra_data = {**body.get("extra_data", {}), "create_time": _ms()}
        if "client_id" in body:
            extra_data["client_id"] = body["client_id"]
        self._pending.append(QueuedPrompt(number, prompt_id, body["prompt"], extra_data, outputs))
        self._wakeup.set()
        await self._broadcast_status()
        return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": node_errors})

    def _take_number(self, body: dict[str, Any]) -> float:
        number = self._number
        self._number += 1
        return -number if body.get("front") else number

    async def _get_prompt(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self._queue_info()["status"])

    async def _get_history(self, request: web.Request) -> web.StreamResponse:
        prompt_id = request.match_info.get("prompt_id")
        if prompt_id is None:
            return web.json_response(self.history)
        # Pending, running and unknown prompts all look the same: {}.
        entry = self.history.get(prompt_id)
        return web.json_response({prompt_id: entry} if entry else {})

    async def _post_history(self, request: web.Request) -> web.StreamResponse:
        body = _loads(request[RECORDED].body)
        if isinstance(body, dict):
            if body.get("clear"):
                self.history.clear()
            for prompt_id in body.get("delete", []):
                self.history.pop(prompt_id, None)
        return web.Response()

    async def _get_queue(self, request: web.Request) -> web.StreamResponse:
        running = [self._running.as_list()] if self._running else []
        return web.json_response({"queue_running": running, "queue_pending": [p.as_list() for p in self._pending]})

    async def _post_queue(self, request: web.Request) -> web.StreamResponse:
        body = _loads(request[RECORDED].body)
        if isinstance(body, dict):
            if body.get("clear"):
                self._pending.clear()
            doomed = set(body.get("delete", []))
            self._pending = [p for p in self._pending if p.prompt_id not in doomed]
            await self._broadcast_status()
        return web.Response()

    async def _post_interrupt(self, request: web.Request) -> web.StreamResponse:
        body = _loads(request[RECORDED].body)
        wanted = body.get("prompt_id") if isinstance(body, dict) else None
        if self._running is not None and wanted in (None, self._running.prompt_id):
            self._interrupt.set()
        return web.Response()

    async def _upload_image(self, request: web.Request) -> web.StreamResponse:
        form = request[RECORDED].form
        upload = form.get("image")
        if isinstance(upload, str) or upload is None or not upload.filename:
            return web.Response(status=400)
        kind, subfolder = str(form.get("type", "input")), str(form.get("subfolder", ""))
        if kind not in FILE_TYPES:
            return self.failure_response()  # ComfyUI hits an unbound variable here
        if _escapes(subfolder) or _escapes(posixpath.join(subfolder, upload.filename)):
            return web.Response(status=400)
        request[RECORDED].images.append(upload.data)
        name = upload.filename
        if form.get("overwrite") not in ("true", "1"):
            name = self._free_name(kind, subfolder, name, upload.data)
        self.files[(kind, subfolder, name)] = upload.data
        return web.json_response({"name": name, "subfolder": subfolder, "type": kind})

    def _free_name(self, kind: str, subfolder: str, name: str, data: bytes) -> str:
        # Same content keeps the existing name; different content gets "name (1).ext".
        stem, ext = posixpath.splitext(name)
        candidate, counter = name, 1
        while (kind, subfolder, candidate) in self.files and self.files[(kind, subfolder, candidate)] != data:
            candidate, counter = f"{stem} ({counter}){ext}", counter + 1
        return candidate

    async def _view(self, request: web.Request) -> web.StreamResponse:
        if "filename" not in request.query:
            return web.Response(status=404)
        kind, name = split_annotation(request.query["filename"], request.query.get("type", "output"))
        if not name or name.startswith("/") or ".." in name or kind not in FILE_TYPES:
            return web.Response(status=400)
        subfolder = request.query.get("subfolder", "")
        if _escapes(subfolder):
            return web.Response(status=403)
        data = self.files.get((kind, subfolder, name))
        if data is None:
            return web.Response(status=404)
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        return web.Response(body=data, content_type=content_type, headers={"Content-Disposition": f'filename="{name}"'})

    async def _object_info(self, request: web.Request) -> web.StreamResponse:
        nodes = self.object_info()
        wanted = request.match_info.get("node_class")
        if wanted is None:
            return web.json_response(nodes)
        return web.json_response({wanted: nodes[wanted]} if wanted in nodes else {})

    async def _system_stats(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {
                "system": {
                    "os": "posix",
                    "ram_total": 67108864000,
                    "ram_free": 50000000000,
                    "comfyui_version": "0.3.64",
                    "required_frontend_version": "1.27.10",
                    "python_version": "3.12.3 (main) [GCC 13.2.0]",
                    "pytorch_version": "2.8.0+cu128",
                    "embedded_python": False,
                    "argv": ["main.py", "--listen", "0.0.0.0"],
                },
                "devices": [
                    {
                        "name": "cuda:0 NVIDIA GeForce RTX 4090 : cudaMallocAsync",
                        "type": "cuda",
                        "index": 0,
                        "vram_total": 25386352640,
                        "vram_free": 24100000000,
                        "torch_vram_total": 0,
                        "torch_vram_free": 0,
                    }
                ],
            }
        )

    # --- websocket -------------------------------------------------------------

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        # Pings are answered by hand, so that mode "hang" can leave them unanswered.
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        sid = request.query.get("clientId") or uuid.uuid4().hex
        # A reconnect takes over the id; the old socket stays open but gets nothing more.
        self._sockets[sid] = (ws, request)
        try:
            await self._send(sid, "status", {**self._queue_info(), "sid": sid})
            if self._running and self._running.client_id == sid and self._current_node:
                await self._send(sid, "executing", {"node": self._current_node})
            first = True
            async for message in ws:
                if message.type == WSMsgType.PING:
                    if self.mode != "hang":
                        await ws.pong(message.data)
                    continue
                data = _loads(message.data.encode()) if message.type == WSMsgType.TEXT else None
                if first and isinstance(data, dict) and data.get("type") == "feature_flags":
                    await self._send(sid, "feature_flags", FEATURE_FLAGS)
                first = False
        finally:
            if self._sockets.get(sid, (None,))[0] is ws:
                del self._sockets[sid]
        return ws

    async def _send(self, sid: str | None, event: str, data: dict[str, Any]) -> None:
        ws, request = self._sockets.get(sid or "", (None, None))
        if ws is None or ws.closed:
            return  # messages for a disconnected client are lost, as in ComfyUI
        if self.mode == "hang":
            return  # the server goes on, but nothing it sends arrives (a frozen link)
        try:
            await ws.send_json({"type": event, "data": data})
        except ConnectionError:
            return
        if self.mode == "drop" and request is not None and request.transport is not None:
            request.transport.close()  # one message got through, then the link dies

    async def _broadcast_status(self) -> None:
        for sid in list(self._sockets):
            await self._send(sid, "status", self._queue_info())

    def _queue_info(self) -> dict[str, Any]:
        remaining = len(self._pending) + (1 if self._running else 0)
        return {"status": {"exec_info": {"queue_remaining": remaining}}}

    def object_info(self) -> dict[str, dict[str, Any]]:
        """node_info for every installed node class, as GET /object_info returns it."""
        inputs = sorted(posixpath.join(sub, name) for kind, sub, name in self.files if kind == "input")
        return object_info(
            inputs,
            self.installed_models,
            florence=self.florence_installed,
            show_text=self.custom_scripts_installed,
            preview_any=self.preview_any_installed,
        )

    def _has_input_file(self, annotated: str) -> bool:
        kind, path = split_annotation(annotated, "input")
        subfolder, _, name = path.rpartition("/")
        return (kind, subfolder, name) in self.files

    # --- execution -------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            while not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            await self._execute(self._pending.pop(0))

    async def _execute(self, item: QueuedPrompt) -> None:
        self._running = item
        self._interrupt.clear()
        await self._broadcast_status()
        order = [nid for out in item.outputs for nid in upstream(item.prompt, out)]
        order = list(dict.fromkeys(order))
        messages: list[list[Any]] = []
        outputs: dict[str, Any] = {}
        meta: dict[str, Any] = {}
        stamp = {"prompt_id": item.prompt_id}
        await self._event(item, "execution_start", stamp | {"timestamp": _ms()}, messages)
        await self._event(item, "execution_cached", {"nodes": []} | stamp | {"timestamp": _ms()}, messages)
        failed = await self._run_nodes(item, order, outputs, meta, messages)
        if not failed:
            await self._event(item, "execution_success", stamp | {"timestamp": _ms()}, messages)
        self.history[item.prompt_id] = {
            "prompt": item.as_list(),
            "outputs": {} if failed else outputs,
            "status": {"status_str": "error" if failed else "success", "completed": not failed, "messages": messages},
            "meta": meta,
        }
        self._running = self._current_node = None
        await self._broadcast_status()
        await self._send(item.client_id, "executing", {"node": None, "prompt_id": item.prompt_id})

    async def _run_nodes(
        self,
        item: QueuedPrompt,
        order: list[str],
        outputs: dict[str, Any],
        meta: dict[str, Any],
        messages: list[list[Any]],
    ) -> bool:
        """Run each node in turn; True when the run ended in an error or an interrupt."""
        step = self.run_seconds / max(1, len(order))
        doomed = next((nid for nid in order if item.prompt[nid]["class_type"] == "Florence2Run"), order[0])
        executed: list[str] = []
        for nid in order:
            node_type = item.prompt[nid]["class_type"]
            self._current_node = nid
            await self._progress(item, nid, "running")
            executing = {"node": nid, "display_node": nid, "prompt_id": item.prompt_id}
            await self._send(item.client_id, "executing", executing)
            if await self._interrupted_within(step):
                data = {
                    "prompt_id": item.prompt_id,
                    "node_id": nid,
                    "node_type": node_type,
                    "executed": executed,
                    "timestamp": _ms(),
                }
                await self._event(item, "execution_interrupted", data, messages)
                return True
            failure = self._failure(item.prompt[nid], forced=self.mode == "execution_error" and nid == doomed)
            if failure is not None:
                await self._progress(item, nid, "error")
                await self._event(item, "execution_error", _error_data(item, nid, executed, failure), messages)
                return True
            await self._finish_node(item, nid, outputs, meta)
            executed = [*executed, nid]
        return False

    async def _finish_node(self, item: QueuedPrompt, nid: str, outputs: dict[str, Any], meta: dict[str, Any]) -> None:
        ui = self._node_ui(item.prompt, nid)
        if ui is not None:
            outputs[nid] = ui
            meta[nid] = {"node_id": nid, "display_node": nid, "parent_node": None, "real_node_id": nid}
            await self._send(
                item.client_id,
                "executed",
                {"node": nid, "display_node": nid, "output": ui, "prompt_id": item.prompt_id},
            )
        await self._progress(item, nid, "finished")

    def _failure(self, node: dict[str, Any], *, forced: bool) -> tuple[str, str] | None:
        inputs = node.get("inputs", {})
        if node["class_type"] == "Florence2Run" and inputs.get("text_input"):
            if inputs.get("task") not in TEXT_INPUT_TASKS:
                return ("ValueError", TEXT_INPUT_ERROR)
        return FORCED_ERROR if forced else None

    def _node_ui(self, prompt: dict[str, Any], nid: str) -> dict[str, Any] | None:
        node = prompt[nid]
        if node["class_type"] in ("PreviewAny", "ShowText|pysssss"):
            link = node["inputs"].get("source" if node["class_type"] == "PreviewAny" else "text")
            return {"text": [self._linked_text(prompt, link)]}
        if node["class_type"] in ("SaveImage", "PreviewImage"):
            kind = "output" if node["class_type"] == "SaveImage" else "temp"
            name = f"ComfyUI_{len(self.files):05}_.png"
            self.add_file(name, TINY_PNG, type=kind)
            return {"images": [{"filename": name, "subfolder": "", "type": kind}]}
        return None

    def _linked_text(self, prompt: dict[str, Any], link: Any) -> str:
        if not is_link(link) or link[0] not in prompt:
            return json.dumps(link) if not isinstance(link, str) else link
        source = prompt[link[0]]
        if source["class_type"] == "Florence2Run" and link[1] == 2:
            return self.caption_for(source["inputs"].get("task", ""), source["inputs"].get("text_input", ""))
        return f"<output {link[1]} of {source['class_type']}>"

    async def _interrupted_within(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self._interrupt.wait(), seconds)
            return True
        except TimeoutError:
            return False

    async def _event(self, item: QueuedPrompt, event: str, data: dict[str, Any], messages: list[list[Any]]) -> None:
        messages.append([event, data])
        if item.client_id is None and event == "execution_interrupted":
            for sid in list(self._sockets):  # the one per-prompt event ComfyUI broadcasts
                await self._send(sid, event, data)
        else:
            await self._send(item.client_id, event, data)

    async def _progress(self, item: QueuedPrompt, nid: str, state: str) -> None:
        node = {
            "value": 0 if state == "running" else 1,
            "max": 1,
            "state": state,
            "node_id": nid,
            "prompt_id": item.prompt_id,
            "display_node_id": nid,
            "parent_node_id": None,
            "real_node_id": nid,
        }
        data = {"prompt_id": item.prompt_id, "nodes": {nid: node}}
        for sid in [item.client_id] if item.client_id else list(self._sockets):
            await self._send(sid, "progress_state", data)


# --- small helpers ---------------------------------------------------------------


def _rejected(error: dict[str, Any], node_errors: dict[str, Any] | None = None) -> web.Response:
    return web.json_response({"error": error, "node_errors": node_errors or {}}, status=400)


def _error_data(item: QueuedPrompt, nid: str, executed: list[str], failure: tuple[str, str]) -> dict[str, Any]:
    node = item.prompt[nid]
    # Like ComfyUI, inputs are lists and anything that is not a primitive goes through str().
    inputs = {
        name: [value if isinstance(value, (str, int, float, bool)) else str(value)]
        for name, value in node.get("inputs", {}).items()
    }
    return {
        "prompt_id": item.prompt_id,
        "node_id": nid,
        "node_type": node["class_type"],
        "executed": executed,
        "exception_message": failure[1],
        "exception_type": failure[0],
        "traceback": ['  File "/ComfyUI/execution.py", line 277, in get_output_data\n'],
        "current_inputs": inputs,
        "current_outputs": executed,
        "timestamp": _ms(),
    }


def _escapes(subfolder: str) -> bool:
    return subfolder.startswith("/") or posixpath.normpath(subfolder or ".").startswith("..")


def _is_canonical_uuid(value: Any) -> bool:
    try:
        return isinstance(value, str) and str(uuid.UUID(value)) == value
    except ValueError:
        return False


def _loads(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _ms() -> int:
    return int(time.time() * 1000)
