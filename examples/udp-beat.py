#!/usr/bin/env python3
"""Keep one registered instance alive with UDP beats (README, "UDP beats").

Needs nothing but Python 3's standard library. The beat key is the one
Register returned for this very incarnation: `registryctl register` prints it
("beat key (UDP beats, base64): ..."), the HTTP API returns it as "beat_key"
(base64). Pass it in the REGISTRY_BEAT_KEY environment variable (a --key
argument shows in the process list).

    REGISTRY_BEAT_KEY=... python3 examples/udp-beat.py \
        --addr 127.0.0.1:7301 --service orders --id a1 --incarnation 1 --interval 1

Datagram (all integers big-endian), see udpbeat/doc.go:
    u8 version=1, u8 flags (0x01: reply), u8 len(service), service,
    u8 len(id), id, u64 incarnation, u64 seq, 32-byte HMAC-SHA256(key, all before)
"""

import argparse
import base64
import hashlib
import hmac
import os
import socket
import struct
import sys
import time

VERSION = 1
FLAG_REPLY = 0x01
REPLY_SIZE = 51
STATUSES = {0: "APPLIED", 1: "UNKNOWN", 2: "FENCED", 3: "REPLAY", 4: "RETRY"}


def datagram(key, service, inst_id, incarnation, seq, want_reply):
    s, i = service.encode("ascii"), inst_id.encode("ascii")
    body = (struct.pack(">BBB", VERSION, FLAG_REPLY if want_reply else 0, len(s)) + s
            + struct.pack(">B", len(i)) + i + struct.pack(">QQ", incarnation, seq))
    return body + hmac.new(key, body, hashlib.sha256).digest()


def parse_reply(key, frame):
    """Returns (status, seq, current) or None if the frame is not authentic."""
    if len(frame) != REPLY_SIZE or frame[0] != VERSION or frame[1] != 0x80:
        return None
    body, tag = frame[:-32], frame[-32:]
    if not hmac.compare_digest(tag, hmac.new(key, body, hashlib.sha256).digest()):
        return None
    status = frame[2]
    seq, current = struct.unpack(">QQ", frame[3:19])
    return STATUSES.get(status, str(status)), seq, current


def decode_key(text):
    text = text.strip()
    try:
        key = base64.b64decode(text, validate=True)
    except ValueError:
        key = bytes.fromhex(text)
    if len(key) != 32:
        raise ValueError("the beat key must be 32 bytes (base64 or hex)")
    return key


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--addr", default="127.0.0.1:7301",
                   help="the nodes' --udp-beat-addr, host:port, comma-separated: beats go to them in turn, "
                        "so that one dead node costs every n-th beat, not all")
    p.add_argument("--service", required=True)
    p.add_argument("--id", required=True)
    p.add_argument("--incarnation", type=int, default=1)
    p.add_argument("--key", help="beat key, base64 or hex (default: $REGISTRY_BEAT_KEY)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between beats")
    p.add_argument("--count", type=int, default=0, help="beats to send; 0 sends until interrupted")
    p.add_argument("--reply", action="store_true", help="ask for reply frames and print them")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args()

    key_text = a.key or os.environ.get("REGISTRY_BEAT_KEY", "")
    if not key_text:
        p.error("no beat key: set REGISTRY_BEAT_KEY or --key")
    key = decode_key(key_text)
    targets = []
    for addr in a.addr.split(","):
        host, _, port = addr.strip().rpartition(":")
        targets.append((host.strip("[]"), int(port)))
    if any(":" in t[0] for t in targets) and not all(":" in t[0] for t in targets):
        p.error("--addr: mix of IPv4 and IPv6 addresses")

    sock = socket.socket(socket.AF_INET6 if ":" in targets[0][0] else socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(min(a.interval, 1.0))
    last_seq = 0
    sent = 0
    try:
        while a.count == 0 or sent < a.count:
            # seq must grow for this key, also across restarts: the time in
            # microseconds, or one more than the last if the clock stood still.
            seq = max(last_seq + 1, time.time_ns() // 1000)
            last_seq = seq
            sock.sendto(datagram(key, a.service, a.id, a.incarnation, seq, a.reply), targets[sent % len(targets)])
            sent += 1
            if a.reply:
                try:
                    frame, _ = sock.recvfrom(64)
                    r = parse_reply(key, frame)
                    if r is None:
                        print("unauthenticated reply ignored", file=sys.stderr)
                    elif not a.quiet:
                        print("beat seq %d: %s%s" % (r[1], r[0], " (current incarnation %d)" % r[2] if r[0] == "FENCED" else ""), flush=True)
                    if r is not None and r[0] in ("UNKNOWN", "FENCED"):
                        return 3
                except socket.timeout:
                    print("beat seq %d: no reply" % seq, file=sys.stderr)
            elif not a.quiet:
                print("beat seq %d sent" % seq, flush=True)
            if a.count == 0 or sent < a.count:
                time.sleep(a.interval)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
