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
        var oldAddr: UInt64 = 0, newAddr: UInt64 = 0
        if let source {
            let old = A(b.span, at: p.sourceAddressOffset)
            oldAddr &+= old.wordSum; newAddr &+= source.wordSum
            source.store(&b, at: p.sourceAddressOffset)
        }
        if let destination {
            let old = A(b.span, at: p.destinationAddressOffset)
            oldAddr &+= old.wordSum; newAddr &+= destination.wordSum
            destination.store(&b, at: p.destinationAddressOffset)
        }
        if p.ipVersion == 4 && (source != nil || destination != nil) {
            let c = p.l3Offset &+ 10
            b.setBE16(InternetChecksum.update(b.be16(at: c), removing: oldAddr, adding: newAddr), at: c)
        }
        var oldL4 = oldAddr, newL4 = newAddr
        let portsPresent = p.hasPorts
        if portsPresent, let sourcePort {
            oldL4 &+= UInt64(b.be16(at: p.l4Offset)); newL4 &+= UInt64(sourcePort)
            b.setBE16(sourcePort, at: p.l4Offset)
        }
        if portsPresent, let destinationPort {
            oldL4 &+= UInt64(b.be16(at: p.l4Offset &+ 2)); newL4 &+= UInt64(destinationPort)
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
                sum = InternetChecksum.pseudoHeaderSum(source: IPv4Address(b.span, at: p.sourceAddressOffset), destination: IPv4Address(b.span, at: p.destinationAddressOffset), protocol: p.proto, length: length)
            } else {
                sum = InternetChecksum.pseudoHeaderSum(source: IPv6Address(b.span, at: p.sourceAddressOffset), destination: IPv6Address(b.span, at: p.destinationAddressOffset), protocol: p.proto, length: length)
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
