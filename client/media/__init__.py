"""The client media pipeline: sources, codecs, audio I/O, jitter buffer, mixing, sync.

Usable without Tk: the bots, the tests and the load test drive it headless; the meeting
window only renders what a ``MeetingReceiver`` hands out. Every device has a synthetic twin
(test pattern, tone, null sink) so nothing here needs a camera, screen or sound card.
"""
