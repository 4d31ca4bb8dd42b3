import LVSCore
import LVSPacket

/// Arbitrary bytes into a Director serving all four forwarding methods, both
/// directions: the frame goes in as received, then as if a real server sent
/// it (first byte picks the interface and clock step, and whether the frame
/// is traced).
enum FuzzDirector {
    nonisolated(unsafe) static var director: Director = makeDirector()
    nonisolated(unsafe) static var batch = FrameBatch(capacity: 4, slotSize: 4096, headroom: 128)  // room for released held frames
    nonisolated(unsafe) static var now: UInt64 = 1_000
    nonisolated(unsafe) static var kernelRequests: [KernelFlowRequest] = []

    static func makeDirector() -> Director {
        func a(_ s: String) -> IPAddress { IPAddress(s)! }
        func rs(_ ip: String, _ port: UInt16, _ m: ForwardingMethod) -> RealServerConfiguration {
            RealServerConfiguration(address: a(ip), port: port, weight: 1, method: m)
        }
        let services = [
            VirtualServiceConfiguration(
                key: .address(.tcp, a("198.18.0.10"), 80), scheduler: "rr", realServers: [rs("198.19.0.2", 8080, .nat), rs("198.19.0.3", 8080, .nat)]),
            VirtualServiceConfiguration(key: .address(.tcp, a("198.18.0.11"), 80), scheduler: "wlc", realServers: [rs("198.19.0.2", 80, .directRouting)]),
            VirtualServiceConfiguration(key: .address(.udp, a("198.18.0.12"), 53), scheduler: "sh", realServers: [rs("198.19.0.3", 53, .tunnel)]),
            VirtualServiceConfiguration(
                key: .address(.tcp, a("198.18.0.13"), 443), scheduler: "mh", persistence: 360,
                realServers: [rs("198.19.0.2", 443, .fullNAT)], localAddresses: [a("198.19.0.100")]),
            VirtualServiceConfiguration(key: .address(.tcp, a("2001:db8::10"), 80), scheduler: "wrr", realServers: [rs("2001:db8:1::2", 80, .nat)]),
            VirtualServiceConfiguration(
                key: .address(.tcp, a("2001:db8::11"), 80), scheduler: "lc",
                realServers: [rs("2001:db8:1::3", 80, .fullNAT)], localAddresses: [a("2001:db8:1::100")]),
            VirtualServiceConfiguration(
                key: .firewallMark(7, ipv6: false), scheduler: "lblc", onePacket: true, realServers: [rs("198.19.0.3", 0, .directRouting)]),
            VirtualServiceConfiguration(
                key: .address(.tcp, a("198.18.0.14"), 80), scheduler: "rr", realServers: [rs("198.19.0.2", 8080, .nat)], synproxy: true),
            VirtualServiceConfiguration(
                key: .address(.tcp, a("2001:db8::12"), 80), scheduler: "rr",
                realServers: [rs("2001:db8:1::3", 80, .fullNAT)], localAddresses: [a("2001:db8:1::100")], synproxy: true),
            // PROXY protocol (secure and insecure, both families) and the FTP helper.
            VirtualServiceConfiguration(
                key: .address(.tcp, a("198.18.0.15"), 80), scheduler: "rr", realServers: [rs("198.19.0.2", 8080, .fullNAT)],
                localAddresses: [a("198.19.0.101")], proxyProtocol: ProxyProtocol(version: .v2)),
            VirtualServiceConfiguration(
                key: .address(.tcp, a("198.18.0.16"), 80), scheduler: "rr", realServers: [rs("198.19.0.3", 8080, .nat)],
                proxyProtocol: ProxyProtocol(version: .v1, insecure: true)),
            VirtualServiceConfiguration(
                key: .address(.tcp, a("2001:db8::13"), 80), scheduler: "rr", realServers: [rs("2001:db8:1::2", 80, .nat)],
                synproxy: true, proxyProtocol: ProxyProtocol(version: .v1)),
            VirtualServiceConfiguration(key: .address(.tcp, a("198.18.0.17"), 21), scheduler: "rr", realServers: [rs("198.19.0.3", 21, .nat)]),
            VirtualServiceConfiguration(key: .address(.tcp, a("2001:db8::14"), 21), scheduler: "rr", realServers: [rs("2001:db8:1::3", 21, .nat)]),
            VirtualServiceConfiguration(
                key: .address(.tcp, a("198.18.0.20"), 21), scheduler: "rr", persistence: 60, realServers: [rs("198.19.0.2", 21, .fullNAT)],
                localAddresses: [a("198.19.0.102")]),
            // SCTP: NAT moving the port, FULLNAT, DR.
            VirtualServiceConfiguration(key: .address(.sctp, a("198.18.0.18"), 3868), scheduler: "rr", realServers: [rs("198.19.0.2", 13, .nat)]),
            VirtualServiceConfiguration(
                key: .address(.sctp, a("2001:db8::15"), 38412), scheduler: "rr",
                realServers: [rs("2001:db8:1::2", 38412, .fullNAT)], localAddresses: [a("2001:db8:1::100")]),
            VirtualServiceConfiguration(key: .address(.sctp, a("198.18.0.19"), 36412), scheduler: "sh", realServers: [rs("198.19.0.3", 36412, .directRouting)]),
        ]
        var config = DirectorConfiguration(
            services: services,
            markRules: [
                FirewallMarkRule(mark: 7, rule: 0, destination: a("198.18.1.0"), destinationPrefixLength: 24),
                FirewallMarkRule(mark: nil, verdict: .endChain, rule: 1, proto: .udp, ports: 9...9),
                FirewallMarkRule(mark: 0, chain: 1, rule: 2, source: a("198.18.7.0"), sourcePrefixLength: 24),
            ],
            interfaces: [
                InterfaceConfiguration(index: 1, mac: MACAddress(0x02_00_00_00_00_01), ipv4: IPv4Address("198.18.0.1"), ipv6: IPv6Address("2001:db8::1")),
                InterfaceConfiguration(index: 2, mac: MACAddress(0x02_00_00_00_00_02), ipv4: IPv4Address("198.19.0.1"), ipv6: IPv6Address("2001:db8:1::1")),
            ],
            routes: [
                Route(destination: a("198.18.0.0"), prefixLength: 15, interface: 1),
                Route(destination: a("198.19.0.0"), prefixLength: 16, interface: 2),
                Route(destination: a("2001:db8::"), prefixLength: 48, interface: 1),
                Route(destination: a("2001:db8:1::"), prefixLength: 48, interface: 2),
            ])
        // Replies of connections another director made, too; connections handed to the kernel and back.
        config.sloppyNAT = true
        config.kernelForwarding = true
        var d = Director(configuration: config, capacity: 4096)
        for ip in ["198.19.0.2", "198.19.0.3", "2001:db8:1::2", "2001:db8:1::3"] { d.learnNeighbour(a(ip), mac: MACAddress(0x02_00_00_00_01_00)) }
        return d
    }

    static func run(_ bytes: Span<UInt8>) {
        guard !bytes.isEmpty else { return }
        let control = bytes[0]
        let frame = bytes.extracting(1...)
        // libFuzzer runs one input at a time on one thread: the statics are never shared.
        unsafe batch.removeAll()
        guard unsafe batch.append(frame, interface: UInt16(control & 1) + 1) else { return }
        unsafe now &+= UInt64(control >> 1) * 100
        let traced = control & 0x40 != 0
        if traced { _ = unsafe director.trace(filter: nil, budget: 4) }
        unsafe director.process(batch, now: now)
        if traced { _ = unsafe director.trace(filter: nil, budget: 0) }
        if control & 0x80 != 0 { unsafe director.tick(now: now) }
        // The kernel's counts, as a sweep reports them, for each connection the input asked to hand down.
        unsafe director.takeKernelFlowRequests(into: &kernelRequests)
        for r in unsafe kernelRequests where r.handDown {
            _ = unsafe director.kernelForwarded(r.key, toReal: (UInt64(control), UInt64(control) &* 60), toClient: (UInt64(control & 3), 40), now: now)
        }
        unsafe kernelRequests.removeAll(keepingCapacity: true)
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzDirector(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let buffer = unsafe UnsafeBufferPointer(start: data, count: size)
    FuzzDirector.run(unsafe buffer.span)
    return 0
}
