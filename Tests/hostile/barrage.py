#!/usr/bin/python3
"""Malformed and hostile frames at lvsd, from a namespace on its LAN.

barrage IFACE DIRECTOR_MAC VIP VIP6 CLIENT CLIENT6
    Sends every kind of bad frame the hostile-traffic test names, straight
    onto the director's LAN (a router would drop most of them), and prints
    one line per check it can make itself: "icmp-time-exceeded N",
    "arp-replies N".
options VIP PORT
    From the client (whose kernel must not answer with RST): a FULLNAT
    handshake, then the client's ACKs with a TOA already in them and with
    the whole 40-byte option space taken; prints "handshake ok".
flood IFACE DIRECTOR_MAC VIP PORT SECONDS KIND
    Spoofed-source SYN ("syn") or UDP ("udp") frames as fast as one core
    sends them, sources from 198.18.128.0/17, for SECONDS; prints "sent N".
"""
import os, random, socket, sys, time

from scapy.all import (ARP, ICMP, IP, IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting, IPOption_RR, TCP, UDP,
                       AsyncSniffer, Dot1Q, Ether, Raw, conf, sendp)

conf.verb = 0


def barrage(iface, dmac, vip, vip6, client, client6):
    smac = open(f"/sys/class/net/{iface}/address").read().strip()
    eth = Ether(dst=dmac, src=smac)
    frames = []
    syn = TCP(sport=40001, dport=80, flags="S", seq=1000)
    # Truncated headers at every layer.
    frames.append(bytes(eth)[:10])
    frames.append(bytes(eth / Dot1Q(vlan=5))[:16])
    frames.append(bytes(eth / IP(src=client, dst=vip) / syn)[:14 + 12])
    frames.append(bytes(eth / IP(src=client, dst=vip, proto=6, len=30) / Raw(b"\x00" * 10)))
    frames.append(bytes(eth / IP(src=client, dst=vip, proto=17, len=24) / Raw(b"\x00" * 4)))
    # IHL below 5, total length past the frame and below the header.
    frames.append(bytes(eth / IP(src=client, dst=vip, ihl=3) / syn))
    frames.append(bytes(eth / IP(src=client, dst=vip, len=1400) / syn))
    frames.append(bytes(eth / IP(src=client, dst=vip, len=12) / syn))
    # TCP data offset below 5 and past the segment; a bad UDP length.
    frames.append(bytes(eth / IP(src=client, dst=vip) / TCP(sport=40002, dport=80, flags="S", dataofs=3)))
    frames.append(bytes(eth / IP(src=client, dst=vip) / TCP(sport=40003, dport=80, flags="S", dataofs=15)))
    frames.append(bytes(eth / IP(src=client, dst=vip) / UDP(sport=40004, dport=80, len=200) / Raw(b"x")))
    # Every TCP flag combination.
    for flags in range(256):
        frames.append(bytes(eth / IP(src=client, dst=vip) / TCP(sport=41000 + flags, dport=80, flags=flags, seq=7)))
    # IP options on a legitimate SYN.
    frames.append(bytes(eth / IP(src=client, dst=vip, options=[IPOption_RR()]) / TCP(sport=40005, dport=80, flags="S")))
    # Fragments: a first one, a middle one of an unknown datagram, overlapping ones.
    whole = bytes(IP(src=client, dst=vip, id=777, flags=0) / TCP(sport=40006, dport=80, flags="S") / Raw(b"A" * 64))
    payload = whole[20:]
    frames.append(bytes(eth / IP(src=client, dst=vip, id=777, flags="MF", frag=0, proto=6) / Raw(payload[:32])))
    frames.append(bytes(eth / IP(src=client, dst=vip, id=777, flags="MF", frag=2, proto=6) / Raw(payload[16:48])))
    frames.append(bytes(eth / IP(src=client, dst=vip, id=888, flags="MF", frag=5, proto=6) / Raw(b"B" * 24)))
    frames.append(bytes(eth / IP(src=client, dst=vip, id=777, flags=0, frag=4, proto=6) / Raw(payload[32:])))
    # IPv6 with chains of extension headers: long, and hop-by-hop out of place.
    chain = IPv6ExtHdrHopByHop()
    for _ in range(12):
        chain = chain / IPv6ExtHdrDestOpt()
    frames.append(bytes(eth / IPv6(src=client6, dst=vip6) / chain / TCP(sport=40007, dport=80, flags="S")))
    frames.append(bytes(eth / IPv6(src=client6, dst=vip6) / IPv6ExtHdrDestOpt() / IPv6ExtHdrHopByHop() / TCP(sport=40008, dport=80, flags="S")))
    frames.append(bytes(eth / IPv6(src=client6, dst=vip6) / IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting() / IPv6ExtHdrDestOpt()
                        / TCP(sport=40009, dport=80, flags="S")))
    frames.append(bytes(eth / IPv6(src=client6, dst=vip6, plen=900) / TCP(sport=40010, dport=80, flags="S")))
    # ICMP errors quoting an unknown connection and a known one (41002: a SYN above).
    frames.append(bytes(eth / IP(src=client, dst=vip) / ICMP(type=3, code=3) / IP(src=vip, dst=client) / TCP(sport=80, dport=9)))
    frames.append(bytes(eth / IP(src=client, dst=vip) / ICMP(type=3, code=3) / IP(src=vip, dst=client) / TCP(sport=80, dport=41002)))
    frames.append(bytes(eth / IP(src=client, dst=vip) / ICMP(type=3, code=4, nexthopmtu=1200) / bytes(IP(src=vip, dst=client) / TCP(sport=80, dport=41002))[:20]))

    # TTL 1 (time exceeded comes back) and ARP for the VIP from spoofed MACs.
    sniffer = AsyncSniffer(iface=iface, filter="icmp or arp")
    sniffer.start()
    time.sleep(0.5)
    sendp([Raw(f) for f in frames], iface=iface)
    for i in range(3):
        sendp(eth / IP(src=client, dst=vip, ttl=1) / TCP(sport=40020 + i, dport=80, flags="S"), iface=iface)
    for i in range(20):
        mac = "02:66:%02x:%02x:%02x:%02x" % tuple(random.randrange(256) for _ in range(4))
        sendp(Ether(dst="ff:ff:ff:ff:ff:ff", src=mac) / ARP(op=1, hwsrc=mac, psrc=f"198.18.200.{i + 1}", pdst=vip), iface=iface)
    time.sleep(1.5)
    got = sniffer.stop()
    exceeded = sum(1 for p in got if p.haslayer(ICMP) and p[ICMP].type == 11 and p[IP].src == vip)
    arp = sum(1 for p in got if p.haslayer(ARP) and p[ARP].op == 2 and p[ARP].psrc == vip)
    print(f"frames {len(frames)}")
    print(f"icmp-time-exceeded {exceeded}")
    print(f"arp-replies {arp}")


def options(vip, port):
    from scapy.all import send, sr1
    sport = 45000 + random.randrange(1000)
    synack = sr1(IP(dst=vip) / TCP(sport=sport, dport=port, flags="S", seq=100, options=[("MSS", 1460)]), timeout=3)
    if synack is None or not synack.haslayer(TCP) or synack[TCP].flags != "SA":
        print("handshake failed")
        return
    ack = synack[TCP].seq + 1
    forged = (4321).to_bytes(2, "big") + socket.inet_aton("198.18.99.99")
    send(IP(dst=vip) / TCP(sport=sport, dport=port, flags="A", seq=101, ack=ack,
                           options=[(254, forged), ("NOP", None), ("NOP", None), ("Timestamp", (1, 0))]))
    full = [("Timestamp", (2, 0)), ("SAck", (1, 2, 3, 4, 5, 6)), ("NOP", None), ("NOP", None), ("NOP", None), ("NOP", None)]
    send(IP(dst=vip) / TCP(sport=sport, dport=port, flags="PA", seq=101, ack=ack, options=full) / Raw(b"GET / HTTP/1.0\r\n\r\n"))
    print("handshake ok")


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def flood(iface, dmac, vip, port, seconds, kind):
    """Frames built by hand (scapy is too slow for this many): FLOWS distinct
    spoofed sources and ports, more than the connection table holds."""
    import struct
    smac = open(f"/sys/class/net/{iface}/address").read().strip()
    eth = bytes.fromhex(dmac.replace(":", "")) + bytes.fromhex(smac.replace(":", "")) + b"\x08\x00"
    dst = socket.inet_aton(vip)
    frames = []
    for n in range(FLOWS):
        src = bytes([198, 18, 128 + random.randrange(128), random.randrange(1, 255)])
        sport = 1024 + (n % 64000)
        if kind == "syn":
            l4 = bytearray(struct.pack("!HHIIBBHHH", sport, port, random.randrange(1 << 32), 0, 5 << 4, 0x02, 64240, 0, 0))
            proto = 6
        else:
            l4 = bytearray(struct.pack("!HHHH", sport, port, 8 + 18, 0) + b"x" * 18)
            proto = 17
        pseudo = src + dst + struct.pack("!BBH", 0, proto, len(l4))
        c = checksum(pseudo + bytes(l4))
        struct.pack_into("!H", l4, 16 if kind == "syn" else 6, c)
        ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), n & 0xFFFF, 0, 64, proto, 0, src, dst))
        struct.pack_into("!H", ip, 10, checksum(bytes(ip)))
        frames.append(eth + bytes(ip) + bytes(l4))
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((iface, 0))
    sent = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for k in range(0, len(frames), 4096):
            for f in frames[k:k + 4096]:
                try:
                    s.send(f)
                    sent += 1
                except OSError:
                    pass  # a full queue: the sender is at its limit
            if time.monotonic() >= end:
                break
    print(f"sent {sent} flows {len(frames)}")


FLOWS = 200_000


if __name__ == "__main__":
    if sys.argv[1] == "barrage":
        barrage(*sys.argv[2:8])
    elif sys.argv[1] == "options":
        options(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1] == "flood":
        flood(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), float(sys.argv[6]), sys.argv[7])
