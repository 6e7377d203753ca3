"""Standard Webhooks signatures (https://www.standardwebhooks.com/, spec 1.0).

Headers: `webhook-id` (stable across retries), `webhook-timestamp` (integer Unix seconds of
this attempt: receivers refuse one more than 5 minutes off, so each attempt is signed anew) and
`webhook-signature` = `v1,` + base64(HMAC-SHA256(key, f"{id}.{timestamp}.{body}")), where key is
the bytes of the rule's `whsec_<base64>` secret.

The secret is never stored. A signer needs it in the clear (HMAC, not a signature scheme), so
instead of keeping it encrypted we derive it: key = HMAC-SHA256(OPSMANTIK_ALERTS_SIGNING_SECRET,
"opsmantik-webhook-v1" || rule_id || salt), the 16-byte salt random per rule and kept in
alert_rules. `alerts create` shows it once; the dispatcher recomputes it for each attempt. A dump
of the database alone cannot sign; rotating the master secret changes every rule's secret
(docs/alerts.md "Secrets").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid

PREFIX = "whsec_"
_CONTEXT = b"opsmantik-webhook-v1"


def rule_key(master: str, rule_id: uuid.UUID, salt: bytes) -> bytes:
    """The rule's 32-byte HMAC key."""
    return hmac.new(master.encode(), _CONTEXT + rule_id.bytes + salt, hashlib.sha256).digest()


def secret_text(key: bytes) -> str:
    """The key as the receiver configures it: whsec_ + base64."""
    return PREFIX + base64.b64encode(key).decode()


def signature(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header's value for these exact body bytes."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def headers(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(key, webhook_id, timestamp, body),
        "content-type": "application/json",
    }
