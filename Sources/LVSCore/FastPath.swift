import LVSPacket

/// The path nearly every packet takes, in one pass and without building a
/// `ParsedPacket`: an IPv4 TCP or UDP segment (untagged, no IP options, not
/// a fragment) of a live connection whose state it does not change,
/// forwarded by NAT, DR or FULLNAT in either direction. Everything is
/// checked before anything is written, so a frame it declines reaches the
/// general path untouched; that path then decides and counts it exactly as
/// it would have anyway (new flows, state changes, TOA, tunnels, unresolved
/// neighbours, malformed frames, expired entries).
extension Director {
    /// Bytes the fast path reads and writes: Ethernet, IPv4 without options
    /// and a TCP header (a UDP frame is shorter; the frame's own length is
    /// checked separately, the window only has to lie inside the buffer).
    static var window: Int { 54 }

    mutating func fastPath(_ b: inout MutableSpan<UInt8>, _ f: FrameBounds, now: UInt64) -> Verdict? {
        let s = f.start, frameLength = f.length
        guard s >= 0, s <= b.count &- Self.window, frameLength >= 42, frameLength <= b.count &- s else { return nil }
        // `unsafe` because raw writes could break a typed element; these are bytes.
        var raw = unsafe b.mutableBytes
        var h = raw._mutatingExtracting(s ..< s &+ Self.window)
        guard h.be16(at: 12) == EtherType.ipv4, h.byte(at: 14) == 0x45 else { return nil }
        let total = Int(h.be16(at: 16))
        let ttl = h.byte(at: 22), proto = h.byte(at: 23)
        guard 14 &+ total <= frameLength, ttl > 1, h.be16(at: 20) & 0x3FFF == 0 else { return nil }
        let headerSum = UInt64(h.be32(at: 14)) &+ UInt64(h.be32(at: 18)) &+ UInt64(h.be32(at: 22))
            &+ UInt64(h.be32(at: 26)) &+ UInt64(h.be32(at: 30))
        guard InternetChecksum.fold(headerSum) == 0xFFFF else { return nil }
        let checksumOffset: Int
        if proto == IPProtocolNumber.tcp {
            let dataOffset = Int(h.byte(at: 46) &>> 4) &* 4
            // Segments that carry SYN, FIN or RST move the state machine.
            guard total >= 40, dataOffset >= 20, dataOffset <= total &- 20, h.byte(at: 47) & 0x07 == 0 else { return nil }
            checksumOffset = 50
        } else if proto == IPProtocolNumber.udp {
            let length = Int(h.be16(at: 38))
            guard total >= 28, length >= 8, length <= total &- 20 else { return nil }
            checksumOffset = h.be16(at: 40) == 0 ? -1 : 40
        } else {
            return nil
        }
        let src = IPv4Address(h.be32(at: 26)), dst = IPv4Address(h.be32(at: 30))
        let sport = h.be16(at: 34), dport = h.be16(at: 36)
        let length = UInt64(total)

        if let i = v4.table.lookup(.client, proto: proto, src, sport, dst, dport) {
            let c = v4.table[i]
            guard c.expires > now, c.state == .established || c.state == .udp, !c.flags.contains(.synproxy) else { return nil }
            let sv = Int(c.service), d = Int(c.destination)
            let method = shared.services[sv].destinations[d].method
            let neighbour = Int(shared.services[sv].destinations[d].neighbour)
            guard !shared.services[sv].destinations[d].removed, neighbour < shared.neighbours.count,
                  shared.neighbours[neighbour].resolved else { return nil }
            var new = (src, sport, dst, dport)
            switch method {
            case .nat:
                new.2 = c.real; new.3 = c.realPort
            case .fullNAT:
                // The ACK that gets TOA takes the general path.
                if c.flags.contains(.toaArmed) && proto == IPProtocolNumber.tcp && h.be32(at: 42) == c.toaSequence { return nil }
                new = (c.local, c.localPort, c.real, c.realPort)
            case .directRouting, .local:
                break
            case .tunnel:
                return nil
            }
            Self.rewrite(&h, checksumOffset: checksumOffset, ttl: ttl, proto: proto, from: (src, sport, dst, dport), to: new)
            v4.table.touch(i, expires: now &+ shared.timeouts[Int(c.state.rawValue)], inbound: true)
            if shared.syncing { v4.noteSync(i, stateChanged: false, shared: &shared) }
            let (sc, dc) = shared.counterSlots(service: sv, destination: d)
            shared.count(inbound: true, service: sc, destination: dc, bytes: length)
            return Self.transmit(&h, to: shared.neighbours[neighbour])
        }
        guard v4.hasReplyTraffic, let i = v4.table.lookup(.reply, proto: proto, src, sport, dst, dport) else { return nil }
        let c = v4.table[i]
        guard c.expires > now, c.state == .established || c.state == .udp, !c.flags.contains(.noOutput), !c.flags.contains(.synproxy),
              Int(c.replyNeighbour) < shared.neighbours.count, shared.neighbours[Int(c.replyNeighbour)].resolved else { return nil }
        // NAT replies keep their destination; FULLNAT ones go back to the client.
        let fullNAT = c.local != c.client || c.localPort != c.clientPort
        Self.rewrite(&h, checksumOffset: checksumOffset, ttl: ttl, proto: proto, from: (src, sport, dst, dport),
                     to: (c.virtual, c.virtualPort, fullNAT ? c.client : dst, fullNAT ? c.clientPort : dport))
        v4.table.touch(i, expires: now &+ shared.timeouts[Int(c.state.rawValue)], inbound: false)
        let (sc, dc) = shared.counterSlots(service: Int(c.service), destination: Int(c.destination))
        shared.count(inbound: false, service: sc, destination: dc, bytes: length)
        return Self.transmit(&h, to: shared.neighbours[Int(c.replyNeighbour)])
    }

    /// Writes the four-tuple, decrements the TTL and adjusts both checksums
    /// incrementally in one go (RFC 1624). Offsets are from the frame start.
    @inline(__always)
    static func rewrite(_ h: inout MutableRawSpan, checksumOffset: Int, ttl: UInt8, proto: UInt8,
                        from old: (IPv4Address, UInt16, IPv4Address, UInt16), to new: (IPv4Address, UInt16, IPv4Address, UInt16)) {
        let ttlWord = UInt64(ttl) &<< 8 | UInt64(proto)
        let oldAddresses = old.0.wordSum &+ old.2.wordSum, newAddresses = new.0.wordSum &+ new.2.wordSum
        h.setByte(ttl &- 1, at: 22)
        h.setBE16(InternetChecksum.update(h.be16(at: 24), removing: ttlWord &+ oldAddresses, adding: ttlWord &- 0x100 &+ newAddresses), at: 24)
        h.setBE32(new.0.value, at: 26)
        h.setBE32(new.2.value, at: 30)
        h.setBE16(new.1, at: 34)
        h.setBE16(new.3, at: 36)
        guard checksumOffset >= 0 else { return }
        let v = InternetChecksum.update(h.be16(at: checksumOffset), removing: oldAddresses &+ UInt64(old.1) &+ UInt64(old.3),
                                        adding: newAddresses &+ UInt64(new.1) &+ UInt64(new.3))
        // A UDP checksum that computes to 0 is sent as 0xFFFF (0 means none).
        h.setBE16(v == 0 && proto == IPProtocolNumber.udp ? 0xFFFF : v, at: checksumOffset)
    }

    @inline(__always)
    static func transmit(_ h: inout MutableRawSpan, to n: Neighbour) -> Verdict {
        // Destination and source MAC in two stores.
        h.setBE64(n.mac.value &<< 16 | n.sourceMAC.value &>> 32, at: 0)
        h.setBE32(UInt32(truncatingIfNeeded: n.sourceMAC.value), at: 8)
        return .transmit(interface: n.interface)
    }
}
