"""Reason codes stored in `rejected_input.reason`: stable, short, documented in docs/ingest.md.

Codecs raise `PayloadError(reason, detail)` with one of these; the writer adds the
registry reasons. Operators filter on them, so a code never changes meaning.
"""

from __future__ import annotations

# payload and topic: decided by the codec alone
PAYLOAD_TOO_LARGE = "payload_too_large"
MALFORMED_JSON = "malformed_json"
BAD_TOPIC = "bad_topic"
MISSING_FIELD = "missing_field"
BAD_VALUE = "bad_value"
BAD_TIMESTAMP = "bad_timestamp"
FUTURE_TIMESTAMP = "future_timestamp"
TOO_OLD = "too_old"
DEVICE_MISMATCH = "device_mismatch"
UNKNOWN_EVENT = "unknown_event"
BAD_STATUS = "bad_status"
EMPTY_BATCH = "empty_batch"
# frames of the wired meters' protocols (CJ/T 188): decided by the source's decoder alone
BAD_FRAME = "bad_frame"
BAD_CHECKSUM = "bad_checksum"

# registry: decided by the writer against its cache of the registry
UNKNOWN_DEVICE = "unknown_device"
UNKNOWN_GATEWAY = "unknown_gateway"
WRONG_GATEWAY = "wrong_gateway"
WRONG_KIND = "wrong_kind"
# plausibility: decided against the meter's previous reading the ingester knows
IMPLAUSIBLE_JUMP = "implausible_jump"

# HTTP platform pushes (lovekey receive): decided by the platform readers
BAD_SIGNATURE = "bad_signature"
CANNOT_DECRYPT = "cannot_decrypt"
UNSUPPORTED_FORMAT = "unsupported_format"
UNMAPPED = "unmapped"

# storage: the database refused a row the checks above let through
STORAGE_REFUSED = "storage_refused"

REASONS: dict[str, str] = {
    PAYLOAD_TOO_LARGE: "payload larger than ingest.max_payload_bytes",
    MALFORMED_JSON: "not UTF-8 JSON, or not a JSON object where one is required",
    BAD_TOPIC: "topic outside the contract: wrong levels, empty or over-long ids",
    MISSING_FIELD: "a required field is absent (ts, total_l/total_m3, type, active, status)",
    BAD_VALUE: "a value of the wrong type, negative, non-finite or out of range",
    BAD_TIMESTAMP: "ts is neither RFC 3339 with an offset nor epoch seconds",
    FUTURE_TIMESTAMP: "ts later than now + ingest.future_tolerance_s",
    TOO_OLD: "ts older than the retention window (storage.retention_days)",
    DEVICE_MISMATCH: "device_id inside the payload differs from the topic",
    UNKNOWN_EVENT: "event type not one of smoke, gas, sos, away, home, tamper, battery_low",
    BAD_STATUS: "gateway status is neither online nor offline",
    EMPTY_BATCH: "a batch with no readings",
    BAD_FRAME: "a meter frame that is cut short, mis-delimited, or not a reading (CJ/T 188)",
    BAD_CHECKSUM: "a meter frame whose checksum does not match its bytes (CJ/T 188)",
    UNKNOWN_DEVICE: "device id not in the registry",
    UNKNOWN_GATEWAY: "gateway id not in the registry",
    WRONG_GATEWAY: "device registered to another gateway than the one publishing",
    WRONG_KIND: "reading fields or an event type that do not fit the registered device kind",
    IMPLAUSIBLE_JUMP: "total rose faster than ingest.max_flow_lpm since the meter's previous reading",
    BAD_SIGNATURE: "a platform push whose signature or URL token does not match the source's token",
    CANNOT_DECRYPT: "an encrypted platform push that cannot be decrypted (no aes_key, or the wrong one)",
    UNSUPPORTED_FORMAT: "a platform push in a format the source does not read (e.g. OneNET Studio)",
    UNMAPPED: "a platform report holding neither the source's total field nor an alarm field",
    STORAGE_REFUSED: "the database refused the row (kept so the stream goes on)",
}
