#!/usr/bin/env python3
"""Decodes the IPVS sync messages (UDP port 8848) of a pcap file.

Written from the protocol description in the kernel's ip_vs_sync.c (the
version 1 message and connection diagrams), independently of lvsd's
encoder. Prints one JSON object: the messages, and every connection with
its fields and options.

Version 1 message: u8 0 | u8 syncid | be16 size | u8 count | s8 version=1 |
u16 0, then `count` connections, each padded to 4 bytes:
u8 type (bit 0: IPv6) | u8 protocol | be16 version(4 bits)/size(12 bits) |
be32 flags | be16 state | be16 cport | be16 vport | be16 dport |
be32 fwmark | be32 timeout | caddr | vaddr | daddr, then options
(u8 type | u8 length | data).
"""
import ipaddress
import json
import struct
import sys


def packets(path):
    with open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    off = 24
    while off + 16 <= len(data):
        _, _, incl, _ = struct.unpack(endian + "IIII", data[off:off + 16])
        yield linktype, data[off + 16:off + 16 + incl]
        off += 16 + incl


def udp_payload(linktype, frame):
    if linktype != 1 or len(frame) < 14 or frame[12:14] != b"\x08\x00":
        return None
    ip = frame[14:]
    ihl = (ip[0] & 15) * 4
    if ip[9] != 17:
        return None
    sport, dport, length = struct.unpack(">HHH", ip[ihl:ihl + 6])
    if dport != 8848:
        return None
    return ip[ihl + 8:ihl + length]


def decode(m):
    reserved, syncid, size, count, version, spare = struct.unpack(">BBHBbH", m[:8])
    assert reserved == 0 and version == 1 and spare == 0, "not a version 1 message"
    assert size == len(m), "size %d, %d bytes" % (size, len(m))
    conns = []
    p = 8
    for _ in range(count):
        ctype, proto, ver_size = struct.unpack(">BBH", m[p:p + 4])
        assert ver_size >> 12 == 0, "connection version %d" % (ver_size >> 12)
        length = ver_size & 0x0FFF
        flags, state, cport, vport, dport, fwmark, timeout = struct.unpack(">IHHHHII", m[p + 4:p + 24])
        alen = 16 if ctype & 1 else 4
        addr = lambda o: str(ipaddress.ip_address(m[o:o + alen]))
        q = p + 24
        c = {"ipv6": bool(ctype & 1), "protocol": proto, "flags": flags, "method": flags & 7, "state": state,
             "cport": cport, "vport": vport, "dport": dport, "fwmark": fwmark, "timeout": timeout,
             "caddr": addr(q), "vaddr": addr(q + alen), "daddr": addr(q + 2 * alen), "options": []}
        q += 3 * alen
        while q < p + length:
            otype, olen = m[q], m[q + 1]
            c["options"].append({"type": otype, "data": m[q + 2:q + 2 + olen].hex()})
            q += 2 + olen
        assert q == p + length, "options overrun the connection"
        conns.append(c)
        p += (length + 3) & ~3
    return syncid, conns


def main():
    messages, conns = 0, []
    for linktype, frame in packets(sys.argv[1]):
        payload = udp_payload(linktype, frame)
        if payload is None:
            continue
        syncid, cs = decode(payload)
        messages += 1
        for c in cs:
            c["syncid"] = syncid
        conns += cs
    print(json.dumps({"messages": messages, "connections": conns}))


main()
