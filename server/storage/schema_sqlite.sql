-- SQLite twin of schema.sql (same tables and columns; tests compare them).
CREATE TABLE IF NOT EXISTS meta (
    name TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    phone TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    nickname TEXT NOT NULL,
    signature TEXT NOT NULL DEFAULT '',
    avatar_builtin INTEGER NOT NULL DEFAULT 0,
    avatar_version INTEGER NOT NULL DEFAULT 0,
    avatar_png BLOB NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT NOT NULL PRIMARY KEY,
    user_id INTEGER NOT NULL,
    address TEXT NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions (user_id);

CREATE TABLE IF NOT EXISTS friends (
    user_id INTEGER NOT NULL,
    friend_id INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, friend_id)
);

CREATE TABLE IF NOT EXISTS friend_requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    from_id INTEGER NOT NULL,
    to_id INTEGER NOT NULL,
    greeting TEXT NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL,
    UNIQUE (from_id, to_id)
);
CREATE INDEX IF NOT EXISTS friend_requests_to ON friend_requests (to_id);

CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sender_id INTEGER NOT NULL,
    recipient_id INTEGER NOT NULL,
    client_msg_id TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    delivered_at INTEGER NULL,
    read_at INTEGER NULL,
    file_id TEXT NULL,
    UNIQUE (sender_id, client_msg_id)
);
CREATE INDEX IF NOT EXISTS messages_unread ON messages (recipient_id, read_at, id);
CREATE INDEX IF NOT EXISTS messages_pair ON messages (sender_id, recipient_id, id);

CREATE TABLE IF NOT EXISTS files (
    id TEXT NOT NULL PRIMARY KEY,
    sender_id INTEGER NOT NULL,
    recipient_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    state TEXT NOT NULL,
    spooled_bytes INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS files_recipient ON files (recipient_id, state);

-- Meetings kept across a restart (server/storage/rooms.py); added in schema version 3.
CREATE TABLE IF NOT EXISTS rooms (
    number TEXT NOT NULL PRIMARY KEY,
    title TEXT NOT NULL,
    password_hash TEXT NOT NULL DEFAULT '',
    host_id INTEGER NOT NULL,
    locked INTEGER NOT NULL DEFAULT 0,
    members TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    seen_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS rooms_seen ON rooms (seen_at);

INSERT OR IGNORE INTO meta (name, value) VALUES ('schema_version', '3');
