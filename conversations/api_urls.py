"""The JSON API, mounted at /api/ (COMMON.md lists the contract)."""

from django.urls import path

from . import api_views, import_views, share_views

urlpatterns = [
    path("dialogues/", api_views.dialogues, name="api-dialogues"),
    path(
        "dialogues/<int:dialogue_id>/", api_views.dialogue_detail, name="api-dialogue"
    ),
    path(
        "dialogues/<int:dialogue_id>/export.md",
        api_views.dialogue_export_md,
        name="api-dialogue-export-md",
    ),
    path(
        "dialogues/<int:dialogue_id>/export.json",
        api_views.dialogue_export_js,
        name="api-dialogue-export-json",
    ),
    path(
        "dialogues/<int:dialogue_id>/context/",
        api_views.dialogue_context,
        name="api-dialogue-context",
    ),
    path(
        "dialogues/<int:dialogue_id>/shares/",
        share_views.dialogue_shares,
        name="api-dialogue-shares",
    ),
    path("imports/", import_views.imports, name="api-imports"),
    path("shares/", share_views.shares, name="api-shares"),
    path("shares/<int:share_id>/", share_views.share_detail, name="api-share"),
    path("presets/", api_views.presets, name="api-presets"),
    path("presets/<int:preset_id>/", api_views.preset_detail, name="api-preset"),
    path("models/", api_views.models, name="api-models"),
    path("usage/", api_views.usage, name="api-usage"),
]
