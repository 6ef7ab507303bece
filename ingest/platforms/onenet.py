"""China Mobile OneNET HTTP push: the URL handshake and signed (optionally AES) pushes.

The format is OneNET's "HTTP推送" for its multi-protocol and NB-IoT products
(https://open.iot.10086.cn/doc/nb-iot/book/manual/httppush/develop-manual.html) and its
official receiver samples (github.com/cm-heclouds/data-push: JAVA/.../Util.java,
PHP/util.php, NodeJS/data_push_demo.js):

- Handshake: when the push is configured, OneNET sends `GET url?msg=..&nonce=..&signature=..`
  with `signature = base64(md5(token + nonce + msg))`; the receiver answers the bare `msg`.
- Plain push: `POST {"msg": <object or list>, "msg_signature": .., "nonce": ..}`, signed
  the same way over the compact JSON text of `msg`. Each message: `type` 1 a data point
  (`dev_id`, `ds_id`, `at` epoch ms, `value`), 2 online/offline (`status` 1/0), 7 a
  command result (NB-IoT only; no reading).
- Encrypted push ("安全模式"): `{"enc_msg": base64, "msg_signature", "nonce"}`, signed over
  `enc_msg`; AES-256-CBC with key `base64(EncodingAESKey + "=")` and its first 16 bytes as
  IV; the plaintext is 16 random bytes, the message length (4 bytes, big-endian), the
  message, and whatever the platform appends.

OneNET retries a push that is not answered 200 (the samples say "接收程序接收到数据时，尽量
先缓存起来，再做业务逻辑处理"): the receiver is idempotent, so a retry is stored once.
OneNET Studio's newer push (`{"msg": "<JSON text>", "signature", "nonce", "time", "id"}`)
is a different format and is refused with `unsupported_format`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson

from lovekey.errors import PayloadError
from lovekey.ingest import reasons
from lovekey.ingest.codecs import DecodeContext
from lovekey.ingest.platforms import Push, Report
from lovekey.ingest.platforms._common import epoch_ms, external_id, load_object

# A push may carry a list of messages; a body holding more than this is not a push.
MAX_MESSAGES = 10_000


def signature(token: str, nonce: str, msg: str) -> str:
    """base64(md5(token + nonce + msg)), as OneNET computes it."""
    digest = hashlib.md5((token + nonce + msg).encode(), usedforsecurity=False).digest()
    return base64.b64encode(digest).decode()


def _same(given: str, expected: str) -> bool:
    # a `+` that reached us unescaped in a query string arrives as a space; padding varies
    # between the samples (the PHP one strips it)
    return hmac.compare_digest(given.replace(" ", "+").rstrip("=").encode(), expected.rstrip("=").encode())


def handshake(query: Mapping[str, str], token: str) -> bytes:
    """The body that answers OneNET's URL check (the bare `msg`), or `bad_signature`."""
    msg, nonce, given = query.get("msg"), query.get("nonce"), query.get("signature")
    if msg is None or nonce is None or given is None:
        raise PayloadError(reasons.MISSING_FIELD, "the URL check needs msg, nonce and signature")
    if not _same(given, signature(token, nonce, msg)):
        raise PayloadError(reasons.BAD_SIGNATURE, "URL check signature does not match the token")
    return msg.encode()


def read_push(body: bytes, context: DecodeContext, *, token: str, aes_key: str | None = None) -> Push:
    envelope = load_object(body)
    nonce = envelope.get("nonce")
    if "enc_msg" in envelope:
        given = _signature_field(envelope, "msg_signature")
        enc_msg = envelope["enc_msg"]
        if type(enc_msg) is not str or type(nonce) is not str:
            raise PayloadError(reasons.BAD_VALUE, "enc_msg and nonce must be strings")
        if not _same(given, signature(token, nonce, enc_msg)):
            raise PayloadError(reasons.BAD_SIGNATURE, "msg_signature does not match the token")
        if aes_key is None:
            raise PayloadError(reasons.CANNOT_DECRYPT, "an encrypted push, and no aes_key is configured")
        msg = orjson_loads(decrypt(enc_msg, aes_key))
    elif "msg" in envelope:
        if "msg_signature" not in envelope and "signature" in envelope:
            raise PayloadError(
                reasons.UNSUPPORTED_FORMAT, "a OneNET Studio push; configure the multi-protocol HTTP push"
            )
        given = _signature_field(envelope, "msg_signature")
        msg = envelope["msg"]
        if type(nonce) is not str:
            raise PayloadError(reasons.BAD_VALUE, "nonce must be a string")
        if not isinstance(msg, dict | list):
            raise PayloadError(reasons.BAD_VALUE, "msg must be a JSON object or a list of them")
        if not any(_same(given, signature(token, nonce, text)) for text in _signed_texts(msg)):
            raise PayloadError(reasons.BAD_SIGNATURE, "msg_signature does not match the token")
    else:
        raise PayloadError(reasons.MISSING_FIELD, "msg or enc_msg")
    return _messages(msg, context)


def _signature_field(envelope: dict[str, Any], name: str) -> str:
    given = envelope.get(name)
    if given is None:
        raise PayloadError(reasons.BAD_SIGNATURE, f"{name} is missing")
    if type(given) is not str:
        raise PayloadError(reasons.BAD_SIGNATURE, f"{name} must be a string")
    return given


def _signed_texts(msg: Any) -> tuple[str, ...]:
    """The JSON texts of `msg` OneNET may have signed: compact, in the order sent, with
    non-ASCII as UTF-8 (as its C# sample re-serialises it) or as \\u escapes (PHP's)."""
    compact = orjson.dumps(msg).decode()
    escaped = json.dumps(msg, separators=(",", ":"), ensure_ascii=True)
    return (compact,) if compact == escaped else (compact, escaped)


def decrypt(enc_msg: str, aes_key: str) -> bytes:
    """The message inside an `enc_msg` (AES-256-CBC, PKCS#7; see the module docstring)."""
    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    try:
        key = base64.b64decode(aes_key + "=")
        sealed = base64.b64decode(enc_msg, validate=True)
        if len(key) != 32:
            raise ValueError(f"the EncodingAESKey decodes to {len(key)} bytes, not 32")
        decryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
        padded = decryptor.update(sealed) + decryptor.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        plain = unpadder.update(padded) + unpadder.finalize()
    except (binascii.Error, ValueError) as exc:
        raise PayloadError(reasons.CANNOT_DECRYPT, f"enc_msg: {exc}") from exc
    if len(plain) < 20:
        raise PayloadError(reasons.CANNOT_DECRYPT, "enc_msg is shorter than its header")
    length = int.from_bytes(plain[16:20], "big")
    if 20 + length > len(plain):
        raise PayloadError(reasons.CANNOT_DECRYPT, f"enc_msg says {length} bytes, holds {len(plain) - 20}")
    return plain[20 : 20 + length]


def orjson_loads(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(reasons.MALFORMED_JSON, f"decrypted msg: {exc}") from exc


def _messages(msg: Any, context: DecodeContext) -> Push:
    items = msg if isinstance(msg, list) else [msg]
    if not items:
        raise PayloadError(reasons.EMPTY_BATCH, "msg is an empty list")
    if len(items) > MAX_MESSAGES:
        raise PayloadError(reasons.BAD_VALUE, f"msg holds {len(items)} messages")
    # data points of one device at one time are one reading (a meter's total and battery
    # arrive as two data streams)
    points: dict[tuple[str, datetime], dict[str, Any]] = {}
    reports: list[Report] = []
    ignored = 0
    notes: list[str] = []
    for index, item in enumerate(items):
        where = f"msg[{index}]" if isinstance(msg, list) else "msg"
        if not isinstance(item, dict):
            raise PayloadError(reasons.MALFORMED_JSON, f"{where} must be a JSON object")
        kind = item.get("type")
        if kind is None:
            raise PayloadError(reasons.MISSING_FIELD, f"{where}.type")
        if kind == 1:
            device = _dev_id(item, where)
            ts = epoch_ms(item.get("at"), f"{where}.at", context)
            ds_id = item.get("ds_id")
            if type(ds_id) is not str or not ds_id:
                raise PayloadError(reasons.MISSING_FIELD, f"{where}.ds_id")
            if "value" not in item:
                raise PayloadError(reasons.MISSING_FIELD, f"{where}.value")
            points.setdefault((device, ts), {})[ds_id] = item["value"]
        elif kind == 2:
            device = _dev_id(item, where)
            ts = epoch_ms(item.get("at"), f"{where}.at", context)
            status = item.get("status")
            if type(status) is not int or status not in (0, 1):
                raise PayloadError(reasons.BAD_STATUS, f"{where}.status must be 1 (online) or 0 (offline)")
            reports.append(Report((device,), ts, online=status == 1))
        elif type(kind) is int:
            ignored += 1
            notes.append(f"{where}: type {kind} holds no reading")
        else:
            raise PayloadError(reasons.BAD_VALUE, f"{where}.type must be an integer")
    reports += [Report((device,), ts, values=values) for (device, ts), values in points.items()]
    return Push(reports=tuple(reports), ignored=ignored, notes=tuple(notes))


def _dev_id(item: dict[str, Any], where: str) -> str:
    device = external_id(item.get("dev_id"))
    if device is None:
        raise PayloadError(reasons.MISSING_FIELD, f"{where}.dev_id")
    return device
