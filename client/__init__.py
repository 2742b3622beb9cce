"""Real-Time Meeting client: a core usable without a window, media, and a Tk UI on top."""
