"""AWS event-stream frames (application/vnd.amazon.eventstream) encoded for test peers.

botocore only decodes this format, so the Bedrock tests encode it here; botocore's own
EventStreamBuffer/EventStream parse it back, the way they parse what Bedrock sends.
"""

import binascii
import json
import struct


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    return struct.pack("!B", len(raw_name)) + raw_name + struct.pack("!BH", 7, len(raw_value)) + raw_value


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One message: prelude (lengths + CRC), headers, payload, message CRC."""
    raw_headers = b"".join(_header(k, v) for k, v in headers.items())
    total = 12 + len(raw_headers) + len(payload) + 4
    prelude = struct.pack("!II", total, len(raw_headers))
    prelude += struct.pack("!I", binascii.crc32(prelude) & 0xFFFFFFFF)
    body = prelude + raw_headers + payload
    return body + struct.pack("!I", binascii.crc32(body) & 0xFFFFFFFF)


def event(event_type: str, payload: dict) -> bytes:
    """An event frame, e.g. event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "hi"}})."""
    return frame(
        {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"},
        json.dumps(payload).encode(),
    )


def exception(exception_type: str, message: str) -> bytes:
    """A modelled exception frame sent mid-stream, e.g. exception("throttlingException", "slow down")."""
    return frame(
        {":exception-type": exception_type, ":content-type": "application/json", ":message-type": "exception"},
        json.dumps({"message": message}).encode(),
    )


def converse_stream(words: list[str], stop_reason: str = "end_turn", input_tokens: int = 7) -> list[bytes]:
    """The frames of a complete ConverseStream answer, in Bedrock's order."""
    frames = [event("messageStart", {"role": "assistant"})]
    frames += [event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": w}}) for w in words]
    frames += [
        event("contentBlockStop", {"contentBlockIndex": 0}),
        event("messageStop", {"stopReason": stop_reason}),
        event(
            "metadata",
            {
                "usage": {
                    "inputTokens": input_tokens,
                    "outputTokens": len(words),
                    "totalTokens": input_tokens + len(words),
                },
                "metrics": {"latencyMs": 12},
            },
        ),
    ]
    return frames
