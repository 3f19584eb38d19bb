"""Share links: creation, the public page without login, revocation, hostile content,
the snapshot's images only, the admin."""

from __future__ import annotations

import io
import re

import pytest
from django.contrib.auth.models import Permission
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.urls import reverse
from PIL import Image

from conversations.models import Message, Share
from imaging.models import GeneratedImage
from tests.factories import DialogueFactory, MessageFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _turns(dialogue, n):
    out = []
    for i in range(n):
        out.append(MessageFactory(dialogue=dialogue, content=f"question {i}"))
        out.append(
            MessageFactory(
                dialogue=dialogue,
                role=Message.Role.ASSISTANT,
                content=f"**answer {i}**",
                model="fake-model",
            )
        )
    return out


def _image(message, color="teal"):
    out = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(out, format="PNG")
    key = default_storage.save(
        f"images/test-{message.pk}.png", ContentFile(out.getvalue())
    )
    return GeneratedImage.objects.create(
        message=message,
        prompt="a fox",
        storage_key=key,
        content_type="image/png",
        status=GeneratedImage.Status.COMPLETE,
        width=8,
        height=8,
    )


def _create(client, dialogue, message=None):
    body = {} if message is None else {"message": message}
    return client.post(
        reverse("api-dialogue-shares", args=[dialogue.pk]),
        body,
        content_type="application/json",
    )


def _anonymous_get(client, url):
    client.logout()
    return client.get(url)


def test_owner_shares_up_to_a_message_and_anyone_reads_it_without_login(
    client, user, dialogue
):
    # given a dialogue of three turns
    messages = _turns(dialogue, 3)
    client.force_login(user)

    # when its owner shares it up to the second answer
    created = _create(client, dialogue, messages[3].pk)

    # then the link covers the first two turns, and a visitor without an account
    # reads them rendered, and nothing after
    assert created.status_code == 201
    share = created.json()
    assert share["messages"] == 4 and share["message"] == messages[3].pk
    page = _anonymous_get(client, share["url"])
    assert page.status_code == 200
    body = page.content.decode()
    assert "question 0" in body and "<strong>answer 1</strong>" in body
    assert "question 2" not in body and "answer 2" not in body
    # no login, no socket, kept out of search engines and caches, CSP kept
    assert page["X-Robots-Tag"].startswith("noindex")
    assert '<meta name="robots" content="noindex' in body
    assert page["Content-Security-Policy"].startswith("default-src 'self'")
    assert "no-store" in page["Cache-Control"]
    assert page["Referrer-Policy"] == "no-referrer"
    assert "ws/chat" not in body and "app.js" not in body and "jsi18n" not in body
    assert "csrfmiddlewaretoken" not in body
    assert not page.cookies
    for src in re.findall(r'<script[^>]*src="([^"]+)"', body):
        assert src.startswith("/static/")


def test_the_snapshot_does_not_change_when_the_dialogue_goes_on(client, user, dialogue):
    _turns(dialogue, 1)
    client.force_login(user)
    url = _create(client, dialogue).json()["url"]

    # when the dialogue continues and is renamed
    MessageFactory(dialogue=dialogue, content="a later secret")
    title = dialogue.title
    dialogue.title = "Renamed later"
    dialogue.save()

    body = _anonymous_get(client, url).content.decode()
    assert "answer 0" in body
    assert "a later secret" not in body
    assert title in body and "Renamed later" not in body


def test_a_share_reads_in_four_queries(
    client, user, dialogue, django_assert_num_queries
):
    messages = _turns(dialogue, 40)
    _image(messages[-1])
    client.force_login(user)
    url = _create(client, dialogue).json()["url"]
    client.logout()

    # the link, the messages, their images, their attachments
    with django_assert_num_queries(4):
        response = client.get(url)
    assert response.status_code == 200
    assert response.content.decode().count('class="msg msg-') == 80


def test_owner_lists_and_revokes_links_and_a_revoked_link_is_404(
    client, user, dialogue
):
    _turns(dialogue, 2)
    client.force_login(user)
    first = _create(client, dialogue).json()
    second = _create(client, dialogue).json()

    listed = client.get(reverse("api-dialogue-shares", args=[dialogue.pk])).json()
    assert [s["id"] for s in listed["results"]] == [second["id"], first["id"]]

    revoked = client.delete(reverse("api-share", args=[first["id"]]))
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]

    gone = _anonymous_get(client, first["url"])
    unknown = client.get("/s/" + "x" * 24 + "/")
    assert gone.status_code == unknown.status_code == 404
    assert _anonymous_get(client, second["url"]).status_code == 200
    client.force_login(user)
    everything = client.get(reverse("api-shares")).json()["results"]
    assert {s["id"]: bool(s["revoked_at"]) for s in everything} == {
        first["id"]: True,
        second["id"]: False,
    }


def test_another_user_can_neither_share_list_nor_revoke(
    client, user, other_user, dialogue
):
    _turns(dialogue, 1)
    client.force_login(user)
    share = _create(client, dialogue).json()

    client.force_login(other_user)
    assert _create(client, dialogue).status_code == 404
    listing = client.get(reverse("api-dialogue-shares", args=[dialogue.pk]))
    assert listing.status_code == 404
    assert client.delete(reverse("api-share", args=[share["id"]])).status_code == 404
    assert client.get(reverse("api-shares")).json()["results"] == []
    assert Share.objects.get(pk=share["id"]).revoked_at is None


def test_sharing_refuses_a_foreign_message_a_streaming_one_and_an_empty_dialogue(
    client, user, dialogue
):
    client.force_login(user)
    assert _create(client, dialogue).status_code == 400  # nothing yet
    streaming = MessageFactory(
        dialogue=dialogue, role="assistant", status=Message.Status.STREAMING
    )
    foreign = MessageFactory(dialogue=DialogueFactory(owner=user))

    assert _create(client, dialogue, streaming.pk).status_code == 400
    assert _create(client, dialogue, foreign.pk).status_code == 404
    assert _create(client, dialogue, "7").status_code == 400
    client.logout()
    assert _create(client, dialogue).status_code == 401


def test_hostile_content_is_inert_on_a_shared_page(client, user):
    # given a dialogue whose title, question and answer try to run script and
    # load things from elsewhere
    dialogue = DialogueFactory(owner=user, title="<script>alert('title')</script>")
    MessageFactory(
        dialogue=dialogue,
        content="<img src=x onerror=alert(1)> </article><script>alert(2)</script>",
    )
    MessageFactory(
        dialogue=dialogue,
        role=Message.Role.ASSISTANT,
        content=(
            "<script>alert(3)</script> [click](javascript:alert(4)) "
            "![p](http://evil.example/p.png) <iframe src=//evil.example></iframe> "
            '<a href="x" onclick="alert(5)">x</a> [//](//evil.example/x)'
        ),
    )
    client.force_login(user)
    url = _create(client, dialogue).json()["url"]

    body = _anonymous_get(client, url).content.decode()

    assert "<script>alert" not in body
    assert "&lt;script&gt;alert(&#x27;title&#x27;)" in body
    tags = re.findall(r"<[a-zA-Z][^>]*>", body)
    assert not [t for t in tags if re.search(r"\son\w+\s*=", t)]  # no handlers
    assert not [t for t in tags if t.startswith(("<iframe", "<img"))]
    hrefs = re.findall(r'href="([^"]*)"', body)
    assert not [h for h in hrefs if h.startswith(("javascript", "//"))]
    scripts = re.findall(r"<script[^>]*>", body)
    assert all('src="/static/' in t for t in scripts)


def test_only_the_snapshots_images_are_served(client, user, dialogue, other_user):
    # given an image in the shared part, one in a later message and one elsewhere
    messages = _turns(dialogue, 2)
    shared = _image(messages[1])
    later = _image(messages[3], "red")
    elsewhere = _image(MessageFactory(dialogue=DialogueFactory(owner=other_user)))
    messages[
        1
    ].content = f"see ![mine](/images/{shared.pk}/) and ![x](/images/{later.pk}/)"
    messages[1].save()
    client.force_login(user)
    share = _create(client, dialogue, messages[1].pk).json()
    token = share["url"].split("/")[2]

    body = _anonymous_get(client, share["url"]).content.decode()
    own = reverse("share-image", args=[token, shared.pk])
    assert body.count(f'src="{own}"') == 2  # the markdown one and the attached one
    assert f'src="/images/{later.pk}/"' not in body
    assert f'src="/images/{shared.pk}/"' not in body

    served = client.get(own)
    assert served.status_code == 200 and served["Content-Type"] == "image/png"
    assert served["X-Robots-Tag"].startswith("noindex")
    for image in (later, elsewhere):
        url = reverse("share-image", args=[token, image.pk])
        assert client.get(url).status_code == 404
    client.force_login(user)
    client.delete(reverse("api-share", args=[share["id"]]))
    client.logout()
    assert client.get(own).status_code == 404


def _staff(*codenames):
    staff = UserFactory(is_staff=True)
    staff.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="conversations", codename__in=codenames
        )
    )
    return staff


def test_staff_see_shares_in_the_admin_and_revoke_them(client, user, dialogue):
    _turns(dialogue, 1)
    client.force_login(user)
    share = _create(client, dialogue).json()
    changelist = reverse("admin:conversations_share_changelist")

    # a staff member without the review permission sees the share but not its link
    client.force_login(_staff("view_share", "delete_share"))
    page = client.get(changelist)
    assert page.status_code == 200
    assert [s.pk for s in page.context["cl"].result_list] == [share["id"]]
    assert share["url"] not in page.content.decode()

    # a reviewer sees the link and revokes it with the action
    client.force_login(_staff("view_share", "delete_share", "review_dialogue"))
    assert share["url"] in client.get(changelist).content.decode()
    done = client.post(
        changelist,
        {"action": "revoke_selected", "_selected_action": [share["id"]]},
        follow=True,
    )
    assert "Revoked 1 link" in done.content.decode()
    assert client.get(share["url"]).status_code == 404
    assert client.get(changelist, {"state": "revoked"}).context["cl"].result_count == 1


def test_a_share_of_another_branch_holds_that_branch(client, user, dialogue):
    # given a question answered twice; the second answer is shown
    q = MessageFactory(dialogue=dialogue, content="name a bird")
    first = MessageFactory(
        dialogue=dialogue, role="assistant", content="robin", parent=q, replaced=True
    )
    MessageFactory(dialogue=dialogue, role="assistant", content="heron", parent=q)
    client.force_login(user)

    # when the first answer is shared
    share = _create(client, dialogue, first.pk).json()

    # then the page holds the question and that answer, not the other one
    body = _anonymous_get(client, share["url"]).content.decode()
    assert "name a bird" in body and "robin" in body and "heron" not in body
    assert share["messages"] == 2


def _attachment(message, name="notes.txt", data=b"hello", content_type="text/plain"):
    from attachments.models import Attachment

    key = default_storage.save(f"attachments/t-{message.pk}-{name}", ContentFile(data))
    return Attachment.objects.create(
        owner=message.user,
        message=message,
        kind="document" if content_type == "text/plain" else "image",
        name=name,
        content_type=content_type,
        size=len(data),
        storage_key=key,
    )


def test_a_share_shows_and_serves_only_the_snapshots_attachments(
    client, user, dialogue, other_user
):
    # given a file on the shared question, one on a later question, one elsewhere
    messages = _turns(dialogue, 2)
    shared = _attachment(messages[0], "trip <plan>.txt", b"day 1: Rome")
    later = _attachment(messages[2], "later.txt", b"secret")
    elsewhere = _attachment(
        MessageFactory(dialogue=DialogueFactory(owner=other_user)), "x.txt", b"x"
    )
    client.force_login(user)
    share = _create(client, dialogue, messages[1].pk).json()
    token = share["url"].split("/")[2]

    body = _anonymous_get(client, share["url"]).content.decode()

    url = reverse("share-file", args=[token, shared.pk])
    assert f'href="{url}"' in body and "trip &lt;plan&gt;.txt" in body
    assert "later.txt" not in body
    served = client.get(url)
    assert served.status_code == 200
    assert b"".join(served.streaming_content) == b"day 1: Rome"
    assert served["X-Robots-Tag"].startswith("noindex")
    for other in (later, elsewhere):
        assert (
            client.get(reverse("share-file", args=[token, other.pk])).status_code == 404
        )
