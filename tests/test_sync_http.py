"""Sync over HTTP: ``eventpile serve --sync`` on one installation, ``join`` and ``sync``
with its address on another; requests that cannot prove the keys are refused, and an
installation that does not answer leaves the sync to the queue."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventpile import Home
from eventpile.mail.app import MailApplication
from eventpile.mail.commands import ImportMailbox, TagMessages
from eventpile.projections.queue import pending
from eventpile.store.remote import PREFIX, RemoteFiles
from eventpile.store.segments import FolderError
from tests.conftest import FAST, PASSPHRASE, eventpile_process
from tests.test_sync import seen, write_mbox


class Served:
    """An installation serving sync in a process of its own."""

    def __init__(self, home: Home, port: int = 0):
        env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTPILE_")}
        env.update(EVENTPILE_HOME=str(home.path), EVENTPILE_PASSPHRASE=PASSPHRASE)
        self.process = subprocess.Popen(
            [sys.executable, "-c", FAST, "--json", "serve", "--sync", "--port", str(port)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise AssertionError(f"serve did not start: {self.process.stderr.read()}")  # type: ignore[union-attr]
        printed = json.loads(line)
        self.address, self.join = printed["address"], printed["join"]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        for stream in (self.process.stdout, self.process.stderr):
            assert stream is not None
            stream.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Home, Served]]:
    home = Home(tmp_path / "server")
    app = MailApplication(home, home.init(PASSPHRASE))
    app.execute(ImportMailbox(path=str(write_mbox(tmp_path / "a.mbox", ["red", "green"]))))
    app.close()
    served = Served(home)
    yield home, served
    served.stop()


def test_join_and_sync_over_http(server: tuple[Home, Served], tmp_path: Path) -> None:
    home, served = server
    laptop = Home(tmp_path / "laptop")
    joined = eventpile_process(laptop, "--json", "join", served.join, passphrase=PASSPHRASE)
    assert joined.returncode == 0, joined.stderr
    assert json.loads(joined.stdout)["received"] > 0
    app = MailApplication(laptop, laptop.unlock(PASSPHRASE))
    try:
        assert seen(app) == [("green", []), ("red", [])]
        app.execute(TagMessages(action="add", tag="laptop", query="subject:red"))
        synced = app.sync(served.address)
        assert (synced.status, synced.result["sent"] > 0) == ("complete", True)
    finally:
        app.close()
    # the server took it into its own log, in the same request
    server_app = MailApplication(home, home.unlock(PASSPHRASE))
    try:
        assert seen(server_app, "tag:laptop") == [("red", ["laptop"])]
    finally:
        server_app.close()


def test_a_request_that_cannot_prove_the_keys_is_refused(
    server: tuple[Home, Served], tmp_path: Path
) -> None:
    _home, served = server
    with pytest.raises(urllib.error.HTTPError) as bare:
        urllib.request.urlopen(served.address.rstrip("/") + PREFIX + "/origins", timeout=10)
    assert bare.value.code == 401
    assert "no proof of the keys" in bare.value.read().decode()
    stranger = Home(tmp_path / "stranger")
    keys = stranger.init(PASSPHRASE)  # another user: other keys
    files = RemoteFiles(served.address, keys.purpose_key("sync over http"), keys.installation_id)
    with pytest.raises(FolderError, match="does not prove it holds this user's keys"):
        files.origins()
    app = MailApplication(stranger, keys)
    try:
        refused = eventpile_process(stranger, "sync", served.address, passphrase=PASSPHRASE)
        assert refused.returncode == 1
        assert refused.stderr.count("\n") == 1
        assert "refused" in refused.stderr
        assert seen(app) == []
    finally:
        app.close()


def test_an_installation_writes_only_its_own_files(
    server: tuple[Home, Served], tmp_path: Path
) -> None:
    home, served = server
    keys = home.unlock(PASSPHRASE)
    # an installation of the user (it holds the keys) writing as the server
    impostor = RemoteFiles(served.address, keys.purpose_key("sync over http"), uuid.uuid4())
    with pytest.raises(FolderError, match="only its own files"):
        impostor.put(f"{keys.installation_id.hex}/head", b"x")
    with pytest.raises(FolderError, match="only its own files"):
        impostor.put("keys.json", b"{}")


def test_join_with_a_wrong_token_makes_nothing(server: tuple[Home, Served], tmp_path: Path) -> None:
    _home, served = server
    laptop = Home(tmp_path / "laptop")
    refused = eventpile_process(
        laptop, "join", served.address + "?token=wrong", passphrase=PASSPHRASE
    )
    assert refused.returncode == 1
    assert "join token is wrong or used" in refused.stderr
    assert refused.stderr.count("\n") == 1
    assert not laptop.path.exists()


def test_an_installation_that_does_not_answer_leaves_the_sync_to_the_queue(
    tmp_path: Path,
) -> None:
    home = Home(tmp_path / "server")
    keys = home.init(PASSPHRASE)
    seed = MailApplication(home, keys)
    seed.execute(ImportMailbox(path=str(write_mbox(tmp_path / "a.mbox", ["red"]))))
    seed.close()
    laptop = Home(tmp_path / "laptop")
    app = MailApplication(laptop, laptop.init(PASSPHRASE, keys))
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]  # free now, and nothing listens there below
    try:
        attempt = app.sync(f"http://127.0.0.1:{port}/")
        assert attempt.status == "retrying"
        assert "does not answer" in (attempt.error or "")
        assert [op.id for op in pending(app.current("queue"))] == [attempt.id]
        served = Served(home, port)
        try:
            done = app.run(attempt.id, force=True)  # what the worker does once it is due
        finally:
            served.stop()
        assert (done.status, done.attempts) == ("complete", 2)
        assert pending(app.current("queue")) == []
        assert seen(app) == [("red", [])]
    finally:
        app.close()
