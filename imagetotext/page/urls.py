from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path
from django.views.generic import RedirectView

from imagetotext.page import batch_views, image_views, views

urlpatterns = [
    path("accounts/login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("ImageToText", views.page, name="image-to-text"),
    path("ImageToText/", RedirectView.as_view(pattern_name="image-to-text", query_string=True)),
    path("ImageToText/jobs", views.submit, name="image-to-text-submit"),
    path("ImageToText/jobs/<int:job_id>", views.job_detail, name="image-to-text-job"),
    path("ImageToText/jobs/<int:job_id>/text", views.job_text, name="image-to-text-job-text"),
    path("ImageToText/jobs/<int:job_id>/images/<int:number>", image_views.original, name="image-to-text-original"),
    path("ImageToText/jobs/<int:job_id>/retry", views.retry, name="image-to-text-retry"),
    path("ImageToText/jobs/<int:job_id>/cancel", views.cancel, name="image-to-text-cancel"),
    path("ImageToText/jobs/<int:job_id>/delete", views.delete, name="image-to-text-delete"),
    path("ImageToText/history", views.history, name="image-to-text-history"),
    path("ImageToText/history/export", batch_views.history_export, name="image-to-text-history-export"),
    path("ImageToText/thumbnails/<str:sha256>.webp", image_views.thumbnail, name="image-to-text-thumbnail"),
    path("ImageToText/batches", batch_views.batch_list, name="image-to-text-batches"),
    path("ImageToText/batches/<int:batch_id>", batch_views.batch_detail, name="image-to-text-batch"),
    path("ImageToText/batches/<int:batch_id>/retry", batch_views.retry_failed, name="image-to-text-batch-retry"),
    path("ImageToText/batches/<int:batch_id>/cancel", batch_views.cancel_rest, name="image-to-text-batch-cancel"),
    path("ImageToText/batches/<int:batch_id>/export", batch_views.batch_export, name="image-to-text-batch-export"),
    path(
        "ImageToText/batches/<int:batch_id>/items/<int:job_id>/caption",
        batch_views.caption_editor,
        name="image-to-text-caption-editor",
    ),
    path(
        "ImageToText/batches/<int:batch_id>/items/<int:job_id>/caption/save",
        batch_views.save_caption,
        name="image-to-text-caption-save",
    ),
]
