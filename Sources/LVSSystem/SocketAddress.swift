import LVSPacket

#if canImport(Glibc)
import Glibc
#endif

/// A socket's address, typed: the one place a `sockaddr` is built or read.
public enum SocketAddress: Sendable, Hashable, CustomStringConvertible {
    case ipv4(IPv4Address, port: UInt16)
    /// `scope`: the interface index of a link-local or multicast address.
    case ipv6(IPv6Address, port: UInt16, scope: UInt32)
    /// A path, or an abstract name when it starts with "@".
    case unix(String)
    /// A netlink socket's multicast groups (bits), pid 0: the kernel assigns it.
    case netlink(groups: UInt32)
    /// An AF_PACKET socket's interface (0: every one), every protocol.
    case link(interface: Int32)

    public init(_ address: IPAddress, port: UInt16, scope: UInt32 = 0) {
        switch address {
        case .v4(let a): self = .ipv4(a, port: port)
        case .v6(let a): self = .ipv6(a, port: port, scope: scope)
        }
    }

    public var family: Int32 {
        switch self {
        case .ipv4: AF_INET
        case .ipv6: AF_INET6
        case .unix: AF_UNIX
        case .netlink: AF_NETLINK
        case .link: AF_PACKET
        }
    }

    public var ipAddress: IPAddress? {
        switch self {
        case .ipv4(let a, _): .v4(a)
        case .ipv6(let a, _, _): .v6(a)
        case .unix, .netlink, .link: nil
        }
    }

    /// The address and port of an IP socket, an IPv4-mapped IPv6 address
    /// (what a dual-stack socket reports for an IPv4 peer) as IPv4.
    public var endpoint: (address: IPAddress, port: UInt16)? {
        switch self {
        case .ipv4(let a, let port): return (.v4(a), port)
        case .ipv6(let a, let port, _):
            if a.high == 0 && a.low >> 32 == 0xFFFF { return (.v4(IPv4Address(UInt32(truncatingIfNeeded: a.low))), port) }
            return (.v6(a), port)
        case .unix, .netlink, .link: return nil
        }
    }

    public var description: String {
        switch self {
        case .ipv4(let a, let port): "\(a):\(port)"
        case .ipv6(let a, let port, _): "[\(a)]:\(port)"
        case .unix(let path): path
        case .netlink(let groups): "netlink groups \(groups)"
        case .link(let interface): "interface \(interface)"
        }
    }

    /// Lends the C form to `body`, with its length.
    public func withSockaddr<R, E: Error>(_ body: (UnsafePointer<sockaddr>, socklen_t) throws(E) -> R) throws(E) -> R {
        var storage = sockaddr_storage()
        let length = write(into: &storage)
        // `storage` is large and aligned enough for every sockaddr, and lives across the call.
        return try unsafe withUnsafePointer(to: &storage) { (p) throws(E) -> R in
            try unsafe p.withMemoryRebound(to: sockaddr.self, capacity: 1) { (s) throws(E) -> R in try unsafe body(s, length) }
        }
    }

    /// Writes the C form; its length.
    func write(into storage: inout sockaddr_storage) -> socklen_t {
        // Bytes into bytes: every field written is a plain integer at its C offset.
        unsafe withUnsafeMutableBytes(of: &storage) { raw in
            switch self {
            case .ipv4(let a, let port):
                unsafe raw.storeBytes(of: sa_family_t(AF_INET), toByteOffset: 0, as: sa_family_t.self)
                unsafe raw.storeBytes(of: port.bigEndian, toByteOffset: 2, as: UInt16.self)
                unsafe raw.storeBytes(of: a.value.bigEndian, toByteOffset: 4, as: UInt32.self)
                return socklen_t(MemoryLayout<sockaddr_in>.size)
            case .ipv6(let a, let port, let scope):
                unsafe raw.storeBytes(of: sa_family_t(AF_INET6), toByteOffset: 0, as: sa_family_t.self)
                unsafe raw.storeBytes(of: port.bigEndian, toByteOffset: 2, as: UInt16.self)
                unsafe raw.storeBytes(of: a.high.bigEndian, toByteOffset: 8, as: UInt64.self)
                unsafe raw.storeBytes(of: a.low.bigEndian, toByteOffset: 16, as: UInt64.self)
                unsafe raw.storeBytes(of: scope, toByteOffset: 24, as: UInt32.self)
                return socklen_t(MemoryLayout<sockaddr_in6>.size)
            case .unix(let path):
                unsafe raw.storeBytes(of: sa_family_t(AF_UNIX), toByteOffset: 0, as: sa_family_t.self)
                var bytes = Array(path.utf8)
                let abstract = bytes.first == UInt8(ascii: "@")
                if abstract { bytes[0] = 0 }
                // sun_path is 108 bytes; a longer path was refused by `unixPathFits`.
                let n = min(bytes.count, 107)
                for k in 0..<n { unsafe raw[2 + k] = bytes[k] }
                unsafe raw[2 + n] = 0
                // An abstract name's length counts exactly its bytes; a path's, the whole structure.
                return abstract ? socklen_t(2 + n) : socklen_t(MemoryLayout<sockaddr_un>.size)
            case .netlink(let groups):
                unsafe raw.storeBytes(of: sa_family_t(AF_NETLINK), toByteOffset: 0, as: sa_family_t.self)
                unsafe raw.storeBytes(of: UInt32(0), toByteOffset: 4, as: UInt32.self)
                unsafe raw.storeBytes(of: groups, toByteOffset: 8, as: UInt32.self)
                return 12
            case .link(let interface):
                // struct sockaddr_ll: family, protocol (network order), interface index.
                unsafe raw.storeBytes(of: sa_family_t(AF_PACKET), toByteOffset: 0, as: sa_family_t.self)
                unsafe raw.storeBytes(of: SocketAddress.everyEtherType.bigEndian, toByteOffset: 2, as: UInt16.self)
                unsafe raw.storeBytes(of: interface, toByteOffset: 4, as: Int32.self)
                return 20
            }
        }
    }

    /// Reads a C form the kernel filled in (recvfrom, getsockname).
    init?(_ storage: sockaddr_storage, length: socklen_t) {
        // Bytes out of bytes: each read is a plain integer within `length`.
        let decoded: SocketAddress? = unsafe withUnsafeBytes(of: storage) { raw in
            let family = unsafe Int32(raw.load(fromByteOffset: 0, as: sa_family_t.self))
            switch family {
            case AF_INET where length >= 8:
                let port = unsafe UInt16(bigEndian: raw.loadUnaligned(fromByteOffset: 2, as: UInt16.self))
                return unsafe .ipv4(IPv4Address(UInt32(bigEndian: raw.loadUnaligned(fromByteOffset: 4, as: UInt32.self))), port: port)
            case AF_INET6 where length >= 28:
                let port = unsafe UInt16(bigEndian: raw.loadUnaligned(fromByteOffset: 2, as: UInt16.self))
                let high = unsafe UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
                let low = unsafe UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 16, as: UInt64.self))
                return unsafe .ipv6(IPv6Address(high: high, low: low), port: port, scope: raw.loadUnaligned(fromByteOffset: 24, as: UInt32.self))
            case AF_NETLINK where length >= 12:
                return unsafe .netlink(groups: raw.loadUnaligned(fromByteOffset: 8, as: UInt32.self))
            case AF_UNIX:
                let path = unsafe raw[2..<Int(min(length, socklen_t(raw.count)))].prefix { $0 != 0 }
                return unsafe .unix(String(decoding: path, as: UTF8.self))
            default:
                return nil
            }
        }
        guard let decoded else { return nil }
        self = decoded
    }

    /// ETH_P_ALL (linux/if_ether.h, which Glibc's module does not export).
    public static let everyEtherType: UInt16 = 0x0003

    /// Whether `path` fits a Unix socket address (108 bytes with its NUL).
    public static func unixPathFits(_ path: String) -> Bool { path.utf8.count < 108 }
}
