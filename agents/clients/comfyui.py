"""ComfyUI agents running Florence-2 (the kijai ComfyUI-Florence2 nodes)."""

from __future__ import annotations

import hashlib
import json
import posixpath
import threading
import time
import uuid
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import httpx
from django.conf import settings
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from agents.clients import florence
from agents.clients.base import (
    AgentCancelled,
    AgentClient,
    AgentError,
    AgentUnavailable,
    OnText,
    TextRequest,
    TextResult,
    decode,
    error_text,
)
from agents.models import Capability, DiscoveredModel, Discovery, Kind

MISSING_NODES = (
    f"ComfyUI answers, but the Florence-2 nodes ({florence.RUN_NODE}, {florence.DOWNLOAD_NODE}) are not "
    "installed: add the ComfyUI-Florence2 custom node to this server."
)
POLL_INTERVAL = 0.5
# How long stopping a prompt may take before we leave it be.
INTERRUPT_SECONDS = 5.0
# on_text("") runs at least this often while waiting, so a cancelled job stops promptly.
HEARTBEAT = 1.0


@dataclass(frozen=True)
class Deadline:
    """The time left for one run: TASK_TIMEOUT, the ceiling of every job."""

    seconds: float
    ends_at: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(seconds, time.monotonic() + seconds)

    def left(self) -> float:
        """Seconds remaining; raises DeadlineExceeded once there are none."""
        left = self.ends_at - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded(f"no result within {self.seconds:g} s")
        return left


class DeadlineExceeded(AgentUnavailable):
    """The run's whole budget ran out."""


@dataclass(frozen=True)
class PromptRun:
    """A prompt ComfyUI accepted, and what waiting for it needs."""

    prompt_id: str
    on_text: OnText
    deadline: Deadline


class ComfyUIClient(AgentClient):
    kind = Kind.COMFYUI
    # The display node class this server offers, learned on first use.
    _display: str | None = None

    def discover(self) -> Discovery:
        stats = self.request_json("GET", "/system_stats")
        version = str((stats.get("system") or {}).get("comfyui_version", ""))
        run = self.node_info(florence.RUN_NODE)
        download = self.node_info(florence.DOWNLOAD_NODE)
        if not run or not download:
            return Discovery(version=version, models=[], note=MISSING_NODES)
        tasks = combo_options(run, "task")
        installed = set(combo_options(self.node_info(florence.LOCAL_LOADER_NODE), "model"))
        models = [
            DiscoveredModel(
                name=name,
                capability=Capability.FLORENCE2,
                details={"tasks": tasks, "installed": name.rsplit("/", 1)[-1] in installed},
            )
            for name in combo_options(download, "model")
        ]
        return Discovery(version=version, models=models)

    def node_info(self, class_type: str) -> dict[str, Any]:
        """The node's object_info entry, or {} when the node is not installed."""
        return self.request_json("GET", f"/object_info/{class_type}").get(class_type) or {}

    def image_to_text(self, request: TextRequest, on_text: OnText | None = None) -> TextResult:
        """Caption the image: upload it, queue the Florence-2 graph, wait for the run, read /history."""
        deadline = Deadline.after(settings.TASK_TIMEOUT)
        graph = florence.caption_graph(self.upload(request.image, deadline), request, self.display_class())
        client_id = uuid.uuid4().hex
        # The socket must be open before the prompt is queued, or its first events are lost.
        ws = self.open_socket(client_id, deadline)
        with ws or nullcontext():
            run = PromptRun(self.queue(graph, client_id, deadline), on_text or never_cancelled, deadline)
            entry = self.wait(run, ws)
        text = caption_from(entry)
        run.on_text(text)
        return TextResult(text=text, raw=entry)

    def upload(self, image: bytes, deadline: Deadline) -> str:
        """Store the image in ComfyUI's input folder; returns the name LoadImage takes."""
        extension, content_type = image_format(image)
        # Named by content, so sending the same image again reuses the stored file.
        name = f"aiserver-{hashlib.sha256(image).hexdigest()[:16]}.{extension}"
        files = {"image": (name, image, content_type)}
        stored = decode(self.send_within("POST", "/upload/image", deadline, files=files, data={"type": "input"}))
        path = posixpath.join(str(stored.get("subfolder") or ""), str(stored.get("name") or name))
        kind = stored.get("type") or "input"
        return path if kind == "input" else f"{path} [{kind}]"

    def display_class(self) -> str:
        """PreviewAny when the server has it, else ShowText; asked once per client."""
        if self._display is None:
            has_preview_any = bool(self.node_info(florence.PREVIEW_ANY))
            self._display = florence.PREVIEW_ANY if has_preview_any else florence.SHOW_TEXT
        return self._display

    def open_socket(self, client_id: str, deadline: Deadline) -> ClientConnection | None:
        """The /ws connection for client_id, or None when the server refuses the upgrade (we poll then)."""
        url = websocket_url(self.agent.base_url) + f"/ws?clientId={client_id}"
        timeout = min(self.agent.first_byte_timeout, deadline.left())
        headers = self.agent.auth_headers()
        try:
            # Pings are ours (Silence): a lost pong must fail the run, not only close the socket.
            return connect(url, additional_headers=headers, open_timeout=timeout, close_timeout=1, ping_interval=None)
        except InvalidStatus as error:
            status = error.response.status_code
            if status >= 500:
                raise AgentUnavailable(f"{url} answered {status} to the WebSocket upgrade") from None
            return None  # e.g. a proxy that does not pass upgrades; /history still works
        except TimeoutError:
            raise AgentUnavailable(f"No WebSocket from {url} within {timeout:g} s") from None
        except (OSError, InvalidHandshake) as error:
            reason = "connection refused" if isinstance(error, ConnectionRefusedError) else str(error)
            raise AgentUnavailable(f"Cannot open {url}: {reason}") from None

    def queue(self, graph: dict[str, Any], client_id: str, deadline: Deadline) -> str:
        """POST the graph; returns the prompt_id the server uses."""
        body = {"prompt": graph, "client_id": client_id, "prompt_id": str(uuid.uuid4())}
        response = self.send_within("POST", "/prompt", deadline, json=body)
        if response.status_code == 400:
            raise self.rejection(response)
        # Servers older than 2025-07 ignore our prompt_id and make their own.
        return str(decode(response).get("prompt_id") or body["prompt_id"])

    def rejection(self, response: httpx.Response) -> AgentError:
        """The AgentError for a 400 from POST /prompt, built from ComfyUI's error body."""
        body = parse_json(response.content)
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict):
            return AgentError(f"ComfyUI refused the prompt (400): {error_text(response)}")
        if error.get("type") in ("missing_node_type", "invalid_prompt") and names_florence(error):
            return AgentError(
                f"ComfyUI at {self.agent.base_url} lacks the Florence-2 nodes "
                f"({florence.RUN_NODE}, {florence.DOWNLOAD_NODE}): install ComfyUI-Florence2 there",
                retry_elsewhere=True,
            )
        parts = [error.get("message"), error.get("details"), *node_error_lines(body.get("node_errors"))]
        summary = "; ".join(str(part) for part in parts if part)
        return AgentError(f"ComfyUI rejected the prompt: {summary}", retry_elsewhere=False)

    def wait(self, run: PromptRun, ws: ClientConnection | None) -> dict[str, Any]:
        """The prompt's /history entry once it ran; a prompt that outlives the deadline is stopped."""
        try:
            if ws is not None:
                self.follow(ws, run)
            return self.poll(run)
        except DeadlineExceeded:
            # Otherwise the server would go on with it while the job fails over elsewhere.
            self.interrupt(run.prompt_id)
            raise

    def follow(self, ws: ClientConnection, run: PromptRun) -> None:
        """Read the socket until the prompt finishes; returns early if the socket drops."""
        silence = Silence(ws, self.agent.idle_timeout)
        while True:
            self.heartbeat(run)
            try:
                frame = ws.recv(timeout=min(silence.step, run.deadline.left()))
                silence.heard()
            except TimeoutError:
                silence.check()
                continue
            except ConnectionClosed:
                return  # the caller polls /history, which ComfyUI writes whether or not we listen
            if finished(frame, run.prompt_id):
                return

    def poll(self, run: PromptRun) -> dict[str, Any]:
        """The prompt's /history entry, asking every POLL_INTERVAL until it is written."""
        while True:
            if entry := self.history_entry(run):
                return entry
            if not self.still_queued(run) and not (entry := self.history_entry(run)):
                # ComfyUI keeps its queue and history in memory: it restarted, and the prompt is gone.
                raise AgentUnavailable("ComfyUI lost the prompt: it is neither queued, running nor in its history")
            if entry:
                return entry  # it finished between the two looks
            self.heartbeat(run)
            time.sleep(min(POLL_INTERVAL, run.deadline.left()))

    def history_entry(self, run: PromptRun) -> dict[str, Any] | None:
        reply = decode(self.send_within("GET", f"/history/{run.prompt_id}", run.deadline))
        entry = reply.get(run.prompt_id) if isinstance(reply, dict) else None
        return entry or None

    def still_queued(self, run: PromptRun) -> bool:
        """Whether the prompt waits in ComfyUI's queue or runs (GET /queue lists [number, prompt_id, ...])."""
        queue = decode(self.send_within("GET", "/queue", run.deadline))
        items = [*(queue.get("queue_running") or []), *(queue.get("queue_pending") or [])]
        return any(isinstance(item, list) and len(item) > 1 and item[1] == run.prompt_id for item in items)

    def heartbeat(self, run: PromptRun) -> None:
        """Tell on_text we are still waiting; stop the prompt if the job was cancelled."""
        if run.on_text(""):
            self.interrupt(run.prompt_id)
            raise AgentCancelled("Stopped the ComfyUI prompt: the job was cancelled")

    def interrupt(self, prompt_id: str) -> None:
        """Stop the prompt whether it is running or still queued; best effort."""
        deadline = Deadline.after(INTERRUPT_SECONDS)
        try:
            self.send_within("POST", "/interrupt", deadline, json={"prompt_id": prompt_id})
            self.send_within("POST", "/queue", deadline, json={"delete": [prompt_id]})
        except AgentError:
            pass  # the job is cancelled either way; a dead server runs nothing

    def send_within(self, method: str, path: str, deadline: Deadline, **kwargs: Any) -> httpx.Response:
        """One request within the agent's timeouts and what is left of the deadline."""
        left, agent = deadline.left(), self.agent
        first_byte, connect = min(agent.first_byte_timeout, left), min(agent.connect_timeout, left)
        try:
            return self.send(method, path, timeout=httpx.Timeout(first_byte, connect=connect), **kwargs)
        except AgentUnavailable:
            deadline.left()  # raises DeadlineExceeded when the whole budget is spent
            raise


class Silence:
    """Notices a WebSocket that has gone quiet for the agent's idle timeout and answers no ping.

    A node can run for minutes without a message (Florence2Run sends no progress), but ComfyUI's
    event loop answers pings while it does; a lost pong means a frozen server or a dead link.
    """

    def __init__(self, ws: ClientConnection, idle_timeout: float) -> None:
        self.ws, self.idle_timeout = ws, idle_timeout
        self.heard_at = time.monotonic()
        self.pong: threading.Event | None = None
        # Often enough to ping on time however short the idle timeout.
        self.step = min(HEARTBEAT, idle_timeout / 4)

    def heard(self) -> None:
        self.heard_at, self.pong = time.monotonic(), None

    def check(self) -> None:
        """Ping after half the idle timeout of quiet; raise AgentUnavailable when the whole of it passed."""
        if self.pong is not None and self.pong.is_set():
            self.heard()
        quiet = time.monotonic() - self.heard_at
        if quiet >= self.idle_timeout:
            raise AgentUnavailable(
                f"ComfyUI went silent for {self.idle_timeout:g} s: no message and no answer to a ping (idle timeout)"
            )
        if self.pong is None and quiet >= self.idle_timeout / 2:
            try:
                self.pong = self.ws.ping()
            except ConnectionClosed:
                pass  # the next recv() sees it


def never_cancelled(text: str) -> bool:
    return False


def combo_options(node: dict[str, Any], input_name: str) -> list[str]:
    """The choices of a combo input, in the old list form or the newer COMBO form."""
    inputs = node.get("input") or {}
    spec = (inputs.get("required") or {}).get(input_name) or (inputs.get("optional") or {}).get(input_name)
    if not spec:
        return []
    if isinstance(spec[0], list):
        return [str(option) for option in spec[0]]
    if spec[0] == "COMBO" and len(spec) > 1:
        return [str(option) for option in spec[1].get("options", [])]
    return []


def image_format(data: bytes) -> tuple[str, str]:
    """File extension and content type for the image bytes."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpg", "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp", "image/webp"
    if data.startswith(b"GIF8"):
        return "gif", "image/gif"
    return "png", "image/png"  # what images.prepare produces otherwise; PIL reads by content anyway


def websocket_url(base_url: str) -> str:
    """http(s)://host/prefix → ws(s)://host/prefix."""
    return "ws" + base_url.rstrip("/").removeprefix("http")


def finished(frame: str | bytes, prompt_id: str) -> bool:
    """True when this frame ends our prompt; raises if it ended in an error."""
    message = parse_json(frame) if isinstance(frame, str) else None  # binary frames are previews
    if not isinstance(message, dict) or not isinstance(message.get("data"), dict):
        return False
    kind, data = message.get("type"), message["data"]
    if data.get("prompt_id") != prompt_id:
        return False
    if kind in ("execution_error", "execution_interrupted"):
        raise run_failure(kind, data)
    return kind == "executing" and "node" in data and data["node"] is None


def caption_from(entry: dict[str, Any]) -> str:
    """The display node's text in a /history entry; raises if the run failed."""
    status = entry.get("status") or {}
    if status.get("status_str") == "error":
        for event, data in status.get("messages") or []:
            if event in ("execution_error", "execution_interrupted"):
                raise run_failure(event, data)
        raise AgentError("The prompt failed on the ComfyUI server")
    return florence.caption_in(entry.get("outputs") or {})


def run_failure(event: str, data: dict[str, Any]) -> AgentError:
    """The AgentError for an execution_error or execution_interrupted event."""
    if event == "execution_interrupted":
        return AgentError("interrupted on the ComfyUI server")
    kind = str(data.get("exception_type") or "Error")
    message = str(data.get("exception_message") or "").rstrip()
    # Another agent with more memory (or less load) may well succeed.
    out_of_memory = "OutOfMemory" in kind or "out of memory" in message.lower()
    return AgentError(f"{kind}: {message}", retry_elsewhere=out_of_memory)


def names_florence(error: dict[str, Any]) -> bool:
    """Whether a missing-node error is about one of the Florence-2 nodes."""
    text = f"{error.get('message')} {(error.get('extra_info') or {}).get('class_type')}"
    return any(node in text for node in florence.FLORENCE_NODES)


def node_error_lines(node_errors: Any) -> list[str]:
    """One line per error in ComfyUI's node_errors: class, node id, message, details."""
    if not isinstance(node_errors, dict):
        return []
    return [
        f"{entry.get('class_type')} node {node_id}: {error.get('message')}: {error.get('details')}"
        for node_id, entry in node_errors.items()
        if isinstance(entry, dict)
        for error in entry.get("errors") or []
    ]


def parse_json(raw: str | bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None
