"""Every string the page can show reads in Chinese when the page is Chinese: the
catalogues have no untranslated or fuzzy entry for anything the source marks, and
the offline demo answers in Chinese (the socket's refusals:
conversations/tests/test_socket_language.py)."""

from __future__ import annotations

import gettext
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import BASE_DIR
from conversations.llm import DemoChatLLM
from imaging.generators import demo_banner

# Everything makemessages reads (every app, templates, static), not the rest.
SKIP = {"tests", "test-artifacts", "staticfiles", "media", "bench", "deploy", "docs"}


def _entries(po: Path) -> list[tuple[str, str, bool]]:
    """(msgid, msgstr, fuzzy) of every live entry of a .po file."""
    entries = []
    for block in po.read_text(encoding="utf-8").split("\n\n"):
        lines = [ln for ln in block.splitlines() if not ln.startswith("#~")]
        fuzzy = any(ln.startswith("#,") and "fuzzy" in ln for ln in lines)
        fields: dict[str, str] = {}
        current = None
        for ln in lines:
            if ln.startswith(("msgid ", "msgstr ", "msgid_plural ", "msgstr[0] ")):
                current, _, rest = ln.partition(" ")
                fields[current] = json.loads(rest)
            elif ln.startswith('"') and current:
                fields[current] += json.loads(ln)
        if fields.get("msgid"):
            text = fields.get("msgstr", fields.get("msgstr[0]", ""))
            entries.append((fields["msgid"], text, fuzzy))
    return entries


@pytest.fixture(scope="module")
def fresh_catalogues(tmp_path_factory) -> Path:
    """The catalogues as `makemessages` makes them from today's source (in a copy)."""
    root = tmp_path_factory.mktemp("i18n")
    for src in BASE_DIR.iterdir():
        name = src.name
        if name.startswith(".") or name in SKIP or name == "locale":
            continue
        if src.is_dir():
            shutil.copytree(
                src,
                root / name,
                ignore=shutil.ignore_patterns("vendor", "__pycache__", "tests"),
            )
        elif src.suffix in (".py", ".cfg", ".toml"):
            shutil.copy(src, root / name)
    shutil.copytree(BASE_DIR / "locale", root / "locale")
    for domain in ("django", "djangojs"):
        subprocess.run(
            [
                sys.executable,
                "manage.py",
                "makemessages",
                "-l",
                "zh_Hans",
                "-d",
                domain,
            ],
            cwd=root,
            check=True,
            capture_output=True,
        )
    return root / "locale" / "zh_Hans" / "LC_MESSAGES"


@pytest.mark.parametrize("domain", ["django", "djangojs"])
def test_every_marked_string_has_a_chinese_translation(fresh_catalogues, domain):
    entries = _entries(fresh_catalogues / f"{domain}.po")
    missing = [msgid for msgid, text, fuzzy in entries if not text or fuzzy]
    assert entries and missing == []


@pytest.mark.parametrize("domain", ["django", "djangojs"])
def test_the_committed_catalogues_are_the_made_ones(fresh_catalogues, domain):
    """A string added to the source without running makemessages is caught here."""
    made = {m for m, _, _ in _entries(fresh_catalogues / f"{domain}.po")}
    committed = {
        m
        for m, _, _ in _entries(
            BASE_DIR / "locale/zh_Hans/LC_MESSAGES" / f"{domain}.po"
        )
    }
    assert made == committed
    # and the compiled catalogue says what the .po says (compilemessages was run)
    folder = BASE_DIR / "locale/zh_Hans/LC_MESSAGES"
    with (folder / f"{domain}.mo").open("rb") as handle:
        compiled = gettext.GNUTranslations(handle)
    stale = [
        msgid
        for msgid, text, fuzzy in _entries(folder / f"{domain}.po")
        if text and not fuzzy and compiled.gettext(msgid) != text
    ]
    assert stale == [], "run manage.py compilemessages"


def test_the_offline_demo_answers_chinese_in_chinese_and_english_in_english():
    demo = DemoChatLLM(0)
    chinese = demo.reply_text([{"role": "user", "content": "你好，你能做什么？"}])
    english = demo.reply_text([{"role": "user", "content": "Hello there!"}])
    assert "离线演示模型" in chinese and "offline demo model" not in chinese
    assert "> 你好，你能做什么？" in chinese
    assert "offline demo model" in english and "离线" not in english


def test_the_demo_pictures_banner_follows_the_prompts_language():
    assert demo_banner("一座黄昏的灯塔") == "离线演示 · 未配置图像模型"
    assert (
        demo_banner("a lighthouse at dusk")
        == "offline demo · no image model configured"
    )
