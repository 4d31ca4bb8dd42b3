import LVSPacket
import LVSSystem
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite struct SystemCallTests {
    /// A dual-stack socket reports an IPv4 peer as ::ffff:a.b.c.d; the
    /// endpoint is the IPv4 address.
    @Test func anIPv4MappedPeerIsItsIPv4Address() {
        let mapped = SocketAddress.ipv6(IPv6Address(high: 0, low: 0xFFFF_C612_0064), port: 40000, scope: 0)
        #expect(mapped.endpoint?.address == IPAddress("198.18.0.100"))
        #expect(mapped.endpoint?.port == 40000)
        let v6 = SocketAddress(IPAddress("2001:db8::1")!, port: 80)
        #expect(v6.endpoint?.address == IPAddress("2001:db8::1"))
        #expect(SocketAddress.unix("/run/x.sock").endpoint == nil)
    }

    /// A socket's own address and its peer's, read back typed.
    @Test func aConnectedPairKnowsBothEnds() throws {
        let listener = try Socket.open(family: AF_INET6, type: Socket.stream)
        defer { listener.close() }
        try listener.bind(.ipv6(IPv6Address(high: 0, low: 1), port: 0, scope: 0))
        try listener.listen(backlog: 1)
        guard case .ipv6(_, let port, _) = try listener.localAddress() else {
            Issue.record("not IPv6")
            return
        }
        let client = try Socket.open(family: AF_INET6, type: Socket.stream)
        defer { client.close() }
        try client.connect(.ipv6(IPv6Address(high: 0, low: 1), port: port, scope: 0))
        let server = try listener.accept()
        defer { server.close() }
        #expect(try server.peerAddress() == client.localAddress())
        #expect(try client.peerAddress().endpoint?.port == port)
        try client.sendAll(Array("ping".utf8))
        var buffer = [UInt8](repeating: 0, count: 16)
        #expect(try server.receive(into: &buffer) == 4)
    }

    @Test func interfacesByNameAndIndex() {
        let lo = NetworkInterface.index(named: "lo")
        #expect(lo != nil)
        #expect(lo.flatMap { NetworkInterface.name(index: $0) } == "lo")
        #expect(NetworkInterface.index(named: "no-such-if0") == nil)
        #expect(KernelFile.directory("/sys/class/net")?.contains("lo") == true)
    }

    @Test func kernelFilesAreReadAndWrittenWithTheirErrors() throws {
        let path = "/tmp/lvs-system-test-\(getpid())"
        defer { FileSystem.remove(path) }
        #expect(throws: SystemError.self) { try KernelFile.write(path, "1\n") }  // does not exist: kernel files are not created
        _ = ChildProcess.run("/bin/sh", ["-c", "echo old > \(path)"], timeout: 5)
        try KernelFile.write(path, "new\n")
        #expect(KernelFile.firstLine(path) == "new")
        #expect(KernelFile.exists(path))
        FileSystem.remove(path)
        #expect(!KernelFile.exists(path))
        #expect(!KernelFile.isCgroup2("/tmp") && !KernelFile.isCgroup2(path))
        if let root = KernelFile.cgroup2Root() { #expect(KernelFile.isCgroup2(root)) }
    }
}
