import LVSPacket

#if canImport(Glibc)
import Glibc
#endif

/// Names for addresses and ports, as ipvsadm looks them up (`host_to_addr`,
/// `service_to_port`, `addr_to_host`, `port_to_service`) through the C
/// library: /etc/hosts, DNS, /etc/services.
public enum NameResolver {
    /// The first IPv4 address of a host name.
    public static func address(of host: String) -> IPAddress? {
        var hints = unsafe addrinfo()
        unsafe hints.ai_family = AF_INET
        unsafe hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>? = nil
        // The list getaddrinfo made is read, then freed, here; with AF_INET asked for, its addresses are sockaddr_in.
        guard unsafe getaddrinfo(host, nil, &hints, &result) == 0, let first = unsafe result else { return nil }
        defer { unsafe freeaddrinfo(result) }
        guard let sa = unsafe first.pointee.ai_addr else { return nil }
        return unsafe sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) {
            unsafe IPAddress.v4(IPv4Address(UInt32(bigEndian: $0.pointee.sin_addr.s_addr)))
        }
    }

    /// The port of a service name for a protocol named as /etc/services names it ("tcp", "udp", "sctp").
    public static func port(of service: String, protocolName: String) -> UInt16? {
        // getservbyname's entry is static and read at once.
        guard let s = unsafe getservbyname(service, protocolName) else { return nil }
        return unsafe UInt16(bigEndian: UInt16(truncatingIfNeeded: s.pointee.s_port))
    }

    /// The host name of an address, or nil when it has none.
    public static func name(of address: IPAddress) -> String? {
        var host = [CChar](repeating: 0, count: 1025)
        let count = socklen_t(host.count)
        // getnameinfo writes at most `count` bytes, its NUL included, into `host`, which outlives the call.
        let rc = unsafe SocketAddress(address, port: 0).withSockaddr { sa, length in
            unsafe getnameinfo(sa, length, &host, count, nil, 0, NI_NAMEREQD)
        }
        guard rc == 0 else { return nil }
        return String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    public static func name(ofPort port: UInt16, protocolName: String) -> String? {
        // getservbyport's entry is static and copied at once.
        guard let s = unsafe getservbyport(Int32(UInt16(port).bigEndian), protocolName) else { return nil }
        return unsafe String(cString: s.pointee.s_name)
    }
}
