import LVSPacket
import LVSTestSupport
import Testing

@testable import LVSCore

/// What the data path tells the passive check.
@Suite struct PassiveCheckTests {
    let vip = ip("198.18.0.10")
    let client = ip("198.18.0.100")
    let rs = ip("198.19.0.2")

    func harness(_ m: ForwardingMethod) -> Harness {
        Harness([
            VirtualServiceConfiguration(
                key: .address(.tcp, vip, 80), scheduler: "rr",
                realServers: [RealServerConfiguration(address: rs, port: 8080, method: m)])
        ])
    }

    func events(_ h: inout Harness) -> [PassiveEvent.Kind] {
        var out: [PassiveEvent.Kind] = []
        h.director.takePassiveEvents { out.append($0.kind) }
        return out
    }

    func syn(_ h: Harness, port: UInt16 = 40000) -> [UInt8] {
        h.builder.frame(src: client, dst: vip, FrameBuilder.tcp(sport: port, dport: 80, flags: TCPFlags.syn))
    }

    @Test func aThirdUnansweredSYNReportsTheServerAndItsSYNACKClearsIt() {
        var h = harness(.nat)
        _ = h.send(syn(h))
        _ = h.send(syn(h))
        #expect(events(&h).isEmpty)
        _ = h.send(syn(h))
        var reported: [PassiveEvent] = []
        h.director.takePassiveEvents { reported.append($0) }
        #expect(reported == [PassiveEvent(kind: .unanswered, service: .address(.tcp, vip, 80), address: rs, port: 8080)])
        _ = h.send(syn(h))
        #expect(events(&h).isEmpty)  // once per connection

        // A server not under suspicion answers quietly; a suspect one reports once.
        let synAck = FrameBuilder(srcMAC: rsMAC.value, dstMAC: ifaceRealMAC.value)
            .frame(src: rs, dst: client, FrameBuilder.tcp(sport: 8080, dport: 40000, flags: TCPFlags.syn | TCPFlags.ack))
        _ = h.send(synAck, interface: 2)
        #expect(events(&h).isEmpty)
        h.director.setSuspect(.address(.tcp, vip, 80), address: rs, port: 8080, true)
        _ = h.send(syn(h, port: 40001))
        _ = h.send(
            FrameBuilder(srcMAC: rsMAC.value, dstMAC: ifaceRealMAC.value)
                .frame(src: rs, dst: client, FrameBuilder.tcp(sport: 8080, dport: 40001, flags: TCPFlags.syn | TCPFlags.ack)), interface: 2)
        _ = h.send(synAck, interface: 2)
        #expect(events(&h) == [.answered])
    }

    @Test func answeredConnectionsDirectRoutingAndTurnedOffReportNothing() {
        // A SYN-ACK the client did not get: its SYNs follow, but the server answered.
        var h = harness(.nat)
        _ = h.send(syn(h))
        _ = h.send(
            FrameBuilder(srcMAC: rsMAC.value, dstMAC: ifaceRealMAC.value)
                .frame(src: rs, dst: client, FrameBuilder.tcp(sport: 8080, dport: 40000, flags: TCPFlags.syn | TCPFlags.ack)), interface: 2)
        for _ in 0..<3 { _ = h.send(syn(h)) }
        #expect(events(&h).isEmpty)
        // DR never sees replies: it cannot tell.
        var dr = harness(.directRouting)
        for _ in 0..<3 { _ = dr.send(syn(dr)) }
        #expect(events(&dr).isEmpty)
        var off = harness(.nat)
        off.director.passiveCheck = false
        for _ in 0..<3 { _ = off.send(syn(off)) }
        #expect(events(&off).isEmpty)
    }
}
