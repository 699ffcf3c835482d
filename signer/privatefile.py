"""Files that hold secrets: read only when 0600, written atomically as 0600.

No key material and no crypto here; the callers (:mod:`signer.keystore`,
:mod:`signer.passphrase`) decide what the bytes mean.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from shared.errors import KeystoreError

__all__ = ["read_private_file", "write_private_file"]


def read_private_file(path: Path, what: str, limit: int) -> bytes | None:
    """Return the file's bytes, or None if it does not exist.

    Raises:
        KeystoreError: not a regular file, readable by group/others, too big, or unreadable.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise KeystoreError(f"{path}: cannot open {what}: {e.strerror}") from e
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())  # SECURITY: the mode of the file we read, not of a path
        if not stat.S_ISREG(st.st_mode):
            raise KeystoreError(f"{path}: {what} is not a regular file")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise KeystoreError(
                f"{path}: {what} has mode {mode:04o}, accessible by group or others; "
                f"refusing to use it. Fix with: chmod 600 {path}"
            )
        data = f.read(limit + 1)
    if len(data) > limit:
        raise KeystoreError(f"{path}: {what} is larger than {limit} bytes")
    return data


def write_private_file(path: Path, data: bytes, what: str) -> None:
    """Replace ``path`` with ``data`` atomically and durably, mode 0600 from the start.

    Raises:
        KeystoreError: the file cannot be written (a temporary file is cleaned up).
    """
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise KeystoreError(f"{path}: cannot write {what}: {e.strerror}") from e
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise KeystoreError(f"{path}: cannot write {what}: {e.strerror}") from e
