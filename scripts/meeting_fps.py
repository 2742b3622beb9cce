"""Measure how often the meeting window redraws each video tile.

The window (the real Tk app, under a private Xvfb unless --display is given) creates a meeting;
a child process runs a local server and N bots that join and publish 640x480 H.264 at 30 fps
and (with --audio) a 440 Hz Opus tone every 20 ms (pre-encoded clips, so the bots cost little
CPU and the numbers are the window's). The window decodes every stream, scales and paints,
decodes, mixes and plays the audio, and shows who speaks; we count the paints per tile while
``mainloop()`` runs, plus the Tk loop's largest stall and the window process's CPU. With
--file-mib N, Bot 1 (made the window user's friend) sends the window's user a file of N MiB as
the measurement starts; the window accepts it through the app's client core into a temp folder,
so the transfer runs through the measured process while the meeting plays.

    .venv/bin/python scripts/meeting_fps.py [--bots 3] [--seconds 10] [--audio] [--file-mib 256]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchlib import (GcPauses, IncomingFile, end_helper, machine_load, make_friends, open_display,  # noqa: E402
                      write_file)


def serve_bots(count: int, fps: int, audio: bool = False, file_mib: int = 0) -> int:
    """Child process: a server and ``count`` publishing bots; reads the room number and the
    window user's id on stdin, then (with ``file_mib``) Bot 1 sends that user the file on "SEND"."""
    from client.loadtest.clip import encode_clip
    from client.media.clock import Pacer, now_us
    from common.media import Codec, MediaKind
    from tests.helpers import TestClient, start_server, test_config

    tmp = Path(tempfile.mkdtemp(prefix="rtm-fps-"))
    server = start_server(test_config(tmp))
    clip = encode_clip(640, 480, fps, 500_000, audio=audio)
    keyframes = [i for i, (_p, key) in enumerate(clip.video) if key]
    outgoing = tmp / f"{file_mib} MiB.bin"
    if file_mib:
        write_file(outgoing, file_mib)
    print(f"PORT {server.port}", flush=True)
    number, window_user = sys.stdin.readline().split()
    stop = threading.Event()

    def publish(kernel) -> None:
        index = [0]
        restart = threading.Event()
        kernel.rooms.add_keyframe_listener(lambda kind: restart.set())
        pacer = Pacer(fps)
        while pacer.wait(stop):
            if restart.is_set():
                restart.clear()
                index[0] = next((k for k in keyframes if k >= index[0]), 0)
            payload, key = clip.video[index[0]]
            kernel.rooms.publish(MediaKind.CAMERA, Codec.H264, payload, key, now_us())
            index[0] = (index[0] + 1) % len(clip.video)

    def speak(kernel) -> None:
        pacer = Pacer(50)
        index = 0
        while pacer.wait(stop):
            kernel.rooms.publish(MediaKind.MICROPHONE, Codec.OPUS, clip.audio[index], False, now_us())
            index = (index + 1) % len(clip.audio)

    bots = []
    for i in range(count):
        bot = TestClient(server.port)
        bot.register_and_login(f"Bot {i + 1}")
        bot.kernel.rooms.join(number)
        bot.kernel.rooms.set_media_state(True, audio, False)
        threading.Thread(target=publish, args=(bot.kernel,), daemon=True).start()
        if audio:
            threading.Thread(target=speak, args=(bot.kernel,), daemon=True).start()
        bots.append(bot)
    print("PUBLISHING", flush=True)
    if file_mib and sys.stdin.readline().strip() == "SEND":
        make_friends(server, int(window_user), bots[0].kernel.user["id"])
        threading.Thread(target=bots[0].kernel.files.send_file, args=(int(window_user), outgoing),
                         daemon=True).start()
    sys.stdin.readline()                 # parent closes stdin when done
    stop.set()
    for bot in bots:
        bot.close()
    server.stop()
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


class StallSampler:
    """While the Tk loop has not come round for over 50 ms, sample what the Tk thread is doing
    every 5 ms (its innermost frames): where the time of a stall goes."""

    def __init__(self, loop_times: list[float]) -> None:
        import collections
        self.loop_times = loop_times
        self.samples: collections.Counter = collections.Counter()
        self.tk_thread = threading.get_ident()
        self._stop = threading.Event()

    def start(self) -> "StallSampler":
        threading.Thread(target=self._run, daemon=True).start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            if not self.loop_times or time.monotonic() - self.loop_times[-1] < 0.05:
                continue
            frame = sys._current_frames().get(self.tk_thread)
            where = []
            while frame is not None and len(where) < 4:
                where.append(f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno} {frame.f_code.co_name}")
                frame = frame.f_back
            self.samples[" < ".join(where)] += 1

    def stop(self) -> None:
        self._stop.set()

    def report(self) -> dict[str, int]:
        """Samples (5 ms each) per place, most first."""
        return dict(self.samples.most_common(8))


def transfer_figures(incoming: IncomingFile, started: float, loop_times: list[float],
                     loop_cpu: list[float]) -> dict:
    """The file's figures, plus the Tk loop's worst round among those that overlap the transfer."""
    figures = incoming.figures(started)
    if incoming.offered_at is not None:
        until = incoming.done_at or loop_times[-1]
        rounds = [(b - a, cb - ca) for a, b, ca, cb in zip(loop_times, loop_times[1:], loop_cpu, loop_cpu[1:])
                  if b > incoming.offered_at and a < until]
        figures["paint_loop_max_ms_while_running"] = round(1000 * max((g for g, _c in rounds), default=0), 1)
        figures["tk_thread_cpu_per_round_max_ms_while_running"] = round(1000 * max((c for _g, c in rounds),
                                                                                   default=0), 1)
    return figures


def measure(bots: int, seconds: float, fps: int, display: str | None, camera: bool = True,
            audio: bool = False, file_mib: int = 0) -> dict:
    import psutil
    import tkinter as tk

    from tests.gui_helpers import pump_until, register_in_window

    xvfb = open_display(display)
    os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="rtm-fps-cfg-")
    child = subprocess.Popen([sys.executable, __file__, "--serve-bots", str(bots), "--fps", str(fps)]
                             + (["--audio"] if audio else []) + ["--file-mib", str(file_mib)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    incoming = None
    try:
        port = int(child.stdout.readline().split()[1])
        from client.ui.app import App
        from common.media import MediaKind
        root = tk.Tk()
        app = App(root, server=f"127.0.0.1:{port}")
        register_in_window(app, "Me", timeout=30)
        dialog = app.start_meeting("create")
        dialog.submit()
        meeting = pump_until(root, lambda: app.meeting, 10, "the meeting")
        meeting.geometry("1180x740+0+0")
        if not camera:
            meeting.toggle_camera()
        child.stdin.write(f"{meeting.room['number']} {app.kernel.user['id']}\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "PUBLISHING"
        me = app.kernel.user["id"]
        remote = lambda: {k: t for k, t in meeting.grid_view.tiles.items()  # noqa: E731
                          if k[0] != me and k[1] == MediaKind.CAMERA}
        pump_until(root, lambda: len(remote()) == bots and all(t.paints > 30 for t in remote().values()), 30,
                   "video in every remote tile")
        root.after(2000, root.quit)          # warm up in the real main loop
        root.mainloop()

        tiles = remote()
        loop_times: list[float] = []
        loop_cpu: list[float] = []          # the Tk thread's own CPU time at each round

        def on_paint() -> None:
            loop_times.append(time.monotonic())
            loop_cpu.append(time.thread_time())
        meeting.grid_view.on_paint = on_paint
        start_paints = {k: t.paints for k, t in tiles.items()}
        start_replaced = {k: t.slot.replaced for k, t in tiles.items()}
        receiver = meeting.media.receiver
        start_decoded = {k: receiver.members[k[0]].video[MediaKind.CAMERA].stats.decoded for k in tiles}
        stalls = StallSampler(loop_times).start()
        pastes: list[float] = []
        for tile in meeting.grid_view.tiles.values():
            def timed(paint=tile.paint) -> bool:
                began = time.perf_counter()
                painted = paint()
                if painted:
                    pastes.append(time.perf_counter() - began)
                return painted
            tile.paint = timed
        process = psutil.Process()
        process.cpu_percent(None)
        started = time.monotonic()
        if file_mib:
            incoming = IncomingFile(app)
            child.stdin.write("SEND\n")
            child.stdin.flush()
        root.after(int(seconds * 1000), root.quit)
        with GcPauses() as gc_pauses:
            root.mainloop()
        elapsed = time.monotonic() - started
        stalls.stop()
        cpu = process.cpu_percent(None)
        gaps = [b - a for a, b in zip(loop_times, loop_times[1:])]
        gap_cpu = [b - a for a, b in zip(loop_cpu, loop_cpu[1:])]
        result = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "streams": bots, "stream": f"640x480 H.264 {fps} fps", "seconds": round(elapsed, 1),
            "own_camera": camera, "audio": audio,
            **({"file_to_me": transfer_figures(incoming, started, loop_times, loop_cpu)} if incoming else {}),
            "tile_size": [list(t.slot.size) for t in tiles.values()][0],
            "paint_fps": {f"user {k[0]}": round((t.paints - start_paints[k]) / elapsed, 1) for k, t in tiles.items()},
            "decoded_fps": {f"user {k[0]}": round((receiver.members[k[0]].video[MediaKind.CAMERA].stats.decoded
                                                   - start_decoded[k]) / elapsed, 1) for k in tiles},
            "replaced_before_paint": {f"user {k[0]}": t.slot.replaced - start_replaced[k] for k, t in tiles.items()},
            "paint_loop_ms": {"mean": round(1000 * sum(gaps) / max(1, len(gaps)), 1),
                              "max": round(1000 * max(gaps, default=0), 1)},
            "tk_thread_cpu_per_round_ms": {"max": round(1000 * max(gap_cpu, default=0), 1),
                                           "in_gaps_over_50ms_max": round(1000 * max(
                                               (c for g, c in zip(gaps, gap_cpu) if g > 0.05), default=0), 1),
                                           "gaps_over_50ms": sum(g > 0.05 for g in gaps)},
            "window_process_cpu_percent": round(cpu, 1),
            "gc": gc_pauses.figures(),
            **machine_load(),
            "stalls_over_50ms": stalls.report(),
            "tile_paste_ms": {"count": len(pastes), "mean": round(1000 * sum(pastes) / max(1, len(pastes)), 2),
                              "max": round(1000 * max(pastes, default=0), 1),
                              "over_50ms": sum(p > 0.05 for p in pastes)},
        }
        app.quit()
        return result
    finally:
        end_helper(child, xvfb, timeout=20)
        if incoming:
            incoming.remove()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bots", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--display", default=None, help="use this X display instead of a private Xvfb")
    parser.add_argument("--no-camera", action="store_true", help="my own camera off (no self view, no encoding)")
    parser.add_argument("--audio", action="store_true", help="the bots also talk (Opus, 50 packets/s each)")
    parser.add_argument("--file-mib", type=int, default=0,
                        help="Bot 1 sends me a file of this many MiB as the measurement starts")
    parser.add_argument("--serve-bots", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bots is not None:
        return serve_bots(args.serve_bots, args.fps, args.audio, args.file_mib)
    print(json.dumps(measure(args.bots, args.seconds, args.fps, args.display, not args.no_camera, args.audio,
                             args.file_mib), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
