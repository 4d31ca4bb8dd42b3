/// In-place header rewrites with incremental checksum updates (RFC 1624).
public enum PacketRewriter {
    /// Replaces any of the four address/port fields at once and updates the
    /// IPv4 header checksum and the transport checksum with one adjustment each.
    @inlinable
    public static func rewrite<A: IPAddressProtocol>(
        _ b: inout MutableSpan<UInt8>, _ p: ParsedPacket,
        source: A? = nil, sourcePort: UInt16? = nil,
        destination: A? = nil, destinationPort: UInt16? = nil
    ) {
        var oldAddr: UInt64 = 0
        var newAddr: UInt64 = 0
        if let source {
            let old = A(b.span, at: p.sourceAddressOffset)
            oldAddr &+= old.wordSum
            newAddr &+= source.wordSum
            source.store(&b, at: p.sourceAddressOffset)
        }
        if let destination {
            let old = A(b.span, at: p.destinationAddressOffset)
            oldAddr &+= old.wordSum
            newAddr &+= destination.wordSum
            destination.store(&b, at: p.destinationAddressOffset)
        }
        if p.ipVersion == 4 && (source != nil || destination != nil) {
            let c = p.l3Offset &+ 10
            b.setBE16(InternetChecksum.update(b.be16(at: c), removing: oldAddr, adding: newAddr), at: c)
        }
        var oldL4 = oldAddr
        var newL4 = newAddr
        let portsPresent = p.hasPorts
        if portsPresent, let sourcePort {
            oldL4 &+= UInt64(b.be16(at: p.l4Offset))
            newL4 &+= UInt64(sourcePort)
            b.setBE16(sourcePort, at: p.l4Offset)
        }
        if portsPresent, let destinationPort {
            oldL4 &+= UInt64(b.be16(at: p.l4Offset &+ 2))
            newL4 &+= UInt64(destinationPort)
            b.setBE16(destinationPort, at: p.l4Offset &+ 2)
        }
        updateTransportChecksum(&b, p, removing: oldL4, adding: newL4)
    }

    /// Applies a checksum delta to the transport checksum. Address changes do
    /// not touch ICMPv4 (no pseudo-header); port changes only concern TCP/UDP.
    @inlinable
    public static func updateTransportChecksum(_ b: inout MutableSpan<UInt8>, _ p: ParsedPacket, removing old: UInt64, adding new: UInt64) {
        guard let c = p.pseudoHeaderChecksumOffset, c &+ 2 <= p.ipEnd else { return }
        let current = b.be16(at: c)
        if p.proto == IPProtocolNumber.udp {
            // IPv4 UDP checksum 0 means "none"; a computed 0 is sent as 0xFFFF.
            if p.ipVersion == 4 && current == 0 { return }
            let v = InternetChecksum.update(current, removing: old, adding: new)
            b.setBE16(v == 0 ? 0xFFFF : v, at: c)
            return
        }
        b.setBE16(InternetChecksum.update(current, removing: old, adding: new), at: c)
    }

    /// Decrements the TTL or hop limit; IPv4's checksum is adjusted.
    /// Returns false when the packet must not be forwarded (TTL ≤ 1).
    @inlinable @inline(__always)  // a call copied the whole ParsedPacket to pass it
    public static func decrementTTL(_ b: inout MutableSpan<UInt8>, _ p: ParsedPacket) -> Bool {
        if p.ipVersion == 4 {
            let ttlOffset = p.l3Offset &+ 8
            let ttl = b[ttlOffset]
            guard ttl > 1 else { return false }
            let oldWord = UInt64(b.be16(at: ttlOffset))
            b[ttlOffset] = ttl &- 1
            let c = p.l3Offset &+ 10
            b.setBE16(InternetChecksum.update(b.be16(at: c), removing: oldWord, adding: oldWord &- 0x100), at: c)
        } else {
            let hop = p.l3Offset &+ 7
            guard b[hop] > 1 else { return false }
            b[hop] &-= 1
        }
        return true
    }

    /// Recomputes the IPv4 header checksum from scratch.
    @inlinable
    public static func recomputeIPv4HeaderChecksum(_ b: inout MutableSpan<UInt8>, at l3: Int) {
        let ihl = Int(b[l3] & 0x0F) &* 4
        b.setBE16(0, at: l3 &+ 10)
        b.setBE16(InternetChecksum.finish(InternetChecksum.sum(b.span, from: l3, count: ihl)), at: l3 &+ 10)
    }

    /// Recomputes the transport checksum of a whole (unfragmented) datagram.
    @inlinable
    public static func recomputeTransportChecksum(_ b: inout MutableSpan<UInt8>, _ p: ParsedPacket) {
        let length = p.ipEnd &- p.l4Offset
        let c: Int
        switch p.proto {
        case IPProtocolNumber.tcp: c = p.l4Offset &+ 16
        case IPProtocolNumber.udp: c = p.l4Offset &+ 6
        case IPProtocolNumber.icmp, IPProtocolNumber.icmpv6: c = p.l4Offset &+ 2
        default: return
        }
        guard c &+ 2 <= p.ipEnd else { return }
        b.setBE16(0, at: c)
        var sum: UInt64 = 0
        if p.proto != IPProtocolNumber.icmp {
            if p.ipVersion == 4 {
                sum = InternetChecksum.pseudoHeaderSum(
                    source: IPv4Address(b.span, at: p.sourceAddressOffset), destination: IPv4Address(b.span, at: p.destinationAddressOffset), protocol: p.proto,
                    length: length)
            } else {
                sum = InternetChecksum.pseudoHeaderSum(
                    source: IPv6Address(b.span, at: p.sourceAddressOffset), destination: IPv6Address(b.span, at: p.destinationAddressOffset), protocol: p.proto,
                    length: length)
            }
        }
        sum = InternetChecksum.sum(b.span, from: p.l4Offset, count: length, initial: sum)
        var v = InternetChecksum.finish(sum)
        if p.proto == IPProtocolNumber.udp && v == 0 { v = 0xFFFF }
        b.setBE16(v, at: c)
    }

    /// Sets the IP length field after the datagram grew or shrank.
    @inlinable
    public static func setIPLength(_ b: inout MutableSpan<UInt8>, _ p: ParsedPacket) {
        if p.ipVersion == 4 {
            let old = UInt64(b.be16(at: p.l3Offset &+ 2))
            let new = UInt16(truncatingIfNeeded: p.ipEnd &- p.l3Offset)
            b.setBE16(new, at: p.l3Offset &+ 2)
            let c = p.l3Offset &+ 10
            b.setBE16(InternetChecksum.update(b.be16(at: c), removing: old, adding: UInt64(new)), at: c)
        } else {
            b.setBE16(UInt16(truncatingIfNeeded: p.ipEnd &- p.l3Offset &- HeaderLength.ipv6), at: p.l3Offset &+ 4)
        }
    }

    /// Writes destination and source MAC addresses.
    @inlinable @inline(__always)
    public static func setMACs(_ b: inout MutableSpan<UInt8>, frameStart: Int, destination: MACAddress, source: MACAddress) {
        // Two stores instead of four: destination (48 bits) and source (48 bits) as 64 + 32.
        b.setBE64(destination.value &<< 16 | source.value &>> 32, at: frameStart)
        b.setBE32(UInt32(truncatingIfNeeded: source.value), at: frameStart &+ 8)
    }
}

/// Where a packet's headers lie in a window over its frame (offsets from the
/// window's start), for the rewrites every forwarding method shares: the
/// fast path's window has them at constant offsets, the general path's
/// wherever the parser found them.
public struct HeaderLayout: Sendable, BitwiseCopyable {
    /// The IP header.
    public var ip: Int
    /// The transport header.
    public var transport: Int
    /// The transport checksum a pseudo-header covers; −1 when there is none
    /// to update (an IPv4 UDP datagram sent without one, a fragment after the
    /// first, ICMP, SCTP).
    public var checksum: Int
    /// The transport header starts with ports (not a fragment after the first).
    public var ports: Bool

    @inlinable @inline(__always)
    public init(ip: Int, transport: Int, checksum: Int, ports: Bool) {
        self.ip = ip
        self.transport = transport
        self.checksum = checksum
        self.ports = ports
    }

    /// The layout of a parsed packet, relative to its Ethernet header.
    @inlinable @inline(__always)
    public init(_ p: ParsedPacket, in b: borrowing MutableSpan<UInt8>) {
        let base = p.l2Offset
        var checksum = -1
        if let c = p.pseudoHeaderChecksumOffset, c &+ 2 <= p.ipEnd,
            !(p.proto == IPProtocolNumber.udp && p.ipVersion == 4 && b.be16(at: c) == 0)
        {
            checksum = c &- base
        }
        self.init(ip: p.l3Offset &- base, transport: p.l4Offset &- base, checksum: checksum, ports: p.hasPorts)
    }
}

extension PacketRewriter {
    /// The hop every forwarded packet takes: TTL or hop limit down by one
    /// (the caller has checked it is above 1); IPv4's header checksum takes
    /// that change and `addresses`, the addresses' change, if any.
    @inlinable @inline(__always)
    public static func hop<A: IPAddressProtocol>(_ h: inout MutableRawSpan, _ at: HeaderLayout, _: A.Type, addresses: UInt64 = 0) {
        if A.byteCount == 4 {
            // TTL − 1 lowers the word (TTL, protocol) by 0x100, so ~m + m' is 0xFEFF.
            h.setByte(h.byte(at: at.ip &+ 8) &- 1, at: at.ip &+ 8)
            h.setBE16(~InternetChecksum.fold(UInt64(~h.be16(at: at.ip &+ 10)) &+ addresses &+ 0xFEFF), at: at.ip &+ 10)
        } else {
            h.setByte(h.byte(at: at.ip &+ 7) &- 1, at: at.ip &+ 7)
        }
    }

    /// A hop that also changes addresses and ports (NAT, FULLNAT, either way):
    /// the old values are the caller's (it read them to find the connection),
    /// `ports` holds the source port in its high half; both checksums follow
    /// incrementally (RFC 1624), the addresses' change computed once for both.
    @inlinable @inline(__always)
    public static func forward<A: IPAddressProtocol>(
        _ h: inout MutableRawSpan, _ at: HeaderLayout,
        from oldSource: A, _ oldDestination: A, ports oldPorts: UInt32,
        to source: A, _ destination: A, ports newPorts: UInt32
    ) {
        // Left unfolded: folding once, in each checksum, gives the same result.
        let addresses = oldSource.complementSum &+ oldDestination.complementSum &+ source.wordSum32 &+ destination.wordSum32
        hop(&h, at, A.self, addresses: addresses)
        let addressOffset = at.ip &+ (A.byteCount == 4 ? 12 : 8)
        source.store(&h, at: addressOffset)
        destination.store(&h, at: addressOffset &+ A.byteCount)
        var transport = addresses
        if at.ports {
            h.setBE32(newPorts, at: at.transport)
            transport &+= UInt64(~oldPorts) &+ UInt64(newPorts)
        }
        guard at.checksum >= 0 else { return }
        let v = ~InternetChecksum.fold(UInt64(~h.be16(at: at.checksum)) &+ transport)
        // UDP sends a checksum that computes to 0 as 0xFFFF (0 means none);
        // for TCP and ICMPv6 the two are the same ones-complement zero.
        h.setBE16(v == 0 ? 0xFFFF : v, at: at.checksum)
    }
}
