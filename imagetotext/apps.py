from __future__ import annotations

from typing import Any

from django.apps import AppConfig


class ImageToTextConfig(AppConfig):
    name = "imagetotext"
    verbose_name = "Image to Text"

    def ready(self) -> None:
        from django_q.signals import post_spawn

        from imagetotext import workers

        workers.install()
        post_spawn.connect(start_heartbeat, dispatch_uid="imagetotext-heartbeat")


def start_heartbeat(**kwargs: Any) -> None:
    """In each django-q2 worker as it starts: renew its jobs' leases, write its heartbeat row (for
    /readyz) and take up the jobs of dead processes."""
    from imagetotext import leases, tasks

    leases.holder.start(reclaim=tasks.reclaim, worker=True)
