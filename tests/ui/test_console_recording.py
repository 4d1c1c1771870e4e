"""A console session recorded from a live source on real Redis and played back with a pilot:
play / pause / step / seek show the recorded values, with the audit entries of that period; a
recording cut off by a crash still plays up to where it ends; old recordings are pruned."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import redis
from textual.widgets import Static

from backend.settings import Settings
from backend.trading.killswitch import set_kill_switch
from console.data import recording
from console.data.live import LiveSource
from console.data.player import PlayerSource
from console.data.recording import Recorder, RecordingSource
from console.player import PlayerBar, ReplayApp
from tests.conftest import TRADEOPS, await_for

T0 = 1_699_999_200.0  # 2023-11-14 22:00:00 UTC
SIZE = (150, 45)


def _record(redis_url: str, r: redis.Redis, path: Path) -> None:
    """Six snapshots one (recorded) second apart: the kill switch goes ON before the third and off
    before the fifth."""
    live = LiveSource(redis_url, Settings(), "alice", slow_every=1)
    rec = Recorder(path, source=redis_url)
    try:
        for i in range(6):
            if i == 2:
                set_kill_switch(r, True, "alice", "runaway algo")
            if i == 4:
                set_kill_switch(r, False, "bob", "fixed")
            rec.add(live.poll(), t=T0 + i)
    finally:
        rec.close()
        live.close()


def test_a_recording_holds_every_snapshot_compressed(redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    path = tmp_path / "s.rec.gz"
    _record(redis_url, r, path)
    rec = recording.read(path)
    assert len(rec) == 6 and rec.times == [T0 + i for i in range(6)] and not rec.truncated
    assert [rec.snapshot(i).kill_switch for i in range(6)] == [False, False, True, True, False, False]
    assert rec.source == redis_url
    raw = sum(len(str(s)) for s in rec.states)
    assert path.stat().st_size < raw / 5  # deltas, gzipped
    # the console's own wrapper records what it hands the app, as it hands it
    live = LiveSource(redis_url, Settings(), "alice")
    src = RecordingSource(live, Recorder(tmp_path / "app.rec.gz"))
    try:
        polled = [src.poll() for _ in range(3)]
    finally:
        src.close()
    again = recording.read(tmp_path / "app.rec.gz")
    assert [again.snapshot(i).clock for i in range(3)] == [s.clock for s in polled]


async def test_replay_plays_pauses_steps_and_seeks_with_the_audit_entries_of_the_period(
    redis_url: str, r: redis.Redis, tmp_path: Path
) -> None:
    path = tmp_path / "s.rec.gz"
    _record(redis_url, r, path)
    player = PlayerSource(recording.read(path))
    app = ReplayApp(player, poll_s=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("4")  # the risk screen: the kill switch panel

        def shown() -> tuple[str, str]:
            kill = str(app.screen.query_one("#kill", Static).render())
            bar = str(app.screen.query_one(PlayerBar).render())
            return kill, bar

        await await_for(lambda: app.screen.query(PlayerBar), what="the player bar")
        await pilot.pause()
        kill, bar = shown()
        assert "off" in kill and "paused" in bar and "frame 1/6" in bar and "22:00:00 UTC" in bar
        await pilot.press("full_stop", "full_stop")  # step to the third frame: the switch is ON
        await pilot.pause()
        kill, bar = shown()
        assert "ON" in kill and "frame 3/6" in bar
        assert "kill switch ON alice runaway algo" in bar and "● audit" in bar  # new at this frame
        assert "bob" not in bar  # not yet
        await pilot.press("comma")  # back a frame: off, and the entry not yet seen
        await pilot.pause()
        kill, bar = shown()
        assert "off" in kill and "runaway algo" not in bar
        await pilot.press("g", *"22:00:04", "enter")  # seek: the switch is off again, by bob
        await pilot.pause()
        kill, bar = shown()
        assert "off" in kill and "frame 5/6" in bar and "kill switch off bob fixed" in bar
        await pilot.press("g", *"yesterday", "enter")  # a bad time is a message, the modal stays
        await pilot.pause()
        assert "cannot seek to 'yesterday'" in str(app.screen.query_one("#seek-error", Static).render())
        await pilot.press("escape", "g", *"0%", "enter")
        await pilot.pause()
        assert player.i == 0
        await pilot.press("right_square_bracket", "right_square_bracket", "right_square_bracket")  # x8
        await pilot.press("space")  # play: it moves on by itself, to the end, and stops
        assert player.playing and player.speed == 8.0
        await await_for(lambda: not player.playing, timeout=10, what="playback to reach the end and stop")
        await await_for(lambda: "frame 6/6" in shown()[1], timeout=10, what="the last frame shown")
        assert "off" in shown()[0] and player.i == 5
        await pilot.press(*["left_square_bracket"] * 3, "space")  # at x1, from the end: again from the start
        assert player.playing and player.speed == 1.0 and player.i < 5
        await pilot.press("p")  # and `p` pauses the player
        assert not player.playing
        # a recording changes nothing: the keys that ask for a change are not offered
        assert app.read_only and not app.screen.check_action("kill_switch", ())


def test_a_cut_off_recording_plays_up_to_its_end(redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    path = tmp_path / "crash.rec.gz"
    live = LiveSource(redis_url, Settings(), "alice")
    rec = Recorder(path)
    try:
        for i in range(3):
            rec.add(live.poll(), t=T0 + i)
        rec.flush()  # what the recorder does every 2 s; then the console dies without closing the file
        data = path.read_bytes()
    finally:
        rec.close()
        live.close()
    path.write_bytes(data)
    got = recording.read(path)
    assert len(got) == 3 and got.truncated


def test_always_on_recording_keeps_only_recent_sessions(tmp_path: Path) -> None:
    d = tmp_path / "recordings"
    d.mkdir()
    old, new = recording.session_file(d, T0 - 30 * 86400), recording.session_file(d, T0 - 86400)
    for p, t in ((old, T0 - 30 * 86400), (new, T0 - 86400)):
        p.write_bytes(b"")
        os.utime(p, (t, t))
    assert recording.prune(d, keep_days=14, now=T0) == [old]
    assert [p.name for p in d.iterdir()] == [new.name] and new.name == "console-20231113T220000Z.rec.gz"


def test_bad_recordings_are_one_line(tradeops_env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "not.rec.gz").write_text("hello")
    for args, why in (
        (["console", "--replay", str(tmp_path / "nope.rec.gz")], "no recording"),
        (["console", "--replay", str(tmp_path / "not.rec.gz")], "is not a console recording"),
        (["console", "--replay", "x", "--record", "y"], "do not go together"),
    ):
        res = subprocess.run(TRADEOPS + args, capture_output=True, text=True, env=tradeops_env, timeout=60)
        assert res.returncode == 1 and why in res.stderr and res.stderr.count("\n") == 1, (args, res.stderr)


def test_long_lists_and_maps_are_stored_as_edits_and_read_back_exactly(tmp_path: Path) -> None:
    """A blotter of 300 orders where one arrives and one changes each poll costs a few rows, not
    300, and reads back equal, frame by frame."""
    import copy

    import msgspec

    from console.data.replay import ReplaySource
    from console.data.snapshot import OrderRow

    base = ReplaySource().frames[0]
    frames = []
    snap = copy.deepcopy(base)
    for i in range(40):
        snap = copy.deepcopy(snap)
        new = OrderRow("12:00:00", f"new-{i}", "paper-1", "BTCUSDT", "buy", 1.0, "mkt", "NEW", 0.0, "")
        snap.orders = [new, *snap.orders[:-1]]  # newest first, the oldest drops off
        snap.orders[5].state = "FILLED" if i % 2 else "PARTIALLY_FILLED"
        snap.order_history[f"new-{i}"] = ["NEW"]
        snap.order_history.pop(next(iter(snap.order_history)))
        frames.append(snap)
    path = tmp_path / "edits.rec.gz"
    rec = Recorder(path)
    for i, f in enumerate(frames):
        rec.add(f, t=T0 + i)
    rec.close()
    got = recording.read(path)
    assert [got.states[i] for i in range(len(frames))] == [
        msgspec.msgpack.decode(msgspec.msgpack.encode(f)) for f in frames
    ]
    whole = sum(len(msgspec.msgpack.encode(f)) for f in frames)
    assert path.stat().st_size < whole / 40  # a keyframe, then a few rows a frame


def test_tradeops_console_records_what_it_shows(tradeops_env: dict[str, str], r: redis.Redis, tmp_path: Path) -> None:
    """`tradeops console --record DIR/` in a pseudo-terminal on the live bus: a file per session in
    DIR, readable while the console runs (flushed every 2 s), closed on quit."""
    import pty
    import select

    from backend.errors import TradeopsError
    from tests.conftest import wait_for

    d = tmp_path / "recordings"
    master, slave = pty.openpty()
    os.set_blocking(master, False)
    env = {**tradeops_env, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}
    proc = subprocess.Popen(
        [*TRADEOPS, "console", "--record", f"{d}/"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,
    )
    os.close(slave)
    seen = bytearray()

    def drain() -> bytes:
        while select.select([master], [], [], 0)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen.extend(chunk)
        return bytes(seen)

    def frames() -> int:
        files = list(d.glob("console-*.rec.gz"))
        if not files:
            return 0
        try:
            return len(recording.read(files[0]))
        except TradeopsError:  # not a whole frame flushed yet
            return 0

    try:
        wait_for(lambda: b"overview" in drain(), timeout=60, what="the console's first frame")
        set_kill_switch(r, True, "alice", "recorded")
        wait_for(lambda: frames() >= 3, timeout=60, interval=0.2, what="snapshots flushed to the recording")
    finally:
        os.write(master, b"q")
        try:  # reading on: a console whose terminal is full cannot draw its way out
            wait_for(lambda: drain() is not None and proc.poll() is not None, timeout=30, what="the console to quit")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            os.close(master)
    [path] = d.glob("console-*.rec.gz")
    rec = recording.read(path)
    assert proc.returncode == 0 and not rec.truncated and len(rec) >= 3  # closed on quit
    assert any(rec.snapshot(i).kill_switch for i in range(len(rec)))
    assert b"recorded" in bytes(seen) and path.name.encode() in bytes(seen).replace(b"\r\n", b"")
