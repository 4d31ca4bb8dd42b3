import LVSCore
import LVSPacket
import LVSTestSupport
import Testing

@testable import LVSAdmin
@testable import LVSConfiguration
@testable import LVSControlProtocol

/// `lvsadm trace`: what the director records for a traced packet, and the
/// changed fields lvsadm prints for each forwarding method.
@Suite(.serialized) struct TraceTests {
    let vip = ip("198.18.0.10")
    let client = ip("198.18.0.100")
    let rs = ip("198.19.0.2")

    func harness(_ m: ForwardingMethod, lips: [IPAddress] = []) -> Harness {
        Harness([
            VirtualServiceConfiguration(
                key: .address(.tcp, vip, 80), scheduler: "wlc",
                realServers: [RealServerConfiguration(address: rs, port: m == .nat || m == .fullNAT ? 8080 : 80, method: m)],
                localAddresses: lips)
        ])
    }

    func syn(_ h: Harness, sport: UInt16 = 40000) -> [UInt8] {
        h.builder.frame(src: client, dst: vip, FrameBuilder.tcp(sport: sport, dport: 80, flags: TCPFlags.syn))
    }

    /// The changed fields of the one traced packet, as lvsadm prints them.
    func changes(_ r: TraceRecord) -> [String: String] {
        let e = TraceEntry(r, wallOffset: 0)
        let before = FrameFields.describe(e.before).fields
        let after = FrameFields.describe(e.after, tunnelled: e.method == .tunnel).fields
        var out: [String: String] = [:]
        for c in FrameFields.changes(before, after) { out[c.name] = "\(c.before ?? "-") -> \(c.after ?? "-")" }
        return out
    }

    @Test func nothingIsRecordedUntilArmedAndDisarmingReturnsTheRest() {
        var h = harness(.nat)
        _ = h.sendBatch([(syn(h), 1)])
        #expect(h.director.trace(filter: nil, budget: 5).isEmpty)
        _ = h.sendBatch([(syn(h, sport: 40001), 1)])
        let taken = h.director.trace(filter: nil, budget: 0)
        #expect(taken.count == 1)
        _ = h.sendBatch([(syn(h, sport: 40002), 1)])
        #expect(h.director.trace(filter: nil, budget: 0).isEmpty)
    }

    @Test func natNewAndExistingConnectionWithEveryChangedField() {
        var h = harness(.nat)
        _ = h.director.trace(filter: .address(.tcp, vip, 80), budget: 10)
        let ack = h.builder.frame(src: client, dst: vip, FrameBuilder.tcp(sport: 40000, dport: 80, seq: 1001, ack: 5001, flags: TCPFlags.ack))
        let other = h.builder.frame(src: client, dst: ip("198.18.0.99"), FrameBuilder.tcp(sport: 40000, dport: 80, flags: TCPFlags.syn))
        let out = h.sendBatch([(syn(h), 1), (other, 1), (ack, 1)])
        #expect(out[0].0 == .transmit(interface: 2) && out[2].0 == .transmit(interface: 2))
        let records = h.director.trace(filter: nil, budget: 0)
        #expect(records.count == 2)  // the frame for another address is not the service's
        let (first, second) = (records[0], records[1])
        #expect(first.decision == .scheduled && first.scheduler == "wlc" && first.realServer == rs && first.realPort == 8080)
        #expect(first.method == .nat && first.state == .synReceived && first.service == .address(.tcp, vip, 80))
        #expect(second.decision == .existing && second.state == .established)
        let c = changes(first)
        #expect(c["eth.dst"] == "02:00:00:00:00:01 -> 02:00:00:00:01:02")
        #expect(c["eth.src"] == "02:00:00:00:00:aa -> 02:00:00:00:00:02")
        #expect(c["ip.dst"] == "198.18.0.10 -> 198.19.0.2")
        #expect(c["ip.ttl"] == "64 -> 63")
        #expect(c["tcp.dport"] == "80 -> 8080")
        #expect(c["ip.checksum"] != nil && c["tcp.checksum"] != nil)
        #expect(c["ip.src"] == nil && c["tcp.sport"] == nil)
        let text = TraceFormatter.format(TraceEntry(first, wallOffset: 0))
        #expect(text.contains("TCP 198.18.0.100:40000 -> 198.18.0.10:80 [S]"))
        #expect(text.contains("new connection: wlc chose 198.19.0.2:8080 (Masq), state SYN_RECV"))
        #expect(text.contains("tcp.dport     80 -> 8080"))
    }

    @Test func directRoutingChangesOnlyTheMACsAndTTL() {
        var h = harness(.directRouting)
        _ = h.director.trace(filter: nil, budget: 1)
        _ = h.sendBatch([(syn(h), 1)])
        let c = changes(h.director.trace(filter: nil, budget: 0)[0])
        #expect(Set(c.keys) == ["eth.dst", "eth.src", "ip.ttl", "ip.checksum"])
    }

    @Test func tunnelAddsTheOuterHeader() {
        var h = harness(.tunnel)
        _ = h.director.trace(filter: nil, budget: 1)
        _ = h.sendBatch([(syn(h), 1)])
        let c = changes(h.director.trace(filter: nil, budget: 0)[0])
        #expect(c["outer.ip.src"] == "- -> 198.19.0.1")
        #expect(c["outer.ip.dst"] == "- -> 198.19.0.2")
        #expect(c["outer.ip.proto"] == "- -> 4")
        #expect(c["ip.dst"] == nil && c["tcp.dport"] == nil)
    }

    @Test func fullNATRewritesBothSidesAndShowsTheTOA() {
        let lip = ip("198.19.0.100")
        var h = harness(.fullNAT, lips: [lip])
        _ = h.sendBatch([(syn(h), 1)])
        let out = h.sendBatch([(syn(h), 1)])  // a retransmitted SYN: the same connection
        let lport = be16(out[0].1, 34)
        let synAck = FrameBuilder(srcMAC: rsMAC.value, dstMAC: ifaceRealMAC.value)
            .frame(
                src: rs, dst: lip,
                FrameBuilder.tcp(
                    sport: 8080, dport: lport, seq: 5000, ack: 1001, flags: TCPFlags.syn | TCPFlags.ack,
                    options: [2, 4, 0x05, 0xB4]))
        let ack = h.builder.frame(src: client, dst: vip, FrameBuilder.tcp(sport: 40000, dport: 80, seq: 1001, ack: 5001, flags: TCPFlags.ack))
        _ = h.director.trace(filter: nil, budget: 2)
        _ = h.sendBatch([(synAck, 2), (ack, 1)])
        let records = h.director.trace(filter: nil, budget: 0)
        #expect(records[0].decision == .reply)
        let back = changes(records[0])
        #expect(back["ip.src"] == "198.19.0.2 -> 198.18.0.10" && back["ip.dst"] == "198.19.0.100 -> 198.18.0.100")
        #expect(back["tcp.mss"] == "1460 -> 1452")  // room for the 8-byte TOA
        let c = changes(records[1])
        #expect(c["ip.src"] == "198.18.0.100 -> 198.19.0.100" && c["ip.dst"] == "198.18.0.10 -> 198.19.0.2")
        #expect(c["tcp.toa"] == "- -> 198.18.0.100:40000")
        #expect(c["tcp.sport"] == "40000 -> \(lport)")
    }

    @Test func aMalformedPacketIsTracedWithItsDropReason() {
        var h = harness(.nat)
        var bad = syn(h)
        bad[14] = 0x43  // IHL 3
        _ = h.director.trace(filter: .address(.tcp, vip, 80), budget: 1)
        _ = h.sendBatch([(bad, 1)])
        let records = h.director.trace(filter: nil, budget: 0)
        #expect(records.count == 1 && records[0].verdict == .drop(.malformed(.badIHL)))
        let text = TraceFormatter.format(TraceEntry(records[0], wallOffset: 0))
        #expect(text.contains("dropped: bad-ihl"))
        #expect(text.contains("malformed: bad-ihl"))
    }
}
