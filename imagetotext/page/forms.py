"""What the Image to Text page offers: prompt presets (Preset rows), the model list, and the submit form."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, TypedDict, cast

from django import forms

from agents.models import AgentModel, Capability
from imagetotext.models import Duplicates, Preset

# With no Preset rows (an admin deleted them, or a flushed test database) the page still works.
FALLBACK_PRESET = Preset(
    key="describe", label="Describe", prompt="Describe this image.", florence_task="more_detailed_caption"
)
DEFAULT_PRESET_KEY = "detailed"
OCR_PRESET = "text"
FLORENCE_TASK_LABELS = {
    "caption": "Caption",
    "detailed_caption": "Detailed caption",
    "more_detailed_caption": "More detailed caption",
    "ocr": "Text recognition (OCR)",
    "ocr_with_region": "OCR with regions",
    "prompt_gen_tags": "Tags",
}
GROUP_LABELS = {
    Capability.VISION: "Ollama vision models",
    Capability.FLORENCE2: "Florence-2 on ComfyUI",
    Capability.OCR: "Local OCR",
}


def load_presets() -> list[Preset]:
    """The presets the page offers, in their order; the plain fallback alone when there are none."""
    return list(Preset.objects.all()) or [FALLBACK_PRESET]


def default_preset(presets: list[Preset]) -> Preset:
    return next((preset for preset in presets if preset.key == DEFAULT_PRESET_KEY), presets[0])


@dataclass
class ModelChoice:
    """One model name as the selector shows it, on however many agents offer it."""

    name: str
    capability: str
    agents: list[str] = field(default_factory=list)
    florence_tasks: list[str] = field(default_factory=list)
    presets: list[Preset] = field(default_factory=list)

    @property
    def preset_tasks(self) -> dict[str, str]:
        """For a Florence-2 model: the task each preset runs on it (the page shows it)."""
        if self.capability != Capability.FLORENCE2:
            return {}
        return {preset.key: preset.florence_task_on(self.florence_tasks) for preset in self.presets}

    @property
    def preset_tasks_json(self) -> str:
        return json.dumps(self.preset_tasks)

    @property
    def label(self) -> str:
        """The option's text: short enough for a phone's selector; the agents are named in full below it."""
        where = self.agents[0] if len(self.agents) == 1 else f"{len(self.agents)} agents"
        return f"{self.name} · {where}"

    @property
    def agents_text(self) -> str:
        """Where the model runs, in words: "gpu", "gpu and laptop", "gpu, laptop and mini"."""
        if len(self.agents) <= 1:
            return "".join(self.agents)
        return f"{', '.join(self.agents[:-1])} and {self.agents[-1]}"


def usable_models(presets: list[Preset]) -> dict[str, ModelChoice]:
    """Models that can take an image right now, by name, in selector order."""
    choices: dict[str, ModelChoice] = {}
    rows = AgentModel.objects.usable().accepting_images().select_related("agent").order_by("capability", "name")
    for row in rows:
        choice = choices.setdefault(row.name, ModelChoice(row.name, row.capability, presets=presets))
        choice.agents.append(row.agent.name)
        for task in row.details.get("tasks", []):
            if task not in choice.florence_tasks:
                choice.florence_tasks.append(task)
    return choices


def model_groups(choices: dict[str, ModelChoice]) -> list[tuple[str, list[ModelChoice]]]:
    """The selector's <optgroup>s: Ollama vision models, Florence-2, local OCR; empty ones left out."""
    groups = []
    for capability, label in GROUP_LABELS.items():
        members = [choice for choice in choices.values() if choice.capability == capability]
        if members:
            groups.append((label, members))
    return groups


class JobFields(TypedDict):
    """What the form decides for the JobRequest, besides the owner and tag."""

    model: str
    prompt: str
    preset: Preset


class SubmitForm(forms.Form):
    """The fields sent with the images; the images themselves are checked one by one."""

    model = forms.ChoiceField(
        error_messages={
            "required": "Choose a model.",
            "invalid_choice": ("The model %(value)s cannot take images right now; choose another."),
        }
    )
    preset = forms.ChoiceField(required=False)
    prompt = forms.CharField(required=False, max_length=4000)
    tag = forms.CharField(required=False, max_length=100)
    # Only for batches (several images, a folder or a ZIP): around every caption, and duplicates.
    caption_prefix = forms.CharField(required=False, max_length=500, strip=False)
    caption_suffix = forms.CharField(required=False, max_length=500, strip=False)
    duplicates = forms.ChoiceField(choices=Duplicates.choices, required=False)

    def __init__(self, *args: Any, models: dict[str, ModelChoice], presets: list[Preset], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.models = models
        self.presets = {preset.key: preset for preset in presets}
        cast(forms.ChoiceField, self.fields["model"]).choices = [(name, name) for name in models]
        cast(forms.ChoiceField, self.fields["preset"]).choices = [(p.key, p.label) for p in presets]

    def chosen_preset(self) -> Preset:
        """The preset asked for, after is_valid(); the default one when none was."""
        return self.presets.get(self.cleaned_data["preset"]) or default_preset(list(self.presets.values()))

    def job_fields(self) -> JobFields:
        """Model, prompt and preset for the JobRequest, after is_valid(); the preset's prompt,
        Florence-2 task and longest side apply as the model takes them (jobs.job_fields)."""
        data = self.cleaned_data
        choice = self.models[data["model"]]
        # Only vision models take a prompt; Florence-2 runs the preset's task, the OCR reads.
        prompt = data["prompt"].strip() if choice.capability == Capability.VISION else ""
        return {"model": choice.name, "prompt": prompt, "preset": self.chosen_preset()}
