import LVSPacket
import LVSTestSupport
import Testing

@testable import LVSCore

/// The SYN proxy, segment by segment: cookie, the real server's handshake
/// done by the director, sequence numbers translated both ways.
@Suite(.serialized) struct SynProxyTests {
    let vip = ip("198.18.0.10")
    let client = ip("198.18.0.100")
    let rs = ip("198.19.0.2")

    func harness(_ m: ForwardingMethod) -> Harness {
        Harness([
            VirtualServiceConfiguration(
                key: .address(.tcp, vip, 80), scheduler: "rr",
                realServers: [RealServerConfiguration(address: rs, port: 8080, method: m)],
                localAddresses: m == .fullNAT ? [ip("198.19.0.100")] : [], synproxy: true)
        ])
    }

    func be32(_ f: [UInt8], _ at: Int) -> UInt32 { UInt32(be16(f, at)) << 16 | UInt32(be16(f, at + 2)) }

    func fromClient(_ h: Harness, seq: UInt32, ack: UInt32 = 0, flags: UInt8, options: [UInt8] = [], payload: [UInt8] = []) -> [UInt8] {
        h.builder.frame(src: client, dst: vip, FrameBuilder.tcp(sport: 40000, dport: 80, seq: seq, ack: ack, flags: flags, options: options, payload: payload))
    }

    func fromReal(_ dst: IPAddress, _ dport: UInt16, seq: UInt32, ack: UInt32, flags: UInt8, payload: [UInt8] = []) -> [UInt8] {
        FrameBuilder(srcMAC: rsMAC.value, dstMAC: ifaceRealMAC.value)
            .frame(
                src: rs, dst: dst, FrameBuilder.tcp(sport: 8080, dport: dport, seq: seq, ack: ack, flags: flags, options: [2, 4, 0x05, 0xB4], payload: payload))
    }

    @Test func natHandshakeAtTheDirectorThenTranslatedBothWays() {
        var h = harness(.nat)
        // SYN → SYN-ACK with a cookie, back to the client; nothing is tracked.
        let (v1, synAck) = h.send(fromClient(h, seq: 1000, flags: TCPFlags.syn, options: [2, 4, 0x05, 0xB4]))
        #expect(v1 == .transmit(interface: 1))
        #expect(field(synAck, 0, 6) == [2, 0, 0, 0, 0, 0xAA] && field(synAck, 6, 6) == [2, 0, 0, 0, 0, 1])
        #expect(field(synAck, 26, 4) == [198, 18, 0, 10] && field(synAck, 30, 4) == [198, 18, 0, 100])
        #expect(be16(synAck, 34) == 80 && be16(synAck, 36) == 40000 && synAck[47] == TCPFlags.syn | TCPFlags.ack)
        #expect(be32(synAck, 42) == 1001 && synAck[54] == 2 && be16(synAck, 56) == 1452)  // ack, MSS less TOA room
        #expect(synAck.count == 58 && FrameBuilder.checksumsValid(synAck))
        #expect(h.director.v4.table.count == 0 && h.director.shared.synproxyCookies == 1)
        let cookie = be32(synAck, 38)

        // A forged ACK is refused; the right one opens the connection with a SYN to the real server.
        #expect(h.send(fromClient(h, seq: 1001, ack: cookie &+ 2, flags: TCPFlags.ack)).0 == .drop(.synproxyRefused))
        let (v2, syn) = h.send(fromClient(h, seq: 1001, ack: cookie &+ 1, flags: TCPFlags.ack))
        #expect(v2 == .transmit(interface: 2))
        #expect(field(syn, 30, 4) == [198, 19, 0, 2] && be16(syn, 36) == 8080 && syn[47] == TCPFlags.syn)
        #expect(be32(syn, 38) == 1000 && be32(syn, 42) == 0 && be16(syn, 56) == 1460 && FrameBuilder.checksumsValid(syn))
        #expect(h.director.v4.table.count == 1)
        // Data before the real server answers is held for it.
        #expect(h.send(fromClient(h, seq: 1001, ack: cookie &+ 1, flags: TCPFlags.ack | TCPFlags.psh, payload: [1, 2, 3])).0 == .held)

        // The real server's SYN-ACK never reaches the client: the director completes
        // the handshake, and the held data follows in the same batch, translated.
        let out = h.sendBatch([(fromReal(client, 40000, seq: 5000, ack: 1001, flags: TCPFlags.syn | TCPFlags.ack), 2)])
        #expect(out.count == 2)
        let (v3, ack) = out[0]
        #expect(v3 == .transmit(interface: 2))
        #expect(out[1].0 == .transmit(interface: 2) && be32(out[1].1, 42) == 5001 && Array(out[1].1.suffix(3)) == [1, 2, 3])
        #expect(field(out[1].1, 30, 4) == [198, 19, 0, 2] && be16(out[1].1, 36) == 8080 && FrameBuilder.checksumsValid(out[1].1))
        #expect(field(ack, 26, 4) == [198, 18, 0, 100] && field(ack, 30, 4) == [198, 19, 0, 2])
        #expect(be16(ack, 34) == 40000 && be16(ack, 36) == 8080 && ack[47] == TCPFlags.ack)
        #expect(be32(ack, 38) == 1001 && be32(ack, 42) == 5001 && ack.count == 54 && FrameBuilder.checksumsValid(ack))
        #expect(h.director.service(.address(.tcp, vip, 80))!.destinations[0].activeConnections == 1)

        // From now on: the client's ACK numbers up by the difference, the server's sequence numbers down.
        let (v4, data) = h.send(fromClient(h, seq: 1001, ack: cookie &+ 1, flags: TCPFlags.ack | TCPFlags.psh, payload: [1, 2, 3]))
        #expect(v4 == .transmit(interface: 2) && be32(data, 38) == 1001 && be32(data, 42) == 5001 && FrameBuilder.checksumsValid(data))
        let (v5, reply) = h.send(fromReal(client, 40000, seq: 5001, ack: 1004, flags: TCPFlags.ack | TCPFlags.psh, payload: [9]), interface: 2)
        #expect(v5 == .transmit(interface: 1) && field(reply, 26, 4) == [198, 18, 0, 10] && be16(reply, 34) == 80)
        #expect(be32(reply, 38) == cookie &+ 1 && be32(reply, 42) == 1004 && FrameBuilder.checksumsValid(reply))
    }

    /// The SYN to the real server can be lost (its next hop not resolved
    /// yet): the client's retransmitted first data, already held, sends the
    /// SYN again with the client's ISN, and the data still follows it once.
    @Test func aRetransmittedFirstRequestSendsTheLostSYNAgain() {
        var h = harness(.nat)
        let (_, synAck) = h.send(fromClient(h, seq: 1000, flags: TCPFlags.syn, options: [2, 4, 0x05, 0xB4]))
        let cookie = be32(synAck, 38)
        _ = h.send(fromClient(h, seq: 1001, ack: cookie &+ 1, flags: TCPFlags.ack))  // the SYN: lost on the way
        let request = fromClient(h, seq: 1001, ack: cookie &+ 1, flags: TCPFlags.ack | TCPFlags.psh, payload: [1, 2, 3])
        #expect(h.send(request).0 == .held)
        let (again, syn) = h.send(request)
        #expect(again == .transmit(interface: 2))
        #expect(syn[47] == TCPFlags.syn && be32(syn, 38) == 1000 && be32(syn, 42) == 0 && syn.count == 58 && FrameBuilder.checksumsValid(syn))
        let out = h.sendBatch([(fromReal(client, 40000, seq: 5000, ack: 1001, flags: TCPFlags.syn | TCPFlags.ack), 2)])
        #expect(out.count == 2 && out[1].0 == .transmit(interface: 2) && Array(out[1].1.suffix(3)) == [1, 2, 3])
    }

    /// A real server still holding this tuple in TIME_WAIT answers the SYN
    /// with the old connection's ACK: the director resets it there, at the
    /// sequence number it expects (the client is not told), and the client's
    /// retransmitted request sends the SYN again.
    @Test func anOldConnectionsACKFromTheRealServerIsReset() {
        var h = harness(.nat)
        let (_, synAck) = h.send(fromClient(h, seq: 1000, flags: TCPFlags.syn, options: [2, 4, 0x05, 0xB4]))
        let cookie = be32(synAck, 38)
        _ = h.send(fromClient(h, seq: 1001, ack: cookie &+ 1, flags: TCPFlags.ack))
        let request = fromClient(h, seq: 1001, ack: cookie &+ 1, flags: TCPFlags.ack | TCPFlags.psh, payload: [1, 2, 3])
        #expect(h.send(request).0 == .held)
        let (v, reset) = h.send(fromReal(client, 40000, seq: 77_000, ack: 3_000_000, flags: TCPFlags.ack), interface: 2)
        #expect(v == .transmit(interface: 2))
        #expect(field(reset, 26, 4) == [198, 18, 0, 100] && field(reset, 30, 4) == [198, 19, 0, 2])
        #expect(be16(reset, 34) == 40000 && be16(reset, 36) == 8080 && reset[47] == TCPFlags.rst)
        #expect(be32(reset, 38) == 3_000_000 && FrameBuilder.checksumsValid(reset))
        let (again, syn) = h.send(request)
        #expect(again == .transmit(interface: 2) && syn[47] == TCPFlags.syn && be32(syn, 38) == 1000)
        let out = h.sendBatch([(fromReal(client, 40000, seq: 5000, ack: 1001, flags: TCPFlags.syn | TCPFlags.ack), 2)])
        #expect(out.count == 2 && out[1].0 == .transmit(interface: 2) && Array(out[1].1.suffix(3)) == [1, 2, 3])
    }

    @Test func fullNATCarriesTheTOAInTheHandshakeItCompletes() {
        var h = harness(.fullNAT)
        let cookie = be32(h.send(fromClient(h, seq: 1000, flags: TCPFlags.syn, options: [2, 4, 0x05, 0xB4])).1, 38)
        let syn = h.send(fromClient(h, seq: 1001, ack: cookie &+ 1, flags: TCPFlags.ack)).1
        #expect(field(syn, 26, 4) == [198, 19, 0, 100])
        let lport = be16(syn, 34)
        let (v, ack) = h.send(fromReal(ip("198.19.0.100"), lport, seq: 5000, ack: 1001, flags: TCPFlags.syn | TCPFlags.ack), interface: 2)
        #expect(v == .transmit(interface: 2) && ack[47] == TCPFlags.ack && be32(ack, 42) == 5001)
        #expect(ack[54] == 254 && ack[55] == 8 && be16(ack, 56) == 40000 && field(ack, 58, 4) == [198, 18, 0, 100])
        #expect(FrameBuilder.checksumsValid(ack))
    }

    @Test func aFloodOfSpoofedSYNsAndACKsTracksNothing() {
        var h = harness(.nat)
        for k in 0..<500 {
            let src = ip("198.18.1.\(k % 250 + 1)")
            _ = h.send(h.builder.frame(src: src, dst: vip, FrameBuilder.tcp(sport: UInt16(10000 + k), dport: 80, seq: UInt32(k), flags: TCPFlags.syn)))
            _ = h.send(
                h.builder.frame(
                    src: src, dst: vip,
                    FrameBuilder.tcp(
                        sport: UInt16(20000 + k), dport: 80, seq: UInt32(k), ack: UInt32(k * 7919),
                        flags: TCPFlags.ack)))
        }
        #expect(h.director.v4.table.count == 0)
        #expect(h.director.drops(.synproxyRefused) == 500 && h.director.shared.synproxyCookies == 500)
    }
}
