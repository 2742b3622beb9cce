"""The end of a run: a table for people, JSON for machines, a latency-over-time plot."""
from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

from client.servers import format_address

from .metrics import Metrics, summarize
from .runner import RunResult

SERVER_FIGURES = [
    ("connections", "connections"), ("users_online", "users online"), ("rooms", "rooms"),
    ("room_members", "room members"), ("pool_queue", "pool queue depth"), ("bytes_in", "bytes in"),
    ("bytes_out", "bytes out"), ("frames_in", "frames in"), ("frames_out", "frames out"),
    ("media_frames_in", "media frames in"), ("media_frames_out", "media frames out"),
    ("media_frames_dropped", "media frames dropped"), ("refused", "connections refused"),
]


# Counters worth a per-second figure over the steady phase, with their unit.
STEADY_RATES = {"chat_delivered": "messages/s delivered", "chat_sent": "messages/s sent",
                "files_done": "files/s", "file_bytes": "MB/s of files",
                "video_frames_received": "video frames/s received", "audio_frames_received": "audio frames/s received",
                "video_frames_sent": "video frames/s sent"}


def steady_rates(result: RunResult) -> dict[str, float]:
    if not result.steady:
        return {}
    seconds = result.steady[1] - result.steady[0]
    rates = {}
    for key, unit in STEADY_RATES.items():
        if key in result.metrics.counters:
            value = result.metrics.counters[key] / seconds
            rates[unit] = value / 1e6 if key.endswith("_bytes") else value
    return rates


def metric_rows(metrics: Metrics) -> dict[str, dict[str, float]]:
    """Per metric: count, rate (over the time its samples span), percentiles."""
    rows = {}
    for name, values in metrics.ms.items():
        when = metrics.when[name]
        span = (max(when) - min(when)) if len(when) > 1 else 0.0
        rows[name] = summarize(values, span)
    return rows


def to_json(result: RunResult) -> dict[str, Any]:
    def clean(value: Any) -> Any:
        if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        return value
    return clean({
        "scenario": result.settings.scenario,
        "settings": {k: v for k, v in asdict(result.settings).items() if k != "clip"},
        "clip": _clip_summary(result),
        "elapsed_s": round(result.elapsed, 3),
        "steady_window_s": list(result.steady) if result.steady else None,
        "metrics": metric_rows(result.metrics),
        "servers": per_server(result),
        "counters": dict(result.metrics.counters),
        "steady_rates": steady_rates(result),
        "errors": dict(result.metrics.errors),
        "failures": result.failures,
        "server": {"before": result.server_before, "during": result.server_peak, "after": result.server_after},
    })


def per_server(result: RunResult) -> dict[str, dict[str, Any]]:
    """With several servers: what the clients of each one measured (clients, latencies, errors)."""
    if len(result.settings.servers) < 2:
        return {}
    figures = {}
    for server in map(format_address, result.settings.servers):
        metrics = result.metrics.servers.get(server) or Metrics(result.metrics.t0)
        figures[server] = {"metrics": metric_rows(metrics), "counters": dict(metrics.counters),
                           "errors": dict(metrics.errors)}
    return figures


def _clip_summary(result: RunResult) -> dict[str, Any] | None:
    clip = result.settings.clip
    if clip is None:
        return None
    return {"video_frames": len(clip.video), "keyframes": sum(1 for _, k in clip.video if k),
            "video_bits_per_second": round(clip.video_bytes_per_second * 8), "audio_packets": len(clip.audio),
            "size": clip.size, "fps": clip.fps}


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else (f"{value:,.1f}" if value < 100 else f"{value:,.0f}")


def format_table(result: RunResult) -> str:
    s = result.settings
    lines = [f"scenario {s.scenario}: {s.clients:,} clients in {s.processes} process(es) against "
             f"{', '.join(map(format_address, s.servers))}, run {result.elapsed:.1f} s"
             + (f", steady {result.steady[1] - result.steady[0]:.1f} s" if result.steady else "")]
    clip = _clip_summary(result)
    if clip:
        lines.append(f"media: pre-encoded H.264 {clip['size']} at {clip['fps']} fps, "
                     f"{clip['video_bits_per_second'] / 1000:,.0f} kbit/s, {clip['keyframes']} keyframes in "
                     f"{clip['video_frames']} frames; {clip['audio_packets']} Opus packets of 20 ms")
    lines.append("")
    lines.append(f"{'metric':<22}{'count':>10}{'rate/s':>10}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for name, row in sorted(metric_rows(result.metrics).items()):
        lines.append(_metric_line(name, row))
    for server, figures in per_server(result).items():
        lines.append("")
        errors = sum(figures["errors"].values())
        lines.append(f"server {server}: {figures['counters'].get('logged_in', 0):,} clients logged in, "
                     f"{errors:,} errors")
        for name, row in sorted(figures["metrics"].items()):
            lines.append(_metric_line("  " + name, row))
    rates = steady_rates(result)
    if rates:
        lines.append("")
        lines.append("throughput over the steady phase: " + ", ".join(f"{v:,.1f} {k}" for k, v in rates.items()))
    if result.metrics.counters:
        lines.append("")
        lines.append("counters: " + ", ".join(f"{k} {v:,}" for k, v in sorted(result.metrics.counters.items())))
    lines.append("")
    if result.metrics.errors:
        lines.append(f"{'errors by kind':<50}{'count':>10}")
        for kind, count in result.metrics.errors.most_common():
            lines.append(f"{kind[:50]:<50}{count:>10,}")
    else:
        lines.append("errors: none")
    for failure in result.failures:
        lines.append(f"FAILED {failure.strip().splitlines()[-1] if failure.strip() else failure}")
    server = result.server_peak or result.server_after
    if server:
        lines.append("")
        label = "server (admin status, during the steady phase)" if result.server_peak else \
            "server (admin status, after the run)"
        lines.append(label + ":")
        before = result.server_before or {}
        for key, name in SERVER_FIGURES:
            if key in server:
                value = server[key]
                if not isinstance(value, (int, float)):
                    value = len(value)
                delta = ""
                if key.startswith(("bytes_", "frames_", "media_")) and isinstance(before.get(key), (int, float)):
                    delta = f"  (+{value - before[key]:,} during the run)"
                lines.append(f"  {name + ':':<24}{value:>14,}{delta}")
        known = {key for key, _ in SERVER_FIGURES}
        others = [(k, v) for k, v in server.items() if k not in known and isinstance(v, (int, float))
                  and not isinstance(v, bool) and v and k != "uptime_s"]
        if others:
            lines.append("  " + ", ".join(f"{k} {v:,}" for k, v in others))
    return "\n".join(lines)


def _metric_line(name: str, row: dict[str, float]) -> str:
    return (f"{name:<22}{row['count']:>10,}{row['rate_per_s']:>10,.1f}{_ms(row['p50_ms']):>9}"
            f"{_ms(row['p95_ms']):>9}{_ms(row['p99_ms']):>9}{_ms(row['max_ms']):>9}")


def plot(result: RunResult, path: str) -> None:
    """Latency over time: every sample as a faint dot, the per-second p50 and p99 as lines."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .metrics import percentile

    names = sorted(result.metrics.ms)
    fig, axes = plt.subplots(len(names) or 1, 1, figsize=(10, 2.8 * max(1, len(names))), squeeze=False,
                             sharex=True)
    for ax, name in zip(axes[:, 0], names):
        when = list(result.metrics.when[name])
        ms = list(result.metrics.ms[name])
        step = max(1, len(when) // 20000)
        ax.scatter(when[::step], ms[::step], s=2, alpha=0.25, label="samples")
        buckets: dict[int, list[float]] = {}
        for t, v in zip(when, ms):
            buckets.setdefault(int(t), []).append(v)
        seconds = sorted(buckets)
        for q, style in ((50, "-"), (99, "--")):
            ax.plot([t + 0.5 for t in seconds], [percentile(sorted(buckets[s]), q) for s in seconds], style, label=f"p{q} per second")
        if result.steady:
            ax.axvspan(result.steady[0], result.steady[1], color="green", alpha=0.06, label="steady phase")
        ax.set_title(name)
        ax.set_ylabel("ms")
        ax.set_yscale("log")
        ax.legend(loc="upper right", fontsize="small")
    axes[-1, 0].set_xlabel("seconds since start")
    fig.suptitle(f"meeting-loadtest {result.settings.scenario}: {result.settings.clients:,} clients")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
