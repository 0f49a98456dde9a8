from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path

from imagetotext.page import views

urlpatterns = [
    path("accounts/login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("ImageToText", views.page, name="image-to-text"),
    path("ImageToText/jobs", views.submit, name="image-to-text-submit"),
    path("ImageToText/jobs/<int:job_id>", views.job_detail, name="image-to-text-job"),
    path("ImageToText/jobs/<int:job_id>/text", views.job_text, name="image-to-text-job-text"),
    path("ImageToText/jobs/<int:job_id>/retry", views.retry, name="image-to-text-retry"),
    path("ImageToText/jobs/<int:job_id>/cancel", views.cancel, name="image-to-text-cancel"),
    path("ImageToText/jobs/<int:job_id>/delete", views.delete, name="image-to-text-delete"),
    path("ImageToText/history", views.history, name="image-to-text-history"),
    path("ImageToText/thumbnails/<str:sha256>.webp", views.thumbnail, name="image-to-text-thumbnail"),
]
