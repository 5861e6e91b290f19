"""File names in drop folders: which names in an inbox are taken, and the names we write.

A name comes from whoever can write to the inbox (a distributor's SFTP account), so every name we
write (the processed or rejected copy, its reason or note file, the results in the outbox) is
built by ``safe_name``: one path component, no separators, controls or other unprintable characters, no leading dot, at most
``MAX_NAME_BYTES`` of UTF-8, so no name can leave its folder or fail on a file system's length
limit (255 bytes on ext4 and OpenSSH servers) once a suffix is added.
"""

from __future__ import annotations

import re

__all__ = [
    "IN_PROGRESS_SUFFIXES",
    "MAX_NAME_BYTES",
    "is_in_progress",
    "is_plain_name",
    "numbered_name",
    "safe_name",
    "split_suffix",
]

MAX_NAME_BYTES = 180  # leaves room for "~<12 hex>", ".reason.txt", ".results.json", ".part"
# Names uploaders give a file while it is written (WinSCP, FileZilla, curl, browsers, rsync's
# dot-names): never taken, whatever their size says.
IN_PROGRESS_SUFFIXES = (".part", ".partial", ".filepart", ".tmp", ".temp", ".crdownload", ".upload")
# Separators, controls, lone surrogates (a non-UTF-8 name as Python reads it) and what Windows or
# an SFTP server on Windows refuses in a name.
_UNSAFE = re.compile('[\x00-\x1f\x7f-\x9f/\\\\:*?"<>|\ud800-\udfff]')


def is_plain_name(name: str) -> bool:
    """A listing entry that is one name inside the folder (never ``.``/``..`` or a path)."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\x00" not in name


def is_in_progress(name: str) -> bool:
    """A dotfile or a temporary upload name: still being written by convention, left alone."""
    lowered = name.lower()
    return name.startswith((".", "~")) or lowered.endswith(IN_PROGRESS_SUFFIXES)


def split_suffix(name: str) -> tuple[str, str]:
    """``("report", ".csv")`` for ``report.csv``; a suffix is at most 10 characters after one dot."""
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or len(ext) > 10 or not ext.isalnum():
        return name, ""
    return stem, "." + ext


def _clip(text: str, limit: int) -> str:
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", errors="ignore")


def safe_name(name: str) -> str:
    """``name`` as a name we may write: unsafe characters as ``_``, no leading dots or spaces, at
    most ``MAX_NAME_BYTES`` bytes (the stem is shortened, the suffix kept), never empty."""
    # Not printable (line breaks, format characters such as U+202E, which shows "gpj.exe" as
    # "exe.jpg", unassigned code points): a person reading the folder must see the real name.
    printable = "".join(c if c.isprintable() else "_" for c in _UNSAFE.sub("_", name))
    text = printable.strip().lstrip(".").strip() or "file"
    stem, suffix = split_suffix(text)
    clipped = _clip(stem, MAX_NAME_BYTES - len(suffix.encode("utf-8"))).rstrip() or "file"
    return clipped + suffix


def numbered_name(name: str, tag: str) -> str:
    """Another name for ``name`` when that one is taken in the folder: ``<stem>~<tag><suffix>``."""
    stem, suffix = split_suffix(name)
    return f"{_clip(stem, MAX_NAME_BYTES - len(tag) - 1 - len(suffix.encode('utf-8')))}~{tag}{suffix}"
