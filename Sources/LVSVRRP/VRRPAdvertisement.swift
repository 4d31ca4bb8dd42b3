import LVSConfiguration
import LVSControlProtocol
import LVSDaemon
import LVSPacket
import LVSSystem

/// A VRRP advertisement: version 3 (RFC 5798), over IPv4 or IPv6, or 2
/// (RFC 3768, IPv4 only; what keepalived sends unless told
/// `vrrp_version 3`). Over IPv4 it travels with its own IPv4 header (TTL
/// 255, protocol 112, to 224.0.0.18); over IPv6 the kernel adds the header
/// (hop limit 255, to ff02::12) and the checksum covers its pseudo-header.
public struct VRRPAdvertisement: Sendable, Hashable {
    public static let group = IPv4Address(0xE000_0012)
    public static let group6 = IPv6Address(high: 0xFF02_0000_0000_0000, low: 0x12)
    public static let protocolNumber: UInt8 = 112

    public var version: Int
    public var virtualRouterID: UInt8
    public var priority: UInt8
    /// Centiseconds (version 2 carries whole seconds).
    public var interval: UInt16
    /// All of one family.
    public var addresses: [IPAddress]
    /// Version 2's Auth Type: 0 none, 1 simple text password, 2 IPsec AH.
    public var authenticationType: UInt8
    /// Type 1's 8 bytes after the addresses (zeros for the other types).
    public var authenticationData: [UInt8]

    public init(
        version: Int, virtualRouterID: UInt8, priority: UInt8, interval: UInt16, addresses: [IPAddress], authentication: VRRPAuthentication? = nil
    ) {
        self.version = version
        self.virtualRouterID = virtualRouterID
        self.priority = priority
        self.interval = interval
        self.addresses = addresses
        authenticationType = authentication?.type ?? 0
        if case .password(let p)? = authentication { authenticationData = p } else { authenticationData = [UInt8](repeating: 0, count: 8) }
    }

    /// RFC 3768 §7.1: an advertisement whose authentication is not the one
    /// configured (type or password) is discarded. Type 2's header is
    /// checked before (`VRRPAuthenticationHeader.open`).
    public func authenticates(_ configured: VRRPAuthentication?) -> Bool {
        guard version == 2 else { return true }
        switch configured {
        case nil: return authenticationType == 0
        case .password(let p)?: return authenticationType == 1 && authenticationData == p
        case .header?: return authenticationType == 2
        }
    }

    public enum DecodeError: Error, Equatable, CustomStringConvertible {
        case truncated, notVRRP
        case ttl(UInt8)
        case version(Int)
        case type(Int)
        case checksum, addressCount
        public var description: String {
            switch self {
            case .truncated: "truncated"
            case .notVRRP: "not a VRRP packet to the VRRP group"
            case .ttl(let t): "TTL or hop limit \(t), not 255"
            case .version(let v): "VRRP version \(v)"
            case .type(let t): "VRRP type \(t)"
            case .checksum: "bad checksum"
            case .addressCount: "address count beyond the packet"
            }
        }
    }

    /// The VRRP message alone, its checksum over the pseudo-header of
    /// `source` → `destination`, the group unless unicast (version 3), or
    /// over itself (version 2).
    public func message(source: IPAddress, destination: IPAddress? = nil) -> [UInt8] {
        var v: [UInt8] = [UInt8(version << 4 | 1), virtualRouterID, priority, UInt8(addresses.count)]
        if version == 3 {
            v += [UInt8(interval >> 8 & 0x0F), UInt8(interval & 0xFF), 0, 0]
        } else {
            v += [authenticationType, UInt8(min(255, interval / 100)), 0, 0]
        }
        for a in addresses { v += Self.bytes(a) }
        if version == 2 { v += authenticationData }
        let sum = Self.checksum(v, pseudo: version == 3 ? (source, destination ?? Self.group(for: source)) : nil)
        v[6] = UInt8(sum >> 8)
        v[7] = UInt8(sum & 0xFF)
        return v
    }

    /// The whole IPv4 packet from `source`, to the group or a unicast peer.
    public func encode(source: IPv4Address, destination: IPv4Address = group, identification: UInt16 = 0) -> [UInt8] {
        let v = message(source: .v4(source), destination: .v4(destination))
        let total = 20 + v.count
        var ip: [UInt8] =
            [
                0x45, 0xC0, UInt8(total >> 8), UInt8(total & 0xFF), UInt8(identification >> 8), UInt8(identification & 0xFF), 0, 0,
                255, Self.protocolNumber, 0, 0,
            ] + Self.be32(source.value) + Self.be32(destination.value)
        let h = Self.checksum(ip, pseudo: nil)
        ip[10] = UInt8(h >> 8)
        ip[11] = UInt8(h & 0xFF)
        return ip + v
    }

    /// An advertisement and its sender from a received IPv4 packet, sent to
    /// the group or, with `unicastTo`, to that address.
    public static func decode(_ p: [UInt8], unicastTo: IPv4Address? = nil) throws(DecodeError) -> (VRRPAdvertisement, source: IPAddress) {
        guard p.count >= 20, p[0] >> 4 == 4 else { throw .truncated }
        let ihl = Int(p[0] & 0x0F) * 4
        guard ihl >= 20, p.count >= ihl + 8 else { throw .truncated }
        guard p[9] == protocolNumber, be32(p, 16) == (unicastTo ?? group).value else { throw .notVRRP }
        guard p[8] == 255 else { throw .ttl(p[8]) }
        let total = min(p.count, Int(p[2]) << 8 | Int(p[3]))
        guard total >= ihl + 8 else { throw .truncated }
        let source = IPAddress.v4(IPv4Address(be32(p, 12)))
        return (try decodeMessage(Array(p[ihl..<total]), source: source, destination: unicastTo.map { .v4($0) }), source)
    }

    /// The VRRP message of an IPv6 packet from `source` (the kernel keeps the
    /// header; `hopLimit` is its), to the group or, with `unicastTo`, to that address.
    public static func decode6(_ v: [UInt8], source: IPv6Address, hopLimit: Int, unicastTo: IPv6Address? = nil) throws(DecodeError) -> VRRPAdvertisement {
        guard hopLimit == 255 else { throw .ttl(UInt8(clamping: hopLimit)) }
        let a = try decodeMessage(v, source: .v6(source), destination: unicastTo.map { .v6($0) })
        guard a.version == 3 else { throw .version(a.version) }
        return a
    }

    static func decodeMessage(_ v: [UInt8], source: IPAddress, destination: IPAddress? = nil) throws(DecodeError) -> VRRPAdvertisement {
        guard v.count >= 8 else { throw .truncated }
        let version = Int(v[0] >> 4)
        guard version == 2 || version == 3 else { throw .version(version) }
        guard v[0] & 0x0F == 1 else { throw .type(Int(v[0] & 0x0F)) }
        let count = Int(v[3])
        let width = source.isIPv6 ? 16 : 4
        guard 8 + width * count <= v.count else { throw .addressCount }
        guard checksum(v, pseudo: version == 3 ? (source, destination ?? group(for: source)) : nil) == 0 else { throw .checksum }
        let interval = version == 3 ? UInt16(v[4] & 0x0F) << 8 | UInt16(v[5]) : UInt16(v[5]) * 100
        let addresses: [IPAddress] = (0..<count).map { k in
            let at = 8 + width * k
            return source.isIPv6 ? .v6(IPv6Address(Array(v[at..<at + 16]).span, at: 0)) : .v4(IPv4Address(be32(v, at)))
        }
        var a = VRRPAdvertisement(version: version, virtualRouterID: v[1], priority: v[2], interval: interval, addresses: addresses)
        if version == 2 {
            // The authentication data after the addresses: type 1's password (a short one matches no password).
            let at = 8 + width * count
            a.authenticationType = v[4]
            a.authenticationData = v.count >= at + 8 ? Array(v[at..<at + 8]) : []
        }
        return a
    }

    static func group(for source: IPAddress) -> IPAddress { source.isIPv6 ? .v6(group6) : .v4(group) }

    static func be32(_ x: UInt32) -> [UInt8] { [UInt8(x >> 24), UInt8(x >> 16 & 0xFF), UInt8(x >> 8 & 0xFF), UInt8(x & 0xFF)] }
    static func be32(_ b: [UInt8], _ at: Int) -> UInt32 {
        UInt32(b[at]) << 24 | UInt32(b[at + 1]) << 16 | UInt32(b[at + 2]) << 8 | UInt32(b[at + 3])
    }

    static func bytes(_ a: IPAddress) -> [UInt8] {
        switch a {
        case .v4(let x): be32(x.value)
        case .v6(let x): (0..<16).map { k in UInt8(truncatingIfNeeded: (k < 8 ? x.high : x.low) >> (56 - 8 * UInt64(k % 8))) }
        }
    }

    /// The Internet checksum of `bytes` (0 when a stored checksum is right),
    /// with the IPv4 or IPv6 pseudo-header for version 3.
    static func checksum(_ bytes: [UInt8], pseudo: (IPAddress, IPAddress)?) -> UInt16 {
        var sum: UInt32 = 0
        func add(_ b: [UInt8]) {
            var i = 0
            while i + 1 < b.count {
                sum += UInt32(b[i]) << 8 | UInt32(b[i + 1])
                i += 2
            }
            if i < b.count { sum += UInt32(b[i]) << 8 }
        }
        if let (s, d) = pseudo {
            add(Self.bytes(s))
            add(Self.bytes(d))
            sum += UInt32(protocolNumber) + UInt32(bytes.count)
        }
        add(bytes)
        while sum >> 16 != 0 { sum = (sum & 0xFFFF) + sum >> 16 }
        return ~UInt16(sum)
    }
}
