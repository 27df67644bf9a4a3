"""Listing keys on the S3 backend: in key order, one level at a time, or flat.

Listings come from a store other people write to: a key ending in ``/`` is a folder
marker, not a key, and a listing holds one level in memory at most.
"""

from __future__ import annotations

from collections.abc import Iterator

from bwc_dock.storage.s3.connection import S3Connection


class S3Listing(S3Connection):
    """Key listings (mixed into the S3 backend)."""

    def list_keys(self, prefix: str) -> Iterator[str]:
        """Keys listed one ``/`` level at a time, each level sorted here.

        Not every store lists in key order (SeaweedFS lists folder by folder, so
        ``a/b/c`` before ``a/b-c``). Sorting a level's keys together with its common
        prefixes (which end in ``/``) and descending into each prefix in its place gives
        key order while holding only one level in memory. Unfinished multipart uploads
        are not objects, so they are not listed.
        """
        yield from self._list_level(self._settings.prefix + prefix, len(self._settings.prefix))

    def _list_level(self, full_prefix: str, strip: int) -> Iterator[str]:
        # (key or common prefix, whether it is a prefix to descend into)
        level: list[tuple[str, bool]] = []
        with self._translated("LIST", full_prefix or None):
            paginator = self._s3().get_paginator("list_objects_v2")
            pages = paginator.paginate(Bucket=self._settings.bucket, Prefix=full_prefix,
                                       Delimiter="/")
            for page in pages:
                # an object whose key ends in "/" is a folder marker, not a key
                level.extend((str(listed["Key"]), False) for listed in page.get("Contents", [])
                             if not str(listed["Key"]).endswith("/"))
                level.extend((str(common["Prefix"]), True)
                             for common in page.get("CommonPrefixes", [])
                             if str(common["Prefix"]) != full_prefix)
        for full_key, is_prefix in sorted(level):
            if is_prefix:
                yield from self._list_level(full_key, strip)
            else:
                yield full_key[strip:]

    def list_keys_unordered(self, prefix: str) -> Iterator[str]:
        """One flat listing (a thousand keys a request), in the store's own order."""
        full_prefix = self._settings.prefix + prefix
        strip = len(self._settings.prefix)
        with self._translated("LIST", full_prefix or None):
            paginator = self._s3().get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self._settings.bucket, Prefix=full_prefix):
                for listed in page.get("Contents", []):
                    key = str(listed["Key"])
                    if not key.endswith("/"):  # a folder marker, not a key
                        yield key[strip:]
