/// Why a frame was not parsed. Each case is a counted drop reason.
public enum PacketError: UInt8, Error, CaseIterable, Sendable, CustomStringConvertible {
    case truncatedEthernet = 1
    case truncatedVLAN
    case unsupportedEtherType
    case truncatedARP
    case unsupportedARP
    case truncatedIPv4
    case badIPVersion
    case badIHL
    case ipv4TotalLengthBeyondFrame
    case ipv4TotalLengthBelowHeader
    case badIPv4Checksum
    case truncatedIPv6
    case ipv6PayloadLengthBeyondFrame
    case truncatedExtensionHeader
    case tooManyExtensionHeaders
    case misplacedHopByHop
    case truncatedTCP
    case tcpDataOffsetBelowFive
    case tcpHeaderBeyondSegment
    case truncatedUDP
    case badUDPLength
    case truncatedICMP
    case badTCPOptions
    /// An SCTP packet shorter than its common header and one chunk header.
    case truncatedSCTP

    public var description: String {
        switch self {
        case .truncatedEthernet: "truncated-ethernet"
        case .truncatedVLAN: "truncated-vlan"
        case .unsupportedEtherType: "unsupported-ethertype"
        case .truncatedARP: "truncated-arp"
        case .unsupportedARP: "unsupported-arp"
        case .truncatedIPv4: "truncated-ipv4"
        case .badIPVersion: "bad-ip-version"
        case .badIHL: "bad-ihl"
        case .ipv4TotalLengthBeyondFrame: "ipv4-total-length-beyond-frame"
        case .ipv4TotalLengthBelowHeader: "ipv4-total-length-below-header"
        case .badIPv4Checksum: "bad-ipv4-checksum"
        case .truncatedIPv6: "truncated-ipv6"
        case .ipv6PayloadLengthBeyondFrame: "ipv6-payload-length-beyond-frame"
        case .truncatedExtensionHeader: "truncated-extension-header"
        case .tooManyExtensionHeaders: "too-many-extension-headers"
        case .misplacedHopByHop: "misplaced-hop-by-hop"
        case .truncatedTCP: "truncated-tcp"
        case .tcpDataOffsetBelowFive: "tcp-data-offset-below-5"
        case .tcpHeaderBeyondSegment: "tcp-header-beyond-segment"
        case .truncatedUDP: "truncated-udp"
        case .badUDPLength: "bad-udp-length"
        case .truncatedICMP: "truncated-icmp"
        case .badTCPOptions: "bad-tcp-options"
        case .truncatedSCTP: "truncated-sctp"
        }
    }
}
