from __future__ import annotations

from django.urls import path

from playground import views

app_name = "playground"
urlpatterns = [
    path("", views.playground, name="index"),
    path("<str:session_id>/", views.session_page, name="session"),
]
