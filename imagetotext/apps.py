from __future__ import annotations

from django.apps import AppConfig


class ImageToTextConfig(AppConfig):
    name = "imagetotext"
    verbose_name = "Image to Text"
