/// Where a frame lies inside its buffer: buffers keep headroom before the
/// frame so that encapsulation and option insertion grow it in place.
public struct FrameBounds: Sendable, BitwiseCopyable, Equatable {
    public var start: Int
    public var length: Int
    @inlinable public init(start: Int, length: Int) {
        self.start = start
        self.length = length
    }
    @inlinable public var end: Int { start &+ length }
}

/// Why a frame could not be grown or rewritten in place.
public enum EditError: UInt8, Error, Sendable, CustomStringConvertible {
    case noHeadroom = 1
    case noOptionSpace
    case exceedsMTU
    case notTCP

    public var description: String {
        switch self {
        case .noHeadroom: "no-headroom"
        case .noOptionSpace: "no-option-space"
        case .exceedsMTU: "exceeds-mtu"
        case .notTCP: "not-tcp"
        }
    }
}

extension ParsedPacket {
    /// Moves every offset by `delta` after the frame's headers moved in the buffer.
    @inlinable
    public mutating func shift(by delta: Int) {
        l2Offset &+= delta
        l3Offset &+= delta
        l4Offset &+= delta
        ipEnd &+= delta
        if ipv6FragmentHeaderOffset != 0 { ipv6FragmentHeaderOffset &+= delta }
    }

    /// Offset of the transport checksum covering a pseudo-header, or nil when
    /// the packet has none that an address change affects.
    @inlinable @inline(__always)
    public var pseudoHeaderChecksumOffset: Int? {
        guard fragment != .subsequent else { return nil }
        switch proto {
        case IPProtocolNumber.tcp: return l4Offset &+ 16
        case IPProtocolNumber.udp: return l4Offset &+ 6
        case IPProtocolNumber.icmpv6: return l4Offset &+ 2
        default: return nil
        }
    }
}
