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

    // MARK: FULLNAT, the tie to the control connection, the helper's ports

    let lip = ip("198.19.0.100")

    func fullNAT() -> Harness {
        Harness([
            VirtualServiceConfiguration(
                key: .address(.tcp, vip, 21), scheduler: "rr", realServers: [RealServerConfiguration(address: rs, port: 21, method: .fullNAT)],
                localAddresses: [lip])
        ])
    }

    func toLocal(_ h: Harness, sport: UInt16 = 21, dport: UInt16, seq: UInt32, ack: UInt32, flags: UInt8, text: String = "") -> [UInt8] {
        FrameBuilder(srcMAC: rsMAC.value, dstMAC: ifaceRealMAC.value)
            .frame(src: rs, dst: lip, FrameBuilder.tcp(sport: sport, dport: dport, seq: seq, ack: ack, flags: flags, payload: Array(text.utf8)))
    }

    /// The FULLNAT control connection, established; the local port the server sees.
    func openFullNAT(_ h: inout Harness) -> UInt16 {
        let (_, syn) = h.send(fromClient(h, seq: 1000, flags: TCPFlags.syn))
        let port = be16(syn, 34)
        _ = h.send(toLocal(h, dport: port, seq: 5000, ack: 1001, flags: TCPFlags.syn | TCPFlags.ack), interface: 2)
        _ = h.send(fromClient(h, seq: 1001, ack: 5001, flags: TCPFlags.ack))  // carries TOA
        return port
    }

    @Test func throughFullNATAnActiveCommandNamesALocalAddressTheServerConnectsTo() throws {
        var h = fullNAT()
        let control = openFullNAT(&h)
        let command = "PORT 198,18,0,100,195,81\r\n"
        let (v, out) = h.send(fromClient(h, seq: 1001, ack: 5001, flags: TCPFlags.ack | TCPFlags.psh, text: command))
        #expect(v == .transmit(interface: 2) && field(out, 26, 4) == [198, 19, 0, 100] && be16(out, 34) == control)
        let sent = payload(out)
        let numbers = sent.dropFirst(5).dropLast(1).split(separator: ",").compactMap { UInt16($0) }
        #expect(sent.hasPrefix("PORT 198,19,0,100,") && numbers.count == 6, "\(sent)")
        let dataPort = numbers[4] << 8 | numbers[5]
        #expect(be32(out, 38) == 1001 && FrameBuilder.checksumsValid(out))
        // The client's later bytes move by the length change, the server's acknowledgements back.
        let diff = UInt32(sent.utf8.count) &- UInt32(command.utf8.count)
        let n = UInt32(command.utf8.count)
        let (_, next) = h.send(fromClient(h, seq: 1001 + n, ack: 5001, flags: TCPFlags.ack | TCPFlags.psh, text: "RETR f\r\n"))
        #expect(be32(next, 38) == 1001 + n &+ diff && FrameBuilder.checksumsValid(next))
        let (_, ack) = h.send(toLocal(h, dport: control, seq: 5001, ack: 1001 + n &+ diff + 8, flags: TCPFlags.ack), interface: 2)
        #expect(be32(ack, 42) == 1001 + n + 8)

        // The server connects from its port 20 to the local port it was given: it reaches the client as VIP:20.
        let (sv, syn) = h.send(toLocal(h, sport: 20, dport: dataPort, seq: 7000, ack: 0, flags: TCPFlags.syn), interface: 2)
        #expect(sv == .transmit(interface: 1) && field(syn, 26, 4) == [198, 18, 0, 10] && be16(syn, 34) == 20)
        #expect(field(syn, 30, 4) == [198, 18, 0, 100] && be16(syn, 36) == 50001 && FrameBuilder.checksumsValid(syn))
        let (_, synAck) = h.send(fromClient(h, sport: 50001, dport: 20, seq: 9000, ack: 7001, flags: TCPFlags.syn | TCPFlags.ack))
        #expect(field(synAck, 26, 4) == [198, 19, 0, 100] && be16(synAck, 34) == dataPort)
        #expect(field(synAck, 30, 4) == [198, 19, 0, 2] && be16(synAck, 36) == 20 && FrameBuilder.checksumsValid(synAck))

        // EPRT the same, in its own form; a retransmitted command names the same local port.
        let eprt = "EPRT |1|198.18.0.100|50003|\r\n"
        let (_, e1) = h.send(fromClient(h, seq: 1009 + n, ack: 5001, flags: TCPFlags.ack | TCPFlags.psh, text: eprt))
        #expect(try Regex("^EPRT \\|1\\|198\\.19\\.0\\.100\\|[0-9]+\\|\r\n$").wholeMatch(in: payload(e1)) != nil, "\(payload(e1))")
        let (_, e2) = h.send(fromClient(h, seq: 1009 + n, ack: 5001, flags: TCPFlags.ack | TCPFlags.psh, text: eprt))
        #expect(payload(e2) == payload(e1))
    }

    @Test func throughFullNATAPassiveDataConnectionLeavesFromALocalPort() {
        var h = fullNAT()
        let control = openFullNAT(&h)
        let reply = "227 Entering Passive Mode (198,19,0,2,195,80).\r\n"
        let (v, out) = h.send(toLocal(h, dport: control, seq: 5001, ack: 1001, flags: TCPFlags.ack | TCPFlags.psh, text: reply), interface: 2)
        #expect(v == .transmit(interface: 1) && field(out, 30, 4) == [198, 18, 0, 100] && be16(out, 36) == 40000)
        #expect(payload(out) == "227 Entering Passive Mode (198,18,0,10,195,80).\r\n" && FrameBuilder.checksumsValid(out))
        let (dv, syn) = h.send(fromClient(h, sport: 41000, dport: 50000, seq: 9000, flags: TCPFlags.syn))
        let local = be16(syn, 34)
        #expect(dv == .transmit(interface: 2) && field(syn, 26, 4) == [198, 19, 0, 100])
        #expect(field(syn, 30, 4) == [198, 19, 0, 2] && be16(syn, 36) == 50000 && FrameBuilder.checksumsValid(syn))
        let (bv, synAck) = h.send(toLocal(h, sport: 50000, dport: local, seq: 7000, ack: 9001, flags: TCPFlags.syn | TCPFlags.ack), interface: 2)
        #expect(bv == .transmit(interface: 1) && field(synAck, 26, 4) == [198, 18, 0, 10] && be16(synAck, 34) == 50000)
        #expect(field(synAck, 30, 4) == [198, 18, 0, 100] && be16(synAck, 36) == 41000 && FrameBuilder.checksumsValid(synAck))
    }

    @Test func aControlConnectionLastsWhileItsDataConnectionsDo() {
        var h = harness()
        open(&h)
        _ = h.send(
            fromReal(h, seq: 5001, ack: 1001, flags: TCPFlags.ack | TCPFlags.psh, text: "229 Entering Extended Passive Mode (|||50002|)\r\n"), interface: 2)
        _ = h.send(fromClient(h, sport: 41001, dport: 50002, seq: 9000, flags: TCPFlags.syn))
        _ = h.send(fromReal(h, sport: 50002, dport: 41001, seq: 7000, ack: 9001, flags: TCPFlags.syn | TCPFlags.ack), interface: 2)
        _ = h.send(fromClient(h, sport: 41001, dport: 50002, seq: 9001, ack: 7001, flags: TCPFlags.ack))
        func controlEntry() -> Int? { h.director.v4.table.lookup(.client, proto: 6, IPv4Address("198.18.0.100")!, 40000, IPv4Address("198.18.0.10")!, 21) }
        func dataEntry() -> Int? { h.director.v4.table.lookup(.client, proto: 6, IPv4Address("198.18.0.100")!, 41001, IPv4Address("198.18.0.10")!, 50002) }
        let c = controlEntry()
        #expect(c != nil && h.director.v4.controlled(c!) == 1)
        // A long download: the control connection idle past its 15 minutes, the data connection busy.
        for _ in 0..<4 {
            h.now += 300_000
            _ = h.send(fromClient(h, sport: 41001, dport: 50002, seq: 9001, ack: 7001, flags: TCPFlags.ack))
            h.director.tick(now: h.now)
            for _ in 0..<20 { h.director.tick(now: h.now) }
        }
        #expect(controlEntry() == c && dataEntry() != nil)
        // The data connection goes: then the control connection, within the minute it was re-armed for.
        _ = h.send(fromClient(h, sport: 41001, dport: 50002, seq: 9001, ack: 7001, flags: TCPFlags.rst))
        h.now += 20_000
        for _ in 0..<40 { h.director.tick(now: h.now) }
        #expect(dataEntry() == nil && controlEntry() == c)
        h.now += 70_000
        for _ in 0..<40 { h.director.tick(now: h.now) }
        #expect(controlEntry() == nil)
        #expect(h.director.service(.address(.tcp, vip, 21))?.destinations[0].activeConnections == 0)
    }

    @Test func theHelperRunsOnTheConfiguredPortsOnly() {
        func service(_ port: UInt16) -> VirtualServiceConfiguration {
            VirtualServiceConfiguration(
                key: .address(.tcp, vip, port), scheduler: "rr", realServers: [RealServerConfiguration(address: rs, port: port, method: .nat)])
        }
        var h = Harness([service(21), service(2121)], ftpPorts: [2121])
        let reply = "227 Entering Passive Mode (198,19,0,2,195,80).\r\n"
        for (port, rewritten) in [(UInt16(21), false), (2121, true)] {
            _ = h.send(fromClient(h, dport: port, seq: 1000, flags: TCPFlags.syn))
            _ = h.send(fromReal(h, sport: port, seq: 5000, ack: 1001, flags: TCPFlags.syn | TCPFlags.ack), interface: 2)
            let (_, out) = h.send(fromReal(h, sport: port, seq: 5001, ack: 1001, flags: TCPFlags.ack | TCPFlags.psh, text: reply), interface: 2)
            #expect(payload(out).contains("198,18,0,10") == rewritten, "port \(port)")
        }
        // As the kernel binds the helper by the connection's port: a port-0 service's connection to 21 has it.
        var any = Harness([service(0)])
        _ = any.send(fromClient(any, seq: 1000, flags: TCPFlags.syn))
        _ = any.send(fromReal(any, seq: 5000, ack: 1001, flags: TCPFlags.syn | TCPFlags.ack), interface: 2)
        let (_, anyOut) = any.send(fromReal(any, seq: 5001, ack: 1001, flags: TCPFlags.ack | TCPFlags.psh, text: reply), interface: 2)
        #expect(payload(anyOut).contains("198,18,0,10"))
        // Active mode's data port is the control port's neighbour below, as the kernel's vport - 1.
        _ = h.send(fromClient(h, dport: 2121, seq: 1001, ack: 5001, flags: TCPFlags.ack | TCPFlags.psh, text: "PORT 198,18,0,100,195,81\r\n"))
        let (sv, syn) = h.send(fromReal(h, sport: 2120, dport: 50001, seq: 7000, ack: 0, flags: TCPFlags.syn), interface: 2)
        #expect(sv == .transmit(interface: 1) && field(syn, 26, 4) == [198, 18, 0, 10] && be16(syn, 34) == 2120)
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
