import LVSPacket
import LVSTestSupport
import Testing

@testable import LVSCore

/// `--kernel-forwarding`, the engine's half: which connections it hands to
/// the kernel, with which rules (the fast path's rewrite, field by field),
/// when it takes them back, and how the kernel's counts keep them alive.
@Suite struct KernelForwardingTests {
    let vip = ip("198.18.0.10")
    let client = ip("198.18.0.100")
    let rs = FrameBuilder(srcMAC: rsMAC.value, dstMAC: ifaceRealMAC.value)

    func service(_ m: ForwardingMethod, _ proto: TransportProtocol = .tcp, lips: [IPAddress] = []) -> VirtualServiceConfiguration {
        VirtualServiceConfiguration(
            key: .address(proto, vip, 80), scheduler: "rr",
            realServers: [RealServerConfiguration(address: ip("198.19.0.2"), port: 8080, method: m)], localAddresses: lips)
    }

    func requests(_ h: inout Harness) -> [KernelFlowRequest] {
        var out: [KernelFlowRequest] = []
        h.director.takeKernelFlowRequests(into: &out)
        return out
    }

    /// SYN, SYN-ACK, ACK of client port 40000.
    func handshake(_ h: inout Harness) {
        _ = h.send(h.builder.frame(src: client, dst: vip, FrameBuilder.tcp(sport: 40000, dport: 80, seq: 1000, flags: 0x02)))
        _ = h.send(rs.frame(src: ip("198.19.0.2"), dst: client, FrameBuilder.tcp(sport: 8080, dport: 40000, seq: 7000, ack: 1001, flags: 0x12)), interface: 2)
        _ = h.send(h.builder.frame(src: client, dst: vip, FrameBuilder.tcp(sport: 40000, dport: 80, seq: 1001, ack: 7001, flags: 0x10)))
    }

    let key = KernelFlowKey(proto: 6, client: IPv4Address("198.18.0.100")!, clientPort: 40000, virtual: IPv4Address("198.18.0.10")!, virtualPort: 80)

    @Test func anEstablishedNATConnectionGoesToTheKernelAndComesBackAtItsFIN() {
        var h = Harness([service(.nat)], kernelForwarding: true)
        handshake(&h)
        let asked = requests(&h)
        #expect(asked.last?.key == key && asked.last?.handDown == true && asked.dropLast().allSatisfy { !$0.handDown }, "\(asked)")
        let flow = h.director.kernelFlow(key, now: h.now)
        // What the fast path writes: client → RIP:8080 out of the real servers' side, RIP:8080 → VIP:80 back out of the clients'.
        let toReal = KernelFlowRule(
            proto: 6, source: key.client, sourcePort: 40000, destination: key.virtual, destinationPort: 80, newSource: key.client,
            newSourcePort: 40000, newDestination: IPv4Address("198.19.0.2")!, newDestinationPort: 8080, interface: 2, destinationMAC: rsMAC,
            sourceMAC: ifaceRealMAC)
        let toClient = KernelFlowRule(
            proto: 6, source: IPv4Address("198.19.0.2")!, sourcePort: 8080, destination: key.client, destinationPort: 40000,
            newSource: key.virtual, newSourcePort: 80, newDestination: key.client, newDestinationPort: 40000, interface: 1,
            destinationMAC: MACAddress(clientMAC), sourceMAC: ifaceClientMAC)
        #expect(flow == KernelFlow(toReal: toReal, toClient: toClient))

        // The kernel's counts: the connection is counted and kept alive as if lvsd had forwarded them.
        h.now += 600_000
        #expect(h.director.kernelForwarded(key, toReal: (100, 150_000), toClient: (60, 3_000), now: h.now) == flow)
        let svc = h.director.service(.address(.tcp, vip, 80))!
        #expect(svc.counters.inPackets == 2 + 100 && svc.counters.outPackets == 1 + 60)
        #expect(svc.counters.inBytes == 40 + 40 + 150_000 && svc.counters.outBytes == 40 + 3_000)
        #expect(h.director.shared.kernelForwarded == 160)
        var left: [UInt64] = []
        h.director.v4.table.forEach { _, c in left.append(c.expires) }
        #expect(left == [h.now + 900_000])

        // While nothing the rules depend on changes, a sweep need not rebuild them; a next hop's new MAC moves the generation.
        let generation = h.director.shared.rulesGeneration
        #expect(h.director.kernelForwarded(key, toReal: (0, 0), toClient: (0, 0), now: h.now, unchanged: flow) == flow)
        h.director.learnNeighbour(ip("198.19.0.2"), mac: MACAddress(0x02_00_00_00_01_09))
        #expect(h.director.shared.rulesGeneration != generation)
        #expect(h.director.kernelFlow(key, now: h.now)?.toReal.destinationMAC == MACAddress(0x02_00_00_00_01_09))

        // The client's FIN goes to lvsd: the connection is taken back, and a late count is still counted.
        _ = h.send(h.builder.frame(src: client, dst: vip, FrameBuilder.tcp(sport: 40000, dport: 80, seq: 2001, ack: 9001, flags: 0x11)))
        #expect(requests(&h).map(\.handDown) == [false])
        #expect(h.director.kernelFlow(key, now: h.now) == nil)
        #expect(h.director.kernelForwarded(key, toReal: (1, 40), toClient: (0, 0), now: h.now) == nil)
        #expect(h.director.service(.address(.tcp, vip, 80))!.counters.inPackets == 2 + 100 + 1 + 1)
        // Gone from the table: nothing to count, nothing to forward.
        let stranger = KernelFlowKey(proto: 6, client: key.client, clientPort: 1, virtual: key.virtual, virtualPort: 80)
        #expect(h.director.kernelForwarded(stranger, toReal: (1, 40), toClient: (0, 0), now: h.now) == nil)
    }

    @Test func onlyPlainIPv4NATAndDRConnectionsAreHandedDown() {
        // DR: only the client's direction.
        var dr = Harness([service(.directRouting)], kernelForwarding: true)
        handshake(&dr)
        let drFlow = dr.director.kernelFlow(key, now: dr.now)
        #expect(drFlow?.toClient == nil && drFlow?.toReal.newDestination == key.virtual && drFlow?.toReal.newDestinationPort == 80)
        #expect(drFlow?.toReal.destinationMAC == rsMAC && drFlow?.toReal.interface == 2)
        // A UDP flow from its first datagram.
        var udp = Harness([service(.nat, .udp)], kernelForwarding: true)
        _ = udp.send(udp.builder.frame(src: client, dst: vip, FrameBuilder.udp(sport: 40000, dport: 80)))
        let udpKey = KernelFlowKey(proto: 17, client: key.client, clientPort: 40000, virtual: key.virtual, virtualPort: 80)
        #expect(requests(&udp).map(\.key) == [udpKey])
        #expect(udp.director.kernelFlow(udpKey, now: udp.now)?.toClient?.newSource == key.virtual)
        // FULLNAT keeps its connections (TOA, local ports); a connection before it is established is not the kernel's.
        var full = Harness([service(.fullNAT, lips: [ip("198.19.0.100")])], kernelForwarding: true)
        _ = full.send(full.builder.frame(src: client, dst: vip, FrameBuilder.tcp(sport: 40000, dport: 80, seq: 1000, flags: 0x02)))
        #expect(full.director.kernelFlow(key, now: full.now) == nil)
        // IPv6 stays lvsd's; without the flag nothing is asked.
        let vip6 = ip("2001:db8::10")
        var six = Harness(
            [
                VirtualServiceConfiguration(
                    key: .address(.udp, vip6, 53), scheduler: "rr", realServers: [RealServerConfiguration(address: ip("2001:db8:1::2"), port: 53, method: .nat)]
                )
            ],
            kernelForwarding: true)
        _ = six.send(six.builder.frame(src: ip("2001:db8::100"), dst: vip6, FrameBuilder.udp(sport: 41000, dport: 53)))
        #expect(requests(&six).isEmpty)
        var off = Harness([service(.nat)])
        handshake(&off)
        #expect(requests(&off).isEmpty)
    }

    /// The kernel's packets are counted in lumps: a sync record is due when
    /// a lump passes the 3rd, 53rd, 103rd … client packet.
    @Test func aLumpOfPacketsPassingASyncCountIsDue() {
        #expect(Forwarding.syncDue(after: 2, through: 3) && Forwarding.syncDue(after: 0, through: 1000) && Forwarding.syncDue(after: 50, through: 53))
        #expect(!Forwarding.syncDue(after: 3, through: 52) && !Forwarding.syncDue(after: 0, through: 2) && !Forwarding.syncDue(after: 53, through: 53))
    }
}
