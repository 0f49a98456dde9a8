"""The fake ComfyUI's installed nodes (object_info) and its prompt validation, shaped like ComfyUI's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

FLORENCE_TASKS = [
    "region_caption",
    "dense_region_caption",
    "region_proposal",
    "caption",
    "detailed_caption",
    "more_detailed_caption",
    "caption_to_phrase_grounding",
    "referring_expression_segmentation",
    "ocr",
    "ocr_with_region",
    "docvqa",
    "prompt_gen_tags",
    "prompt_gen_mixed_caption",
    "prompt_gen_analyze",
    "prompt_gen_mixed_caption_plus",
]
FLORENCE_MODELS = [
    "microsoft/Florence-2-base",
    "microsoft/Florence-2-base-ft",
    "microsoft/Florence-2-large",
    "microsoft/Florence-2-large-ft",
    "HuggingFaceM4/Florence-2-DocVQA",
    "thwri/CogFlorence-2.1-Large",
    "thwri/CogFlorence-2.2-Large",
    "gokaygokay/Florence-2-SD3-Captioner",
    "gokaygokay/Florence-2-Flux-Large",
    "MiaoshouAI/Florence-2-base-PromptGen-v1.5",
    "MiaoshouAI/Florence-2-large-PromptGen-v1.5",
    "MiaoshouAI/Florence-2-base-PromptGen-v2.0",
    "MiaoshouAI/Florence-2-large-PromptGen-v2.0",
    "PJMixers-Images/Florence-2-base-Castollux-v0.5",
]
OUTPUT_NODES = frozenset({"PreviewAny", "ShowText|pysssss", "SaveImage", "PreviewImage"})
FILE_TYPES = ("input", "output", "temp")


def object_info(
    input_files: list[str],
    installed_models: list[str],
    *,
    florence: bool = True,
    show_text: bool = True,
    preview_any: bool = True,
) -> dict[str, dict[str, Any]]:
    """node_info for every installed node class, as GET /object_info returns it."""
    nodes = _core_nodes(input_files)
    if not preview_any:  # ComfyUI before 0.3.31 (2025-05) has no PreviewAny
        del nodes["PreviewAny"]
    if florence:
        nodes.update(_florence_nodes(installed_models))
    if show_text:
        nodes["ShowText|pysssss"] = _node_info(
            "ShowText|pysssss",
            "Show Text 🐍",
            "utils",
            "custom_nodes.ComfyUI-Custom-Scripts",
            {"text": ["STRING", {"forceInput": True}]},
            outputs=["STRING"],
            output_node=True,
            output_is_list=[True],
        )
    return nodes


def validate_prompt(
    prompt: dict[str, Any], nodes: dict[str, dict[str, Any]], has_input_file: Callable[[str], bool]
) -> tuple[dict[str, Any] | None, dict[str, Any], list[str]]:
    """Check a graph like ComfyUI: (top-level error or None, node_errors, outputs that validated)."""
    for node_id, node in prompt.items():
        class_type = node.get("class_type") if isinstance(node, dict) else None
        if class_type not in nodes:
            return _missing_node_type(node_id, node, class_type), {}, []
    outputs = sorted((nid for nid, node in prompt.items() if node["class_type"] in OUTPUT_NODES), key=_id_key)
    if not outputs:
        return api_error("prompt_no_outputs", "Prompt has no outputs", ""), {}, []
    node_errors: dict[str, Any] = {}
    good, details = [], []
    for output in outputs:
        failed = False
        for nid in upstream(prompt, output):
            errors = _input_errors(prompt[nid], nodes[prompt[nid]["class_type"]], has_input_file)
            if errors:
                failed = True
                entry = node_errors.setdefault(
                    nid, {"errors": errors, "dependent_outputs": [], "class_type": prompt[nid]["class_type"]}
                )
                entry["dependent_outputs"].append(output)
                details += [f"{e['message']}: {e['details']}" for e in errors if nid == output]
        if not failed:
            good.append(output)
    if not good:
        error = api_error("prompt_outputs_failed_validation", "Prompt outputs failed validation", "\n".join(details))
        return error, node_errors, []
    return None, node_errors, good


def _input_errors(
    node: dict[str, Any], info: dict[str, Any], has_input_file: Callable[[str], bool]
) -> list[dict[str, Any]]:
    inputs = node.get("inputs", {})
    specs = {**info["input"]["required"], **info["input"].get("optional", {})}
    errors = [
        _input_error("required_input_missing", "Required input is missing", name, name)
        for name in info["input"]["required"]
        if name not in inputs
    ]
    for name, value in inputs.items():
        if name in specs and not is_link(value) and (node["class_type"], name) != ("LoadImage", "image"):
            errors += _value_errors(name, value, specs[name])
    if node["class_type"] == "LoadImage" and "image" in inputs and not is_link(inputs["image"]):
        # LoadImage's own VALIDATE_INPUTS replaces the combo check.
        if not has_input_file(str(inputs["image"])):
            errors.append(
                {
                    "type": "custom_validation_failed",
                    "message": "Custom validation failed for node",
                    "details": f"image - Invalid image file: {inputs['image']}",
                    "extra_info": {"input_name": "image"},
                }
            )
    return errors


# --- node definitions ------------------------------------------------------------


def _node_info(
    name: str,
    display: str,
    category: str,
    module: str,
    required: dict[str, Any],
    optional: dict[str, Any] | None = None,
    outputs: list[str] | None = None,
    output_names: list[str] | None = None,
    output_node: bool = False,
    output_is_list: list[bool] | None = None,
) -> dict[str, Any]:
    outputs = outputs or []
    info: dict[str, Any] = {"input": {"required": required}, "input_order": {"required": list(required)}}
    if optional:
        info["input"]["optional"] = optional
        info["input_order"]["optional"] = list(optional)
    return info | {
        "output": outputs,
        "output_is_list": output_is_list or [False] * len(outputs),
        "output_name": output_names or outputs,
        "name": name,
        "display_name": display,
        "description": "",
        "python_module": module,
        "category": category,
        "output_node": output_node,
    }


def _core_nodes(input_files: list[str]) -> dict[str, dict[str, Any]]:
    images = {"images": ["IMAGE"]}
    return {
        "LoadImage": _node_info(
            "LoadImage",
            "Load Image",
            "image",
            "nodes",
            {"image": [input_files, {"image_upload": True}]},
            outputs=["IMAGE", "MASK"],
        ),
        "SaveImage": _node_info(
            "SaveImage",
            "Save Image",
            "image",
            "nodes",
            images | {"filename_prefix": ["STRING", {"default": "ComfyUI"}]},
            output_node=True,
        ),
        "PreviewImage": _node_info("PreviewImage", "Preview Image", "image", "nodes", images, output_node=True),
        "PreviewAny": _node_info(
            "PreviewAny",
            "Preview Any",
            "utils",
            "comfy_extras.nodes_preview_any",
            {"source": ["*", {}]},
            output_node=True,
        ),
    }


def _florence_nodes(installed_models: list[str]) -> dict[str, dict[str, Any]]:
    module = "custom_nodes.ComfyUI-Florence2"
    precisions, attentions = ["fp16", "bf16", "fp32"], ["flash_attention_2", "sdpa", "eager"]
    loader_optional = {"lora": ["PEFTLORA"], "convert_to_safetensors": ["BOOLEAN", {"default": False}]}
    loader = {"outputs": ["FL2MODEL"], "output_names": ["florence2_model"]}
    return {
        "DownloadAndLoadFlorence2Model": _node_info(
            "DownloadAndLoadFlorence2Model",
            "DownloadAndLoadFlorence2Model",
            "Florence2",
            module,
            {
                "model": [FLORENCE_MODELS, {"default": "microsoft/Florence-2-base"}],
                "precision": [precisions, {"default": "fp16"}],
                "attention": [attentions, {"default": "sdpa"}],
            },
            loader_optional,
            **loader,
        ),
        "Florence2ModelLoader": _node_info(
            "Florence2ModelLoader",
            "Florence2ModelLoader",
            "Florence2",
            module,
            {"model": [installed_models], "precision": [precisions], "attention": [attentions, {"default": "sdpa"}]},
            loader_optional,
            **loader,
        ),
        "Florence2Run": _node_info(
            "Florence2Run",
            "Florence2Run",
            "Florence2",
            module,
            {
                "image": ["IMAGE"],
                "florence2_model": ["FL2MODEL"],
                "text_input": ["STRING", {"default": "", "multiline": True}],
                "task": [FLORENCE_TASKS],
                "fill_mask": ["BOOLEAN", {"default": True}],
            },
            {
                "keep_model_loaded": ["BOOLEAN", {"default": False}],
                "max_new_tokens": ["INT", {"default": 1024, "min": 1, "max": 4096}],
                "num_beams": ["INT", {"default": 3, "min": 1, "max": 64}],
                "do_sample": ["BOOLEAN", {"default": True}],
                "output_mask_select": ["STRING", {"default": ""}],
                "seed": ["INT", {"default": 1, "min": 1, "max": 0xFFFFFFFFFFFFFFFF}],
            },
            outputs=["IMAGE", "MASK", "STRING", "JSON"],
            output_names=["image", "mask", "caption", "data"],
        ),
    }


# --- small helpers ---------------------------------------------------------------


def _value_errors(name: str, value: Any, spec: list[Any]) -> list[dict[str, Any]]:
    kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
    if isinstance(kind, list):
        if value in kind:
            return []
        shown, config = (f"(list of length {len(kind)})", None) if len(kind) > 20 else (str(kind), [kind, options])
        return [
            _input_error(
                "value_not_in_list",
                "Value not in list",
                f"{name}: '{value}' not in {shown}",
                name,
                input_config=config,
                received_value=value,
            )
        ]
    if kind != "INT":
        return []
    try:
        number = int(value)
    except (TypeError, ValueError) as exc:
        return [
            _input_error(
                "invalid_input_type",
                "Failed to convert an input value to a INT value",
                f"{name}, {value}, {exc}",
                name,
                input_config=spec,
                received_value=value,
            )
        ]
    for bound, word, too_far in (
        ("min", "smaller", number < options.get("min", number)),
        ("max", "bigger", number > options.get("max", number)),
    ):
        if too_far:
            message = f"Value {number} {word} than {bound} of {options[bound]}"
            return [
                _input_error(
                    f"value_{word}_than_{bound}", message, name, name, input_config=spec, received_value=number
                )
            ]
    return []


def _input_error(kind: str, message: str, details: str, name: str, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": {"input_name": name, **extra}}


def _missing_node_type(node_id: str, node: Any, class_type: Any) -> dict[str, Any]:
    if class_type is None:  # [inferred] CU+ reports a missing class_type with the same type
        return api_error(
            "missing_node_type",
            "Cannot execute because a node is missing the class_type property.",
            f"Node ID '#{node_id}'",
        )
    title = (node.get("_meta") or {}).get("title", class_type)
    return api_error(
        "missing_node_type",
        f"Node '{class_type}' not found. The custom node may not be installed.",
        f"Node ID '#{node_id}'",
        {"node_id": node_id, "class_type": class_type, "node_title": title},
    )


def api_error(kind: str, message: str, details: str, extra_info: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": extra_info or {}}


def upstream(prompt: dict[str, Any], node_id: str) -> list[str]:
    """`node_id` and every node it depends on, dependencies first."""
    seen: dict[str, None] = {}

    def visit(nid: str) -> None:
        if nid in seen or nid not in prompt:
            return
        for value in prompt[nid].get("inputs", {}).values():
            if is_link(value):
                visit(value[0])
        seen[nid] = None

    visit(node_id)
    return list(seen)


def is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def split_annotation(name: str, default_type: str) -> tuple[str, str]:
    """'cat.png [temp]' -> ('temp', 'cat.png')."""
    for kind in FILE_TYPES:
        if name.endswith(f" [{kind}]"):
            return kind, name[: -len(kind) - 3]
    return default_type, name


def _id_key(node_id: str) -> tuple[int, str]:
    return (int(node_id), "") if node_id.isdigit() else (1 << 62, node_id)
