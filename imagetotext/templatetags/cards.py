"""Filters the job card uses: model output as safe Markdown, and Florence-2 task names in words."""

from __future__ import annotations

from django import template
from django.utils.safestring import SafeString

from imagetotext.page.forms import FLORENCE_TASK_LABELS
from imagetotext.page.markdown import render_markdown

register = template.Library()


@register.filter
def markdown(text: str) -> SafeString:
    """Untrusted model output rendered as sanitised HTML."""
    return render_markdown(text)


@register.filter
def florence_task_label(task: str) -> str:
    return FLORENCE_TASK_LABELS.get(task, task)
