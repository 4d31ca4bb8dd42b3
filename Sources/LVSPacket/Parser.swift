/// Where a datagram sits among its fragments.
public enum FragmentKind: UInt8, Sendable, BitwiseCopyable {
    /// A whole datagram.
    case none
    /// Offset 0 with more fragments: carries the transport header.
    case first
    /// Offset > 0: no transport header; must not be parsed as if whole.
    case subsequent
}

/// Offsets and fields of one parsed frame. It holds no bytes: every offset
/// points into the frame it was parsed from.
public struct ParsedPacket: Sendable, BitwiseCopyable {
    /// Start of the Ethernet header.
    public var l2Offset: Int = 0
    public var etherType: UInt16 = 0
    /// 0 when untagged.
    public var vlanTCI: UInt16 = 0
    public var l3Offset: Int = 0
    /// 4 or 6; 0 for ARP.
    public var ipVersion: UInt8 = 0
    /// End of the IP datagram in the frame (the frame may carry padding past it).
    public var ipEnd: Int = 0
    /// The upper-layer protocol after extension headers.
    public var proto: UInt8 = 0
    public var l4Offset: Int = 0
    public var l4HeaderLength: Int = 0
    public var fragment: FragmentKind = .none
    /// IPv4 identification, or the IPv6 fragment header's identification.
    public var fragmentID: UInt32 = 0
    /// Offset of the IPv6 fragment header, 0 when absent.
    public var ipv6FragmentHeaderOffset: Int = 0
    public var sourcePort: UInt16 = 0
    public var destinationPort: UInt16 = 0
    /// What moves the connection's state: TCP's flags, or for SCTP the
    /// event of its chunks (`SCTPEvent`).
    public var tcpFlags: UInt8 = 0
    /// TTL or hop limit.
    public var ttl: UInt8 = 0
    public var icmpType: UInt8 = 0
    public var icmpCode: UInt8 = 0

    public init() {}

    @inlinable public var etherHeaderLength: Int { l3Offset &- l2Offset }
    @inlinable public var isIPv4: Bool { ipVersion == 4 }
    @inlinable public var isIPv6: Bool { ipVersion == 6 }
    @inlinable public var sourceAddressOffset: Int { l3Offset &+ (ipVersion == 4 ? 12 : 8) }
    @inlinable public var destinationAddressOffset: Int { l3Offset &+ (ipVersion == 4 ? 16 : 24) }
    /// Transport payload length (bytes after the TCP/UDP header).
    @inlinable public var payloadLength: Int { ipEnd &- l4Offset &- l4HeaderLength }
    @inlinable public var hasPorts: Bool {
        fragment != .subsequent && (proto == IPProtocolNumber.tcp || proto == IPProtocolNumber.udp || proto == IPProtocolNumber.sctp)
    }
}

public enum PacketParser {
    /// Parses an Ethernet frame (with at most one VLAN tag) down to the
    /// transport header. Never reads outside `frame`.
    @inlinable
    public static func parse(_ frame: Span<UInt8>) throws(PacketError) -> ParsedPacket {
        try parse(frame, start: 0, end: frame.count)
    }

    /// Parses the frame that occupies `start..<end` of `buffer`; every offset
    /// in the result is a position in `buffer`.
    @inlinable
    public static func parse(_ buffer: Span<UInt8>, start: Int, end: Int) throws(PacketError) -> ParsedPacket {
        var p = ParsedPacket()
        guard start >= 0, end <= buffer.count, end &- start >= HeaderLength.ethernet else { throw .truncatedEthernet }
        p.l2Offset = start
        var type = buffer.be16(at: start &+ 12)
        var l3 = start &+ HeaderLength.ethernet
        if type == EtherType.vlan {
            guard end &- start >= HeaderLength.ethernet &+ HeaderLength.vlanTag else { throw .truncatedVLAN }
            p.vlanTCI = buffer.be16(at: start &+ 14)
            type = buffer.be16(at: start &+ 16)
            l3 &+= HeaderLength.vlanTag
        }
        p.etherType = type
        p.l3Offset = l3
        switch type {
        case EtherType.ipv4, EtherType.ipv6:
            try parseIP(buffer, into: &p, limit: end, quoted: false)
        case EtherType.arp:
            guard end &- l3 >= HeaderLength.arp else { throw .truncatedARP }
            guard buffer.be16(at: l3) == 1, buffer.be16(at: l3 &+ 2) == EtherType.ipv4,
                buffer[l3 &+ 4] == 6, buffer[l3 &+ 5] == 4
            else { throw .unsupportedARP }
            p.ipEnd = l3 &+ HeaderLength.arp
        default:
            throw .unsupportedEtherType
        }
        return p
    }

    /// Parses an IP datagram at `p.l3Offset`. With `quoted` (the datagram
    /// inside an ICMP error), the length fields may exceed what is present:
    /// only the headers must be there, and the checksum is not verified.
    @inlinable
    public static func parseIP(_ frame: Span<UInt8>, into p: inout ParsedPacket, limit: Int, quoted: Bool) throws(PacketError) {
        let l3 = p.l3Offset
        guard l3 < limit, limit <= frame.count else { throw .truncatedIPv4 }
        let version = frame[l3] &>> 4
        if version == 4 {
            guard limit &- l3 >= HeaderLength.ipv4 else { throw .truncatedIPv4 }
            let ihl = Int(frame[l3] & 0x0F) &* 4
            guard ihl >= HeaderLength.ipv4 else { throw .badIHL }
            guard limit &- l3 >= ihl else { throw .truncatedIPv4 }
            let total = Int(frame.be16(at: l3 &+ 2))
            guard total >= ihl else { throw .ipv4TotalLengthBelowHeader }
            if quoted {
                p.ipEnd = min(l3 &+ total, limit)
            } else {
                guard l3 &+ total <= limit else { throw .ipv4TotalLengthBeyondFrame }
                p.ipEnd = l3 &+ total
                // Nearly every header has no options: five loads instead of the general loop.
                let sum =
                    ihl == HeaderLength.ipv4
                    ? UInt64(frame.be32(at: l3)) &+ UInt64(frame.be32(at: l3 &+ 4)) &+ UInt64(frame.be32(at: l3 &+ 8))
                        &+ UInt64(frame.be32(at: l3 &+ 12)) &+ UInt64(frame.be32(at: l3 &+ 16))
                    : InternetChecksum.sum(frame, from: l3, count: ihl)
                guard InternetChecksum.fold(sum) == 0xFFFF else { throw .badIPv4Checksum }
            }
            p.ipVersion = 4
            p.ttl = frame[l3 &+ 8]
            p.proto = frame[l3 &+ 9]
            p.fragmentID = UInt32(frame.be16(at: l3 &+ 4))
            let frag = frame.be16(at: l3 &+ 6)
            let offset = frag & 0x1FFF
            let more = frag & 0x2000 != 0
            p.fragment = offset != 0 ? .subsequent : (more ? .first : .none)
            p.l4Offset = l3 &+ ihl
        } else if version == 6 {
            guard limit &- l3 >= HeaderLength.ipv6 else { throw .truncatedIPv6 }
            let payload = Int(frame.be16(at: l3 &+ 4))
            if quoted {
                p.ipEnd = min(l3 &+ HeaderLength.ipv6 &+ payload, limit)
            } else {
                guard l3 &+ HeaderLength.ipv6 &+ payload <= limit else { throw .ipv6PayloadLengthBeyondFrame }
                p.ipEnd = l3 &+ HeaderLength.ipv6 &+ payload
            }
            p.ipVersion = 6
            p.ttl = frame[l3 &+ 7]
            var next = frame[l3 &+ 6]
            var offset = l3 &+ HeaderLength.ipv6
            var count = 0
            extensionHeaders: while true {
                switch next {
                case IPProtocolNumber.hopByHop, IPProtocolNumber.routing, IPProtocolNumber.destinationOptions:
                    if next == IPProtocolNumber.hopByHop && count != 0 { throw .misplacedHopByHop }
                    guard p.ipEnd &- offset >= 8 else { throw .truncatedExtensionHeader }
                    let length = (Int(frame[offset &+ 1]) &+ 1) &* 8
                    guard p.ipEnd &- offset >= length else { throw .truncatedExtensionHeader }
                    next = frame[offset]
                    offset &+= length
                case IPProtocolNumber.fragment:
                    guard p.ipEnd &- offset >= 8 else { throw .truncatedExtensionHeader }
                    let fragField = frame.be16(at: offset &+ 2)
                    p.fragmentID = frame.be32(at: offset &+ 4)
                    p.ipv6FragmentHeaderOffset = offset
                    p.fragment = fragField & 0xFFF8 != 0 ? .subsequent : (fragField & 1 != 0 ? .first : .none)
                    next = frame[offset]
                    offset &+= 8
                    if p.fragment == .subsequent { break extensionHeaders }
                case IPProtocolNumber.ah:
                    guard p.ipEnd &- offset >= 8 else { throw .truncatedExtensionHeader }
                    let length = (Int(frame[offset &+ 1]) &+ 2) &* 4
                    guard p.ipEnd &- offset >= length else { throw .truncatedExtensionHeader }
                    next = frame[offset]
                    offset &+= length
                default:
                    break extensionHeaders
                }
                count &+= 1
                guard count <= 8 else { throw .tooManyExtensionHeaders }
            }
            p.proto = next
            p.l4Offset = offset
        } else {
            throw .badIPVersion
        }
        if p.fragment == .subsequent { return }
        try parseTransport(frame, into: &p, quoted: quoted)
    }

    @inlinable
    static func parseTransport(_ frame: Span<UInt8>, into p: inout ParsedPacket, quoted: Bool) throws(PacketError) {
        let l4 = p.l4Offset
        let available = p.ipEnd &- l4
        switch p.proto {
        case IPProtocolNumber.tcp:
            // An ICMP error quotes at least 8 bytes of the transport header: the ports and sequence.
            if quoted {
                guard available >= 8 else { throw .truncatedTCP }
                p.sourcePort = frame.be16(at: l4)
                p.destinationPort = frame.be16(at: l4 &+ 2)
                if available >= 14 { p.tcpFlags = frame[l4 &+ 13] }
                return
            }
            guard available >= HeaderLength.tcp else { throw .truncatedTCP }
            let doff = Int(frame[l4 &+ 12] &>> 4) &* 4
            guard doff >= HeaderLength.tcp else { throw .tcpDataOffsetBelowFive }
            guard doff <= available else { throw .tcpHeaderBeyondSegment }
            p.l4HeaderLength = doff
            p.sourcePort = frame.be16(at: l4)
            p.destinationPort = frame.be16(at: l4 &+ 2)
            p.tcpFlags = frame[l4 &+ 13]
        case IPProtocolNumber.udp:
            guard available >= HeaderLength.udp || (quoted && available >= 4) else { throw .truncatedUDP }
            p.sourcePort = frame.be16(at: l4)
            p.destinationPort = frame.be16(at: l4 &+ 2)
            p.l4HeaderLength = HeaderLength.udp
            if !quoted && p.fragment == .none {
                let length = Int(frame.be16(at: l4 &+ 4))
                guard length >= HeaderLength.udp, length <= available else { throw .badUDPLength }
            }
        case IPProtocolNumber.sctp:
            guard available >= HeaderLength.sctp &+ HeaderLength.sctpChunk || (quoted && available >= 8) else { throw .truncatedSCTP }
            p.sourcePort = frame.be16(at: l4)
            p.destinationPort = frame.be16(at: l4 &+ 2)
            p.l4HeaderLength = HeaderLength.sctp
            if !quoted { p.tcpFlags = SCTPEvent.of(frame, chunk: l4 &+ HeaderLength.sctp, end: p.ipEnd) }
        case IPProtocolNumber.icmp, IPProtocolNumber.icmpv6:
            guard available >= HeaderLength.icmp || (quoted && available >= 4) else { throw .truncatedICMP }
            p.icmpType = frame[l4]
            p.icmpCode = frame[l4 &+ 1]
            p.l4HeaderLength = HeaderLength.icmp
        default:
            break
        }
    }

    /// Parses the datagram quoted in an ICMP or ICMPv6 error whose transport
    /// header starts at `outer.l4Offset`.
    @inlinable
    public static func parseQuoted(_ frame: Span<UInt8>, outer: ParsedPacket) throws(PacketError) -> ParsedPacket {
        var q = ParsedPacket()
        q.etherType = outer.etherType
        q.l3Offset = outer.l4Offset &+ HeaderLength.icmp
        try parseIP(frame, into: &q, limit: outer.ipEnd, quoted: true)
        return q
    }
}

extension PacketParser {
    /// True for ICMP types that report an error about a quoted datagram
    /// (IPVS treats DEST_UNREACH, SOURCE_QUENCH and TIME_EXCEEDED as related).
    @inlinable
    public static func isICMPError(_ p: ParsedPacket) -> Bool {
        if p.proto == IPProtocolNumber.icmp { return p.icmpType == 3 || p.icmpType == 4 || p.icmpType == 11 }
        if p.proto == IPProtocolNumber.icmpv6 { return p.icmpType >= 1 && p.icmpType <= 4 }
        return false
    }
}
