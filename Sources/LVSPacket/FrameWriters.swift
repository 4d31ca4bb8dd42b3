/// Frames lvsd writes itself: ARP, neighbour discovery and ICMP errors,
/// each in place in a buffer it is given.
public enum ARPWriter {
    public static func write(
        _ b: inout MutableSpan<UInt8>, at s: Int, operation: UInt16, senderMAC: MACAddress, sender: IPv4Address,
        targetMAC: MACAddress, target: IPv4Address, ethernetDestination: MACAddress
    ) {
        PacketRewriter.setMACs(&b, frameStart: s, destination: ethernetDestination, source: senderMAC)
        b.setBE16(EtherType.arp, at: s + 12)
        let a = s + 14
        b.setBE16(1, at: a)
        b.setBE16(EtherType.ipv4, at: a + 2)
        b[a + 4] = 6
        b[a + 5] = 4
        b.setBE16(operation, at: a + 6)
        senderMAC.store(&b, at: a + 8)
        sender.store(&b, at: a + 14)
        targetMAC.store(&b, at: a + 18)
        target.store(&b, at: a + 24)
    }
}

/// IPv6 neighbour discovery frames lvsd sends itself (RFC 4861): 86 bytes,
/// Ethernet + IPv6 (hop limit 255) + ICMPv6 + one link-layer address option.
public enum NeighbourDiscovery {
    /// A solicitation for `target`, to its solicited-node multicast group.
    public static func writeSolicitation(_ b: inout MutableSpan<UInt8>, at s: Int, sourceMAC: MACAddress, source: IPv6Address, target: IPv6Address) {
        let group = IPv6Address(high: 0xFF02_0000_0000_0000, low: 0x0000_0001_FF00_0000 | (target.low & 0xFF_FFFF))
        write(
            &b, at: s, ethernetDestination: MACAddress(0x3333_0000_0000 | (group.low & 0xFFFF_FFFF)), sourceMAC: sourceMAC,
            source: source, destination: group, type: 135, flags: 0, target: target, option: 1)
    }

    /// An unsolicited advertisement (override set) of `target` to all nodes.
    public static func writeAdvertisement(_ b: inout MutableSpan<UInt8>, at s: Int, sourceMAC: MACAddress, target: IPv6Address) {
        let allNodes = IPv6Address(high: 0xFF02_0000_0000_0000, low: 1)
        write(
            &b, at: s, ethernetDestination: MACAddress(0x3333_0000_0001), sourceMAC: sourceMAC,
            source: target, destination: allNodes, type: 136, flags: 0x2000_0000, target: target, option: 2)
    }

    public static func write(
        _ b: inout MutableSpan<UInt8>, at s: Int, ethernetDestination: MACAddress, sourceMAC: MACAddress,
        source: IPv6Address, destination: IPv6Address, type: UInt8, flags: UInt32, target: IPv6Address, option: UInt8
    ) {
        PacketRewriter.setMACs(&b, frameStart: s, destination: ethernetDestination, source: sourceMAC)
        b.setBE16(EtherType.ipv6, at: s + 12)
        let ip = s + 14
        let icmp = s + 54
        b.setBE32(0x6000_0000, at: ip)
        b.setBE16(32, at: ip + 4)
        b[ip + 6] = IPProtocolNumber.icmpv6
        b[ip + 7] = 255
        source.store(&b, at: ip + 8)
        destination.store(&b, at: ip + 24)
        b[icmp] = type
        b[icmp + 1] = 0
        b.setBE16(0, at: icmp + 2)
        b.setBE32(flags, at: icmp + 4)
        target.store(&b, at: icmp + 8)
        b[icmp + 24] = option
        b[icmp + 25] = 1
        sourceMAC.store(&b, at: icmp + 26)
        let sum = InternetChecksum.sum(
            b.span, from: icmp, count: 32,
            initial: InternetChecksum.pseudoHeaderSum(source: source, destination: destination, protocol: IPProtocolNumber.icmpv6, length: 32))
        b.setBE16(InternetChecksum.finish(sum), at: icmp + 2)
    }
}

/// ICMP errors lvsd sends itself, from the address the packet was sent to,
/// back to the hop it came from.
public enum ICMPWriter {
    /// "Fragmentation needed" (3/4) with the MTU left.
    public static func fragmentationNeeded(_ b: inout MutableSpan<UInt8>, _ f: inout FrameBounds, _ p: ParsedPacket, mtu: Int, from mac: MACAddress) {
        ipv4Error(&b, &f, p, type: 3, code: 4, rest: UInt32(truncatingIfNeeded: mtu) & 0xFFFF, from: mac)
    }

    /// ICMPv6 "packet too big" (2) with the MTU left.
    public static func packetTooBig(_ b: inout MutableSpan<UInt8>, _ f: inout FrameBounds, _ p: ParsedPacket, mtu: Int, from mac: MACAddress) {
        ipv6Error(&b, &f, p, type: 2, code: 0, rest: UInt32(truncatingIfNeeded: mtu), from: mac)
    }

    /// "Time exceeded in transit" (ICMP 11/0, ICMPv6 3/0), as the kernel's
    /// decrement_ttl sends it.
    public static func timeExceeded(_ b: inout MutableSpan<UInt8>, _ f: inout FrameBounds, _ p: ParsedPacket, from mac: MACAddress) {
        if p.isIPv4 {
            ipv4Error(&b, &f, p, type: 11, code: 0, rest: 0, from: mac)
        } else {
            ipv6Error(&b, &f, p, type: 3, code: 0, rest: 0, from: mac)
        }
    }

    /// Turns an IPv4 packet into an ICMP error quoting its header and first 8 bytes.
    public static func ipv4Error(
        _ b: inout MutableSpan<UInt8>, _ f: inout FrameBounds, _ p: ParsedPacket, type: UInt8, code: UInt8, rest: UInt32,
        from mac: MACAddress
    ) {
        let s = f.start
        let previousHop = MACAddress(b.span, at: s &+ 6)
        let client = IPv4Address(b.span, at: p.sourceAddressOffset)
        let vip = IPv4Address(b.span, at: p.destinationAddressOffset)
        let ihl = Int(b[p.l3Offset] & 0x0F) &* 4
        let quoted = min(ihl &+ 8, p.ipEnd &- p.l3Offset)
        b.moveBytes(from: p.l3Offset, to: s &+ 42, count: quoted)
        PacketRewriter.setMACs(&b, frameStart: s, destination: previousHop, source: mac)
        b.setBE16(EtherType.ipv4, at: s &+ 12)
        let ip = s &+ 14
        let icmp = s &+ 34
        b.setBE32(0x4500_0000 | UInt32(28 &+ quoted), at: ip)
        b.setBE32(0x0000_4000, at: ip &+ 4)
        b.setBE32(0x4001_0000, at: ip &+ 8)  // TTL 64, ICMP, checksum 0 for now
        vip.store(&b, at: ip &+ 12)
        client.store(&b, at: ip &+ 16)
        b.setBE16(InternetChecksum.finish(InternetChecksum.sum(b.span, from: ip, count: 20)), at: ip &+ 10)
        b.setBE32(UInt32(type) &<< 24 | UInt32(code) &<< 16, at: icmp)
        b.setBE32(rest, at: icmp &+ 4)
        b.setBE16(InternetChecksum.finish(InternetChecksum.sum(b.span, from: icmp, count: 8 &+ quoted)), at: icmp &+ 2)
        f.length = 42 &+ quoted
    }

    /// Turns an IPv6 packet into an ICMPv6 error quoting as much of it as
    /// keeps the error within the minimum MTU of 1280.
    public static func ipv6Error(
        _ b: inout MutableSpan<UInt8>, _ f: inout FrameBounds, _ p: ParsedPacket, type: UInt8, code: UInt8, rest: UInt32,
        from mac: MACAddress
    ) {
        let s = f.start
        let previousHop = MACAddress(b.span, at: s &+ 6)
        let client = IPv6Address(b.span, at: p.sourceAddressOffset)
        let vip = IPv6Address(b.span, at: p.destinationAddressOffset)
        let quoted = min(p.ipEnd &- p.l3Offset, 1280 &- 48)
        b.moveBytes(from: p.l3Offset, to: s &+ 62, count: quoted)
        PacketRewriter.setMACs(&b, frameStart: s, destination: previousHop, source: mac)
        b.setBE16(EtherType.ipv6, at: s &+ 12)
        let ip = s &+ 14
        let icmp = s &+ 54
        b.setBE32(0x6000_0000, at: ip)
        b.setBE16(UInt16(truncatingIfNeeded: 8 &+ quoted), at: ip &+ 4)
        b[ip &+ 6] = IPProtocolNumber.icmpv6
        b[ip &+ 7] = 64
        vip.store(&b, at: ip &+ 8)
        client.store(&b, at: ip &+ 24)
        b.setBE32(UInt32(type) &<< 24 | UInt32(code) &<< 16, at: icmp)
        b.setBE32(rest, at: icmp &+ 4)
        let sum = InternetChecksum.sum(
            b.span, from: icmp, count: 8 &+ quoted,
            initial: InternetChecksum.pseudoHeaderSum(source: vip, destination: client, protocol: IPProtocolNumber.icmpv6, length: 8 &+ quoted))
        b.setBE16(InternetChecksum.finish(sum), at: icmp &+ 2)
        f.length = 62 &+ quoted
    }
}
