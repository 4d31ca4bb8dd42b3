import LVSPacket
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// A socket descriptor with typed calls: addresses are `SocketAddress`,
/// failures `SystemError`. Like swift-system's `FileDescriptor`, it is a
/// value that names the descriptor; whoever opened it closes it.
///
/// Each `unsafe` below lends the kernel memory for one call only: an array's
/// bytes or a value's (with their true length) or a sockaddr from
/// `SocketAddress.withSockaddr`, all of which outlive the call.
public struct Socket: Sendable, Hashable {
    public let descriptor: FileDescriptor

    public init(_ descriptor: FileDescriptor) { self.descriptor = descriptor }

    /// A new socket, closed on exec (and non-blocking when asked).
    public static func open(family: Int32, type: Int32, protocol proto: Int32 = 0, nonBlocking: Bool = false) throws(SystemError) -> Socket {
        let flags = Int32(SOCK_CLOEXEC.rawValue) | (nonBlocking ? Int32(SOCK_NONBLOCK.rawValue) : 0)
        let fd = Glibc.socket(family, type | flags, proto)
        guard fd >= 0 else { throw .last("socket") }
        return Socket(FileDescriptor(rawValue: fd))
    }

    public static var stream: Int32 { Int32(SOCK_STREAM.rawValue) }
    public static var datagram: Int32 { Int32(SOCK_DGRAM.rawValue) }
    public static var raw: Int32 { Int32(SOCK_RAW.rawValue) }

    public var rawValue: Int32 { descriptor.rawValue }

    public func close() { try? descriptor.close() }

    public func bind(_ address: SocketAddress) throws(SystemError) {
        let rc = unsafe address.withSockaddr { unsafe Glibc.bind(rawValue, $0, $1) }
        guard rc == 0 else { throw .last("bind \(address)") }
    }

    public func connect(_ address: SocketAddress) throws(SystemError) {
        let rc = unsafe address.withSockaddr { unsafe Glibc.connect(rawValue, $0, $1) }
        guard rc == 0 else { throw .last("connect") }
    }

    public func listen(backlog: Int32) throws(SystemError) {
        guard Glibc.listen(rawValue, backlog) == 0 else { throw .last("listen") }
    }

    /// The next connection, closed on exec.
    public func accept() throws(SystemError) -> Socket {
        while true {
            let fd = Glibc.accept(rawValue, nil, nil)
            if fd >= 0 {
                _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
                return Socket(FileDescriptor(rawValue: fd))
            }
            if errno != EINTR && errno != ECONNABORTED { throw .last("accept") }
        }
    }

    /// The address the socket is bound to (getsockname).
    public func localAddress() throws(SystemError) -> SocketAddress {
        unsafe try address("getsockname") { unsafe getsockname(rawValue, $0, $1) }
    }

    /// The connected peer's address (getpeername).
    public func peerAddress() throws(SystemError) -> SocketAddress {
        unsafe try address("getpeername") { unsafe getpeername(rawValue, $0, $1) }
    }

    func address(_ label: String, _ call: (UnsafeMutablePointer<sockaddr>, UnsafeMutablePointer<socklen_t>) -> Int32) throws(SystemError) -> SocketAddress {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        // `storage` is large and aligned enough for every sockaddr; the kernel writes at most `length` bytes.
        let rc = unsafe withUnsafeMutablePointer(to: &storage) {
            unsafe $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { unsafe call($0, &length) }
        }
        guard rc == 0 else { throw .last(label) }
        guard let a = SocketAddress(storage, length: length) else { throw SystemError(label, .addressFamilyNotSupported) }
        return a
    }

    public func shutdown() { _ = Glibc.shutdown(rawValue, Int32(SHUT_RDWR)) }

    // MARK: options

    /// setsockopt with a plain value (an integer, or a C structure of integers).
    public func setOption<T>(level: Int32, name: Int32, _ value: T, _ label: String) throws(SystemError) {
        // The kernel copies `size` bytes of the value during the call; callers pass integers and C structures.
        let rc = unsafe withUnsafeBytes(of: value) { unsafe setsockopt(rawValue, level, name, $0.baseAddress, socklen_t($0.count)) }
        guard rc == 0 else { throw .last("setsockopt \(label)") }
    }

    /// setsockopt with an array of plain values (a BPF filter's instructions).
    public func setOption<T: BitwiseCopyable>(level: Int32, name: Int32, array: [T], _ label: String) throws(SystemError) {
        let rc = unsafe array.withUnsafeBytes { unsafe setsockopt(rawValue, level, name, $0.baseAddress, socklen_t($0.count)) }
        guard rc == 0 else { throw .last("setsockopt \(label)") }
    }

    /// getsockopt of a plain value.
    public func option<T: BitwiseCopyable>(level: Int32, name: Int32, as type: T.Type, initial: T, _ label: String) throws(SystemError) -> T {
        var v = initial
        var length = socklen_t(MemoryLayout<T>.size)
        let rc = unsafe getsockopt(rawValue, level, name, &v, &length)
        guard rc == 0 else { throw .last("getsockopt \(label)") }
        return v
    }

    public func setFlag(level: Int32, name: Int32, _ on: Bool, _ label: String) throws(SystemError) {
        try setOption(level: level, name: name, Int32(on ? 1 : 0), label)
    }

    /// Sends and receives only on `interface` (SO_BINDTODEVICE).
    public func bindToDevice(_ interface: String) throws(SystemError) {
        let name = Array(interface.utf8CString)
        let rc = unsafe name.withUnsafeBufferPointer { unsafe setsockopt(rawValue, SOL_SOCKET, SO_BINDTODEVICE, $0.baseAddress, socklen_t($0.count)) }
        guard rc == 0 else { throw .last("SO_BINDTODEVICE \(interface)") }
    }

    /// Receive and send timeouts, for blocking calls.
    public func setTimeouts(seconds: Int) throws(SystemError) {
        let tv = timeval(tv_sec: seconds, tv_usec: 0)
        try setOption(level: SOL_SOCKET, name: SO_RCVTIMEO, tv, "SO_RCVTIMEO")
        try setOption(level: SOL_SOCKET, name: SO_SNDTIMEO, tv, "SO_SNDTIMEO")
    }

    /// Joins an IPv4 or IPv6 multicast group on `interface`.
    public func joinMulticastGroup(_ group: IPAddress, interface: UInt32) throws(SystemError) {
        switch group {
        case .v4(let g):
            var m = ip_mreqn()
            m.imr_multiaddr.s_addr = g.value.bigEndian
            m.imr_ifindex = Int32(interface)
            try setOption(level: Int32(IPPROTO_IP), name: IP_ADD_MEMBERSHIP, m, "IP_ADD_MEMBERSHIP \(group)")
        case .v6(let g):
            var m = ipv6_mreq()
            m.ipv6mr_multiaddr = Self.in6(g)
            m.ipv6mr_interface = interface
            try setOption(level: Int32(IPPROTO_IPV6), name: IPV6_ADD_MEMBERSHIP, m, "IPV6_ADD_MEMBERSHIP \(group)")
        }
    }

    /// Where multicast goes out: `interface`, with `hops` as its TTL or hop limit, not looped back.
    public func setMulticastSending(ipv6: Bool, interface: UInt32, hops: Int32) throws(SystemError) {
        if ipv6 {
            try setOption(level: Int32(IPPROTO_IPV6), name: IPV6_MULTICAST_IF, Int32(interface), "IPV6_MULTICAST_IF")
            try setOption(level: Int32(IPPROTO_IPV6), name: IPV6_MULTICAST_HOPS, hops, "IPV6_MULTICAST_HOPS")
            try setFlag(level: Int32(IPPROTO_IPV6), name: IPV6_MULTICAST_LOOP, false, "IPV6_MULTICAST_LOOP")
        } else {
            var m = ip_mreqn()
            m.imr_ifindex = Int32(interface)
            try setOption(level: Int32(IPPROTO_IP), name: IP_MULTICAST_IF, m, "IP_MULTICAST_IF")
            try setOption(level: Int32(IPPROTO_IP), name: IP_MULTICAST_TTL, hops, "IP_MULTICAST_TTL")
            try setFlag(level: Int32(IPPROTO_IP), name: IP_MULTICAST_LOOP, false, "IP_MULTICAST_LOOP")
        }
    }

    public static func in6(_ a: IPv6Address) -> in6_addr {
        var out = in6_addr()
        // Bytes into bytes: the address's 16 bytes in network order.
        unsafe withUnsafeMutableBytes(of: &out) { raw in
            unsafe raw.storeBytes(of: a.high.bigEndian, toByteOffset: 0, as: UInt64.self)
            unsafe raw.storeBytes(of: a.low.bigEndian, toByteOffset: 8, as: UInt64.self)
        }
        return out
    }

    /// The peer of a Unix socket (SO_PEERCRED).
    public func peerCredentials() throws(SystemError) -> (pid: pid_t, uid: uid_t, gid: gid_t) {
        let c = try option(level: SOL_SOCKET, name: SO_PEERCRED, as: PeerCredentials.self, initial: PeerCredentials(), "SO_PEERCRED")
        return (c.pid, c.uid, c.gid)
    }

    /// `struct ucred`, which Glibc's module hides behind _GNU_SOURCE.
    struct PeerCredentials: BitwiseCopyable {
        var pid: pid_t = 0
        var uid: uid_t = 0
        var gid: gid_t = 0
    }

    /// One classic BPF instruction (`struct sock_filter`).
    public struct FilterInstruction: Sendable, BitwiseCopyable {
        public var code: UInt16
        public var jumpTrue: UInt8
        public var jumpFalse: UInt8
        public var k: UInt32
        public init(code: UInt16, jumpTrue: UInt8 = 0, jumpFalse: UInt8 = 0, k: UInt32 = 0) {
            self.code = code
            self.jumpTrue = jumpTrue
            self.jumpFalse = jumpFalse
            self.k = k
        }
    }

    /// Attaches a classic BPF program (SO_ATTACH_FILTER): the kernel drops
    /// what it refuses before the socket sees it.
    public func attachFilter(_ program: [FilterInstruction]) throws(SystemError) {
        // `struct sock_fprog`: the count, padding, then a pointer to the instructions.
        @unsafe struct Program {
            var length: UInt16
            var filter: UnsafePointer<FilterInstruction>?
        }
        let rc = unsafe program.withUnsafeBufferPointer { instructions in
            // The kernel copies the instructions during the call; the buffer outlives it.
            var p = unsafe Program(length: UInt16(instructions.count), filter: instructions.baseAddress)
            return unsafe setsockopt(rawValue, SOL_SOCKET, SO_ATTACH_FILTER, &p, socklen_t(MemoryLayout<Program>.size))
        }
        guard rc == 0 else { throw .last("SO_ATTACH_FILTER") }
    }

    // MARK: data

    /// Sends all of `bytes` (a stream socket may take them in parts).
    public func sendAll(_ bytes: [UInt8]) throws(SystemError) {
        var offset = 0
        while offset < bytes.count {
            let n = unsafe bytes.withUnsafeBytes { unsafe Glibc.send(rawValue, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw .last("send")
            }
            offset += n
        }
    }

    /// One datagram; how much went.
    @discardableResult
    public func send(_ bytes: [UInt8], to address: SocketAddress? = nil, dontWait: Bool = false) throws(SystemError) -> Int {
        let flags = Int32(MSG_NOSIGNAL) | (dontWait ? Int32(MSG_DONTWAIT) : 0)
        let n: Int
        if let address {
            n = unsafe bytes.withUnsafeBytes { b in
                unsafe address.withSockaddr { unsafe sendto(rawValue, b.baseAddress, b.count, flags, $0, $1) }
            }
        } else {
            n = unsafe bytes.withUnsafeBytes { unsafe Glibc.send(rawValue, $0.baseAddress, $0.count, flags) }
        }
        guard n >= 0 else { throw .last("send") }
        return n
    }

    /// Receives into `buffer` (its whole length); the byte count, 0 at the
    /// end of a stream, nil when nothing waits (`dontWait`) or a timeout passed.
    public func receive(into buffer: inout [UInt8], dontWait: Bool = false) throws(SystemError) -> Int? {
        while true {
            let n = unsafe buffer.withUnsafeMutableBytes { unsafe recv(rawValue, $0.baseAddress, $0.count, dontWait ? Int32(MSG_DONTWAIT) : 0) }
            if n >= 0 { return n }
            if errno == EINTR { continue }
            if errno == EAGAIN || errno == EWOULDBLOCK { return nil }
            throw .last("recv")
        }
    }

    /// Receives one datagram and who sent it; nil when nothing waits (`dontWait`).
    public func receiveFrom(into buffer: inout [UInt8], dontWait: Bool = true) throws(SystemError) -> (count: Int, from: SocketAddress?)? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        while true {
            let n = unsafe buffer.withUnsafeMutableBytes { b in
                unsafe withUnsafeMutablePointer(to: &storage) {
                    unsafe $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        unsafe recvfrom(rawValue, b.baseAddress, b.count, dontWait ? Int32(MSG_DONTWAIT) : 0, $0, &length)
                    }
                }
            }
            if n >= 0 { return (n, SocketAddress(storage, length: length)) }
            if errno == EINTR { continue }
            if errno == EAGAIN || errno == EWOULDBLOCK { return nil }
            throw .last("recvfrom")
        }
    }

    /// Waits until the socket is readable, at most `milliseconds` (-1: forever).
    public func waitReadable(milliseconds: Int32) -> Bool {
        var p = pollfd(fd: rawValue, events: Int16(POLLIN), revents: 0)
        return unsafe poll(&p, 1, milliseconds) == 1
    }
}
