import LVSCore
import LVSPacket
import LVSSystem

#if canImport(Glibc)
import Glibc
#endif

/// What lvsd learns from its namespace's kernel over rtnetlink: links,
/// addresses, routes and neighbours (one dump each, parsed here).
public struct KernelView: Sendable {
    public struct Link: Sendable, Hashable {
        public var index: Int
        public var name: String
        public var mac: MACAddress
        public var mtu: Int
    }
    public struct Address: Sendable, Hashable {
        public var index: Int
        public var address: IPAddress
        public var prefixLength: Int
    }
    public struct RouteEntry: Sendable, Hashable {
        public var destination: IPAddress
        public var prefixLength: Int
        public var gateway: IPAddress?
        public var index: Int
    }
    public struct NeighbourEntry: Sendable, Hashable {
        public var index: Int
        public var address: IPAddress
        public var mac: MACAddress
    }

    public var links: [Link] = []
    public var addresses: [Address] = []
    public var routes: [RouteEntry] = []
    public var neighbours: [NeighbourEntry] = []

    public init() {}

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    /// One dump of each kind.
    public static func read() throws(Failure) -> KernelView {
        var v = KernelView()
        do {
            v.links = try RouteNetlink.dump(RouteNetlink.getLink).compactMap(link)
            v.addresses = try RouteNetlink.dump(RouteNetlink.getAddress).compactMap(address)
            v.routes = try RouteNetlink.dump(RouteNetlink.getRoute).compactMap(route)
            v.neighbours = try RouteNetlink.dump(RouteNetlink.getNeighbour).compactMap(neighbour)
        } catch {
            throw Failure(description: error.description)
        }
        return v
    }

    /// An RTM_NEWLINK's interface (one with a MAC address).
    public static func link(_ m: RouteNetlink.Message) -> Link? {
        guard m.type == RouteNetlink.newLink, m.body.count >= 16 else { return nil }
        let index = Int(RouteNetlink.le32(m.body, 4))
        let attrs = RouteNetlink.attributes(m.body, from: 16)
        guard let mac = attrs[1], mac.count == 6 else { return nil }
        let name = attrs[3].map { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) } ?? "if\(index)"
        let mtu = attrs[4].map { Int(RouteNetlink.le32($0, 0)) } ?? 1500
        return Link(index: index, name: name, mac: MACAddress(mac.reduce(0) { $0 << 8 | UInt64($1) }), mtu: mtu)
    }

    /// An RTM_NEWADDR's address; IPv6 link-local ones are for neighbour discovery only.
    public static func address(_ m: RouteNetlink.Message) -> Address? {
        guard m.type == RouteNetlink.newAddress, m.body.count >= 8 else { return nil }
        let attrs = RouteNetlink.attributes(m.body, from: 8)
        guard let raw = attrs[2] ?? attrs[1], let a = RouteNetlink.address(raw) else { return nil }
        if case .v6(let x) = a, x.high >> 54 == 0x3FA { return nil }
        return Address(index: Int(RouteNetlink.le32(m.body, 4)), address: a, prefixLength: Int(m.body[1]))
    }

    /// An RTM_NEWROUTE of the main table, unicast, with an output interface.
    public static func route(_ m: RouteNetlink.Message) -> RouteEntry? {
        guard m.type == RouteNetlink.newRoute, m.body.count >= 12 else { return nil }
        let attrs = RouteNetlink.attributes(m.body, from: 12)
        let table = attrs[15].map { RouteNetlink.le32($0, 0) } ?? UInt32(m.body[4])
        guard table == 254, m.body[7] == 1, let oif = attrs[4] else { return nil }
        let family = m.body[0]
        let destination = attrs[1].flatMap(RouteNetlink.address) ?? (family == 10 ? IPAddress.v6(.zero) : .v4(.zero))
        return RouteEntry(
            destination: destination, prefixLength: Int(m.body[1]), gateway: attrs[5].flatMap(RouteNetlink.address),
            index: Int(RouteNetlink.le32(oif, 0)))
    }

    /// An RTM_NEWNEIGH that knows its MAC (not incomplete, not failed).
    public static func neighbour(_ m: RouteNetlink.Message) -> NeighbourEntry? {
        guard m.type == RouteNetlink.newNeighbour, m.body.count >= 12 else { return nil }
        let state = RouteNetlink.le16(m.body, 8)
        guard state & (0x01 | 0x20) == 0 else { return nil }  // incomplete, failed
        let attrs = RouteNetlink.attributes(m.body, from: 12)
        guard let dst = attrs[1].flatMap(RouteNetlink.address), let mac = attrs[2], mac.count == 6 else { return nil }
        return NeighbourEntry(index: Int(RouteNetlink.le32(m.body, 4)), address: dst, mac: MACAddress(mac.reduce(0) { $0 << 8 | UInt64($1) }))
    }

    /// The interfaces and routes the director serves, as its configuration's base.
    public func configuration(serving names: [String]) throws(Failure) -> DirectorConfiguration {
        var interfaces: [InterfaceConfiguration] = []
        for name in names {
            guard let l = links.first(where: { $0.name == name }) else { throw Failure(description: "no interface named \(name) (have \(links.map(\.name)))") }
            let v4 = addresses.first { $0.index == l.index && !$0.address.isIPv6 }.map { a -> IPv4Address in if case .v4(let x) = a.address { x } else { .zero }
            }
            let v6 = addresses.first { $0.index == l.index && $0.address.isIPv6 }.map { a -> IPv6Address in if case .v6(let x) = a.address { x } else { .zero }
            }
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
