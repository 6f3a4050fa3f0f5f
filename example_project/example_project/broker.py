"""Kombu's filesystem transport, with each message written whole before it can be read.

Kombu's own ``Channel._put`` creates the message file under its final name and then writes
it, while ``_get`` moves and reads any file with that name at once, without a lock: a worker
that polls in between reads an empty message, fails with "Unrecoverable error:
JSONDecodeError" and exits (celery/kombu#1551). The gap is short but a loaded machine widens
it. Here the payload goes to a temporary name that no queue matches and is renamed into
place (``os.replace`` is atomic within a directory), so a reader sees the whole message or
nothing. The demo's settings select this transport for ``filesystem://``.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    """A filesystem channel whose messages appear in the queue folder complete."""

    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        # The name kombu's _get looks for: <ms>_<uuid>.<queue>.msg, in the order of sending.
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        # ".tmp-..." has no "<queue>.msg" after its first dot: no reader takes it.
        partial = os.path.join(self.data_folder_out, f".tmp-{uuid.uuid4()}")
        try:
            with open(partial, "wb") as out:
                out.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    """``filesystem://`` with :class:`Channel`."""

    Channel = Channel
