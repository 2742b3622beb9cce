"""Protocol limits shared by both ends. Servers may configure lower values, never higher."""

PROTOCOL_VERSION = 1
HEADER_SIZE = 12
MAX_CONTROL_BODY = 64 * 1024          # any JSON frame
MAX_AVATAR_FRAME = 4 * 1024 * 1024    # AVATAR_UPLOAD frame; the picture itself is capped below
MAX_AVATAR_BYTES = 2 * 1024 * 1024
MAX_FILE_CHUNK = 256 * 1024           # payload of one FILE_CHUNK
MAX_MEDIA_PAYLOAD = 1024 * 1024       # one encoded video or audio frame
MAX_CHAT_BYTES = 8 * 1024             # UTF-8 bytes of one chat message
PHONE_MIN_DIGITS = 5
PHONE_MAX_DIGITS = 20
PASSWORD_MIN = 8
PASSWORD_MAX = 128
NICKNAME_MAX = 32
SIGNATURE_MAX = 100
BUILTIN_AVATARS = 12                  # client/assets/avatars/01.png .. 12.png
