"""Record ids: 24 lowercase hex characters, ObjectId-compatible, unguessable."""

import os
import re
import struct
import time

_ID = re.compile(r"[0-9a-f]{24}")


def new_id() -> str:
    # 4 bytes of big-endian Unix seconds (ObjectId's layout, so ids sort by creation time),
    # then 8 random bytes instead of ObjectId's machine id and counter, so ids cannot be guessed.
    return (struct.pack(">I", int(time.time())) + os.urandom(8)).hex()


def is_id(value: object) -> bool:
    return isinstance(value, str) and _ID.fullmatch(value) is not None
