"""A small server-sent-events parser for the tests (the parts of the spec the server uses)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SseMessage:
    id: str | None = None
    event: str | None = None
    data: list[str] = field(default_factory=list)
    retry: int | None = None
    comments: list[str] = field(default_factory=list)

    @property
    def is_event(self) -> bool:
        return bool(self.data)

    @property
    def envelope(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads("\n".join(self.data))
        return value


def parse(lines: Iterable[str]) -> Iterator[SseMessage]:
    """One SseMessage per blank-line-terminated block (events, comments, retry hints)."""
    message = SseMessage()
    dirty = False
    for line in lines:
        if line == "":
            if dirty:
                yield message
            message, dirty = SseMessage(), False
            continue
        dirty = True
        if line.startswith(":"):
            message.comments.append(line[1:].strip())
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "id":
            message.id = value
        elif name == "event":
            message.event = value
        elif name == "data":
            message.data.append(value)
        elif name == "retry":
            message.retry = int(value)
