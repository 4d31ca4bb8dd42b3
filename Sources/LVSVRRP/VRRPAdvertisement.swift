import LVSPacket

/// A VRRP advertisement over IPv4: version 3 (RFC 5798) or 2 (RFC 3768,
/// what keepalived sends unless told `vrrp_version 3`), with its IPv4
/// header (TTL 255, protocol 112, to 224.0.0.18).
public struct VRRPAdvertisement: Sendable, Hashable {
    public static let group = IPv4Address(0xE000_0012)
    public static let protocolNumber: UInt8 = 112

    public var version: Int
    public var virtualRouterID: UInt8
    public var priority: UInt8
    /// Centiseconds (version 2 carries whole seconds).
    public var interval: UInt16
    public var addresses: [IPv4Address]

    public init(version: Int, virtualRouterID: UInt8, priority: UInt8, interval: UInt16, addresses: [IPv4Address]) {
        self.version = version; self.virtualRouterID = virtualRouterID; self.priority = priority
        self.interval = interval; self.addresses = addresses
    }

    public enum DecodeError: Error, Equatable, CustomStringConvertible {
        case truncated, notVRRP, ttl(UInt8), version(Int), type(Int), checksum, addressCount
        public var description: String {
            switch self {
            case .truncated: "truncated"
            case .notVRRP: "not a VRRP packet to 224.0.0.18"
            case .ttl(let t): "TTL \(t), not 255"
            case .version(let v): "VRRP version \(v)"
            case .type(let t): "VRRP type \(t)"
            case .checksum: "bad checksum"
            case .addressCount: "address count beyond the packet"
            }
        }
    }

    /// The whole IPv4 packet from `source`.
    public func encode(source: IPv4Address, identification: UInt16 = 0) -> [UInt8] {
        var v: [UInt8] = [UInt8(version << 4 | 1), virtualRouterID, priority, UInt8(addresses.count)]
        if version == 3 {
            v += [UInt8(interval >> 8 & 0x0F), UInt8(interval & 0xFF), 0, 0]
        } else {
            v += [0, UInt8(min(255, interval / 100)), 0, 0]
        }
        for a in addresses { v += Self.be32(a.value) }
        if version == 2 { v += [UInt8](repeating: 0, count: 8) }  // authentication data, type 0
        let sum = Self.checksum(v, pseudo: version == 3 ? (source, Self.group) : nil)
        v[6] = UInt8(sum >> 8)
        v[7] = UInt8(sum & 0xFF)
        let total = 20 + v.count
        var ip: [UInt8] = [0x45, 0xC0, UInt8(total >> 8), UInt8(total & 0xFF), UInt8(identification >> 8), UInt8(identification & 0xFF), 0, 0,
                           255, Self.protocolNumber, 0, 0] + Self.be32(source.value) + Self.be32(Self.group.value)
        let h = Self.checksum(ip, pseudo: nil)
        ip[10] = UInt8(h >> 8)
        ip[11] = UInt8(h & 0xFF)
        return ip + v
    }

    /// An advertisement and its sender from a received IPv4 packet.
    public static func decode(_ p: [UInt8]) throws(DecodeError) -> (VRRPAdvertisement, source: IPv4Address) {
        guard p.count >= 20, p[0] >> 4 == 4 else { throw .truncated }
        let ihl = Int(p[0] & 0x0F) * 4
        guard ihl >= 20, p.count >= ihl + 8 else { throw .truncated }
        guard p[9] == protocolNumber, be32(p, 16) == group.value else { throw .notVRRP }
        guard p[8] == 255 else { throw .ttl(p[8]) }
        let total = min(p.count, Int(p[2]) << 8 | Int(p[3]))
        guard total >= ihl + 8 else { throw .truncated }
        let v = Array(p[ihl..<total])
        let source = IPv4Address(be32(p, 12))
        let version = Int(v[0] >> 4)
        guard version == 2 || version == 3 else { throw .version(version) }
        guard v[0] & 0x0F == 1 else { throw .type(Int(v[0] & 0x0F)) }
        let count = Int(v[3])
        guard 8 + 4 * count <= v.count else { throw .addressCount }
        guard checksum(v, pseudo: version == 3 ? (source, IPv4Address(be32(p, 16))) : nil) == 0 else { throw .checksum }
        let interval = version == 3 ? UInt16(v[4] & 0x0F) << 8 | UInt16(v[5]) : UInt16(v[5]) * 100
        let addresses = (0..<count).map { IPv4Address(be32(v, 8 + 4 * $0)) }
        return (VRRPAdvertisement(version: version, virtualRouterID: v[1], priority: v[2], interval: interval, addresses: addresses), source)
    }

    static func be32(_ x: UInt32) -> [UInt8] { [UInt8(x >> 24), UInt8(x >> 16 & 0xFF), UInt8(x >> 8 & 0xFF), UInt8(x & 0xFF)] }
    static func be32(_ b: [UInt8], _ at: Int) -> UInt32 {
        UInt32(b[at]) << 24 | UInt32(b[at + 1]) << 16 | UInt32(b[at + 2]) << 8 | UInt32(b[at + 3])
    }

    /// The Internet checksum of `bytes` (0 when a stored checksum is right),
    /// with the IPv4 pseudo-header for version 3.
    static func checksum(_ bytes: [UInt8], pseudo: (IPv4Address, IPv4Address)?) -> UInt16 {
        var sum: UInt32 = 0
        if let (s, d) = pseudo {
            sum += s.value >> 16 + (s.value & 0xFFFF) + d.value >> 16 + (d.value & 0xFFFF)
            sum += UInt32(protocolNumber) + UInt32(bytes.count)
        }
        var i = 0
        while i + 1 < bytes.count { sum += UInt32(bytes[i]) << 8 | UInt32(bytes[i + 1]); i += 2 }
        if i < bytes.count { sum += UInt32(bytes[i]) << 8 }
        while sum >> 16 != 0 { sum = (sum & 0xFFFF) + sum >> 16 }
        return ~UInt16(sum)
    }
}
