#if canImport(Glibc)
import Glibc
#endif
import LVSCore
import LVSPacket

/// Names for addresses and ports, as ipvsadm looks them up (`host_to_addr`,
/// `service_to_port`, `addr_to_host`, `port_to_service`) through the C
/// library: /etc/hosts, DNS, /etc/services.
public enum NameResolver {
    /// The first IPv4 address of a host name.
    public static func address(of host: String) -> IPAddress? {
        var hints = addrinfo()
        hints.ai_family = AF_INET
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>? = nil
        guard getaddrinfo(host, nil, &hints, &result) == 0, let first = result else { return nil }
        defer { freeaddrinfo(result) }
        guard let sa = first.pointee.ai_addr else { return nil }
        return sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { IPAddress.v4(IPv4Address(UInt32(bigEndian: $0.pointee.sin_addr.s_addr))) }
    }

    public static func port(of service: String, proto: TransportProtocol) -> UInt16? {
        guard let s = getservbyname(service, proto.name) else { return nil }
        return UInt16(bigEndian: UInt16(truncatingIfNeeded: s.pointee.s_port))
    }

    /// The host name of an address, or nil when it has none.
    public static func name(of address: IPAddress) -> String? {
        var host = [CChar](repeating: 0, count: 1025)
        let rc: Int32
        switch address {
        case .v4(let a):
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_addr.s_addr = a.value.bigEndian
            rc = withUnsafePointer(to: &sin) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    getnameinfo($0, socklen_t(MemoryLayout<sockaddr_in>.size), &host, socklen_t(host.count), nil, 0, NI_NAMEREQD)
                }
            }
        case .v6(let a):
            var sin6 = sockaddr_in6()
            sin6.sin6_family = sa_family_t(AF_INET6)
            withUnsafeMutableBytes(of: &sin6.sin6_addr) { raw in
                for i in 0..<8 { raw[i] = UInt8(truncatingIfNeeded: a.high >> (56 - 8 * UInt64(i))) }
                for i in 0..<8 { raw[8 + i] = UInt8(truncatingIfNeeded: a.low >> (56 - 8 * UInt64(i))) }
            }
            rc = withUnsafePointer(to: &sin6) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    getnameinfo($0, socklen_t(MemoryLayout<sockaddr_in6>.size), &host, socklen_t(host.count), nil, 0, NI_NAMEREQD)
                }
            }
        }
        guard rc == 0 else { return nil }
        return String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    public static func name(ofPort port: UInt16, proto: TransportProtocol) -> String? {
        guard let s = getservbyport(Int32(UInt16(port).bigEndian), proto.name) else { return nil }
        return String(cString: s.pointee.s_name)
    }
}
