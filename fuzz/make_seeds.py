#!/usr/bin/env python3
"""Writes the seed corpora in corpus/<target>/ (run from anywhere; stdlib only).

The seeds are real protocol material: client frames from the protocol reference's example
exchanges (both serializers, and the binary user broadcast), those frames wrapped in masked
WebSocket frames, join payloads as realtime-js sends them, and tokens signed with "secret".
Re-running it rewrites the same files.
"""

import base64
import hashlib
import hmac
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")

# Seed tokens expire long after the time the raw-token mode checks at (1_800_000_000).
EXP = 2_000_000_000
NOW = 1_800_000_000


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(claims, alg="HS256", secret=b"secret", header=None):
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
    header = header or {"alg": alg, "typ": "JWT"}
    signing_input = (
        b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + b64url(json.dumps(claims, separators=(",", ":")).encode())
    )
    mac = hmac.new(secret, signing_input.encode(), digest.get(alg, hashlib.sha256)).digest()
    return signing_input + "." + b64url(mac)


ANON = jwt({"iss": "headcount", "role": "anon", "iat": NOW - 10, "exp": EXP})

JOIN = {
    "config": {
        "broadcast": {"ack": False, "self": False},
        "presence": {"key": "", "enabled": True},
        "postgres_changes": [],
        "private": False,
    },
    "access_token": ANON,
    "version": "realtime-js/2.119.0",
}


def compact(v):
    return json.dumps(v, separators=(",", ":"))


# Client frames, serializer 2.0.0 (text arrays).
V2 = {
    "join": compact(["3", "3", "realtime:room1", "phx_join", JOIN]),
    "track": compact(["3", "4", "realtime:room1", "presence",
                      {"type": "presence", "event": "track",
                       "payload": {"user": "alice", "online_at": "2026-08-21T10:00:00Z"}}]),
    "heartbeat": '[null,"5","phoenix","heartbeat",{}]',
    "retrack": compact(["3", "6", "realtime:room1", "presence",
                        {"type": "presence", "event": "track",
                         "payload": {"user": "alice", "status": "away"}}]),
    "broadcast-ack": compact(["7", "9", "realtime:room1", "broadcast",
                              {"type": "broadcast", "event": "cursor", "payload": {"x": 1}}]),
    "untrack": compact(["3", "10", "realtime:room1", "presence",
                        {"type": "presence", "event": "untrack"}]),
    "leave": '["3","11","realtime:room1","phx_leave",{}]',
    "access-token": compact(["3", "12", "realtime:room1", "access_token",
                             {"access_token": ANON}]),
    "numeric-refs-extra": '[1,0,"realtime:r","broadcast",{"a":[1.5e3,-0,true,null]},"extra",6]',
    "escapes": r'[null,"a\"b","realtime:\u00e9\ud83d\ude00","ev\\t",{"k":"\u0000"}]',
}

# Client frames, serializer 1.0.0 (objects).
V1 = {
    "join": compact({"topic": "realtime:room1", "event": "phx_join", "payload": JOIN,
                     "ref": "3", "join_ref": "3"}),
    "track": compact({"topic": "realtime:room1", "event": "presence",
                      "payload": {"type": "presence", "event": "track",
                                  "payload": {"user": "alice"}},
                      "ref": "4", "join_ref": "3"}),
    "heartbeat": '{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"5"}',
    "broadcast": compact({"topic": "realtime:room1", "event": "broadcast",
                          "payload": {"type": "broadcast", "event": "cursor",
                                      "payload": {"x": 1, "y": 2}},
                          "ref": "6", "join_ref": "3"}),
    "leave": '{"topic":"realtime:room1","event":"phx_leave","payload":{},"ref":"7","join_ref":"3"}',
    "null-ref": '{"ref":null,"payload":[],"event":"e","topic":"t"}',
}

# Binary kind 3 from the reference: join_ref "3", ref "7", topic "realtime:room1", event
# "cursor", no metadata, JSON body {"x":1,"y":2}.
KIND3 = bytes.fromhex(
    "03 01 01 0E 06 00 01 33 37 72 65 61 6C 74 69 6D 65 3A 72 6F 6F 6D 31"
    " 63 75 72 73 6F 72 7B 22 78 22 3A 31 2C 22 79 22 3A 32 7D"
)


def kind3(join_ref, ref, topic, event, meta, enc, body):
    parts = [join_ref, ref, topic, event, meta]
    head = bytes([3] + [len(p) for p in parts] + [enc])
    return head + b"".join(parts) + body


KIND3_BINARY = kind3(b"", b"8", b"realtime:room1", b"bytes", b'{"k":1}', 0, bytes(range(8)))


def frame(opcode, payload, fin=True, mask=b"\x11\x22\x33\x44", long_len=False):
    """A masked client frame, with the shortest length encoding unless long_len asks for the
    8-byte one (which RFC 6455 senders must not use for short payloads, but readers accept)."""
    out = bytearray([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if long_len:
        out.append(0x80 | 127)
        out += struct.pack(">Q", n)
    elif n < 126:
        out.append(0x80 | n)
    elif n <= 0xFFFF:
        out.append(0x80 | 126)
        out += struct.pack(">H", n)
    else:
        out.append(0x80 | 127)
        out += struct.pack(">Q", n)
    out += mask
    out += bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes(out)


def ws(stream, split=0, max_frame=6, max_message=6, capacity=2, prefix=False):
    """The ws_reader input: [split, limits, capacity] then the stream (see the target)."""
    limits = max_frame | (max_message << 3) | (0x40 if prefix else 0)
    return bytes([split, limits, capacity]) + stream


def main():
    for name, text in V2.items():
        write("protocol_decode", f"v2-{name}.json", text)
    for name, text in V1.items():
        write("protocol_decode", f"v1-{name}.json", text)
    write("protocol_decode", "v2-kind3-json.bin", KIND3)
    write("protocol_decode", "v2-kind3-binary.bin", KIND3_BINARY)

    write("ws_reader", "text-join", ws(frame(1, V2["join"].encode())))
    write("ws_reader", "text-track-split", ws(frame(1, V2["track"].encode()), split=7))
    write("ws_reader", "binary-kind3", ws(frame(2, KIND3, mask=b"\x00\x00\x00\x00")))
    write("ws_reader", "heartbeats-prefix",
          ws(frame(1, V2["heartbeat"].encode()) * 3, split=3, prefix=True))
    fragmented = (
        frame(1, b'[null,"5","pho', fin=False)
        + frame(9, b"ping")
        + frame(0, b'enix","heart', fin=False, mask=b"\xa0\xb1\xc2\xd3")
        + frame(10, b"")
        + frame(0, b'beat",{}]')
    )
    write("ws_reader", "fragments-with-control", ws(fragmented, split=5))
    write("ws_reader", "close-1000-reason", ws(frame(8, struct.pack(">H", 1000) + b"bye")))
    write("ws_reader", "close-empty", ws(frame(8, b"")))
    write("ws_reader", "len16", ws(frame(2, bytes(300)), split=31))
    write("ws_reader", "len64", ws(frame(2, bytes(200), long_len=True), split=9))
    write("ws_reader", "too-big", ws(frame(2, bytes(1001)), max_frame=4, max_message=5))
    write("ws_reader", "fragment-limit",
          ws(frame(2, bytes(900), fin=False) + frame(0, bytes(900), fin=False)
             + frame(0, bytes(300)), max_frame=4, max_message=5, split=17))
    write("ws_reader", "utf8-across-fragments",
          ws(frame(1, "é".encode()[:1], fin=False) + frame(0, "é".encode()[1:])))

    write("join_payload", "realtime-js", compact(JOIN))
    keyed = json.loads(compact(JOIN))
    keyed["config"]["presence"]["key"] = "user-1"
    keyed["config"]["broadcast"] = {"ack": "TRUE", "self": "true"}
    write("join_payload", "key-and-flexible-bools", compact(keyed))
    write("join_payload", "user-token-numeric-key",
          compact({"config": {"presence": {"key": 42, "enabled": "True"}, "private": "false"},
                   "user_token": "sb_publishable_x"}))
    write("join_payload", "legacy-no-config", compact({"user_token": ANON}))
    write("join_payload", "partial-broadcast",
          compact({"config": {"broadcast": {"self": True}, "presence": {"key": {"o": [1]}}}}))
    write("join_payload", "presence-payload",
          compact({"user": "alice", "online_at": "2026-08-21T10:00:00Z"}))
    write("join_payload", "presence-reserved-keys",
          '{"phx_ref":"GBjZ2w2dPOcO4gAh","phx_ref_prev":"x","b":{"y":2,"x":1},"a":[1e2,-0.5]}')

    tokens = {
        "hs256": ANON,
        "hs384": jwt({"role": "authenticated", "exp": EXP, "sub": "u1"}, alg="HS384"),
        "hs512": jwt({"role": "service_role", "exp": EXP}, alg="HS512"),
        "expired": jwt({"role": "anon", "exp": NOW - 3}),
        "no-role": jwt({"exp": EXP}),
        "no-exp": jwt({"role": "anon"}),
        "float-exp": jwt({"role": "anon", "exp": 1.5e10}),
        "other-secret": jwt({"role": "anon", "exp": EXP}, secret=b"other"),
        "alg-none": b64url(b'{"alg":"none","typ":"JWT"}') + "."
        + b64url(compact({"role": "anon", "exp": EXP}).encode()) + ".",
        "no-typ": jwt({"role": "anon", "exp": EXP}, header={"alg": "HS256"}),
        "escaped-spaced": ANON.replace(".", "%2E", 1)[:10] + " \n\t" + ANON.replace(".", "%2E", 1)[10:],
        "sb-key": "sb_publishable_abc123",
    }
    for name, token in tokens.items():
        write("jwt", f"raw-{name}", b"\x00" + token.encode())
    # Structured mode: the bytes drive `arbitrary`; a few fixed byte patterns to start from.
    for i in range(4):
        write("jwt", f"built-{i}", b"\x01" + hashlib.sha256(b"jwt%d" % i).digest() * (i + 1))

    # presence_state inputs are read by `arbitrary`: fixed byte patterns of several lengths, and
    # one with many small values so that owners and keys collide.
    for i in range(4):
        write("presence_state", f"ops-{i}", hashlib.sha512(b"presence%d" % i).digest() * (i + 1))
    write("presence_state", "ops-small-values", bytes([0, 1, 2, 0, 1, 3] * 40))


if __name__ == "__main__":
    main()
