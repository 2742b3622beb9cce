"""Measure the worst stall of the desktop client's Tk loop while files move and people chat.

The window (the real Tk app, under a private Xvfb unless --display is given) logs in as Alice
and opens a chat with Bob; a child process runs a local server and Bob (a client core), so the
measured process is the window's alone. Alice sends Bob a file and accepts one from him at the
same time (both directions run, with progress in the chat), types a message every 300 ms, and
Bob writes every 250 ms. A 5 ms ``after`` ticker records how late the Tk loop runs it: the
largest lateness is the longest the loop did not run; the Tk thread's own CPU time between two
ticks tells how much of that was work on the Tk thread (the rest is waiting for a core or the
GIL), and each event kind's slowest handling is timed too.

    .venv/bin/python scripts/chat_tk_gaps.py [--mib 1024] [--seconds 120]
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

from benchlib import (GcPauses, end_helper, machine_load, make_friends, open_display, percentile,  # noqa: E402
                      write_file)

TICK_MS = 5
PASSWORD = "correct horse battery"


def serve(mib: int) -> int:
    """Child process: a server, Alice's account, and Bob, who accepts files, sends one when
    told, and writes to Alice every 250 ms until stdin closes."""
    from tests.helpers import TestClient, start_server, test_config

    tmp = Path(tempfile.mkdtemp(prefix="rtm-gaps-"))
    server = start_server(test_config(tmp))
    alice = TestClient(server.port)
    alice.register_and_login("Alice")
    alice_id = alice.kernel.user["id"]
    alice.kernel.logout()
    alice.close()
    bob = TestClient(server.port)
    bob.register_and_login("Bob")
    make_friends(server, alice_id, bob.kernel.user["id"])
    inbox = tmp / "bob-inbox"
    inbox.mkdir()

    def on_event(event) -> None:
        if event.kind == "file_offer":
            threading.Thread(target=bob.kernel.files.accept, args=(event.data["transfer_id"], inbox),
                             daemon=True).start()
    bob.kernel.add_listener(on_event)
    print(f"READY {server.port} {alice.phone}", flush=True)
    assert sys.stdin.readline().strip() == "GO"
    outgoing = tmp / "from-bob.bin"
    write_file(outgoing, mib)
    threading.Thread(target=bob.kernel.files.send_file, args=(alice_id, outgoing), daemon=True).start()
    stop = threading.Event()

    def chat() -> None:
        n = 0
        while not stop.wait(0.25):
            n += 1
            bob.kernel.chat.send(alice_id, f"message {n} from Bob while the files move")
    threading.Thread(target=chat, daemon=True).start()
    sys.stdin.readline()                       # the parent closes stdin when done
    stop.set()
    bob.close()
    server.stop()
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


def measure(mib: int, seconds: float, display: str | None) -> dict:
    import tkinter as tk

    from tests.gui_helpers import pump_until

    xvfb = open_display(display)
    tmp = Path(tempfile.mkdtemp(prefix="rtm-gaps-window-"))
    os.environ["XDG_CONFIG_HOME"] = str(tmp / "config")
    child = subprocess.Popen([sys.executable, __file__, "--serve", "--mib", str(mib)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        _ready, port, phone = child.stdout.readline().split()
        from client.ui import chat_window
        from client.ui.app import App
        from client.ui.main_window import MainWindow

        root = tk.Tk()
        app = App(root, server=f"127.0.0.1:{port}")
        view = app.login_view
        view.fields["phone"].insert(0, phone)
        view.fields["password"].insert(0, PASSWORD)
        view.submit()
        main = pump_until(root, lambda: isinstance(app.main_window, MainWindow) and app.main_window, 30,
                          "the main window")
        pump_until(root, lambda: main.friends, 10, "the friend list")
        bob_id = main.friends[0]["id"]
        window = main.open_chat(bob_id)
        outgoing = tmp / "to-bob.bin"
        write_file(outgoing, mib)
        received = tmp / "from-bob.bin"
        chat_window.ask_save_path = lambda parent, name: str(received)

        ticks: list[float] = []
        cpu: list[float] = []            # the Tk thread's own CPU time at each tick
        slowest: dict[str, float] = {}   # event kind -> the longest its handlers took on the Tk thread
        dispatch = app.bridge.dispatch

        def timed_dispatch(event) -> None:
            begun = time.perf_counter()
            dispatch(event)
            took = time.perf_counter() - begun
            slowest[event.kind] = max(slowest.get(event.kind, 0.0), took)
        app.bridge.dispatch = timed_dispatch
        handled = {"typed": 0}
        done = threading.Event()

        def tick() -> None:
            ticks.append(time.perf_counter())
            cpu.append(time.thread_time())
            if not done.is_set():
                root.after(TICK_MS, tick)

        def type_message() -> None:
            if done.is_set():
                return
            handled["typed"] += 1
            window.input.insert("1.0", f"typing {handled['typed']} while the files move")
            window.send()
            root.after(300, type_message)

        def watch() -> None:
            rows = list(window.transfers.values())
            for row in rows:
                if not row.mine and "Accept…" in row.button_widgets:
                    row.button_widgets["Accept…"].invoke()
            if len(rows) == 2 and all(r.state == "done" for r in rows) or time.perf_counter() - started > seconds:
                done.set()
                root.quit()
                return
            root.after(50, watch)

        window.send_file(str(outgoing))
        child.stdin.write("GO\n")
        child.stdin.flush()
        started = time.perf_counter()
        root.after(TICK_MS, tick)
        root.after(300, type_message)
        root.after(50, watch)
        with GcPauses() as gc_pauses:
            root.mainloop()
        elapsed = time.perf_counter() - started
        gaps = [b - a for a, b in zip(ticks, ticks[1:])]
        busy = [b - a for a, b in zip(cpu, cpu[1:])]
        rows = list(window.transfers.values())
        result = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "file_each_way_mib": mib, "seconds": round(elapsed, 1),
            "transfers_done": sum(1 for r in rows if r.state == "done"),
            "messages_shown": len(window.bubbles()),
            "typed_by_me": handled["typed"],
            "tk_ticks": len(ticks),
            "tk_gap_ms": {"median": round(1000 * percentile(gaps, 50), 1), "p99": round(1000 * percentile(gaps, 99), 1),
                          "max": round(1000 * max(gaps), 1), "over_50ms": sum(1 for g in gaps if g > 0.050)},
            "tk_thread_cpu_between_ticks_ms": {"p99": round(1000 * percentile(busy, 99), 1),
                                               "max": round(1000 * max(busy), 1)},
            "slowest_event_handling_ms": {k: round(1000 * v, 1)
                                          for k, v in sorted(slowest.items(), key=lambda kv: -kv[1])[:5]},
            "gc": gc_pauses.figures(),
            **machine_load(),
        }
        app.quit()
        return result
    finally:
        end_helper(child, xvfb)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024, help="size of the file sent each way")
    parser.add_argument("--seconds", type=float, default=120.0, help="give up after this long")
    parser.add_argument("--display", default=None, help="use this X display instead of a private Xvfb")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.mib)
    print(json.dumps(measure(args.mib, args.seconds, args.display), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
