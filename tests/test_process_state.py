"""The one owner of process-global state: registration, reset and the reset after fork."""

from __future__ import annotations

import os
import threading

import pytest

from django_synerise import process_state

#: Every module keeping process-global state registers it (importing the package's
#: modules registers them all).
EXPECTED = {
    "client.sessions",
    "client.default_client",
    "breaker.registry",
    "bulkhead.interactive",
    "refresh.executor",
    "verification.public_keys",
    "crypto.keyrings",
    "ratelimit.warnings",
    "throttle.warnings",
}


@pytest.fixture
def scratch():
    """Register a state for one test and remove it afterwards."""
    names: list[str] = []

    def add(name: str, **handlers):
        names.append(name)
        process_state.register(name, **handlers)

    yield add
    for name in names:
        process_state._entries.pop(name, None)  # noqa: SLF001 - cleaning up the test's entry


def test_every_singleton_is_registered():
    # Importing a module registers its state.
    import django_synerise.bulkhead
    import django_synerise.client
    import django_synerise.crypto
    import django_synerise.ratelimit
    import django_synerise.services.refresh
    import django_synerise.throttle
    import django_synerise.verification  # noqa: F401

    assert set(process_state.registered()) >= EXPECTED


def test_reset_runs_every_reset_handler_or_the_named_ones(scratch):
    calls: list[str] = []
    scratch("test.a", reset=lambda: calls.append("a"))
    scratch("test.b", reset=lambda: calls.append("b"), after_fork=lambda: calls.append("fork"))
    process_state.reset("test.b")
    assert calls == ["b"]
    process_state.reset()
    assert calls[1:] == ["a", "b"]
    with pytest.raises(KeyError):
        process_state.reset("test.unknown")


def test_reset_forgets_the_default_client_keys_and_warnings(settings):
    from django_synerise import client, crypto, ratelimit

    first = client.get_client()
    crypto.get_multifernet()
    ratelimit._warnings.warned_at = 123.0  # noqa: SLF001
    process_state.reset()
    assert client.get_client() is not first
    assert not crypto._cache  # noqa: SLF001
    assert ratelimit._warnings.warned_at == 0.0  # noqa: SLF001


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_runs_the_after_fork_handlers_and_gets_a_new_generation(scratch):
    from django_synerise import breaker

    ran: list[int] = []
    scratch("test.fork", after_fork=lambda: ran.append(os.getpid()))
    generation = process_state.generation()
    held = breaker._registry_lock  # noqa: SLF001
    held.acquire()  # a lock held by a thread of the parent at the fork
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            ok = (
                ran == [os.getpid()]
                and process_state.generation() == generation + 1
                and breaker._registry_lock is not held  # noqa: SLF001
                and breaker.get_breaker("https://fork.example") is not None
            )
            os._exit(0 if ok else 1)
    finally:
        held.release()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert ran == [] and process_state.generation() == generation


def test_a_fork_python_was_not_told_about_is_noticed_by_generation(monkeypatch):
    ran: list[str] = []
    monkeypatch.setattr(process_state, "_entries", {})  # only this test's handler runs
    process_state.register(
        "test.silent_fork", after_fork=lambda: ran.append(threading.current_thread().name)
    )
    generation = process_state.generation()
    monkeypatch.setattr(process_state, "_pid", -1)  # as if this process had been forked
    assert process_state.generation() == generation + 1
    assert ran == [threading.current_thread().name]
    assert process_state.generation() == generation + 1  # once only
    assert len(ran) == 1
