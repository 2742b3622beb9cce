-- Real-Time Meeting: MySQL / MariaDB schema (utf8mb4).
-- The SQLite twin is server/storage/schema_sqlite.sql; tests check that both define the same
-- tables and columns. Bump SCHEMA_VERSION in server/storage/sql.py and the row below together, and add the
-- upgrade from the previous version to MIGRATIONS there.

CREATE TABLE IF NOT EXISTS meta (
    name VARCHAR(64) NOT NULL PRIMARY KEY,
    value VARCHAR(255) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS users (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    phone VARCHAR(20) NOT NULL,
    password_hash VARCHAR(255) NOT NULL,
    nickname VARCHAR(64) NOT NULL,
    signature VARCHAR(255) NOT NULL DEFAULT '',
    avatar_builtin INT NOT NULL DEFAULT 0,
    avatar_version INT NOT NULL DEFAULT 0,
    avatar_png MEDIUMBLOB NULL,
    created_at BIGINT NOT NULL,
    UNIQUE KEY users_phone (phone)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS sessions (
    token_hash CHAR(64) NOT NULL PRIMARY KEY,
    user_id BIGINT NOT NULL,
    address VARCHAR(64) NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    KEY sessions_user (user_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS friends (
    user_id BIGINT NOT NULL,
    friend_id BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, friend_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS friend_requests (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    from_id BIGINT NOT NULL,
    to_id BIGINT NOT NULL,
    greeting VARCHAR(255) NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    UNIQUE KEY friend_requests_pair (from_id, to_id),
    KEY friend_requests_to (to_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS messages (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    sender_id BIGINT NOT NULL,
    recipient_id BIGINT NOT NULL,
    client_msg_id VARCHAR(64) NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    delivered_at BIGINT NULL,
    read_at BIGINT NULL,
    file_id CHAR(32) NULL,
    UNIQUE KEY messages_client_id (sender_id, client_msg_id),
    KEY messages_unread (recipient_id, read_at, id),
    KEY messages_pair (sender_id, recipient_id, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS files (
    id CHAR(32) NOT NULL PRIMARY KEY,
    sender_id BIGINT NOT NULL,
    recipient_id BIGINT NOT NULL,
    name VARCHAR(255) NOT NULL,
    size BIGINT NOT NULL,
    sha256 CHAR(64) NOT NULL,
    state VARCHAR(16) NOT NULL,
    spooled_bytes BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    KEY files_recipient (recipient_id, state)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Meetings kept across a restart (server/storage/rooms.py); added in schema version 3.
CREATE TABLE IF NOT EXISTS rooms (
    number CHAR(9) NOT NULL PRIMARY KEY,
    title VARCHAR(255) NOT NULL,
    password_hash VARCHAR(128) NOT NULL DEFAULT '',
    host_id BIGINT NOT NULL,
    locked TINYINT NOT NULL DEFAULT 0,
    members TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    seen_at BIGINT NOT NULL,
    KEY rooms_seen (seen_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

INSERT IGNORE INTO meta (name, value) VALUES ('schema_version', '3');
