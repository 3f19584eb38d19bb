"""ChatGPT's `conversations.json` (Settings → Data controls → Export).

A list of conversations, each a tree: `mapping` {node id: {"message", "parent",
"children"}}, `current_node` the leaf on screen. Every branch is kept. What chatsite
cannot hold is skipped and counted: system, tool and hidden messages, the model's
calls to tools, and pictures (the export has only references to them). A skipped
node's children hang from its nearest kept ancestor.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from .model import ImportFileInvalid, Parsed, PortableDialogue, PortableMessage

TEXT_TYPES = {"text", "multimodal_text"}


def _moment(value: Any, fallback: datetime) -> datetime:
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(float(value), tz=UTC)
        except (OverflowError, OSError, ValueError):
            return fallback
    return fallback


def _text(content: dict[str, Any], skipped: Any) -> str | None:
    """The message's text, or None when it is not text chatsite can show."""
    kind = content.get("content_type")
    if kind not in TEXT_TYPES:
        skipped[f"{kind or 'unknown'} messages"] += 1
        return None
    parts = content.get("parts") or []
    if not isinstance(parts, list):
        return None
    texts = []
    for part in parts:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict):
            skipped["pictures and files (not in conversations.json)"] += 1
    return "\n\n".join(t for t in texts if t)


def _keep(node: dict[str, Any], skipped: Any) -> dict[str, Any] | None:
    """What to store of a node: {"role", "content", "created", "model", "status"}."""
    message = node.get("message")
    if not isinstance(message, dict):
        return None  # the tree's empty root
    author = message.get("author") or {}
    role = author.get("role") if isinstance(author, dict) else None
    metadata = message.get("metadata") or {}
    if not isinstance(metadata, dict):
        metadata = {}
    if role not in ("user", "assistant"):
        skipped[f"{role or 'unknown'} messages"] += 1
        return None
    if metadata.get("is_visually_hidden_from_conversation"):
        skipped["hidden messages"] += 1
        return None
    if role == "assistant" and message.get("recipient", "all") != "all":
        skipped["calls to tools"] += 1
        return None
    content = message.get("content")
    text = _text(content, skipped) if isinstance(content, dict) else None
    if text is None:
        return None
    if not text.strip():
        skipped["empty messages"] += 1
        return None
    return {
        "role": role,
        "content": text,
        "created": message.get("create_time"),
        "model": metadata.get("model_slug") or "",
        "status": "interrupted"
        if message.get("status") == "in_progress"
        else "complete",
    }


def _conversation(conv: Any, n: int) -> PortableDialogue | str:
    """A dialogue, or the reason to skip the conversation."""
    if not isinstance(conv, dict):
        raise ImportFileInvalid(f"Conversation {n} is not a JSON object.")
    raw_title = conv.get("title")
    title = raw_title if isinstance(raw_title, str) else ""
    where = f"Conversation {n} (“{title or 'untitled'}”)"
    mapping = conv.get("mapping")
    if not isinstance(mapping, dict):
        raise ImportFileInvalid(f"{where} has no message tree (“mapping”).")
    epoch = datetime.fromtimestamp(0, tz=UTC)
    created = _moment(conv.get("create_time"), epoch)
    updated = _moment(conv.get("update_time"), created)
    dialogue = PortableDialogue(
        title=" ".join(title.split())[:200],
        created_at=created,
        updated_at=updated,
        last_activity_at=updated,
        title_set_by_user=bool(title),
    )
    default_model = conv.get("default_model_slug") or ""
    source = conv.get("conversation_id") or conv.get("id")
    if isinstance(source, str) and source:
        dialogue.imported_from = f"chatgpt:{source}"[:200]

    parent_of: dict[str, str | None] = {}
    kept: dict[str, dict[str, Any]] = {}
    for node_id, node in mapping.items():
        if not isinstance(node, dict):
            raise ImportFileInvalid(f"{where}: node {node_id} is not a JSON object.")
        parent = node.get("parent")
        if parent is not None and (
            not isinstance(parent, str) or parent not in mapping
        ):
            raise ImportFileInvalid(
                f"{where}: node {node_id} has a parent that is not in the file."
            )
        parent_of[node_id] = parent
        item = _keep(node, dialogue.skipped)
        if item is not None:
            kept[node_id] = item

    def kept_ancestor(node_id: str | None) -> str | None:
        steps = 0
        node = parent_of.get(node_id) if node_id is not None else None
        while node is not None and node not in kept:
            node = parent_of.get(node)
            steps += 1
            if steps > len(mapping):
                raise ImportFileInvalid(f"{where}: its message tree has a cycle.")
        return node

    parents = {node_id: kept_ancestor(node_id) for node_id in kept}
    depth: dict[str, int] = {}
    for node_id in kept:
        d, node, seen = 0, parents[node_id], 0
        while node is not None:
            d, node, seen = d + 1, parents[node], seen + 1
            if seen > len(kept):
                raise ImportFileInvalid(f"{where}: its message tree has a cycle.")
        depth[node_id] = d
    # Parents first; siblings and cousins by time.
    order = sorted(
        kept,
        key=lambda k: (depth[k], _moment(kept[k]["created"], created).timestamp()),
    )

    leaf = conv.get("current_node")
    if leaf not in parent_of:
        leaf = None
    active_leaf = leaf if leaf in kept else kept_ancestor(leaf)
    if active_leaf is None and order:
        active_leaf = order[-1]  # the deepest, newest message
    active: set[str] = set()
    node = active_leaf
    while node is not None:
        active.add(node)
        node = parents[node]

    last = created
    for node_id in order:
        item = kept[node_id]
        moment = _moment(item["created"], last)
        last = max(last, moment)
        dialogue.messages.append(
            PortableMessage(
                key=node_id,
                parent=parents[node_id],
                role=item["role"],
                content=item["content"],
                created_at=moment,
                status=item["status"],
                model=(item["model"] or default_model)[:100]
                if item["role"] == "assistant"
                else "",
                replaced=node_id not in active,
            )
        )
    if not dialogue.messages:
        return "it has no messages chatsite can show"
    return dialogue


def parse_chatgpt(data: list[Any]) -> Parsed:
    parsed = Parsed(format="chatgpt", dialogues=[])
    for n, conv in enumerate(data, 1):
        result = _conversation(conv, n)
        if isinstance(result, str):
            title = conv.get("title") if isinstance(conv.get("title"), str) else ""
            parsed.skipped.append({"title": title or "", "reason": result})
        else:
            parsed.dialogues.append(result)
    return parsed
