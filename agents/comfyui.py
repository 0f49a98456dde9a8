"""ComfyUI agents running Florence-2 (the kijai ComfyUI-Florence2 nodes)."""

from __future__ import annotations

from typing import Any

from agents.base import AgentClient
from agents.models import DiscoveredModel, Discovery, Kind, Task

RUN_NODE = "Florence2Run"
DOWNLOAD_NODE = "DownloadAndLoadFlorence2Model"
LOCAL_LOADER_NODE = "Florence2ModelLoader"
MISSING_NODES = (
    f"ComfyUI answers, but the Florence-2 nodes ({RUN_NODE}, {DOWNLOAD_NODE}) are not "
    "installed: add the ComfyUI-Florence2 custom node to this server."
)


class ComfyUIClient(AgentClient):
    kind = Kind.COMFYUI

    def discover(self) -> Discovery:
        stats = self.request_json("GET", "/system_stats")
        version = str((stats.get("system") or {}).get("comfyui_version", ""))
        run = self.node_info(RUN_NODE)
        download = self.node_info(DOWNLOAD_NODE)
        if not run or not download:
            return Discovery(version=version, models=[], note=MISSING_NODES)
        tasks = combo_options(run, "task")
        installed = set(combo_options(self.node_info(LOCAL_LOADER_NODE), "model"))
        models = [
            DiscoveredModel(
                name=name,
                task=Task.FLORENCE2,
                details={"tasks": tasks, "installed": name.rsplit("/", 1)[-1] in installed},
            )
            for name in combo_options(download, "model")
        ]
        return Discovery(version=version, models=models)

    def node_info(self, class_type: str) -> dict[str, Any]:
        """The node's object_info entry, or {} when the node is not installed."""
        return self.request_json("GET", f"/object_info/{class_type}").get(class_type) or {}


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
