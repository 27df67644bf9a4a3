"""Central storage on any S3-compatible object store (AWS S3, MinIO, Ceph, SeaweedFS).

How a clip gets there, and why it is proven equal to the evidence hash:

- Below the multipart threshold: one PUT. The file is read once into memory, hashed,
  and refused with IntegrityError if it is not the ledger's SHA-256; the same buffer is
  sent with ``x-amz-checksum-sha256``, which the store verifies against the bytes it got.
- Above it: a multipart upload. One thread reads the file in order, feeds every byte
  into the running SHA-256 of the whole file, and hands each part to a pool that sends
  it with its own ``x-amz-checksum-sha256``. The upload is completed only if the whole
  file hashed to the ledger's SHA-256; the store's composite checksum (SHA-256 of the
  part digests) is checked against ours. The upload id and finished parts go to the
  caller's MultipartJournal, so a restart resumes the same upload: finished parts are
  re-read and re-hashed locally (their SHA-256 must equal what the store verified)
  but not sent again.
- SHA-256 rather than a CRC for the per-request checksum: a CRC only catches accidents,
  while the part checksums are what proves, without downloading, that the store holds
  the parts of the evidence. It costs one extra SHA-256 pass over multipart uploads
  (about 0.8 CPU s/GiB with SHA-NI), done in the upload threads. Payload signing is
  turned off because the signed checksum header already binds the body; that saves
  botocore's own SHA-256 pass on plain-http endpoints.
- Writes are create-only: ``If-None-Match: *`` on the PUT and on the completion, and a
  HEAD before, the only guard on stores that ignore conditional writes. A single PUT
  goes without that HEAD once the store proved it honours the condition: at the first
  write, a canary under the dock's ``_probe/<dock>/`` written twice, the second refused
  (412) and the first bytes kept (connection.py). An object already there with the same
  SHA-256 is success (a retry after a lost response); a different one is
  StorageConflict, never an overwrite.
- The evidence SHA-256 is stored as metadata ``x-amz-meta-sha256`` (lowercase hex), for
  people and other tools; it is never read back as proof, since anyone who can write to
  the bucket can set it; ``head`` reports only the store's own full-object hash.
- Proof that the store holds the clip, before it counts as uploaded (and a camera may be
  cleared): the store's own full-object SHA-256 reported by a HEAD, else (a multipart
  upload, whose checksum is composite, or a store that keeps none) the SHA-256 of the
  object read back. A HEAD with the right size is never proof. What still rests on the
  store's honesty: that a full-object SHA-256 it reports was computed over bytes it
  keeps, and that it keeps them after answering.
- ``http://`` endpoints are refused unless ``[storage] allow_plaintext = true``: without
  TLS anyone on the path can read the evidence and forge the store's answers.

Retries: botocore runs in "standard" mode with 3 attempts for what it knows to be
transient (connection errors, timeouts, 5xx, throttling). Inside one put_file call we
retry only what botocore does not: a request the store rejected because its checksum
did not match (bytes damaged in flight). Everything else surfaces as
TransientStorageError or PermanentStorageError for the uploader's own backoff, so the
layers do not multiply.

Credentials: the standard AWS chain (environment, shared credentials file, instance
roles). Under systemd, ``LoadCredential=aws-credentials:...`` puts an AWS
shared-credentials file in ``$CREDENTIALS_DIRECTORY``, which then serves as the
shared credentials file. Never the configuration file.

The package: ``settings`` (S3Settings and fixed numbers), ``translate`` (S3 errors to
ours, with their RefusalKind), ``connection`` (client, retries, the HEAD before a write),
``multipart`` (resumable multipart uploads) and ``backend`` (S3Backend, the port).
Importing it imports boto3; ``bwc_dock.storage`` therefore imports it only when the
s3 backend is chosen.
"""

from __future__ import annotations

from bwc_dock.storage.s3.backend import S3Backend
from bwc_dock.storage.s3.connection import composite_checksum, sha256_base64
from bwc_dock.storage.s3.multipart import MemoryJournal
from bwc_dock.storage.s3.settings import (
    CREDENTIAL_FILE_NAME,
    MIB,
    S3Settings,
    systemd_credential_file,
)

__all__ = [
    "CREDENTIAL_FILE_NAME",
    "MIB",
    "MemoryJournal",
    "S3Backend",
    "S3Settings",
    "composite_checksum",
    "sha256_base64",
    "systemd_credential_file",
]
