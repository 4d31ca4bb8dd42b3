import LVSPacket
import LVSTestSupport
import Testing

@testable import LVSCore

/// The FTP helper (`ip_vs_ftp`) on a NAT service's port 21: passive replies
/// rewritten and their length change shifted, data connections expected in
/// both modes.
@Suite(.serialized) struct FTPTests {
    let vip = ip("198.18.0.10")
    let client = ip("198.18.0.100")
    let rs = ip("198.19.0.2")

    func harness() -> Harness {
        Harness([
            VirtualServiceConfiguration(
                key: .address(.tcp, vip, 21), scheduler: "rr", realServers: [RealServerConfiguration(address: rs, port: 21, method: .nat)])
        ])
    }

    func be32(_ f: [UInt8], _ at: Int) -> UInt32 { UInt32(be16(f, at)) << 16 | UInt32(be16(f, at + 2)) }
    func payload(_ f: [UInt8]) -> String { String(decoding: f[(34 + Int(f[46] >> 4) * 4)...], as: UTF8.self) }

    func fromClient(_ h: Harness, sport: UInt16 = 40000, dport: UInt16 = 21, seq: UInt32, ack: UInt32 = 0, flags: UInt8, text: String = "") -> [UInt8] {
        h.builder.frame(src: client, dst: vip, FrameBuilder.tcp(sport: sport, dport: dport, seq: seq, ack: ack, flags: flags, payload: Array(text.utf8)))
    }

    func fromReal(_ h: Harness, sport: UInt16 = 21, dport: UInt16 = 40000, seq: UInt32, ack: UInt32, flags: UInt8, text: String = "") -> [UInt8] {
        FrameBuilder(srcMAC: rsMAC.value, dstMAC: ifaceRealMAC.value)
            .frame(src: rs, dst: client, FrameBuilder.tcp(sport: sport, dport: dport, seq: seq, ack: ack, flags: flags, payload: Array(text.utf8)))
    }

    /// The control connection, established (client ISN 1000, server ISN 5000).
    func open(_ h: inout Harness) {
        _ = h.send(fromClient(h, seq: 1000, flags: TCPFlags.syn))
        _ = h.send(fromReal(h, seq: 5000, ack: 1001, flags: TCPFlags.syn | TCPFlags.ack), interface: 2)
        _ = h.send(fromClient(h, seq: 1001, ack: 5001, flags: TCPFlags.ack))
    }

    @Test func aPassiveReplyNamesTheVirtualServiceAndItsDataConnectionFollows() {
        var h = harness()
        open(&h)
        let reply = "227 Entering Passive Mode (198,19,0,2,195,80).\r\n"
        let (v, out) = h.send(fromReal(h, seq: 5001, ack: 1001, flags: TCPFlags.ack | TCPFlags.psh, text: reply), interface: 2)
        #expect(v == .transmit(interface: 1) && field(out, 26, 4) == [198, 18, 0, 10] && be16(out, 34) == 21)
        #expect(payload(out) == "227 Entering Passive Mode (198,18,0,10,195,80).\r\n" && be32(out, 38) == 5001 && FrameBuilder.checksumsValid(out))
        let n = UInt32(reply.utf8.count)
        // One byte longer: the server's later bytes come one further on, the client's acknowledgements one back.
        let (_, next) = h.send(fromReal(h, seq: 5001 + n, ack: 1001, flags: TCPFlags.ack | TCPFlags.psh, text: "150 ok\r\n"), interface: 2)
        #expect(be32(next, 38) == 5002 + n && payload(next) == "150 ok\r\n" && FrameBuilder.checksumsValid(next))
        let (_, ack) = h.send(fromClient(h, seq: 1001, ack: 5002 + n + 8, flags: TCPFlags.ack))
        #expect(be32(ack, 42) == 5001 + n + 8 && FrameBuilder.checksumsValid(ack))
        // A retransmitted reply is rewritten the same and numbered as before.
        let (_, again) = h.send(fromReal(h, seq: 5001, ack: 1001, flags: TCPFlags.ack | TCPFlags.psh, text: reply), interface: 2)
        #expect(be32(again, 38) == 5001 && payload(again) == payload(out))

        // The client's data connection, from a port of its choosing, reaches the same server's port.
        let (dv, syn) = h.send(fromClient(h, sport: 41000, dport: 50000, seq: 9000, flags: TCPFlags.syn))
        #expect(dv == .transmit(interface: 2) && field(syn, 30, 4) == [198, 19, 0, 2] && be16(syn, 36) == 50000 && be16(syn, 34) == 41000)
        let (_, synAck) = h.send(fromReal(h, sport: 50000, dport: 41000, seq: 7000, ack: 9001, flags: TCPFlags.syn | TCPFlags.ack), interface: 2)
        #expect(field(synAck, 26, 4) == [198, 18, 0, 10] && be16(synAck, 34) == 50000 && FrameBuilder.checksumsValid(synAck))
        #expect(h.director.v4.table.noClientPortCount == 0)
    }

    @Test func anActiveDataConnectionLeavesAsTheVirtualService() {
        var h = harness()
        open(&h)
        let (v, port) = h.send(fromClient(h, seq: 1001, ack: 5001, flags: TCPFlags.ack | TCPFlags.psh, text: "PORT 198,18,0,100,195,81\r\n"))
        #expect(v == .transmit(interface: 2) && payload(port) == "PORT 198,18,0,100,195,81\r\n")
        // The server connects from its port 20 to the port the client named: it leaves as VIP:20.
        let (sv, syn) = h.send(fromReal(h, sport: 20, dport: 50001, seq: 7000, ack: 0, flags: TCPFlags.syn), interface: 2)
        #expect(sv == .transmit(interface: 1) && field(syn, 26, 4) == [198, 18, 0, 10] && be16(syn, 34) == 20 && be16(syn, 36) == 50001)
        #expect(FrameBuilder.checksumsValid(syn))
        let (_, synAck) = h.send(fromClient(h, sport: 50001, dport: 20, seq: 9000, ack: 7001, flags: TCPFlags.syn | TCPFlags.ack))
        #expect(field(synAck, 30, 4) == [198, 19, 0, 2] && be16(synAck, 36) == 20)

        // EPRT names the same; an address other than the client's own is no one's business.
        _ = h.send(fromClient(h, seq: 1027, ack: 5001, flags: TCPFlags.ack | TCPFlags.psh, text: "EPRT |1|198.18.0.100|50003|\r\n"))
        #expect(h.send(fromReal(h, sport: 20, dport: 50003, seq: 7000, ack: 0, flags: TCPFlags.syn), interface: 2).0 == .transmit(interface: 1))
        _ = h.send(fromClient(h, seq: 1057, ack: 5001, flags: TCPFlags.ack | TCPFlags.psh, text: "PORT 198,18,3,3,195,82\r\n"))
        #expect(h.director.v4.table.lookup(.reply, proto: 6, IPv4Address("198.19.0.2")!, 20, IPv4Address("198.18.3.3")!, 50002) == nil)
    }

    @Test func anExtendedPassiveReplyIsExpectedAsIs() {
        var h = harness()
        open(&h)
        let reply = "229 Entering Extended Passive Mode (|||50002|)\r\n"
        let (_, out) = h.send(fromReal(h, seq: 5001, ack: 1001, flags: TCPFlags.ack | TCPFlags.psh, text: reply), interface: 2)
        #expect(payload(out) == reply)
        let (dv, syn) = h.send(fromClient(h, sport: 41001, dport: 50002, seq: 9000, flags: TCPFlags.syn))
        #expect(dv == .transmit(interface: 2) && be16(syn, 36) == 50002 && field(syn, 30, 4) == [198, 19, 0, 2])
    }

    @Test func parsers() {
        let s = Array("227 Entering Passive Mode (198,19,0,2,4,1)".utf8)
        let p = FTPHelper.passive(s.span)
        #expect(p?.address == 0xC613_0002 && p?.port == 1025 && p?.start == 27)
        #expect(FTPHelper.passive(Array("227 Entering Passive Mode (198,19,0,256,4,1)".utf8).span) == nil)
        #expect(FTPHelper.passive(Array("227 Entering Passive Mode (198,19,0".utf8).span) == nil)
        #expect(FTPHelper.extendedPassive(Array("229 x (|||65535|)".utf8).span) == 65535)
        #expect(FTPHelper.extendedPassive(Array("229 x (|||65536|)".utf8).span) == nil)
        #expect(FTPHelper.activePort(Array("port 1,2,3,4,0,21\r\n".utf8).span).map { [$0.address, UInt32($0.port)] } == [0x0102_0304, 21])
        let e = FTPHelper.extendedPort(Array("EPRT |2|2001:db8::100|5282|\r\n".utf8).span)
        #expect(e?.family == 2 && e?.port == 5282 && e?.start == 8 && e?.end == 21)
        #expect(FTPHelper.extendedPort(Array("EPRT |2|2001:db8::100".utf8).span) == nil)
    }
}
