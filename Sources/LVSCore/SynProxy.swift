import LVSPacket

/// SYN proxy (DPVS's `-j enable`): the director answers a client's SYN with
/// a SYN cookie and opens the connection to the real server only for an ACK
/// that returns a valid cookie, so spoofed SYNs never reach a real server and
/// never take a connection entry. Sequence numbers of the two halves differ
/// by `delta` (the real server's ISN minus the cookie), translated on every
/// later segment. The proxied handshake carries MSS only: no window scaling,
/// SACK or timestamps on either side, so nothing else needs translating.
enum SynProxy {
    /// MSS values a cookie can carry (2 bits), as Linux's msstab.
    static let mssTable: [UInt16] = [536, 1300, 1440, 1460]
    /// A cookie is good for this slot and the one before (64 s each).
    static let slotMilliseconds: UInt64 = 64_000

    static func mssIndex(_ mss: UInt16) -> UInt32 {
        var i = mssTable.count - 1
        while i > 0 && mssTable[i] > mss { i -= 1 }
        return UInt32(i)
    }

    /// time slot (8 bits) | keyed hash of the flow and the client's ISN (22) | MSS index (2).
    /// `Hasher` is SipHash with a per-process random key: workers agree, outsiders cannot forge.
    static func cookie<A: IPAddressProtocol>(_ src: A, _ dst: A, _ sport: UInt16, _ dport: UInt16, isn: UInt32, slot: UInt64, mss: UInt32) -> UInt32 {
        var h = Hasher()
        h.combine(src)
        h.combine(dst)
        h.combine(sport)
        h.combine(dport)
        h.combine(isn)
        h.combine(slot)
        let v = UInt32(truncatingIfNeeded: h.finalize())
        return UInt32(truncatingIfNeeded: slot & 0xFF) &<< 24 | (v & 0x3F_FFFF) &<< 2 | (mss & 3)
    }

    /// The MSS a valid cookie carries, or nil.
    static func check<A: IPAddressProtocol>(_ cookie: UInt32, _ src: A, _ dst: A, _ sport: UInt16, _ dport: UInt16, isn: UInt32, now: UInt64) -> UInt16? {
        #if FUZZING
        // The fuzzer cannot compute SipHash: let it past the cookie to reach what follows.
        return mssTable[Int(cookie & 3)]
        #endif
        let current = now / slotMilliseconds
        for slot in [current, current &- 1] where UInt32(truncatingIfNeeded: slot & 0xFF) == cookie &>> 24 {
            if Self.cookie(src, dst, sport, dport, isn: isn, slot: slot, mss: cookie & 3) == cookie { return mssTable[Int(cookie & 3)] }
        }
        return nil
    }

    /// Proxying needs a plain header in front of TCP (no IPv4 options, no
    /// IPv6 extension headers), so that the answer can be written in place.
    static func plain(_ p: ParsedPacket) -> Bool {
        p.fragment == .none && p.l4Offset &- p.l3Offset == (p.isIPv4 ? HeaderLength.ipv4 : HeaderLength.ipv6)
    }

    /// Rewrites the segment in place as one with these fields, a 24-byte
    /// header holding one MSS option (or 20 bytes without), no payload, and
    /// the given addresses and ports; lengths and checksums follow.
    static func writeSegment<A: IPAddressProtocol>(
        _ b: inout MutableSpan<UInt8>, _ f: inout FrameBounds, _ p: inout ParsedPacket,
        source: A, destination: A, sourcePort: UInt16, destinationPort: UInt16,
        seq: UInt32, ack: UInt32, flags: UInt8, mss: UInt16?, ttl: UInt8?
    ) -> Bool {
        let header = mss == nil ? HeaderLength.tcp : HeaderLength.tcp &+ 4
        let l4 = p.l4Offset
        guard l4 &+ header <= b.count else { return false }
        let l3 = p.l3Offset
        source.store(&b, at: p.sourceAddressOffset)
        destination.store(&b, at: p.destinationAddressOffset)
        if let ttl { b[p.isIPv4 ? l3 &+ 8 : l3 &+ 7] = ttl }
        b.setBE16(sourcePort, at: l4)
        b.setBE16(destinationPort, at: l4 &+ 2)
        b.setBE32(seq, at: l4 &+ 4)
        b.setBE32(ack, at: l4 &+ 8)
        b[l4 &+ 12] = UInt8(header / 4) &<< 4
        b[l4 &+ 13] = flags
        b.setBE16(65535, at: l4 &+ 14)
        b.setBE32(0, at: l4 &+ 16)  // checksum and urgent pointer
        if let mss {
            b.setBE16(UInt16(TCPOptionEditor.mssKind) &<< 8 | 4, at: l4 &+ 20)
            b.setBE16(mss, at: l4 &+ 22)
        }
        p.ipEnd = l4 &+ header
        p.l4HeaderLength = header
        p.tcpFlags = flags
        p.sourcePort = sourcePort
        p.destinationPort = destinationPort
        f.length = p.ipEnd &- f.start
        if p.isIPv4 {
            b.setBE16(UInt16(truncatingIfNeeded: p.ipEnd &- l3), at: l3 &+ 2)
            PacketRewriter.recomputeIPv4HeaderChecksum(&b, at: l3)
        } else {
            PacketRewriter.setIPLength(&b, p)
        }
        PacketRewriter.recomputeTransportChecksum(&b, p)
        return true
    }
}

extension FamilyPlane {
    /// A segment for a SYN-proxied service without a connection: a SYN gets
    /// the cookie back, an ACK returning a good cookie opens the connection
    /// (its SYN goes to the real server), anything else is dropped.
    mutating func synproxy(
        _ b: inout MutableSpan<UInt8>, _ f: inout FrameBounds, _ p: inout ParsedPacket, service: Int,
        src: A, dst: A, interface: UInt16, now: UInt64, shared: inout DirectorShared
    ) -> Verdict {
        let flags = p.tcpFlags & (TCPFlags.syn | TCPFlags.ack | TCPFlags.rst | TCPFlags.fin)
        guard SynProxy.plain(p) else { return shared.drop(.synproxyRefused) }
        if flags == TCPFlags.syn {
            guard let iface = shared.interface(interface) else { return shared.drop(.noRoute) }
            let isn = b.be32(at: p.l4Offset &+ 4)
            let clientMSS = TCPOptionEditor.optionOffset(b, p, kind: TCPOptionEditor.mssKind, length: 4).map { b.be16(at: $0 &+ 2) } ?? 536
            let cookie = SynProxy.cookie(
                src, dst, p.sourcePort, p.destinationPort, isn: isn, slot: now / SynProxy.slotMilliseconds,
                mss: SynProxy.mssIndex(clientMSS))
            // What the client may send: the link's, less room for a TOA.
            let ours = UInt16(clamping: iface.mtu &- (p.isIPv4 ? 40 &+ 8 : 60 &+ 20))
            let previousHop = MACAddress(b.span, at: f.start &+ 6)
            guard
                SynProxy.writeSegment(
                    &b, &f, &p, source: dst, destination: src, sourcePort: p.destinationPort, destinationPort: p.sourcePort,
                    seq: cookie, ack: isn &+ 1, flags: TCPFlags.syn | TCPFlags.ack, mss: min(ours, clientMSS), ttl: 64)
            else {
                return shared.drop(.edit(.noHeadroom))
            }
            PacketRewriter.setMACs(&b, frameStart: f.start, destination: previousHop, source: iface.mac)
            shared.synproxyCookies &+= 1
            return .transmit(interface: interface)
        }
        guard flags == TCPFlags.ack else { return shared.drop(.notSYN) }
        let seq = b.be32(at: p.l4Offset &+ 4)
        let ack = b.be32(at: p.l4Offset &+ 8)
        guard let mss = SynProxy.check(ack &- 1, src, dst, p.sourcePort, p.destinationPort, isn: seq &- 1, now: now) else {
            return shared.drop(.synproxyRefused)
        }
        // The client's ACK becomes the SYN to the real server; the scheduler
        // and the rest of the path treat it as any new connection's SYN.
        guard
            SynProxy.writeSegment(
                &b, &f, &p, source: src, destination: dst, sourcePort: p.sourcePort, destinationPort: p.destinationPort,
                seq: seq &- 1, ack: 0, flags: TCPFlags.syn, mss: mss, ttl: nil)
        else {
            return shared.drop(.edit(.noHeadroom))
        }
        return newConnection(
            &b, &f, &p, service: service, src: src, dst: dst, interface: interface, now: now, shared: &shared,
            synproxyCookie: ack &- 1, clientISN: seq &- 1)
    }

    /// A segment of a proxied connection. Client side: while the real
    /// server's SYN-ACK is awaited, a retransmitted ACK resends the SYN and
    /// data waits for the client's retransmission; afterwards the ACK number
    /// is translated. Real-server side: its SYN-ACK is answered with the
    /// handshake's last ACK in place (it never reaches the client); later
    /// segments get their sequence number translated.
    /// Returns nil when the segment goes on as usual, translated.
    mutating func synproxyInbound(
        _ b: inout MutableSpan<UInt8>, _ f: inout FrameBounds, _ p: inout ParsedPacket, _ i: Int,
        interface: UInt16, now: UInt64, shared: inout DirectorShared
    ) -> Verdict? {
        let c = table[i]
        if c.flags.contains(.synproxyPending) {
            if p.tcpFlags & TCPFlags.rst != 0 { return nil }
            // The first request usually comes before the real server's SYN-ACK: keep it for then.
            // Sent again, it says the SYN may have been lost (its next hop
            // unresolved, say): it becomes the SYN again, as a pure ACK does.
            let retransmitted = shared.held.holds(connection: i, ipv6: A.byteCount == 16)
            guard p.tcpFlags & (TCPFlags.syn | TCPFlags.fin) == 0, p.payloadLength == 0 || retransmitted else {
                guard shared.held.hold(b, f, connection: i, ipv6: A.byteCount == 16, interface: interface, now: now) else {
                    return shared.drop(.synproxyPending)
                }
                return .held
            }
            let mss = SynProxy.mssTable[Int(c.synproxySequence & 3)]
            guard
                SynProxy.writeSegment(
                    &b, &f, &p, source: c.client, destination: c.virtual, sourcePort: c.clientPort, destinationPort: c.virtualPort,
                    seq: c.toaSequence, ack: 0, flags: TCPFlags.syn, mss: mss, ttl: nil)
            else { return shared.drop(.edit(.noHeadroom)) }
            return nil
        }
        guard p.tcpFlags & TCPFlags.ack != 0 else { return nil }
        let o = p.l4Offset &+ 8
        let old = b.be32(at: o)
        let new = old &+ c.synproxySequence
        b.setBE32(new, at: o)
        PacketRewriter.updateTransportChecksum(&b, p, removing: UInt64(old), adding: UInt64(new))
        return nil
    }

    mutating func synproxyOutbound(
        _ b: inout MutableSpan<UInt8>, _ f: inout FrameBounds, _ p: inout ParsedPacket, _ i: Int,
        now: UInt64, shared: inout DirectorShared
    ) -> Verdict? {
        var c = table[i]
        let synAck = p.tcpFlags & (TCPFlags.syn | TCPFlags.ack | TCPFlags.rst) == TCPFlags.syn | TCPFlags.ack
        if synAck {
            let rsISN = b.be32(at: p.l4Offset &+ 4)
            let ack = b.be32(at: p.l4Offset &+ 8)
            if c.flags.contains(.synproxyPending) {
                // Until now the field held the cookie (with the MSS index in its low bits).
                c.synproxySequence = rsISN &- c.synproxySequence
                c.flags.remove(.synproxyPending)
                shared.held.release(connection: i, ipv6: A.byteCount == 16)
                table[i] = c
                if let pp = shared.services[Int(c.service)].configuration.proxyProtocol {
                    startProxyHeader(i, pp, isn: ack &- 1)
                } else if c.method == .fullNAT {
                    table[i].toaSequence = rsISN &+ 1
                    table[i].flags.insert(.toaArmed)
                }
                c = table[i]
            }
            let dest = shared.services[Int(c.service)].destinations[Int(c.destination)]
            guard
                SynProxy.writeSegment(
                    &b, &f, &p, source: c.local, destination: c.real, sourcePort: c.localPort, destinationPort: c.realPort,
                    seq: ack, ack: rsISN &+ 1, flags: TCPFlags.ack, mss: nil, ttl: 64)
            else { return shared.drop(.edit(.noHeadroom)) }
            updateState(i, direction: .input, flags: TCPFlags.ack, now: now, shared: &shared)
            if c.flags.contains(.toaArmed) { insertTOA(&b, &f, &p, c, dest: dest, shared: &shared) }
            // The handshake's last ACK is the director's here: it carries the PROXY header, for a server that speaks first.
            if c.flags.contains(.proxyHeaderPending), let v = insertProxyHeader(&b, &f, &p, i, shared: &shared) { return v }
            return Self.sendTo(&b, f, neighbour: dest.neighbour, shared: &shared)
        }
        if c.flags.contains(.synproxyPending) {
            guard p.tcpFlags & (TCPFlags.syn | TCPFlags.rst) == 0, p.tcpFlags & TCPFlags.ack != 0 else { return nil }
            // A real server that still holds an old connection of this tuple in TIME_WAIT answers
            // the SYN with that connection's ACK. Without the proxy the client would reset it, which
            // ends the TIME_WAIT (RFC 1337's hazard, which Linux allows): so does the director, at
            // the sequence number the server expects; the client's next retransmission sends the SYN again.
            let expected = b.be32(at: p.l4Offset &+ 8)
            let dest = shared.services[Int(c.service)].destinations[Int(c.destination)]
            guard
                SynProxy.writeSegment(
                    &b, &f, &p, source: c.local, destination: c.real, sourcePort: c.localPort, destinationPort: c.realPort,
                    seq: expected, ack: 0, flags: TCPFlags.rst, mss: nil, ttl: 64)
            else { return shared.drop(.edit(.noHeadroom)) }
            return Self.sendTo(&b, f, neighbour: dest.neighbour, shared: &shared)
        }
        let o = p.l4Offset &+ 4
        let old = b.be32(at: o)
        let new = old &- c.synproxySequence
        b.setBE32(new, at: o)
        PacketRewriter.updateTransportChecksum(&b, p, removing: UInt64(old), adding: UInt64(new))
        return nil
    }
}
