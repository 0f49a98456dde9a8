"""What the compose form starts with: the model, preset and tag the user last sent with, or
the job they asked to run again (from its own page or the history).

The last choices are kept server-side (PagePreferences), so they follow the user from one
browser to another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest

from imagetotext.models import Job, PagePreferences, Preset
from imagetotext.page.forms import ModelChoice, SubmitForm, default_preset

# Job ids as the page sends them: ASCII digits (str.isdigit also takes "²"), within a bigint.
JOB_ID_DIGITS = 18


@dataclass(frozen=True)
class Choices:
    """The form's first model (a name, "" for the first one listed), preset and tag."""

    model: str
    preset: Preset
    tag: str


def remembered(user: Any, models: dict[str, ModelChoice], presets: list[Preset]) -> Choices:
    """The user's last choices, where they still exist; the defaults for the rest."""
    saved = PagePreferences.objects.filter(user=user).first() or PagePreferences()
    preset = next((preset for preset in presets if preset.key == saved.preset), None)
    model = saved.model if saved.model in models else ""
    return Choices(model, preset or default_preset(presets), saved.tag)


def remember(user: Any, form: SubmitForm) -> None:
    """Keep what a send went with (after is_valid()), for the next time the form opens."""
    data = form.cleaned_data
    PagePreferences.objects.update_or_create(
        user=user, defaults={"model": data["model"], "preset": form.chosen_preset().key, "tag": data["tag"]}
    )


def job_to_run_again(request: HttpRequest) -> Job | None:
    """The finished job with an image that ?again= names, if it is the user's; else None."""
    value = request.GET.get("again", "")
    if not is_job_id(value):
        return None
    mine = Job.objects.owned_by(request.user).filter(pk=value, image__isnull=False)
    job = mine.select_related("image").first()
    return job if job is not None and job.finished else None


def is_job_id(value: str) -> bool:
    """Anything else could never name a job; such values are ignored like the ids of others' jobs."""
    return value.isascii() and value.isdigit() and len(value) <= JOB_ID_DIGITS
