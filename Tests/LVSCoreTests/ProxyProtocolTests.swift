import LVSPacket
import LVSTestSupport
import Testing

@testable import LVSCore

/// PROXY protocol, segment by segment: where the header goes, how every
/// later sequence number, acknowledgement and SACK block moves, what a
/// retransmission, a full-sized first segment, an insecure client and a
/// sync backup do.
@Suite(.serialized) struct ProxyProtocolTests {
    let vip = ip("198.18.0.10")
    let client = ip("198.18.0.100")
    let rs = ip("198.19.0.2")
    let lip = ip("198.19.0.100")

    func harness(_ pp: String, method: ForwardingMethod = .fullNAT, v6: Bool = false) -> Harness {
        Harness([
            VirtualServiceConfiguration(
                key: .address(.tcp, v6 ? ip("2001:db8::10") : vip, 80), scheduler: "rr",
                realServers: [RealServerConfiguration(address: v6 ? ip("2001:db8:1::2") : rs, port: 8080, method: method)],
                localAddresses: method == .fullNAT ? [v6 ? ip("2001:db8:1::100") : lip] : [], proxyProtocol: ProxyProtocol(name: pp))
        ])
    }

    func be32(_ f: [UInt8], _ at: Int) -> UInt32 { UInt32(be16(f, at)) << 16 | UInt32(be16(f, at + 2)) }

    func fromClient(_ h: Harness, seq: UInt32, ack: UInt32 = 0, flags: UInt8, options: [UInt8] = [], payload: [UInt8] = []) -> [UInt8] {
        h.builder.frame(src: client, dst: vip, FrameBuilder.tcp(sport: 40000, dport: 80, seq: seq, ack: ack, flags: flags, options: options, payload: payload))
    }

    func fromReal(_ dst: IPAddress, _ dport: UInt16, seq: UInt32, ack: UInt32, flags: UInt8, options: [UInt8] = [], payload: [UInt8] = []) -> [UInt8] {
        FrameBuilder(srcMAC: rsMAC.value, dstMAC: ifaceRealMAC.value)
            .frame(src: rs, dst: dst, FrameBuilder.tcp(sport: 8080, dport: dport, seq: seq, ack: ack, flags: flags, options: options, payload: payload))
    }

    /// The TCP payload of an IPv4 frame without options.
    func payload(_ f: [UInt8]) -> [UInt8] { Array(f[(34 + Int(f[46] >> 4) * 4)...]) }

    /// Opens a FULLNAT connection (client ISN 1000, server ISN 5000); returns the local port.
    func open(_ h: inout Harness) -> UInt16 {
        let (_, syn) = h.send(fromClient(h, seq: 1000, flags: TCPFlags.syn, options: [2, 4, 0x05, 0xB4]))
        let lport = be16(syn, 34)
        let (_, synAck) = h.send(fromReal(lip, lport, seq: 5000, ack: 1001, flags: TCPFlags.syn | TCPFlags.ack, options: [2, 4, 0x05, 0xB4]), interface: 2)
        // No TOA with PROXY protocol: the MSS is left as the server sent it.
        #expect(be16(synAck, 56) == 1460 && be32(synAck, 42) == 1001)
        return lport
    }

    @Test func theHeaderRidesTheHandshakesLastACKAndEveryLaterByteMoves() {
        var h = harness("v1")
        let lport = open(&h)
        let header = Array("PROXY TCP4 198.18.0.100 198.18.0.10 40000 80\r\n".utf8)
        let n = UInt32(header.count)

        // The handshake's last ACK carries the header: a server that speaks first (or waits for it) hears it now.
        let (v1, ack) = h.send(fromClient(h, seq: 1001, ack: 5001, flags: TCPFlags.ack))
        #expect(v1 == .transmit(interface: 2))
        #expect(field(ack, 26, 4) == [198, 19, 0, 100] && field(ack, 30, 4) == [198, 19, 0, 2] && be16(ack, 34) == lport && be16(ack, 36) == 8080)
        #expect(be32(ack, 38) == 1001 && be32(ack, 42) == 5001 && ack[46] == 0x50 && ack[47] == TCPFlags.ack)
        #expect(be16(ack, 16) == UInt16(40 + header.count) && payload(ack) == header && FrameBuilder.checksumsValid(ack))

        // The first request, before the server acknowledged the header: the header again, at the same numbers.
        let (_, first) = h.send(fromClient(h, seq: 1001, ack: 5001, flags: TCPFlags.ack | TCPFlags.psh, payload: Array("GET".utf8)))
        #expect(be32(first, 38) == 1001 && payload(first) == header + Array("GET".utf8) && FrameBuilder.checksumsValid(first))
        #expect(h.director.shared.proxyHeaders == 2)

        // The server's acknowledgements come back less the header; one inside it acknowledges nothing of the client's.
        let (_, inside) = h.send(fromReal(lip, lport, seq: 5001, ack: 1001 + 5, flags: TCPFlags.ack), interface: 2)
        #expect(be32(inside, 42) == 1001 && FrameBuilder.checksumsValid(inside))
        let (_, acked) = h.send(fromReal(lip, lport, seq: 5001, ack: 1004 + n, flags: TCPFlags.ack), interface: 2)
        #expect(be32(acked, 42) == 1004 && be32(acked, 38) == 5001 && FrameBuilder.checksumsValid(acked))

        // Acknowledged: later bytes move by the header's length; the first request sent again moves too, bare.
        let (_, next) = h.send(fromClient(h, seq: 1004, ack: 5001, flags: TCPFlags.ack | TCPFlags.psh, payload: [7]))
        #expect(be32(next, 38) == 1004 + n && payload(next) == [7] && FrameBuilder.checksumsValid(next))
        let (_, again) = h.send(fromClient(h, seq: 1001, ack: 5001, flags: TCPFlags.ack | TCPFlags.psh, payload: Array("GET".utf8)))
        #expect(be32(again, 38) == 1001 + n && payload(again) == Array("GET".utf8) && FrameBuilder.checksumsValid(again))
        #expect(h.director.shared.proxyHeaders == 2)

        // SACK blocks, as acknowledgements.
        let sack: [UInt8] = [1, 1, 5, 10] + FrameBuilder.be32(1010 + n) + FrameBuilder.be32(1020 + n)
        let (_, selective) = h.send(fromReal(lip, lport, seq: 5001, ack: 1004 + n, flags: TCPFlags.ack, options: sack), interface: 2)
        #expect(be32(selective, 42) == 1004 && be32(selective, 58) == 1010 && be32(selective, 62) == 1020 && FrameBuilder.checksumsValid(selective))
    }

    /// A first segment as large as the MTU allows: the header displaces its
    /// tail (and its FIN), which the client sends again, unacknowledged.
    @Test func aFullFirstSegmentLosesItsTailToTheHeader() {
        var h = harness("v2")
        _ = open(&h)
        let data = (0..<1460).map { UInt8(truncatingIfNeeded: $0) }
        let (v, out) = h.send(fromClient(h, seq: 1001, ack: 5001, flags: TCPFlags.ack | TCPFlags.fin, payload: data))
        #expect(v == .transmit(interface: 2))
        #expect(be16(out, 16) == 1500 && out.count == 1514 && out[47] == TCPFlags.ack && FrameBuilder.checksumsValid(out))
        let header = ProxyHeader.signature + [0x21, 0x11, 0, 12, 198, 18, 0, 100, 198, 18, 0, 10, 0x9C, 0x40, 0, 80]
        #expect(payload(out) == header + data.prefix(1460 - header.count))
    }

    @Test func anInsecureClientKeepsItsOwnHeader() {
        var h = harness("v1-insecure")
        let lport = open(&h)
        // Undecided: the handshake's ACK goes as it is.
        let (_, ack) = h.send(fromClient(h, seq: 1001, ack: 5001, flags: TCPFlags.ack))
        #expect(payload(ack).isEmpty && be32(ack, 38) == 1001)
        let own = Array("PROXY TCP4 198.18.3.3 198.18.0.10 1234 80\r\nGET".utf8)
        let (_, first) = h.send(fromClient(h, seq: 1001, ack: 5001, flags: TCPFlags.ack, payload: own))
        #expect(payload(first) == own && be32(first, 38) == 1001)
        let (_, next) = h.send(fromClient(h, seq: 1001 + UInt32(own.count), ack: 5001, flags: TCPFlags.ack, payload: [1]))
        #expect(be32(next, 38) == 1001 + UInt32(own.count))
        let (_, reply) = h.send(fromReal(lip, lport, seq: 5001, ack: 1002 + UInt32(own.count), flags: TCPFlags.ack), interface: 2)
        #expect(be32(reply, 42) == 1002 + UInt32(own.count) && h.director.shared.proxyHeaders == 0)

        // Another client, without a header of its own, gets lvsd's.
        var k = harness("v1-insecure")
        _ = open(&k)
        let (_, plain) = k.send(fromClient(k, seq: 1001, ack: 5001, flags: TCPFlags.ack, payload: Array("GET".utf8)))
        #expect(payload(plain) == Array("PROXY TCP4 198.18.0.100 198.18.0.10 40000 80\r\nGET".utf8))
    }

    /// A secure service puts its header first: a client's own reaches the server as data after it.
    @Test func aSecureServiceSendsItsHeaderBeforeTheClients() {
        var h = harness("v1", method: .nat)
        _ = h.send(fromClient(h, seq: 1000, flags: TCPFlags.syn))
        _ = h.send(fromReal(client, 40000, seq: 5000, ack: 1001, flags: TCPFlags.syn | TCPFlags.ack), interface: 2)
        let own = Array("PROXY TCP4 198.18.3.3 198.18.0.10 1234 80\r\n".utf8)
        let (_, first) = h.send(fromClient(h, seq: 1001, ack: 5001, flags: TCPFlags.ack, payload: own))
        // NAT: the addresses stay the client's; the header names it as well.
        #expect(field(first, 26, 4) == [198, 18, 0, 100] && field(first, 30, 4) == [198, 19, 0, 2])
        #expect(payload(first) == Array("PROXY TCP4 198.18.0.100 198.18.0.10 40000 80\r\n".utf8) + own && FrameBuilder.checksumsValid(first))
    }

    /// The shift goes to a sync backup in the kernel's format, which takes
    /// the stream over where the master left it.
    @Test func aSyncBackupContinuesTheShift() {
        var master = harness("v2")
        let lport = open(&master)
        _ = master.send(fromClient(master, seq: 1001, ack: 5001, flags: TCPFlags.ack))
        let i = master.director.v4.table.lookup(.client, proto: 6, IPv4Address("198.18.0.100")!, 40000, IPv4Address("198.18.0.10")!, 80)!
        let record = FamilyPlane<IPv4Address>.syncRecord(
            master.director.v4.table[i], sequence: master.director.v4.table.shifts[i], shared: master.director.shared)
        #expect(record.flags & SyncConnectionFlags.sequenceMask == SyncConnectionFlags.requestSequence)
        #expect(record.sequence?.request == SequenceShift(initial: 1000, delta: 28, previousDelta: 0))

        var backup = harness("v2")
        #expect(backup.director.applySync(record, now: backup.now) == .created)
        // Taken over with the header possibly unacknowledged: a segment at the first byte carries it again, at the same numbers.
        let (_, first) = backup.send(fromClient(backup, seq: 1001, ack: 5001, flags: TCPFlags.ack, payload: [1]))
        #expect(be32(first, 38) == 1001 && payload(first).count == 29 && be16(first, 34) == lport)
        let (_, acked) = backup.send(fromReal(lip, lport, seq: 5001, ack: 1002 + 28, flags: TCPFlags.ack), interface: 2)
        #expect(be32(acked, 42) == 1002)
        let (_, next) = backup.send(fromClient(backup, seq: 1002, ack: 5001, flags: TCPFlags.ack, payload: [2]))
        #expect(be32(next, 38) == 1002 + 28 && payload(next) == [2] && FrameBuilder.checksumsValid(next))
    }

    /// With the SYN proxy the handshake's last ACK to the real server is the
    /// director's own: it carries the header all the same.
    @Test func theSYNProxysHandshakeCarriesTheHeader() {
        var h = Harness([
            VirtualServiceConfiguration(
                key: .address(.tcp, vip, 80), scheduler: "rr", realServers: [RealServerConfiguration(address: rs, port: 8080, method: .nat)],
                synproxy: true, proxyProtocol: ProxyProtocol(version: .v1))
        ])
        let cookie = be32(h.send(fromClient(h, seq: 1000, flags: TCPFlags.syn, options: [2, 4, 0x05, 0xB4])).1, 38)
        _ = h.send(fromClient(h, seq: 1001, ack: cookie &+ 1, flags: TCPFlags.ack))
        let (v, ack) = h.send(fromReal(client, 40000, seq: 5000, ack: 1001, flags: TCPFlags.syn | TCPFlags.ack, options: [2, 4, 0x05, 0xB4]), interface: 2)
        #expect(v == .transmit(interface: 2) && ack[47] == TCPFlags.ack && be32(ack, 38) == 1001 && be32(ack, 42) == 5001)
        #expect(payload(ack) == Array("PROXY TCP4 198.18.0.100 198.18.0.10 40000 80\r\n".utf8) && FrameBuilder.checksumsValid(ack))
        // The client's request follows the header, both translations at once.
        let (_, data) = h.send(fromClient(h, seq: 1001, ack: cookie &+ 1, flags: TCPFlags.ack | TCPFlags.psh, payload: [1]))
        #expect(be32(data, 38) == 1001 && be32(data, 42) == 5001 && payload(data).count == 47 && FrameBuilder.checksumsValid(data))
    }

    @Test func headerTexts() {
        let v6 = ProxyHeader(
            version: 1, source: IPv6Address("2001:db8::100")!, destination: IPv6Address("2001:db8:0:1::")!, sourcePort: 65535, destinationPort: 0)
        #expect(String(decoding: v6.array, as: UTF8.self) == "PROXY TCP6 2001:db8::100 2001:db8:0:1:: 65535 0\r\n")
        let zero = ProxyHeader(version: 1, source: IPv6Address("::1")!, destination: IPv6Address("1:0:0:2:0:0:0:3")!, sourcePort: 1, destinationPort: 80)
        #expect(String(decoding: zero.array, as: UTF8.self) == "PROXY TCP6 ::1 1:0:0:2::3 1 80\r\n")
        let longest = ProxyHeader(
            version: 1, source: IPv6Address("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")!,
            destination: IPv6Address("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe")!, sourcePort: 65535, destinationPort: 65535)
        #expect(longest.count == 104)
        let two = ProxyHeader(
            version: 2, source: IPv6Address("2001:db8::100")!, destination: IPv6Address("2001:db8::10")!, sourcePort: 40000, destinationPort: 443)
        #expect(two.count == 52 && Array(two.array[12..<16]) == [0x21, 0x21, 0, 36] && Array(two.array[48...]) == [0x9C, 0x40, 0x01, 0xBB])
    }

    @Test func theMappingOfAcknowledgements() {
        let s = SequenceShift(initial: 0xFFFF_FFF0, delta: 30, previousDelta: 0)
        #expect(s.forward(0xFFFF_FFF0) == 0xFFFF_FFF0 && s.forward(0xFFFF_FFF1) == 0x0F && s.forward(5) == 35)
        #expect(s.backward(0x0F) == 0xFFFF_FFF1 && s.backward(0x05) == 0xFFFF_FFF1 && s.backward(0xFFFF_FFF1) == 0xFFFF_FFF1 && s.backward(40) == 10)
    }
}
