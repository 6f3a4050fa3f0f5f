"""The example project's filesystem broker hands a worker only whole messages.

Kombu's own filesystem transport creates a message file and then writes it, while a consumer
takes any file of its queue at once: under load a worker reads an empty message and exits
("Unrecoverable error: JSONDecodeError"), which stopped ``make demo`` mid-session.
"""

from __future__ import annotations

import importlib.util
import runpy
import threading
from pathlib import Path
from queue import Empty
from typing import Any

import pytest
from kombu import Connection

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "example_project" / "example_project"


def _load(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


Transport = _load("example_broker", PACKAGE / "broker.py").Transport

MESSAGES = 3000


def _connection(folder: Path, transport: Any) -> Connection:
    return Connection(
        "filesystem://",
        transport=transport,
        transport_options={
            "data_folder_in": str(folder),
            "data_folder_out": str(folder),
            "control_folder": str(folder / "control"),
            "store_processed": False,
        },
    )


def send_and_take(folder: Path, transport: Any) -> tuple[list[int], list[BaseException]]:
    """One thread puts ``MESSAGES`` payloads while another takes them as fast as it can."""
    received: list[int] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def produce() -> None:
        with _connection(folder, transport) as conn:
            channel = conn.default_channel
            for number in range(MESSAGES):
                channel._put("q", {"n": number, "pad": "x" * 2000})
        done.set()

    def consume() -> None:
        with _connection(folder, transport) as conn:
            channel = conn.default_channel
            while len(received) < MESSAGES:
                try:
                    received.append(channel._get("q")["n"])
                except Empty:
                    if done.is_set() and not any(folder.glob("*.q.msg")):
                        return  # the producer is done and nothing is left
                except Exception as exc:  # what makes a Celery worker exit
                    errors.append(exc)
                    return

    threads = [threading.Thread(target=consume), threading.Thread(target=produce)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return received, errors


def test_a_busy_consumer_reads_every_message_whole(tmp_path: Path) -> None:
    (tmp_path / "control").mkdir()
    received, errors = send_and_take(tmp_path, Transport)
    assert errors == []
    assert sorted(received) == list(range(MESSAGES))
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_the_demo_selects_it_for_the_filesystem_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)  # the demo's embedded default
    namespace = runpy.run_path(str(PACKAGE / "settings.py"))
    assert namespace["CELERY_BROKER_URL"] == "filesystem://"
    assert namespace["CELERY_BROKER_TRANSPORT"] == "example_project.broker:Transport"
