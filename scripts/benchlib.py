"""What the benchmark scripts share: percentiles and users created straight in the database."""
from __future__ import annotations

from server.passwords import ScryptParams, hash_password
from server.storage import open_storage

PASSWORD = "benchmark password"


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of ``values``; NaN when there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def prepare_users(db_url: str, count: int, params: ScryptParams, prefix: str) -> list[str]:
    """Create ``count`` users directly in the database (schema created if missing), all with one
    hash of PASSWORD at the given scrypt cost; returns their phone numbers."""
    storage = open_storage(db_url)
    storage.init_schema()
    password_hash = hash_password(PASSWORD, params)
    phones = [f"{prefix}{i:07d}" for i in range(count)]
    with storage.db.tx() as cur:
        for phone in phones:
            cur.execute("INSERT INTO users (phone, password_hash, nickname, signature, created_at) "
                        "VALUES (?, ?, ?, '', 0)", (phone, password_hash, f"bench{phone[-4:]}"))
    storage.close()
    return phones
