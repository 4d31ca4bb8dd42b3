/// GUE (draft-ietf-intarea-gue) variant 0 over UDP, as IPVS sends it.
public struct GUEOptions: Sendable, Hashable {
    public var port: UInt16
    /// Compute a UDP checksum (otherwise 0, as the kernel's default).
    public var checksum: Bool
    public init(port: UInt16, checksum: Bool = false) {
        self.port = port
        self.checksum = checksum
    }
}

/// IP-in-IP (IPIP, IPv6-in-IPv6 and the mixed cases) and GUE tunnels.
public enum Encapsulation {
    /// An outer IPv4 header without options at `ip` in a window (the fast
    /// path's IPIP and the general path's every IPv4 tunnel): TOS, TTL and DF
    /// as the inner header has them, its checksum summed in five words.
    @inlinable @inline(__always)
    public static func writeIPv4Header(
        _ h: inout MutableRawSpan, at ip: Int, tos: UInt8, total: UInt16, identification: UInt16,
        dontFragment: Bool, ttl: UInt8, protocol proto: UInt8, source: UInt32, destination: UInt32
    ) {
        let first = 0x4500_0000 | UInt32(tos) &<< 16 | UInt32(total)
        let second = UInt32(identification) &<< 16 | (dontFragment ? 0x4000 : 0)
        let third = UInt32(ttl) &<< 24 | UInt32(proto) &<< 16
        let sum = UInt64(first) &+ UInt64(second) &+ UInt64(third) &+ UInt64(source) &+ UInt64(destination)
        h.setBE32(first, at: ip)
        h.setBE32(second, at: ip &+ 4)
        h.setBE32(third | UInt32(~InternetChecksum.fold(sum)), at: ip &+ 8)
        h.setBE32(source, at: ip &+ 12)
        h.setBE32(destination, at: ip &+ 16)
    }

    /// Bytes an outer header of this family (plus GUE) adds.
    @inlinable
    public static func overhead<Outer: IPAddressProtocol>(_: Outer.Type, gue: Bool) -> Int {
        (Outer.byteCount == 4 ? HeaderLength.ipv4 : HeaderLength.ipv6) &+ (gue ? HeaderLength.udp &+ HeaderLength.gue : 0)
    }

    /// Wraps the IP datagram in an outer header from `source` to `destination`:
    /// the Ethernet header moves into the headroom and the outer header goes
    /// between it and the inner datagram. TTL and TOS/traffic class are copied
    /// from the inner header (ECN included), DF too for IPv4 in IPv4.
    /// `packet` afterwards describes the outer datagram.
    @inlinable
    public static func encapsulate<Outer: IPAddressProtocol>(
        _ b: inout MutableSpan<UInt8>, frame: inout FrameBounds, packet p: inout ParsedPacket,
        source: Outer, destination: Outer, gue: GUEOptions? = nil, flowHash: UInt32 = 0, identification: UInt16 = 0
    ) throws(EditError) {
        let outerV4 = Outer.byteCount == 4
        let ipLength = outerV4 ? HeaderLength.ipv4 : HeaderLength.ipv6
        let extra = gue != nil ? HeaderLength.udp &+ HeaderLength.gue : 0
        let n = ipLength &+ extra
        guard frame.start >= n else { throw .noHeadroom }
        let innerL3 = p.l3Offset
        let innerLength = p.ipEnd &- innerL3
        let innerV4 = p.ipVersion == 4
        let tos: UInt8 = innerV4 ? b[innerL3 &+ 1] : UInt8(truncatingIfNeeded: b.be16(at: innerL3) &>> 4)
        let ttl = innerV4 ? b[innerL3 &+ 8] : b[innerL3 &+ 7]
        let df = innerV4 && b[innerL3 &+ 6] & 0x40 != 0
        let innerProto = innerV4 ? IPProtocolNumber.ipip : IPProtocolNumber.ipv6
        let l2Length = p.etherHeaderLength
        b.moveBytes(from: frame.start, to: frame.start &- n, count: l2Length)
        frame.start &-= n
        frame.length &+= n
        let l3 = frame.start &+ l2Length
        b.setBE16(outerV4 ? EtherType.ipv4 : EtherType.ipv6, at: l3 &- 2)
        let total = innerLength &+ n
        let proto = gue != nil ? IPProtocolNumber.udp : innerProto
        if outerV4 {
            // `unsafe` because raw writes could break a typed element; these are bytes.
            var raw = unsafe b.mutableBytes
            var h = raw._mutatingExtracting(l3..<l3 &+ HeaderLength.ipv4)
            writeIPv4Header(
                &h, at: 0, tos: tos, total: UInt16(truncatingIfNeeded: total), identification: identification, dontFragment: df,
                ttl: ttl, protocol: proto, source: UInt32(truncatingIfNeeded: source.wordSum32), destination: UInt32(truncatingIfNeeded: destination.wordSum32))
        } else {
            b.setBE32(0x6000_0000 | UInt32(tos) &<< 20 | (flowHash & 0xFFFFF), at: l3)
            b.setBE16(UInt16(truncatingIfNeeded: total &- HeaderLength.ipv6), at: l3 &+ 4)
            b[l3 &+ 6] = proto
            b[l3 &+ 7] = ttl
            source.store(&b, at: l3 &+ 8)
            destination.store(&b, at: l3 &+ 24)
        }
        var outer = ParsedPacket()
        outer.l2Offset = frame.start
        outer.etherType = outerV4 ? EtherType.ipv4 : EtherType.ipv6
        outer.vlanTCI = p.vlanTCI
        outer.l3Offset = l3
        outer.ipVersion = outerV4 ? 4 : 6
        outer.ipEnd = l3 &+ total
        outer.proto = proto
        outer.l4Offset = l3 &+ ipLength
        outer.ttl = ttl
        if let gue {
            let u = l3 &+ ipLength
            // The source port spreads flows over the real server's receive queues.
            let sport = UInt16(truncatingIfNeeded: 0xC000 | (flowHash & 0x3FFF))
            b.setBE16(sport, at: u)
            b.setBE16(gue.port, at: u &+ 2)
            b.setBE16(UInt16(truncatingIfNeeded: total &- ipLength), at: u &+ 4)
            b.setBE16(0, at: u &+ 6)
            b[u &+ 8] = 0  // version 0, C = 0, hlen = 0
            b[u &+ 9] = innerProto
            b.setBE16(0, at: u &+ 10)
            outer.l4HeaderLength = HeaderLength.udp
            outer.sourcePort = sport
            outer.destinationPort = gue.port
            if gue.checksum || !outerV4 {
                PacketRewriter.recomputeTransportChecksum(&b, outer)
            }
        }
        p = outer
    }

    /// Removes an IPIP/IPv6-in-IP (or, with `guePort`, a GUE) outer header:
    /// the Ethernet header moves up to the inner datagram. Returns false, and
    /// changes nothing, when the packet is not such a tunnel packet.
    @inlinable
    public static func decapsulate(_ b: inout MutableSpan<UInt8>, frame: inout FrameBounds, packet p: inout ParsedPacket, guePort: UInt16? = nil)
        throws(PacketError) -> Bool
    {
        guard p.fragment == .none else { return false }
        var innerL3 = p.l4Offset
        var innerProto = p.proto
        if p.proto == IPProtocolNumber.udp, let guePort, p.destinationPort == guePort {
            let g = p.l4Offset &+ HeaderLength.udp
            guard p.ipEnd &- g >= HeaderLength.gue else { throw .truncatedUDP }
            guard b[g] &>> 6 == 0 else { return false }
            let hlen = Int(b[g] & 0x1F) &* 4
            innerProto = b[g &+ 1]
            innerL3 = g &+ HeaderLength.gue &+ hlen
        }
        guard innerProto == IPProtocolNumber.ipip || innerProto == IPProtocolNumber.ipv6 else { return false }
        var inner = ParsedPacket()
        inner.l3Offset = innerL3
        inner.etherType = innerProto == IPProtocolNumber.ipip ? EtherType.ipv4 : EtherType.ipv6
        try PacketParser.parseIP(b.span, into: &inner, limit: p.ipEnd, quoted: false)
        let l2Length = p.etherHeaderLength
        let removed = innerL3 &- p.l3Offset
        b.moveBytes(from: frame.start, to: frame.start &+ removed, count: l2Length)
        frame.start &+= removed
        frame.length = inner.ipEnd &- frame.start
        b.setBE16(inner.etherType, at: innerL3 &- 2)
        inner.l2Offset = frame.start
        inner.vlanTCI = p.vlanTCI
        p = inner
        return true
    }
}
