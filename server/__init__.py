"""Real-Time Meeting server: a selectors reactor, a worker pool, handlers per domain, storage."""
