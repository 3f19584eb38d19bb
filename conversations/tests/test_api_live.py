"""Changes made over HTTP reach the dialogue's open sockets (other tabs)."""

from __future__ import annotations

import json

import pytest
from channels.db import database_sync_to_async
from django.test import Client

from tests.factories import DialogueFactory

pytestmark = pytest.mark.django_db(transaction=True)


@database_sync_to_async
def http(user, method, url, body=None):
    client = Client()
    client.force_login(user)
    return getattr(client, method)(
        url, data=json.dumps(body or {}), content_type="application/json"
    )


async def test_rename_and_pin_over_http_reach_an_open_socket(user, socket_for):
    dialogue = await database_sync_to_async(DialogueFactory)(owner=user, title="")
    async with socket_for(user) as ws:
        await ws.send({"type": "dialogue.open", "dialogue": dialogue.pk})
        await ws.until("dialogue.state")

        response = await http(
            user,
            "patch",
            f"/api/dialogues/{dialogue.pk}/",
            {"title": "Renamed", "pinned": True},
        )
        frame = await ws.recv()

    assert response.status_code == 200
    assert frame["type"] == "dialogue.updated"
    assert (
        frame["dialogue"]["title"] == "Renamed" and frame["dialogue"]["pinned"] is True
    )
    assert frame["dialogue"]["title_set_by_user"] is True


async def test_delete_over_http_tells_the_open_socket(user, socket_for):
    dialogue = await database_sync_to_async(DialogueFactory)(owner=user)
    async with socket_for(user) as ws:
        await ws.send({"type": "dialogue.open", "dialogue": dialogue.pk})
        await ws.until("dialogue.state")

        response = await http(user, "delete", f"/api/dialogues/{dialogue.pk}/")
        frame = await ws.recv()

    assert response.status_code == 204
    assert frame == {"type": "dialogue.deleted", "dialogue": dialogue.pk}


async def test_a_refused_change_broadcasts_nothing(user, socket_for):
    dialogue = await database_sync_to_async(DialogueFactory)(owner=user)
    async with socket_for(user) as ws:
        await ws.send({"type": "dialogue.open", "dialogue": dialogue.pk})
        await ws.until("dialogue.state")

        response = await http(
            user, "patch", f"/api/dialogues/{dialogue.pk}/", {"pinned": "yes"}
        )

        assert response.status_code == 400
        assert await ws.nothing(0.5)
