"""The ComfyUI graph that captions one image with Florence-2 (protocols.md B.6-B.7)."""

from __future__ import annotations

import re
from typing import Any

from agents.clients.base import TextRequest

RUN_NODE = "Florence2Run"
DOWNLOAD_NODE = "DownloadAndLoadFlorence2Model"
LOCAL_LOADER_NODE = "Florence2ModelLoader"
FLORENCE_NODES = (RUN_NODE, DOWNLOAD_NODE, LOCAL_LOADER_NODE)
DEFAULT_TASK = "more_detailed_caption"
# Florence2Run raises a ValueError at run time if any other task gets a text_input.
TEXT_INPUT_TASKS = frozenset({"referring_expression_segmentation", "caption_to_phrase_grounding", "docvqa"})
# PreviewAny is core since ComfyUI 0.3.31; older servers need ComfyUI-Custom-Scripts' ShowText.
PREVIEW_ANY = "PreviewAny"
SHOW_TEXT = "ShowText|pysssss"
DISPLAY_NODE_ID = "4"
CAPTION_OUTPUT = 2
_SPECIAL_TOKENS = re.compile(r"</?s>")


def caption_graph(image_name: str, request: TextRequest, display: str = PREVIEW_ANY) -> dict[str, Any]:
    """LoadImage → Florence-2 model → Florence2Run → a display node whose output lands in /history."""
    caption = ["3", CAPTION_OUTPUT]
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image_name}},
        "2": {
            "class_type": DOWNLOAD_NODE,
            "inputs": {"model": request.model, "precision": "fp16", "attention": "sdpa"},
        },
        "3": {"class_type": RUN_NODE, "inputs": run_inputs(request)},
        DISPLAY_NODE_ID: {"class_type": display, "inputs": {"source" if display == PREVIEW_ANY else "text": caption}},
    }


def run_inputs(request: TextRequest) -> dict[str, Any]:
    """Florence2Run's inputs; all optional ones are sent so server defaults cannot change the result."""
    task = request.task or DEFAULT_TASK
    return {
        "image": ["1", 0],
        "florence2_model": ["2", 0],
        "text_input": request.prompt if task in TEXT_INPUT_TASKS else "",
        "task": task,
        "fill_mask": False,
        "keep_model_loaded": True,
        "max_new_tokens": 1024,
        "num_beams": 3,
        "do_sample": False,
        "output_mask_select": "",
        "seed": 1,  # the node's minimum; 0 fails validation
    }


def caption_in(outputs: dict[str, Any]) -> str:
    """The caption the display node put in a /history entry's outputs; "" when there is none."""
    texts = (outputs.get(DISPLAY_NODE_ID) or {}).get("text") or [""]
    # Florence2Run strips <s>/</s> itself, but fine-tuned models leave stray ones behind.
    return _SPECIAL_TOKENS.sub("", str(texts[0])).strip()
