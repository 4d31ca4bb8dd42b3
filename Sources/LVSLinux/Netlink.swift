#if canImport(Glibc)
import Glibc
#endif
import CLVSLinux
import LVSCore
import LVSPacket

/// What lvsd learns from its namespace's kernel over rtnetlink: links,
/// addresses, routes and neighbours (one dump each, parsed here).
public struct KernelView: Sendable {
    public struct Link: Sendable, Hashable { public var index: Int; public var name: String; public var mac: MACAddress; public var mtu: Int }
    public struct Address: Sendable, Hashable { public var index: Int; public var address: IPAddress; public var prefixLength: Int }
    public struct RouteEntry: Sendable, Hashable { public var destination: IPAddress; public var prefixLength: Int; public var gateway: IPAddress?; public var index: Int }
    public struct NeighbourEntry: Sendable, Hashable { public var index: Int; public var address: IPAddress; public var mac: MACAddress }

    public var links: [Link] = []
    public var addresses: [Address] = []
    public var routes: [RouteEntry] = []
    public var neighbours: [NeighbourEntry] = []

    public init() {}

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    public static func read() throws(Failure) -> KernelView {
        var v = KernelView()
        for m in try dump(18, 0) where m.type == 16 && m.body.count >= 16 {  // RTM_NEWLINK
            let index = Int(le32(m.body, 4))
            let attrs = attributes(m.body, from: 16)
            guard let mac = attrs[1], mac.count == 6 else { continue }
            let name = attrs[3].map { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) } ?? "if\(index)"
            let mtu = attrs[4].map { Int(le32($0, 0)) } ?? 1500
            v.links.append(Link(index: index, name: name, mac: MACAddress(mac.reduce(0) { $0 << 8 | UInt64($1) }), mtu: mtu))
        }
        for m in try dump(22, 0) where m.type == 20 && m.body.count >= 8 {  // RTM_NEWADDR
            let attrs = attributes(m.body, from: 8)
            guard let raw = attrs[2] ?? attrs[1], let a = address(raw) else { continue }
            // Link-local IPv6 addresses are for neighbour discovery only.
            if case .v6(let x) = a, x.high >> 54 == 0x3FA { continue }
            v.addresses.append(Address(index: Int(le32(m.body, 4)), address: a, prefixLength: Int(m.body[1])))
        }
        for m in try dump(26, 0) where m.type == 24 && m.body.count >= 12 {  // RTM_NEWROUTE
            let attrs = attributes(m.body, from: 12)
            let table = attrs[15].map { le32($0, 0) } ?? UInt32(m.body[4])
            guard table == 254, m.body[7] == 1, let oif = attrs[4] else { continue }  // main table, unicast
            let family = m.body[0]
            let destination = attrs[1].flatMap(address) ?? (family == 10 ? IPAddress.v6(.zero) : .v4(.zero))
            v.routes.append(RouteEntry(destination: destination, prefixLength: Int(m.body[1]), gateway: attrs[5].flatMap(address),
                                       index: Int(le32(oif, 0))))
        }
        for m in try dump(30, 0) where m.type == 28 && m.body.count >= 12 {  // RTM_NEWNEIGH
            let state = UInt16(m.body[8]) | UInt16(m.body[9]) << 8
            guard state & (0x01 | 0x20) == 0 else { continue }  // incomplete, failed
            let attrs = attributes(m.body, from: 12)
            guard let dst = attrs[1].flatMap(address), let mac = attrs[2], mac.count == 6 else { continue }
            v.neighbours.append(NeighbourEntry(index: Int(le32(m.body, 4)), address: dst, mac: MACAddress(mac.reduce(0) { $0 << 8 | UInt64($1) })))
        }
        return v
    }

    struct Message { var type: UInt16; var body: [UInt8] }

    static func dump(_ type: UInt16, _ family: UInt8) throws(Failure) -> [Message] {
        var buffer = [UInt8](repeating: 0, count: 4 << 20)
        let n = buffer.withUnsafeMutableBufferPointer { lvs_netlink_dump(type, family, $0.baseAddress, $0.count) }
        guard n >= 0 else { throw Failure(description: "netlink dump \(type): \(String(cString: strerror(Int32(-n))))") }
        var out: [Message] = []
        var o = 0
        while o + 16 <= n {
            let length = Int(le32(buffer, o))
            let t = UInt16(buffer[o + 4]) | UInt16(buffer[o + 5]) << 8
            guard length >= 16, o + length <= n else { break }
            out.append(Message(type: t, body: Array(buffer[(o + 16)..<(o + length)])))
            o += (length + 3) & ~3
        }
        return out
    }

    static func le32(_ b: [UInt8], _ o: Int) -> UInt32 {
        UInt32(b[o]) | UInt32(b[o + 1]) << 8 | UInt32(b[o + 2]) << 16 | UInt32(b[o + 3]) << 24
    }

    static func attributes(_ b: [UInt8], from start: Int) -> [UInt16: [UInt8]] {
        var out: [UInt16: [UInt8]] = [:]
        var o = start
        while o + 4 <= b.count {
            let length = Int(UInt16(b[o]) | UInt16(b[o + 1]) << 8)
            let type = (UInt16(b[o + 2]) | UInt16(b[o + 3]) << 8) & 0x3FFF
            guard length >= 4, o + length <= b.count else { break }
            if out[type] == nil { out[type] = Array(b[(o + 4)..<(o + length)]) }
            o += (length + 3) & ~3
        }
        return out
    }

    static func address(_ raw: [UInt8]) -> IPAddress? {
        if raw.count == 4 { return .v4(IPv4Address(raw[0], raw[1], raw[2], raw[3])) }
        if raw.count == 16 {
            let high = raw[0..<8].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }, low = raw[8..<16].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            return .v6(IPv6Address(high: high, low: low))
        }
        return nil
    }

    /// The interfaces and routes the director serves, as its configuration's base.
    public func configuration(serving names: [String]) throws(Failure) -> DirectorConfiguration {
        var interfaces: [InterfaceConfiguration] = []
        for name in names {
            guard let l = links.first(where: { $0.name == name }) else { throw Failure(description: "no interface named \(name) (have \(links.map(\.name)))") }
            let v4 = addresses.first { $0.index == l.index && !$0.address.isIPv6 }.map { a -> IPv4Address in if case .v4(let x) = a.address { x } else { .zero } }
            let v6 = addresses.first { $0.index == l.index && $0.address.isIPv6 }.map { a -> IPv6Address in if case .v6(let x) = a.address { x } else { .zero } }
            interfaces.append(InterfaceConfiguration(index: UInt16(l.index), mac: l.mac, mtu: l.mtu, ipv4: v4, ipv6: v6))
        }
        let served = Set(interfaces.map { Int($0.index) })
        let routes = self.routes.filter { served.contains($0.index) }.map {
            Route(destination: $0.destination, prefixLength: $0.prefixLength, gateway: $0.gateway, interface: UInt16($0.index))
        }
        var c = DirectorConfiguration()
        c.interfaces = interfaces
        c.routes = routes
        return c
    }
}
