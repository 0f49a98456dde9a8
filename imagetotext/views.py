from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from agents.models import AgentModel


@login_required
def page(request: HttpRequest) -> HttpResponse:
    """The Image to Text page. For now it lists what the agents can do."""
    models = AgentModel.objects.usable().accepting_images().select_related("agent")
    return render(request, "imagetotext/page.html", {"models": models})
