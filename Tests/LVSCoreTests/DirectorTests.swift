import LVSPacket
import LVSTestSupport
import Testing

@testable import LVSCore

@Suite(.serialized) struct ForwardingTests {
    let vip = ip("198.18.0.10")
    let client = ip("198.18.0.100")

    func service(_ m: ForwardingMethod, port: UInt16 = 8080, scheduler: String = "rr", lips: [IPAddress] = []) -> VirtualServiceConfiguration {
        VirtualServiceConfiguration(
            key: .address(.tcp, vip, 80), scheduler: scheduler,
            realServers: [RealServerConfiguration(address: ip("198.19.0.2"), port: port, method: m)], localAddresses: lips)
    }

    @Test func natRewritesDestinationAndRepliesBack() {
        var h = Harness([service(.nat)])
        let syn = h.builder.frame(src: client, dst: vip, FrameBuilder.tcp(sport: 40000, dport: 80, flags: 0x02))
        let (v, out) = h.send(syn)
        #expect(v == .transmit(interface: 2))
        #expect(field(out, 0, 6) == [2, 0, 0, 0, 1, 2])  // RS MAC
        #expect(field(out, 6, 6) == [2, 0, 0, 0, 0, 2])  // director's RS-side MAC
        #expect(out[22] == 63)  // TTL − 1
        #expect(field(out, 26, 4) == [198, 18, 0, 100])  // source untouched
        #expect(field(out, 30, 4) == [198, 19, 0, 2])  // VIP → RIP
        #expect(be16(out, 34) == 40000 && be16(out, 36) == 8080)  // 80 → 8080
        #expect(out.count == syn.count && FrameBuilder.checksumsValid(out))
        let synAck = FrameBuilder(srcMAC: rsMAC.value, dstMAC: ifaceRealMAC.value)
            .frame(src: ip("198.19.0.2"), dst: client, FrameBuilder.tcp(sport: 8080, dport: 40000, ack: 1001, flags: 0x12))
        let (v2, back) = h.send(synAck, interface: 2)
        #expect(v2 == .transmit(interface: 1))
        #expect(field(back, 0, 6) == [2, 0, 0, 0, 0, 0xAA] && field(back, 6, 6) == [2, 0, 0, 0, 0, 1])
        #expect(field(back, 26, 4) == [198, 18, 0, 10] && be16(back, 34) == 80)
        #expect(field(back, 30, 4) == [198, 18, 0, 100] && be16(back, 36) == 40000)
        #expect(FrameBuilder.checksumsValid(back))
        let svc = h.director.service(.address(.tcp, vip, 80))!
        #expect(svc.destinations[0].activeConnections == 1 && svc.counters.inPackets == 1 && svc.counters.outPackets == 1)
    }

    @Test func directRoutingRewritesOnlyTheMAC() {
        var h = Harness([service(.directRouting, port: 80)])
        let syn = h.builder.frame(src: client, dst: vip, FrameBuilder.tcp(sport: 40000, dport: 80, flags: 0x02))
        let (v, out) = h.send(syn)
        #expect(v == .transmit(interface: 2))
        #expect(field(out, 0, 6) == [2, 0, 0, 0, 1, 2] && field(out, 6, 6) == [2, 0, 0, 0, 0, 2])
        // Only the TTL and the header checksum change in the IP header; TCP is untouched.
        #expect(Array(out[12..<22]) == Array(syn[12..<22]) && Array(out[23..<24]) == Array(syn[23..<24]))
        #expect(Array(out[26..<34]) == Array(syn[26..<34]))
        #expect(out[22] == 63 && FrameBuilder.checksumsValid(out))
        #expect(Array(out[34...]) == Array(syn[34...]))
    }

    /// sloppy_tcp: an ACK of a connection another director began is
    /// scheduled and forwarded (DR: only the MAC changes), its connection
    /// created ESTABLISHED; without it, or for an RST, or to FULLNAT, it is
    /// dropped as not a SYN.
    @Test func sloppyTCPTakesAFlowBegunOnAnotherDirector() {
        let ack = FrameBuilder(srcMAC: clientMAC, dstMAC: 0x02_00_00_00_00_01).frame(
            src: client, dst: vip, FrameBuilder.tcp(sport: 40000, dport: 80, seq: 5000, ack: 9000, flags: 0x10))
        var strict = Harness([service(.directRouting, port: 80, scheduler: "mh")])
        #expect(strict.send(ack).0 == .drop(.notSYN))
        var h = Harness([service(.directRouting, port: 80, scheduler: "mh")], sloppyTCP: true)
        let (v, out) = h.send(ack)
        #expect(v == .transmit(interface: 2))
        #expect(field(out, 0, 6) == [2, 0, 0, 0, 1, 2])
        #expect(Array(out[34...]) == Array(ack[34...]) && Array(out[26..<34]) == Array(ack[26..<34]) && out[22] == 63)
        var states: [ConnectionState] = []
        h.director.v4.table.forEach { _, c in states.append(c.state) }
        #expect(states == [.established])
        let rst = h.builder.frame(src: client, dst: vip, FrameBuilder.tcp(sport: 40001, dport: 80, flags: 0x14))
        #expect(h.send(rst).0 == .drop(.notSYN))
        var full = Harness([service(.fullNAT, scheduler: "mh", lips: [ip("198.19.0.200")])], sloppyTCP: true)
        #expect(full.send(ack).0 == .drop(.notSYN))
    }

    /// `--sloppy-nat`: a NAT real server's reply of a connection another
    /// director made is un-NATed by the one NAT service with that server
    /// and port, every field as for a connection made here, and makes the
    /// connection (not counted as a new one), which the client's next
    /// segment then follows. Without the option, and for a real server's
    /// own SYN, an RST or a server in no service, the frame is passed as
    /// before; a server and port in two NAT services is dropped.
    @Test func sloppyNATTakesAReplyOfAnotherDirectorsConnection() {
        let rs = FrameBuilder(srcMAC: rsMAC.value, dstMAC: ifaceRealMAC.value)
        let synAck = rs.frame(src: ip("198.19.0.2"), dst: client, FrameBuilder.tcp(sport: 8080, dport: 40000, seq: 7000, ack: 1001, flags: 0x12))
        var strict = Harness([service(.nat)])
        #expect(strict.send(synAck, interface: 2).0 == .pass)
        var h = Harness([service(.nat)], sloppyNAT: true)
        let (v, back) = h.send(synAck, interface: 2)
        #expect(v == .transmit(interface: 1))
        #expect(field(back, 0, 6) == [2, 0, 0, 0, 0, 0xAA] && field(back, 6, 6) == [2, 0, 0, 0, 0, 1])
        #expect(back[22] == 63 && Array(back[12..<22]) == Array(synAck[12..<22]))
        #expect(field(back, 26, 4) == [198, 18, 0, 10] && be16(back, 34) == 80)  // RIP:8080 → VIP:80
        #expect(field(back, 30, 4) == [198, 18, 0, 100] && be16(back, 36) == 40000)  // client untouched
        #expect(Array(back[38..<50]) == Array(synAck[38..<50]) && Array(back[52...]) == Array(synAck[52...]))  // all but the checksum
        #expect(back.count == synAck.count && FrameBuilder.checksumsValid(back))
        var made: [(ConnectionState, IPAddress, UInt16, UInt16)] = []
        h.director.v4.table.forEach { _, c in made.append((c.state, c.virtual.ipAddress, c.virtualPort, c.realPort)) }
        #expect(made.count == 1 && made[0].0 == .synSent && made[0].1 == vip && made[0].2 == 80 && made[0].3 == 8080)

        let ack = h.builder.frame(src: client, dst: vip, FrameBuilder.tcp(sport: 40000, dport: 80, seq: 1001, ack: 7001, flags: 0x10))
        let (v2, out) = h.send(ack)
        #expect(v2 == .transmit(interface: 2) && field(out, 30, 4) == [198, 19, 0, 2] && be16(out, 36) == 8080 && FrameBuilder.checksumsValid(out))
        let svc = h.director.service(.address(.tcp, vip, 80))!
        #expect(svc.counters.connections == 0 && svc.counters.inPackets == 1 && svc.counters.outPackets == 1)

        let own = rs.frame(src: ip("198.19.0.2"), dst: client, FrameBuilder.tcp(sport: 8080, dport: 40001, flags: 0x02))
        let reset = rs.frame(src: ip("198.19.0.2"), dst: client, FrameBuilder.tcp(sport: 8080, dport: 40002, ack: 1, flags: 0x14))
        let stranger = rs.frame(src: ip("198.19.0.3"), dst: client, FrameBuilder.tcp(sport: 8080, dport: 40003, ack: 1, flags: 0x12))
        #expect([own, reset, stranger].map { h.send($0, interface: 2).0 } == [.pass, .pass, .pass])
        #expect(h.director.v4.table.count == 1)

        let twice = VirtualServiceConfiguration(
            key: .address(.tcp, ip("198.18.0.11"), 80), scheduler: "rr",
            realServers: [RealServerConfiguration(address: ip("198.19.0.2"), port: 8080, method: .nat)])
        var ambiguous = Harness([service(.nat), twice], sloppyNAT: true)
        #expect(ambiguous.send(synAck, interface: 2).0 == .drop(.ambiguousReply))
        #expect(ambiguous.director.drops(.ambiguousReply) == 1)
    }

    /// `--sloppy-nat` over IPv6 and UDP: a port-0 service's reply keeps its
    /// port; the same server in another service too cannot be told apart.
    @Test func sloppyNATTakesAnIPv6DatagramOfAPortZeroService() {
        let vip6 = ip("2001:db8::10")
        let client6 = ip("2001:db8::100")
        let anyPort = VirtualServiceConfiguration(
            key: .address(.udp, vip6, 0), scheduler: "rr", realServers: [RealServerConfiguration(address: ip("2001:db8:1::2"), port: 0, method: .nat)])
        var h = Harness([anyPort], sloppyNAT: true)
        let rs = FrameBuilder(srcMAC: rsMAC.value, dstMAC: ifaceRealMAC.value)
        let answer = rs.frame(src: ip("2001:db8:1::2"), dst: client6, FrameBuilder.udp(sport: 53, dport: 41000))
        let (v, back) = h.send(answer, interface: 2)
        #expect(v == .transmit(interface: 1))
        #expect(back[21] == 63)  // hop limit − 1
        #expect(field(back, 22, 16) == [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10] && be16(back, 54) == 53)
        #expect(field(back, 38, 16) == field(answer, 38, 16) && be16(back, 56) == 41000 && FrameBuilder.checksumsValid(back))
        let query = h.builder.frame(src: client6, dst: vip6, FrameBuilder.udp(sport: 41000, dport: 53))
        let (v2, out) = h.send(query)
        #expect(v2 == .transmit(interface: 2) && field(out, 38, 16) == field(answer, 22, 16) && be16(out, 56) == 53)
        #expect(h.director.v6.table.count == 1)
        let dns = VirtualServiceConfiguration(
            key: .address(.udp, ip("2001:db8::11"), 53), scheduler: "rr",
            realServers: [RealServerConfiguration(address: ip("2001:db8:1::2"), port: 53, method: .nat)])
        var both = Harness([anyPort, dns], sloppyNAT: true)
        #expect(both.send(answer, interface: 2).0 == .drop(.ambiguousReply))
    }

    @Test func tunnelWrapsInIPIP() {
        var h = Harness([service(.tunnel, port: 80)])
        let syn = h.builder.frame(src: client, dst: vip, FrameBuilder.tcp(sport: 40000, dport: 80, flags: 0x02))
        let (v, out) = h.send(syn)
        #expect(v == .transmit(interface: 2))
        #expect(out.count == syn.count + 20)
        #expect(out[14] == 0x45 && out[23] == 4 && out[22] == 63)  // IPIP, TTL from the inner
        #expect(field(out, 26, 4) == [198, 19, 0, 1] && field(out, 30, 4) == [198, 19, 0, 2])
        #expect(FrameBuilder.checksum(out, 14..<34) == 0)
        #expect(field(out, 34 + 16, 4) == [198, 18, 0, 10] && out[34 + 8] == 63)  // inner untouched but TTL
        #expect(field(out, 0, 6) == [2, 0, 0, 0, 1, 2])
    }

    @Test func tooBigForTheTunnelGetsICMPBack() {
        // IPv4 with DF: "fragmentation needed" with the MTU left inside the tunnel (1500 − 20).
        var h = Harness([service(.tunnel, port: 80)])
        _ = h.send(h.builder.frame(src: client, dst: vip, FrameBuilder.tcp(sport: 40000, dport: 80, flags: 0x02)))
        var big = h.builder.frame(
            src: client, dst: vip,
            FrameBuilder.tcp(
                sport: 40000, dport: 80, seq: 1001, ack: 1, flags: 0x10,
                payload: [UInt8](repeating: 7, count: 1460)))
        big[20] |= 0x40
        big[24] = 0
        big[25] = 0
        let c = FrameBuilder.checksum(big, 14..<34)
        big[24] = UInt8(c >> 8)
        big[25] = UInt8(c & 255)
        let (v, out) = h.send(big)
        #expect(v == .transmit(interface: 1))
        #expect(out.count == 14 + 20 + 8 + 28)
        #expect(field(out, 0, 6) == [2, 0, 0, 0, 0, 0xAA] && field(out, 26, 4) == [198, 18, 0, 10] && field(out, 30, 4) == [198, 18, 0, 100])
        #expect(out[23] == 1 && out[34] == 3 && out[35] == 4 && be16(out, 40) == 1480)
        #expect(FrameBuilder.checksum(out, 14..<34) == 0 && FrameBuilder.checksum(out, 34..<out.count) == 0)
        #expect(field(out, 42 + 12, 8) == field(big, 26, 8))  // the quoted header
        // IPv6: "packet too big" (1500 − 40 for an IPv6 outer header).
        let vip6 = ip("2001:db8::10")
        let client6 = ip("2001:db8::100")
        var h6 = Harness([
            VirtualServiceConfiguration(
                key: .address(.tcp, vip6, 80), scheduler: "rr",
                realServers: [RealServerConfiguration(address: ip("2001:db8:1::2"), port: 80, method: .tunnel)])
        ])
        _ = h6.send(h6.builder.frame(src: client6, dst: vip6, FrameBuilder.tcp(sport: 40000, dport: 80, flags: 0x02)))
        let big6 = h6.builder.frame(
            src: client6, dst: vip6,
            FrameBuilder.tcp(
                sport: 40000, dport: 80, seq: 1001, ack: 1, flags: 0x10,
                payload: [UInt8](repeating: 7, count: 1440)))
        let (v6, out6) = h6.send(big6)
        #expect(v6 == .transmit(interface: 1))
        #expect(out6[20] == 58 && out6[54] == 2 && be16(out6, 58) == 0 && be16(out6, 60) == 1460)
        #expect(field(out6, 22, 16) == field(big6, 38, 16) && field(out6, 38, 16) == field(big6, 22, 16))
        #expect(out6.count == 14 + 40 + 8 + 1232)
        var pseudo: UInt32 = 58 + UInt32(out6.count - 54)
        for i in stride(from: 22, to: 54, by: 2) { pseudo += UInt32(out6[i]) << 8 | UInt32(out6[i + 1]) }
        #expect(FrameBuilder.checksum(out6, 54..<out6.count, initial: pseudo) == 0)
    }

    @Test func fullNATTranslatesBothSidesAndCarriesTOA() {
        var h = Harness([service(.fullNAT, lips: [ip("198.19.0.100")])])
        let syn = h.builder.frame(src: client, dst: vip, FrameBuilder.tcp(sport: 40000, dport: 80, seq: 1000, flags: 0x02, options: [2, 4, 5, 0xB4]))
        let (v, out) = h.send(syn)
        #expect(v == .transmit(interface: 2))
        #expect(field(out, 26, 4) == [198, 19, 0, 100] && field(out, 30, 4) == [198, 19, 0, 2])
        let lport = be16(out, 34)
        #expect(lport >= 1025 && be16(out, 36) == 8080 && FrameBuilder.checksumsValid(out))
        // The real server's SYN-ACK to the LIP: MSS lowered by 8, back to the client from the VIP.
        let rs = FrameBuilder(srcMAC: rsMAC.value, dstMAC: ifaceRealMAC.value)
        let synAck = rs.frame(
            src: ip("198.19.0.2"), dst: ip("198.19.0.100"),
            FrameBuilder.tcp(sport: 8080, dport: lport, seq: 77_000, ack: 1001, flags: 0x12, options: [2, 4, 5, 0xB4]))
        let (v2, back) = h.send(synAck, interface: 2)
        #expect(v2 == .transmit(interface: 1))
        #expect(field(back, 26, 4) == [198, 18, 0, 10] && be16(back, 34) == 80)
        #expect(field(back, 30, 4) == [198, 18, 0, 100] && be16(back, 36) == 40000)
        #expect(be16(back, 56) == 1452 && FrameBuilder.checksumsValid(back))
        // The client's ACK of ISN+1 carries TOA {254, 8, port, address} right after the header.
        let ack = h.builder.frame(
            src: client, dst: vip, FrameBuilder.tcp(sport: 40000, dport: 80, seq: 1001, ack: 77_001, flags: 0x10, payload: [0x47, 0x45, 0x54]))
        let (v3, fwd) = h.send(ack)
        #expect(v3 == .transmit(interface: 2))
        #expect(fwd.count == ack.count + 8)
        #expect(fwd[54] == 254 && fwd[55] == 8 && be16(fwd, 56) == 40000 && field(fwd, 58, 4) == [198, 18, 0, 100])
        #expect(Int(fwd[46] >> 4) * 4 == 28 && be16(fwd, 16) == UInt16(ack.count + 8 - 14))
        #expect(field(fwd, 26, 4) == [198, 19, 0, 100] && FrameBuilder.checksumsValid(fwd))
        #expect(Array(fwd.suffix(3)) == [0x47, 0x45, 0x54])
        #expect(h.director.shared.toaInserted == 1)
    }

    @Test func ttlOneGetsTimeExceededFromTheVIP() {
        var h = Harness([service(.nat)])
        let syn = h.builder.frame(src: client, dst: vip, FrameBuilder.tcp(sport: 40000, dport: 80, flags: 0x02), ttl: 1)
        let (v, out) = h.send(syn)
        #expect(v == .transmit(interface: 1))
        #expect(field(out, 0, 6) == [2, 0, 0, 0, 0, 0xAA] && field(out, 6, 6) == [2, 0, 0, 0, 0, 1])  // back to the hop it came from
        #expect(out[23] == 1 && field(out, 26, 4) == [198, 18, 0, 10] && field(out, 30, 4) == [198, 18, 0, 100])
        #expect(out[34] == 11 && out[35] == 0)  // time exceeded in transit
        #expect(Array(out[42..<62]) == Array(syn[14..<34]))  // the original header, TTL 1
        #expect(out.count == 42 + 28 && FrameBuilder.checksumsValid(out))
        #expect(h.director.drops(.ttlExceeded) == 1 && h.director.shared.icmpSent == 1)
    }

    @Test func ipv6NATAndFullNATWithTOA() {
        let vip6 = ip("2001:db8::10")
        let client6 = ip("2001:db8::100")
        var h = Harness([
            VirtualServiceConfiguration(
                key: .address(.tcp, vip6, 80), scheduler: "rr",
                realServers: [RealServerConfiguration(address: ip("2001:db8:1::2"), port: 8080, method: .fullNAT)],
                localAddresses: [ip("2001:db8:1::100")])
        ])
        let syn = h.builder.frame(src: client6, dst: vip6, FrameBuilder.tcp(sport: 40000, dport: 80, flags: 0x02))
        let (v, out) = h.send(syn)
        #expect(v == .transmit(interface: 2) && FrameBuilder.checksumsValid(out))
        #expect(out[21] == 63)
        let lport = be16(out, 54)
        let rs = FrameBuilder(srcMAC: rsMAC.value, dstMAC: ifaceRealMAC.value)
        let synAck = rs.frame(src: ip("2001:db8:1::2"), dst: ip("2001:db8:1::100"), FrameBuilder.tcp(sport: 8080, dport: lport, seq: 5, ack: 1001, flags: 0x12))
        _ = h.send(synAck, interface: 2)
        let ack = h.builder.frame(src: client6, dst: vip6, FrameBuilder.tcp(sport: 40000, dport: 80, seq: 1001, ack: 6, flags: 0x10))
        let (_, fwd) = h.send(ack)
        #expect(fwd.count == ack.count + 20 && fwd[74] == 254 && fwd[75] == 20)
        #expect(field(fwd, 78, 16) == FrameBuilder.addressBytes(client6) && FrameBuilder.checksumsValid(fwd))
    }

    @Test func noServiceIsPassedMalformedIsCounted() {
        var h = Harness([service(.nat)])
        let other = h.builder.frame(src: client, dst: ip("198.18.0.1"), FrameBuilder.tcp(sport: 1, dport: 22, flags: 0x02))
        #expect(h.send(other).0 == .pass)
        var bad = h.builder.frame(src: client, dst: vip, FrameBuilder.tcp(sport: 1, dport: 80, flags: 0x02))
        bad[14] = 0x43
        #expect(h.send(bad).0 == .drop(.malformed(.badIHL)))
        #expect(h.director.drops(.malformed(.badIHL)) == 1)
        let ack = h.builder.frame(src: client, dst: vip, FrameBuilder.tcp(sport: 1, dport: 80, flags: 0x10))
        #expect(h.send(ack).0 == .drop(.notSYN))
    }

    @Test func answersARPForTheVIP() {
        var h = Harness([service(.nat)])
        let req: [UInt8] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 0xAA, 0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1,
            2, 0, 0, 0, 0, 0xAA, 198, 18, 0, 100, 0, 0, 0, 0, 0, 0, 198, 18, 0, 10,
        ]
        let (v, out) = h.send(req)
        #expect(v == .transmit(interface: 1))
        #expect(field(out, 0, 6) == [2, 0, 0, 0, 0, 0xAA] && be16(out, 20) == 2)
        #expect(field(out, 22, 6) == [2, 0, 0, 0, 0, 1] && field(out, 28, 4) == [198, 18, 0, 10])
        #expect(field(out, 38, 4) == [198, 18, 0, 100])
    }

    @Test func fragmentsFollowTheirFirstFragment() {
        var h = Harness([
            VirtualServiceConfiguration(
                key: .address(.udp, vip, 53), scheduler: "rr",
                realServers: [RealServerConfiguration(address: ip("198.19.0.2"), port: 5353, method: .nat)])
        ])
        var first = h.builder.frame(src: client, dst: vip, FrameBuilder.udp(sport: 999, dport: 53, payload: Array(repeating: 1, count: 16)))
        first[20] = 0x20
        first[24] = 0
        first[25] = 0
        var c = FrameBuilder.checksum(first, 14..<34)
        first[24] = UInt8(c >> 8)
        first[25] = UInt8(c & 255)
        #expect(h.send(first).0 == .transmit(interface: 2))
        var later = Array(first[0..<34]) + Array(repeating: 2, count: 8)
        later[16] = 0
        later[17] = 28
        later[20] = 0
        later[21] = 3
        later[24] = 0
        later[25] = 0
        c = FrameBuilder.checksum(later, 14..<34)
        later[24] = UInt8(c >> 8)
        later[25] = UInt8(c & 255)
        let (v, out) = h.send(later)
        #expect(v == .transmit(interface: 2) && field(out, 30, 4) == [198, 19, 0, 2] && FrameBuilder.checksum(out, 14..<34) == 0)
        later[18] = 0x99  // another datagram's fragment
        later[24] = 0
        later[25] = 0
        c = FrameBuilder.checksum(later, 14..<34)
        later[24] = UInt8(c >> 8)
        later[25] = UInt8(c & 255)
        #expect(h.send(later).0 == .drop(.unknownFragment))
    }

    @Test func icmpErrorFromTheRealServerIsTranslated() {
        var h = Harness([service(.nat)])
        _ = h.send(h.builder.frame(src: client, dst: vip, FrameBuilder.tcp(sport: 40000, dport: 80, flags: 0x02)))
        // Port unreachable from the RS about the packet the director sent it (client → RIP:8080).
        let quoted = FrameBuilder().frame(src: client, dst: ip("198.19.0.2"), FrameBuilder.tcp(sport: 40000, dport: 8080, flags: 0x02))
        let icmp: [UInt8] = [3, 3, 0, 0, 0, 0, 0, 0] + Array(quoted[14..<(14 + 28)])
        let f = FrameBuilder(srcMAC: rsMAC.value, dstMAC: ifaceRealMAC.value).frame(src: ip("198.19.0.2"), dst: client, (1, icmp))
        let (v, out) = h.send(f, interface: 2)
        #expect(v == .transmit(interface: 1))
        #expect(field(out, 26, 4) == [198, 18, 0, 10] && field(out, 30, 4) == [198, 18, 0, 100])
        #expect(field(out, 42 + 12, 4) == [198, 18, 0, 100] && field(out, 42 + 16, 4) == [198, 18, 0, 10])
        #expect(be16(out, 42 + 20) == 40000 && be16(out, 42 + 22) == 80)
        #expect(FrameBuilder.checksumsValid(out) && FrameBuilder.checksum(out, 42..<62) == 0)
    }
}

@Suite(.serialized) struct ConnectionTests {
    let vip = ip("198.18.0.10")

    @Test func tcpStateTableRowByRow() {
        let rows: [(StateDirection, String)] = [
            (
                .input,
                "SR ES ES SR SR SR SR SR SR SR SR | CL CW SS TW TW TW CL CW LA LI TW | ES ES SS ES FW TW CL CW CL LI ES | CL CL CL SR CL CL CL CL LA LI SR"
            ),
            (
                .output,
                "SS ES SS SR SS SS SS SS SS LI SR | TW FW SS TW FW TW CL TW LA LI TW | ES ES SS ES FW TW CL CW LA ES ES | CL CL SS CL CL TW CL CL CL CL CL"
            ),
            (
                .inputOnly,
                "SR ES ES SR SR SR SR SR SR SR SR | CL FW SS TW FW TW CL CW LA LI TW | ES ES SS ES FW TW CL CW CL LI ES | CL CL CL SR CL CL CL CL LA LI CL"
            ),
        ]
        let names = [
            "NO": ConnectionState.none, "ES": .established, "SS": .synSent, "SR": .synReceived, "FW": .finWait, "TW": .timeWait,
            "CL": .close, "CW": .closeWait, "LA": .lastAck, "LI": .listen, "SA": .synAck,
        ]
        let flags: [UInt8] = [0x02, 0x01, 0x10, 0x04]
        for (dir, text) in rows {
            for (e, part) in text.split(separator: "|").enumerated() {
                for (col, name) in part.split(separator: " ").enumerated() {
                    let from = ConnectionState(rawValue: UInt8(col))!
                    #expect(TCPStateTable.next(from, direction: dir, flags: flags[e]) == names[String(name)], "\(dir) \(e) \(from)")
                }
            }
        }
        // rst beats syn beats fin beats ack.
        #expect(TCPStateTable.next(.established, direction: .input, flags: 0x17) == .close)
        #expect(TCPStateTable.next(.none, direction: .input, flags: 0x13) == .synReceived)
    }

    @Test func timeoutsExpireConnectionsWithTheFakeClock() {
        var h = Harness([
            VirtualServiceConfiguration(
                key: .address(.tcp, vip, 80), scheduler: "rr",
                realServers: [RealServerConfiguration(address: ip("198.19.0.2"), port: 80, method: .directRouting)])
        ])
        _ = h.send(h.builder.frame(src: ip("198.18.0.100"), dst: vip, FrameBuilder.tcp(sport: 1, dport: 80, flags: 0x02)))
        var d = h.director.service(.address(.tcp, vip, 80))!.destinations[0]
        #expect(d.activeConnections == 1 && d.inactiveConnections == 0)  // SYN_RECV counts active
        _ = h.send(h.builder.frame(src: ip("198.18.0.100"), dst: vip, FrameBuilder.tcp(sport: 1, dport: 80, flags: 0x10)))
        h.director.v4.table.forEach { _, c in #expect(c.state == .established && c.expires == h.now + 900_000) }
        _ = h.send(h.builder.frame(src: ip("198.18.0.100"), dst: vip, FrameBuilder.tcp(sport: 1, dport: 80, flags: 0x11)))
        h.director.v4.table.forEach { _, c in #expect(c.state == .finWait && c.expires == h.now + 120_000) }
        d = h.director.service(.address(.tcp, vip, 80))!.destinations[0]
        #expect(d.activeConnections == 0 && d.inactiveConnections == 1)
        h.now += 119_999
        h.director.tick(now: h.now)
        #expect(h.director.v4.table.count == 1)
        h.now += 1
        h.director.tick(now: h.now)
        #expect(h.director.v4.table.count == 0)
        #expect(h.director.service(.address(.tcp, vip, 80))!.destinations[0].inactiveConnections == 0)
    }

    @Test func persistenceKeepsTheClientOnItsServerUntilTheTemplateExpires() {
        var h = Harness([
            VirtualServiceConfiguration(
                key: .address(.tcp, vip, 80), scheduler: "rr", persistence: 300, persistenceNetmask: 24,
                realServers: ["198.19.0.2", "198.19.0.3", "198.19.0.4"].map { RealServerConfiguration(address: ip($0), port: 80, method: .nat) })
        ])
        func dst(_ sport: UInt16, _ src: String = "198.18.0.100") -> [UInt8] {
            field(h.send(h.builder.frame(src: ip(src), dst: vip, FrameBuilder.tcp(sport: sport, dport: 80, flags: 0x02))).1, 30, 4)
        }
        let first = dst(1000)
        for p in 1001..<1010 { #expect(dst(UInt16(p)) == first) }
        #expect(dst(2000, "198.18.0.101") == first)  // same /24
        // Templates outlive their connections: after the connections expire (SYN_RECV 60 s)
        // the template alone keeps the client until 300 s.
        h.now += 200_000
        h.director.tick(now: h.now)
        #expect(dst(3000) == first)
        h.now += 400_000
        h.director.tick(now: h.now)
        h.now += 60_000  // a template still controlling a connection was re-armed for 60 s
        h.director.tick(now: h.now)
        #expect(dst(4000) != first)  // rescheduled: rr moved on
    }

    @Test func aReplacedTemplateLivesUntilItsLastConnectionGoes() {
        var svc = VirtualServiceConfiguration(
            key: .address(.tcp, vip, 80), scheduler: "rr", persistence: 300,
            realServers: ["198.19.0.2", "198.19.0.3"].map { RealServerConfiguration(address: ip($0), port: 80, method: .nat) })
        var h = Harness([svc])
        func syn(_ sport: UInt16) -> [UInt8] {
            field(h.send(h.builder.frame(src: ip("198.18.0.100"), dst: vip, FrameBuilder.tcp(sport: sport, dport: 80, flags: 0x02))).1, 30, 4)
        }
        let first = syn(1000)
        let firstIndex = first == [198, 19, 0, 2] ? 0 : 1
        svc.realServers[firstIndex].weight = 0
        h.director.apply(
            DirectorConfiguration(
                services: [svc], interfaces: h.director.shared.interfaces, routes: h.director.shared.routes,
                expireQuiescentTemplate: true))
        // The template is invalid now: a new one is made, the old one waits for its connection.
        #expect(syn(1001) != first)
        #expect(h.director.v4.table.count == 4)  // 2 connections, 2 templates
        h.now += 61_000  // SYN_RECV connections expire
        h.director.tick(now: h.now)
        #expect(h.director.v4.table.count == 1)  // only the live template remains
        let d = h.director.service(.address(.tcp, vip, 80))!.destinations
        #expect(d[firstIndex].persistentConnections == 0 && d[1 - firstIndex].persistentConnections == 1)
    }

    @Test func aSYNOnAClosedEntryIsANewConnection() {
        // conn_reuse_mode 1: a client reusing its port after CLOSE/TIME_WAIT is scheduled again.
        let vip = ip("198.18.0.10")
        let client = ip("198.18.0.100")
        let svc = VirtualServiceConfiguration(
            key: .address(.tcp, vip, 80), scheduler: "rr",
            realServers: [
                RealServerConfiguration(address: ip("198.19.0.2"), port: 8080, method: .nat),
                RealServerConfiguration(address: ip("198.19.0.3"), port: 8080, method: .nat),
            ])
        var h = Harness([svc])
        func send(_ flags: UInt8) -> [UInt8] { h.send(h.builder.frame(src: client, dst: vip, FrameBuilder.tcp(sport: 40000, dport: 80, flags: flags))).1 }
        let first = field(send(0x02), 30, 4)
        _ = send(0x10)  // ACK: ESTABLISHED
        _ = send(0x04)  // RST: CLOSE
        let second = field(send(0x02), 30, 4)
        #expect(first != second)
        #expect(h.director.service(svc.key)!.counters.connections == 2)
        // A retransmitted SYN of a live connection is not.
        let third = field(send(0x02), 30, 4)
        #expect(third == second && h.director.service(svc.key)!.counters.connections == 2)
    }

    @Test func upperThresholdOverloadsTheServer() {
        var h = Harness([
            VirtualServiceConfiguration(
                key: .address(.udp, vip, 53), scheduler: "rr",
                realServers: [
                    RealServerConfiguration(address: ip("198.19.0.2"), port: 53, method: .nat, upperThreshold: 2),
                    RealServerConfiguration(address: ip("198.19.0.3"), port: 53, method: .nat),
                ])
        ])
        var seen: [[UInt8]] = []
        for p in 0..<6 {
            seen.append(field(h.send(h.builder.frame(src: ip("198.18.0.100"), dst: vip, FrameBuilder.udp(sport: UInt16(100 + p), dport: 53))).1, 30, 4))
        }
        #expect(seen.filter { $0 == [198, 19, 0, 2] }.count == 2)
        #expect(h.director.service(.address(.udp, vip, 53))!.destinations[0].overloaded)
    }

    @Test func onePacketSchedulingKeepsNoConnection() {
        var h = Harness([
            VirtualServiceConfiguration(
                key: .address(.udp, vip, 53), scheduler: "rr", onePacket: true,
                realServers: ["198.19.0.2", "198.19.0.3"].map { RealServerConfiguration(address: ip($0), port: 53, method: .nat) })
        ])
        var dsts: [[UInt8]] = []
        for _ in 0..<4 { dsts.append(field(h.send(h.builder.frame(src: ip("198.18.0.100"), dst: vip, FrameBuilder.udp(sport: 5000, dport: 53))).1, 30, 4)) }
        #expect(dsts == [[198, 19, 0, 3], [198, 19, 0, 2], [198, 19, 0, 3], [198, 19, 0, 2]])
        #expect(h.director.v4.table.count == 0)
        #expect(h.director.service(.address(.udp, vip, 53))!.counters.connections == 4)
    }

    @Test func weightZeroKeepsConnectionsRemovedServerDropsThem() {
        var svc = VirtualServiceConfiguration(
            key: .address(.tcp, vip, 80), scheduler: "rr",
            realServers: [RealServerConfiguration(address: ip("198.19.0.2"), port: 80, method: .nat)])
        var h = Harness([svc])
        let syn = h.builder.frame(src: ip("198.18.0.100"), dst: vip, FrameBuilder.tcp(sport: 1, dport: 80, flags: 0x02))
        let ack = h.builder.frame(src: ip("198.18.0.100"), dst: vip, FrameBuilder.tcp(sport: 1, dport: 80, flags: 0x10))
        _ = h.send(syn)
        svc.realServers[0].weight = 0
        h.director.apply(DirectorConfiguration(services: [svc], interfaces: h.director.shared.interfaces, routes: h.director.shared.routes))
        #expect(h.send(ack).0 == .transmit(interface: 2))
        #expect(h.send(h.builder.frame(src: ip("198.18.0.100"), dst: vip, FrameBuilder.tcp(sport: 2, dport: 80, flags: 0x02))).0 == .drop(.noRealServer))
        svc.realServers = []
        h.director.apply(DirectorConfiguration(services: [svc], interfaces: h.director.shared.interfaces, routes: h.director.shared.routes))
        #expect(h.send(ack).0 == .drop(.destinationRemoved))
    }

    /// As IPVS binds a connection's transmitter once (`ip_vs_bind_xmit`): a
    /// real server edited from NAT to DR keeps forwarding its existing
    /// connections by NAT, on the fast path and the general one; new ones go by DR.
    @Test func aConnectionKeepsTheMethodItWasMadeWith() {
        var svc = VirtualServiceConfiguration(
            key: .address(.tcp, vip, 80), scheduler: "rr",
            realServers: [RealServerConfiguration(address: ip("198.19.0.2"), port: 8080, method: .nat)])
        var h = Harness([svc])
        let client = ip("198.18.0.100")
        func segment(_ sport: UInt16, _ flags: UInt8) -> [UInt8] {
            h.builder.frame(src: client, dst: vip, FrameBuilder.tcp(sport: sport, dport: 80, flags: flags))
        }
        _ = h.send(segment(1, TCPFlags.syn))
        _ = h.send(segment(1, TCPFlags.ack))
        svc.realServers[0].method = .directRouting
        h.director.apply(DirectorConfiguration(services: [svc], interfaces: h.director.shared.interfaces, routes: h.director.shared.routes))
        for (fastPath, flags) in [(true, TCPFlags.ack), (false, TCPFlags.ack | TCPFlags.psh)] {
            h.director.fastPathEnabled = fastPath
            let (verdict, out) = h.send(segment(1, flags))
            #expect(verdict == .transmit(interface: 2))
            #expect(field(out, 30, 4) == [198, 19, 0, 2] && be16(out, 36) == 8080, "still NAT: destination rewritten (fast path: \(fastPath))")
            #expect(FrameBuilder.checksumsValid(out))
        }
        let (verdict, out) = h.send(segment(2, TCPFlags.syn))
        #expect(verdict == .transmit(interface: 2))
        #expect(field(out, 30, 4) == [198, 18, 0, 10] && be16(out, 36) == 80, "a new connection goes by DR: the VIP stays")
        var methods: [UInt16: ForwardingMethod] = [:]
        h.director.v4.table.forEach { _, c in methods[c.clientPort] = c.method }
        #expect(methods == [1: .nat, 2: .directRouting])
    }

    @Test func fullTableEvictsHalfOpenFirstThenDrops() {
        var h = Harness(
            [
                VirtualServiceConfiguration(
                    key: .address(.tcp, vip, 80), scheduler: "rr",
                    realServers: [RealServerConfiguration(address: ip("198.19.0.2"), port: 80, method: .directRouting)])
            ], capacity: 4)
        func send(_ sport: UInt16, _ flags: UInt8) -> Verdict {
            h.send(h.builder.frame(src: ip("198.18.0.100"), dst: vip, FrameBuilder.tcp(sport: sport, dport: 80, flags: flags))).0
        }
        for p in UInt16(1)...4 { _ = send(p, 0x02) }  // four half-open entries
        #expect(send(9, 0x02) == .transmit(interface: 2))  // one half-open evicted
        #expect(h.director.v4.table.count == 4)
        var ports = Set<UInt16>()
        h.director.v4.table.forEach { _, c in ports.insert(c.clientPort) }
        #expect(ports.contains(9) && ports.count == 4)
        for p in ports { _ = send(p, 0x10) }  // all established now
        #expect(send(10, 0x02) == .drop(.connectionTableFull))
        #expect(h.director.drops(.connectionTableFull) == 1)
    }

    @Test func fullTableEvictsUnansweredDatagramFlowsAfterHalfOpen() {
        let udp = VirtualServiceConfiguration(
            key: .address(.udp, vip, 53), scheduler: "rr",
            realServers: [RealServerConfiguration(address: ip("198.19.0.2"), port: 53, method: .nat)])
        let tcp = VirtualServiceConfiguration(
            key: .address(.tcp, vip, 80), scheduler: "rr",
            realServers: [RealServerConfiguration(address: ip("198.19.0.2"), port: 80, method: .nat)])
        var h = Harness([udp, tcp], capacity: 4)
        func datagram(_ sport: UInt16) -> Verdict {
            h.send(h.builder.frame(src: ip("198.18.0.100"), dst: vip, FrameBuilder.udp(sport: sport, dport: 53))).0
        }
        for p in UInt16(1)...3 { _ = datagram(p) }
        // Flow 1 is answered: it stays.
        let answer = FrameBuilder(srcMAC: rsMAC.value, dstMAC: ifaceRealMAC.value).frame(
            src: ip("198.19.0.2"), dst: ip("198.18.0.100"),
            FrameBuilder.udp(sport: 53, dport: 1))
        #expect(h.send(answer, interface: 2).0 == .transmit(interface: 1))
        #expect(h.send(h.builder.frame(src: ip("198.18.0.100"), dst: vip, FrameBuilder.tcp(sport: 7, dport: 80, flags: 0x02))).0 == .transmit(interface: 2))
        // Full: a new SYN evicts the half-open one; once that is established,
        // a new flow evicts a datagram flow nobody answered, never the answered one.
        #expect(h.send(h.builder.frame(src: ip("198.18.0.100"), dst: vip, FrameBuilder.tcp(sport: 8, dport: 80, flags: 0x02))).0 == .transmit(interface: 2))
        _ = h.send(h.builder.frame(src: ip("198.18.0.100"), dst: vip, FrameBuilder.tcp(sport: 8, dport: 80, flags: 0x10)))
        #expect(datagram(9) == .transmit(interface: 2))
        var flows = Set<String>()
        h.director.v4.table.forEach { _, c in flows.insert("\(c.proto == 17 ? "udp" : "tcp"):\(c.clientPort)") }
        #expect(flows.count == 4 && flows.isSuperset(of: ["udp:1", "tcp:8", "udp:9"]) && !flows.contains("tcp:7"), "\(flows)")
        #expect(h.director.drops(.connectionTableFull) == 0)
    }

    @Test func connectionTableKeepsProbeChainsThroughDeletes() {
        var t = ConnectionTable<IPv4Address>(capacity: 2000)
        var ids: [Int] = []
        for k in 0..<2000 {
            let i = t.allocate()!
            t[i].proto = 6
            t[i].client = IPv4Address(UInt32(k))
            t[i].clientPort = 1
            t[i].virtual = IPv4Address(9)
            t[i].virtualPort = 80
            t.insert(i)
            ids.append(i)
        }
        for k in stride(from: 0, to: 2000, by: 2) { t.remove(ids[k]) }
        for k in 0..<2000 {
            let found = t.lookup(.client, proto: 6, IPv4Address(UInt32(k)), 1, IPv4Address(9), 80)
            #expect((found != nil) == (k % 2 == 1))
        }
    }

    /// Two NAT connections whose replies look alike: one client port, used
    /// at once again for another service of the same real server. As in the
    /// kernel's hash chains (a new entry first), the reply finds the new one.
    @Test func aReplyFindsTheNewestConnectionWithItsTuple() {
        var t = ConnectionTable<IPv4Address>(capacity: 16)
        let client = IPv4Address("198.18.0.100")!
        let real = IPv4Address("198.19.0.11")!
        var made: [Int] = []
        for port: UInt16 in [80, 82] {
            let i = t.allocate()!
            t[i].proto = 6
            t[i].client = client
            t[i].clientPort = 40000
            t[i].virtual = IPv4Address("198.19.0.10")!
            t[i].virtualPort = port
            t[i].real = real
            t[i].realPort = 8080
            t[i].local = client
            t[i].localPort = 40000
            t[i].flags.insert(.replyIndexed)
            t.insert(i)
            made.append(i)
        }
        #expect(t.lookup(.reply, proto: 6, real, 8080, client, 40000) == made[1])
        #expect(t.replyIndexedCount == 1)
        #expect(t.lookup(.client, proto: 6, client, 40000, IPv4Address("198.19.0.10")!, 80) == made[0])
        t.remove(made[0])
        #expect(t.lookup(.reply, proto: 6, real, 8080, client, 40000) == made[1])
        t.remove(made[1])
        #expect(t.lookup(.reply, proto: 6, real, 8080, client, 40000) == nil && t.replyIndexedCount == 0)
    }

    @Test func fullNATPortsAreReusedLastReleasedLast() {
        let rs = IPv4Address("198.19.0.2")!
        let lip = IPv4Address("198.19.0.100")!
        var pool = FullNATPortPool(addresses: [lip], ports: 2000...2003)
        let first = pool.allocate(real: rs, port: 80)!
        #expect(first == (lip, 2000))
        pool.release(local: lip, port: 2000, real: rs, realPort: 80)
        // The port just released waits behind every other free one.
        #expect(
            [
                pool.allocate(real: rs, port: 80)!.1, pool.allocate(real: rs, port: 80)!.1, pool.allocate(real: rs, port: 80)!.1,
                pool.allocate(real: rs, port: 80)!.1,
            ] == [2001, 2002, 2003, 2000])
        #expect(pool.allocate(real: rs, port: 80) == nil)
    }

    @Test func tenMillionIPv4ConnectionsFitInOneGiB() {
        let capacity = 10_000_000
        var size = 16
        while size * 3 < capacity * 2 * 5 { size <<= 1 }
        let bytes = capacity * MemoryLayout<Connection<IPv4Address>>.stride + size * 8 + capacity * 4
        // One cache line per entry at most (the SYN proxy's field made it exactly one).
        #expect(MemoryLayout<Connection<IPv4Address>>.stride <= 64)
        #expect(bytes <= 1 << 30, "\(bytes) bytes")
    }

    @Test func rateEstimatorFollowsTheKernel() {
        var e = RateEstimator()
        var c = Counters()
        for _ in 0..<100 {
            c.connections += 2000
            c.inPackets += 20000
            c.inBytes += 2_000_000
            e.update(c)
        }
        #expect(e.rates.connectionsPerSecond == 1000 && e.rates.inPacketsPerSecond == 10000 && e.rates.inBytesPerSecond == 1_000_000)
    }
}

extension ForwardingMethod {
    /// DR and TUN deliver to the virtual port.
    var keepsPort: Bool { self == .directRouting || self == .tunnel }
}

/// The fast path must be invisible: for every frame, the same bytes, verdict,
/// counters and connection state as the general path.
@Suite(.serialized) struct FastPathTests {
    let vip = ip("198.18.0.10")
    let client = ip("198.18.0.100")
    let rs = FrameBuilder(srcMAC: rsMAC.value, dstMAC: ifaceRealMAC.value)

    /// Runs the same conversation through two directors, one without the
    /// fast path, and compares everything after every frame.
    /// Returns how many frames the fast path took.
    @discardableResult
    func conversation(_ method: ForwardingMethod, proto: TransportProtocol, _ frames: (UInt16) -> [([UInt8], UInt16)]) -> Int {
        let svc = VirtualServiceConfiguration(
            key: .address(proto, vip, 80), scheduler: "rr",
            realServers: [RealServerConfiguration(address: ip("198.19.0.2"), port: method.keepsPort ? 80 : 8080, method: method)],
            localAddresses: method == .fullNAT ? [ip("198.19.0.100")] : [])
        var fast = Harness([svc])
        var slow = Harness([svc])
        slow.director.fastPathEnabled = false
        var localPort: UInt16 = 0
        // The first frame opens the connection; the FULLNAT local port it got shapes the replies.
        for (k, (frame, iface)) in frames(0).enumerated() where k == 0 {
            let (v1, o1) = fast.send(frame, interface: iface)
            let (v2, o2) = slow.send(frame, interface: iface)
            #expect(v1 == v2 && o1 == o2)
            localPort = be16(o1, 34)
        }
        var taken = 0
        for (frame, iface) in frames(localPort).dropFirst() {
            fast.now += 10
            slow.now += 10
            var probe = fast.director
            let one = FrameBatch(capacity: 1)
            _ = one.append(frame.span, interface: iface)
            if one.withFrames({ probe.fastRun(&$0, &$1, from: 0, slotSize: one.slotSize, now: fast.now) }) == 1 { taken += 1 }
            let (v1, o1) = fast.send(frame, interface: iface)
            let (v2, o2) = slow.send(frame, interface: iface)
            #expect(v1 == v2)
            #expect(o1 == o2)
            #expect(FrameBuilder.checksumsValid(o1))
        }
        let a = fast.director.service(svc.key)!
        let b = slow.director.service(svc.key)!
        #expect(a.counters == b.counters && a.destinations[0].counters == b.destinations[0].counters)
        #expect(a.destinations[0].activeConnections == b.destinations[0].activeConnections)
        #expect(fast.director.shared.totals == slow.director.shared.totals)
        for i in 0..<fast.director.v4.table.capacity {
            let x = fast.director.v4.table[i]
            let y = slow.director.v4.table[i]
            #expect(x.expires == y.expires && x.state == y.state && x.packets == y.packets && x.flags == y.flags)
        }
        return taken
    }

    func tcp(_ method: ForwardingMethod) -> Int {
        conversation(method, proto: .tcp) { lport in
            let replyTo = method == .fullNAT ? ip("198.19.0.100") : client
            let realPort: UInt16 = method.keepsPort ? 80 : 8080
            let replyPort = method == .fullNAT ? lport : 40000
            var f: [([UInt8], UInt16)] = [(h(FrameBuilder.tcp(sport: 40000, dport: 80, seq: 1000, flags: 0x02)), 1)]
            if method.seesReplies {
                f.append(
                    (rs.frame(src: ip("198.19.0.2"), dst: replyTo, FrameBuilder.tcp(sport: realPort, dport: replyPort, seq: 5000, ack: 1001, flags: 0x12)), 2))
            }
            f.append((h(FrameBuilder.tcp(sport: 40000, dport: 80, seq: 1001, ack: 5001, flags: 0x10)), 1))  // TOA ACK under FULLNAT
            f.append((h(FrameBuilder.tcp(sport: 40000, dport: 80, seq: 1001, ack: 5001, flags: 0x18, payload: [1, 2, 3])), 1))
            f.append((h(FrameBuilder.tcp(sport: 40000, dport: 80, seq: 1004, ack: 5001, flags: 0x10), ttl: 1), 1))  // TTL exceeded
            f.append((h(FrameBuilder.tcp(sport: 40000, dport: 80, seq: 1004, ack: 5001, flags: 0x30)), 1))  // URG|ACK
            if method.seesReplies {
                f.append(
                    (
                        rs.frame(
                            src: ip("198.19.0.2"), dst: replyTo,
                            FrameBuilder.tcp(sport: realPort, dport: replyPort, seq: 5001, ack: 1004, flags: 0x18, payload: [9])), 2
                    ))
                f.append(
                    (rs.frame(src: ip("198.19.0.2"), dst: replyTo, FrameBuilder.tcp(sport: realPort, dport: replyPort, seq: 5002, ack: 1004, flags: 0x11)), 2))
            }
            f.append((h(FrameBuilder.tcp(sport: 40000, dport: 80, seq: 1004, ack: 5003, flags: 0x11)), 1))
            f.append((h(FrameBuilder.tcp(sport: 40000, dport: 80, seq: 1005, ack: 5003, flags: 0x10)), 1))
            return f
        }
    }

    func h(_ l4: (UInt8, [UInt8]), ttl: UInt8 = 64) -> [UInt8] { Harness([]).builder.frame(src: client, dst: vip, l4, ttl: ttl) }

    /// A batch mixing frames the fast path takes with frames it declines (a
    /// new flow, a FIN, a broken header checksum) ends exactly as the same
    /// frames sent one at a time through the general path: runs stop at the
    /// declined frame and resume after it, in order. With the prefetch of a
    /// big table on, too (it only hints the cache).
    @Test(arguments: [false, true]) func batchesInterleaveRunsWithTheGeneralPath(prefetching: Bool) {
        let servers = ["198.19.0.2", "198.19.0.3"].map { RealServerConfiguration(address: ip($0), port: 8080, method: .nat) }
        let svc = VirtualServiceConfiguration(key: .address(.tcp, vip, 80), scheduler: "rr", realServers: servers)
        var fast = Harness([svc])
        var slow = Harness([svc])
        slow.director.fastPathEnabled = false
        if prefetching { fast.director.prefetchAbove = 0 }
        func data(_ port: UInt16, flags: UInt8 = 0x18) -> [UInt8] {
            h(FrameBuilder.tcp(sport: port, dport: 80, seq: 1001, ack: 5001, flags: flags, payload: [1, 2, 3]))
        }
        // Four established flows: SYN, the real server's SYN-ACK, ACK.
        for port: UInt16 in 40000..<40004 {
            let (_, out) = fast.send(h(FrameBuilder.tcp(sport: port, dport: 80, seq: 1000, flags: 0x02)))
            _ = slow.send(h(FrameBuilder.tcp(sport: port, dport: 80, seq: 1000, flags: 0x02)))
            let real = IPAddress.v4(IPv4Address(UInt32(be16(out, 30)) << 16 | UInt32(be16(out, 32))))
            let synAck = rs.frame(src: real, dst: client, FrameBuilder.tcp(sport: 8080, dport: port, seq: 5000, ack: 1001, flags: 0x12))
            _ = fast.send(synAck, interface: 2)
            _ = slow.send(synAck, interface: 2)
            let ack = h(FrameBuilder.tcp(sport: port, dport: 80, seq: 1001, ack: 5001, flags: 0x10))
            _ = fast.send(ack)
            _ = slow.send(ack)
        }
        var broken = data(40000)
        broken[24] ^= 0xFF
        let frames = [
            data(40000), data(40001), h(FrameBuilder.tcp(sport: 40009, dport: 80, seq: 1000, flags: 0x02)), data(40002),
            data(40003, flags: 0x11), broken, data(40001), data(40002), data(40003),
        ]
        fast.now += 10
        slow.now += 10
        let batched = fast.sendBatch(frames.map { ($0, 1) })
        #expect(batched.count == frames.count)
        for (k, f) in frames.enumerated() {
            let (v, o) = slow.send(f)
            #expect(batched[k].0 == v, "frame \(k)")
            #expect(batched[k].1 == o, "frame \(k)")
        }
        #expect(fast.director.service(svc.key)!.counters == slow.director.service(svc.key)!.counters)
        #expect(fast.director.shared.totals == slow.director.shared.totals)
        #expect(fast.director.drops(.malformed(.badIPv4Checksum)) == 1)
        for i in 0..<fast.director.v4.table.capacity {
            let x = fast.director.v4.table[i]
            let y = slow.director.v4.table[i]
            #expect(x.expires == y.expires && x.state == y.state && x.packets == y.packets && x.inPackets == y.inPackets)
        }
    }

    // Taken: the data segments, URG|ACK and the reply data; not SYN, FIN,
    // the state-changing first ACK, TTL 1 or the TOA-carrying ACK.
    @Test func nat() { #expect(tcp(.nat) == 3) }
    @Test func directRouting() { #expect(tcp(.directRouting) == 2) }
    // IPIP: the outer header built in the fast path byte for byte as the general path builds it.
    @Test func tunnel() { #expect(tcp(.tunnel) == 2) }
    // Under FULLNAT every client segment acknowledging the server's ISN + 1
    // carries TOA (DPVS's fdata_seq rule), so only the reply is taken.
    @Test func fullNAT() { #expect(tcp(.fullNAT) == 1) }

    @Test func udpWithAndWithoutChecksum() {
        let taken = conversation(.nat, proto: .udp) { _ in
            let one = h(FrameBuilder.udp(sport: 5353, dport: 80, payload: [1, 2, 3, 4]))
            var noChecksum = one
            noChecksum[40] = 0
            noChecksum[41] = 0
            // A payload whose rewritten checksum computes to 0 still goes out as 0xFFFF: covered by the full check.
            return [
                (one, 1), (one, 1), (noChecksum, 1),
                (rs.frame(src: ip("198.19.0.2"), dst: client, FrameBuilder.udp(sport: 8080, dport: 5353)), 2),
            ]
        }
        #expect(taken == 3)
    }
}
