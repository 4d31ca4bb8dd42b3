import LVSPacket
import LVSTestSupport
import Testing

@testable import LVSCore

/// SCTP as IPVS balances it: CRC32c, the state table row by row, scheduling
/// on INIT only, the checksum computed again where NAT moves a port, sync.
@Suite(.serialized) struct SCTPTests {
    let vip = ip("198.18.0.10")
    let client = ip("198.18.0.100")
    let rs = ip("198.19.0.2")
    let lip = ip("198.19.0.100")

    // Chunk types (RFC 9260 section 3.2).
    static let data: UInt8 = 0, initiation: UInt8 = 1, initiationAck: UInt8 = 2, sack: UInt8 = 3, abort: UInt8 = 6
    static let shutdown: UInt8 = 7, shutdownAck: UInt8 = 8, cookieEcho: UInt8 = 10, cookieAck: UInt8 = 11, shutdownComplete: UInt8 = 14

    func harness(_ method: ForwardingMethod, port: UInt16 = 3868, sloppy: Bool = false) -> Harness {
        Harness(
            [
                VirtualServiceConfiguration(
                    key: .address(.sctp, vip, 3868), scheduler: "rr",
                    realServers: [RealServerConfiguration(address: rs, port: method == .directRouting ? 3868 : port, method: method)],
                    localAddresses: method == .fullNAT ? [lip] : [])
            ], sloppySCTP: sloppy)
    }

    func fromClient(_ h: Harness, sport: UInt16 = 40000, _ chunks: [(UInt8, UInt8, [UInt8])]) -> [UInt8] {
        h.builder.frame(src: client, dst: vip, FrameBuilder.sctp(sport: sport, dport: 3868, chunks: chunks))
    }

    func fromReal(to dst: IPAddress, sport: UInt16 = 13, dport: UInt16 = 40000, _ chunks: [(UInt8, UInt8, [UInt8])]) -> [UInt8] {
        FrameBuilder(srcMAC: rsMAC.value, dstMAC: ifaceRealMAC.value).frame(src: rs, dst: dst, FrameBuilder.sctp(sport: sport, dport: dport, chunks: chunks))
    }

    func state(_ h: Harness) -> ConnectionState? {
        var s: ConnectionState?
        h.director.v4.table.forEach { _, c in if !c.flags.contains(.template) { s = c.state } }
        h.director.v6.table.forEach { _, c in if !c.flags.contains(.template) { s = c.state } }
        return s
    }

    /// RFC 3720 appendix B.4, and every length from 0 to 100 against the bitwise definition.
    @Test func crc32cMatchesTheKnownVectors() {
        let vectors: [([UInt8], UInt32)] = [
            ([UInt8](repeating: 0, count: 32), 0x8A91_36AA),
            ([UInt8](repeating: 0xFF, count: 32), 0x62A8_AB43),
            ((0..<32).map { UInt8($0) }, 0x46DD_794E),
            ((0..<32).map { UInt8(31 - $0) }, 0x113F_DB5C),
            (
                [
                    0x01, 0xC0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x14, 0, 0, 0, 0, 0, 0x04, 0, 0, 0, 0, 0x14, 0, 0, 0, 0x18,
                    0x28, 0, 0, 0, 0, 0, 0, 0, 0x02, 0, 0, 0, 0, 0, 0, 0,
                ], 0xD996_3A56
            ),
        ]
        for (bytes, crc) in vectors { #expect(CRC32c.checksum(bytes.span, from: 0, count: bytes.count) == crc) }
        let bytes = (0..<107).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
        for start in 0..<7 {
            for count in 0...100 {
                let part = Array(bytes[start..<(start + count)])
                #expect(CRC32c.checksum(bytes.span, from: start, count: count) == FrameBuilder.crc32c(part), "\(start) \(count)")
            }
        }
    }

    /// `sctp_states` of `ip_vs_proto_sctp.c`, as the kernel writes it.
    @Test func theStateTableIsTheKernels() {
        let rows: [(StateDirection, String)] = [
            (
                .input,
                """
                ES I1 IN CS CR CW CO CE ES SS SR SA RJ CL | I1 IN IN CS CR CW CO CE ES SS SR SA IN IN | CW CW CW CS CR CO CO CE ES SS SR SA RJ CL
                | CR IN IN CR CR CW CO CE ES SS SR SA RJ CL | ES I1 IN CS CR CW CO ES ES SS SR SA RJ CL | SR I1 IN CS CR CW CO CE SR SS SR SA RJ CL
                | CL IN IN CS CR CW CO CE ES CL SR CL RJ CL | CL CL CL CS CR CW CO CE ES SS SR CL RJ CL | CL I1 IN CS CR CW CO CL ES SS SR SA RJ CL
                | CL CL CL CL CL RJ CL CL CL CL CL CL CL CL
                """
            ),
            (
                .output,
                """
                ES I1 IN CS CR CW CO CE ES SS SR SA RJ CL | CW CW CW CW CW CW CW CW ES CW CW CW CW CW | CS CS CS CS CR CW CO CE ES SS SR SA RJ CL
                | CE CE CE CE CE CE CE CE ES SS SR SA RJ CL | ES ES ES ES ES ES ES ES ES SS SR SA RJ CL | SS SS SS SS SS SS SS SS SS SS SR SA RJ CL
                | SA SA SA SA SA CW CO CE ES SA SA SA RJ CL | CL I1 IN CS CR CW CO CE ES SS SR SA RJ CL | CL CL CL CL CL CW CO CE ES SS SR SA RJ CL
                | CL RJ CL CL CL CL CL CL CL CL CL CL CL CL
                """
            ),
            (
                .inputOnly,
                """
                ES I1 IN CS CR ES CO CE ES SS SR SA RJ CL | I1 IN IN IN IN IN CO CE ES SS SR SA IN IN | CE CE CE CE CE CE CO CE ES SS SR SA RJ CL
                | ES ES ES ES ES ES CO CE ES SS SR SA RJ CL | ES I1 IN ES ES CW ES ES ES SS SR SA RJ CL | SR I1 IN CS CR CW CO CE SR SS SR SA RJ CL
                | CL IN IN CS CR CW CO CE CL CL SR CL RJ CL | CL CL CL CL CL CW CO CE ES SS CL CL RJ CL | CL I1 IN CS CR CW CO CE ES SS SR SA RJ CL
                | CL CL CL CL CL RJ CL CL CL CL CL CL CL CL
                """
            ),
        ]
        let names: [String: ConnectionState] = [
            "NO": .none, "I1": .sctpInit1, "IN": .sctpInit, "CS": .sctpCookieSent, "CR": .sctpCookieReplied, "CW": .sctpCookieWait,
            "CO": .sctpCookie, "CE": .sctpCookieEchoed, "ES": .sctpEstablished, "SS": .sctpShutdownSent, "SR": .sctpShutdownReceived,
            "SA": .sctpShutdownAckSent, "RJ": .sctpRejected, "CL": .sctpClosed,
        ]
        let columns: [ConnectionState] = [.none] + ConnectionState.allCases.filter { $0.rawValue > ConnectionState.udp.rawValue }
        for (direction, text) in rows {
            let events = text.split(separator: "|")
            #expect(events.count == SCTPEvent.count)
            for (event, row) in events.enumerated() {
                for (column, name) in row.split(whereSeparator: \.isWhitespace).enumerated() {
                    #expect(
                        SCTPStateTable.next(columns[column], direction: direction, event: UInt8(event)) == names[String(name)],
                        "\(direction) \(event) \(column)")
                }
            }
        }
        // ipvsadm's names, and the sync protocol's numbers, are the kernel's.
        #expect(
            columns.map(\.description) == [
                "NONE", "INIT1", "INIT", "C-SENT", "C-REPLIED", "C-WAIT", "COOKIE", "C-ECHOED", "ESTABLISHED", "S-SENT", "S-RECEIVED", "S-ACK-SENT", "REJECTED",
                "CLOSED",
            ])
        #expect(columns.map(\.kernelNumber) == Array(0...13))
        #expect(columns.allSatisfy { ConnectionState(kernelNumber: $0.kernelNumber, proto: IPProtocolNumber.sctp) == $0 })
        let t = TimeoutTable()
        #expect(t[.sctpInit1] == 4 && t[.sctpRejected] == 4 && t[.sctpEstablished] == 900 && t[.sctpCookieEchoed] == 61 && t[.sctpClosed] == 61)
    }

    /// The first chunk names the event; a COOKIE ECHO or COOKIE ACK with an
    /// ABORT after it is the ABORT; unknown chunk types are DATA.
    @Test func theParserNamesEachPacketsEvent() throws {
        let h = harness(.nat)
        func event(_ chunks: [(UInt8, UInt8, [UInt8])]) throws -> UInt8 { try PacketParser.parse(fromClient(h, chunks).span).tcpFlags }
        #expect(try event([(Self.initiation, 0, [UInt8](repeating: 1, count: 16))]) == SCTPEvent.initiation)
        #expect(try event([(Self.cookieEcho, 0, [1, 2, 3]), (Self.data, 3, [0, 0, 0, 1])]) == SCTPEvent.cookieEcho)
        #expect(try event([(Self.cookieEcho, 0, [1, 2, 3]), (Self.abort, 0, [])]) == SCTPEvent.abort)
        #expect(try event([(Self.cookieAck, 0, []), (Self.abort, 0, [])]) == SCTPEvent.abort)
        #expect(try event([(Self.sack, 0, [0, 0, 0, 0])]) == SCTPEvent.data)
        #expect(try event([(0xC1, 0, [])]) == SCTPEvent.data)
        #expect(try event([(Self.shutdownComplete, 0, [])]) == SCTPEvent.shutdownComplete)
        // A common header without a chunk.
        var bare = fromClient(h, [(Self.data, 0, [])])
        bare.removeLast(4)
        bare[17] -= 4
        bare[24...25] = [0, 0]
        let c = FrameBuilder.checksum(Array(bare[14..<34]), 0..<20)
        bare[24] = UInt8(c >> 8)
        bare[25] = UInt8(c & 255)
        #expect(throws: PacketError.truncatedSCTP) { try PacketParser.parse(bare.span) }
    }

    /// An association through NAT, packet by packet: ports and addresses
    /// rewritten both ways, each packet's CRC32c computed again, the state
    /// following the kernel's table, ActiveConn only while ESTABLISHED.
    @Test func anAssociationThroughNATFollowsTheKernelsStates() {
        var h = harness(.nat, port: 13)
        let steps: [(fromClient: Bool, chunk: UInt8, state: ConnectionState)] = [
            (true, Self.initiation, .sctpInit1), (false, Self.initiationAck, .sctpCookieSent), (true, Self.cookieEcho, .sctpCookieReplied),
            (false, Self.cookieAck, .sctpEstablished), (true, Self.data, .sctpEstablished), (false, Self.sack, .sctpEstablished),
            (true, Self.shutdown, .sctpShutdownReceived), (false, Self.shutdownAck, .sctpShutdownAckSent),
            (true, Self.shutdownComplete, .sctpClosed),
        ]
        for (n, step) in steps.enumerated() {
            let value: [UInt8] = step.chunk == Self.initiation || step.chunk == Self.initiationAck ? [UInt8](repeating: 7, count: 16) : [0, 0, 0, 1]
            if step.fromClient {
                let (v, out) = h.send(fromClient(h, [(step.chunk, 0, value)]))
                #expect(v == .transmit(interface: 2), "\(n)")
                #expect(field(out, 30, 4) == [198, 19, 0, 2] && be16(out, 34) == 40000 && be16(out, 36) == 13, "\(n)")
                #expect(FrameBuilder.checksumsValid(out), "\(n)")
            } else {
                let (v, out) = h.send(fromReal(to: client, [(step.chunk, 0, value)]), interface: 2)
                #expect(v == .transmit(interface: 1), "\(n)")
                #expect(field(out, 26, 4) == [198, 18, 0, 10] && be16(out, 34) == 3868 && be16(out, 36) == 40000, "\(n)")
                #expect(FrameBuilder.checksumsValid(out), "\(n)")
            }
            #expect(state(h) == step.state, "\(n)")
            let d = h.director.service(.address(.sctp, vip, 3868))!.destinations[0]
            #expect(d.activeConnections == (step.state == .sctpEstablished ? 1 : 0) && d.activeConnections + d.inactiveConnections == 1, "\(n)")
        }
    }

    /// The kernel leaves the checksum alone where no port changes (only
    /// addresses, which SCTP's checksum does not cover), and recomputes it
    /// where one does, FULLNAT's source port included.
    @Test func theChecksumIsComputedAgainOnlyWhereAPortChanges() {
        for (method, port) in [(ForwardingMethod.nat, UInt16(3868)), (.nat, 13), (.fullNAT, 3868), (.directRouting, 3868)] {
            var h = harness(method, port: port)
            var frame = fromClient(h, [(Self.initiation, 0, [UInt8](repeating: 7, count: 16))])
            frame[42] ^= 0xFF  // a corrupt checksum (the CRC's first byte; IPv4 header 14..<34, SCTP from 34)
            let (v, out) = h.send(frame)
            #expect(v == .transmit(interface: 2), "\(method)")
            let moved = method == .fullNAT || port != 3868
            #expect(FrameBuilder.sctpChecksumValid(Array(out[34...])) == moved, "\(method) \(port)")
            if method == .fullNAT { #expect(field(out, 26, 4) == [198, 19, 0, 100] && be16(out, 34) != 40000) }
        }
    }

    /// FULLNAT in IPv6: the INIT leaves from the local address and port with
    /// its checksum computed again and the client's addresses padded out (RFC
    /// 4820: type 0x8005, same length), and the INIT ACK comes back from the
    /// VIP with the server's padded out likewise; other parameters stay.
    @Test func fullNATInIPv6HidesEachEndsAddresses() {
        let vip6 = ip("2001:db8::10")
        let client6 = ip("2001:db8::100")
        let rs6 = ip("2001:db8:1::2")
        var h = Harness([
            VirtualServiceConfiguration(
                key: .address(.sctp, vip6, 38412), scheduler: "rr", realServers: [RealServerConfiguration(address: rs6, port: 38412, method: .fullNAT)],
                localAddresses: [ip("2001:db8:1::100")])
        ])
        let fixed: [UInt8] = [0, 0, 0, 1, 0, 2, 0, 0, 0, 10, 8, 0, 0, 0, 0, 1]
        let addressParameter: [UInt8] = [0, 6, 0, 20] + FrameBuilder.addressBytes(client6)
        let supported: [UInt8] = [0, 12, 0, 6, 0, 6, 0, 0]  // Supported Address Types: IPv6
        let (v, out) = h.send(
            h.builder.frame(
                src: client6, dst: vip6, FrameBuilder.sctp(sport: 40000, dport: 38412, chunks: [(Self.initiation, 0, fixed + addressParameter + supported)])))
        #expect(v == .transmit(interface: 2))
        // Ethernet 14, IPv6 40, SCTP common header 12, chunk header 4, fixed 16: parameters from 86.
        #expect(field(out, 22, 16) == FrameBuilder.addressBytes(ip("2001:db8:1::100")) && field(out, 38, 16) == FrameBuilder.addressBytes(rs6))
        #expect(be16(out, 54) != 40000 && be16(out, 56) == 38412)
        #expect(field(out, 86, 4) == [0x80, 0x05, 0, 20] && field(out, 90, 16) == FrameBuilder.addressBytes(client6))
        #expect(field(out, 106, 8) == supported && FrameBuilder.checksumsValid(out))
        #expect(state(h) == .sctpInit1)
        let localPort = be16(out, 54)
        let reply = FrameBuilder(srcMAC: rsMAC.value, dstMAC: ifaceRealMAC.value).frame(
            src: rs6, dst: ip("2001:db8:1::100"),
            FrameBuilder.sctp(
                sport: 38412, dport: localPort,
                chunks: [(Self.initiationAck, 0, fixed + [0, 6, 0, 20] + FrameBuilder.addressBytes(rs6) + [0, 7, 0, 8, 1, 2, 3, 4])]))
        let (v2, back) = h.send(reply, interface: 2)
        #expect(v2 == .transmit(interface: 1))
        #expect(field(back, 22, 16) == FrameBuilder.addressBytes(vip6) && field(back, 38, 16) == FrameBuilder.addressBytes(client6))
        #expect(be16(back, 54) == 38412 && be16(back, 56) == 40000)
        #expect(field(back, 86, 4) == [0x80, 0x05, 0, 20] && field(back, 106, 8) == [0, 7, 0, 8, 1, 2, 3, 4] && FrameBuilder.checksumsValid(back))
        #expect(state(h) == .sctpCookieSent)
    }

    /// Only INIT makes a connection (`sctp_conn_schedule`); with sloppy_sctp
    /// any chunk but ABORT does.
    @Test func onlyINITSchedulesUnlessSloppy() {
        var h = harness(.nat)
        for chunk in [Self.data, Self.cookieEcho, Self.abort, Self.shutdown] {
            let (v, _) = h.send(fromClient(h, [(chunk, 0, [0, 0, 0, 1])]))
            #expect(v == .drop(.notINIT))
        }
        #expect(h.director.drops(.notINIT) == 4 && state(h) == nil)
        var sloppy = harness(.nat, sloppy: true)
        #expect(sloppy.send(fromClient(sloppy, [(Self.abort, 0, [])])).0 == .drop(.notINIT))
        #expect(sloppy.send(fromClient(sloppy, [(Self.data, 0, [0, 0, 0, 1])])).0 == .transmit(interface: 2))
        #expect(state(sloppy) == .sctpEstablished)
    }

    /// The kernel's sync rule for SCTP (ESTABLISHED, the SHUTDOWN states and
    /// CLOSED; a change into any but ESTABLISHED sent at once), its state
    /// numbers on the wire, and a backup that forwards what it was sent.
    @Test func syncCarriesAnAssociationToABackup() {
        var h = harness(.nat, port: 13)
        h.director.setSyncing(true)
        _ = h.send(fromClient(h, [(Self.initiation, 0, [UInt8](repeating: 7, count: 16))]))
        _ = h.send(fromReal(to: client, [(Self.initiationAck, 0, [UInt8](repeating: 7, count: 16))]), interface: 2)
        _ = h.send(fromClient(h, [(Self.cookieEcho, 0, [1, 2, 3, 4])]))
        _ = h.send(fromReal(to: client, [(Self.cookieAck, 0, [])]), interface: 2)
        var records: [SyncRecord] = []
        h.director.takeSyncRecords { records.append($0) }
        #expect(records.isEmpty)  // three client packets, none in a synced state
        _ = h.send(fromClient(h, [(Self.data, 0, [0, 0, 0, 1])]))
        _ = h.send(fromClient(h, [(Self.shutdown, 0, [0, 0, 0, 1])]))
        h.director.takeSyncRecords { records.append($0) }
        #expect(records.map(\.state) == [8, 10] && records.allSatisfy { $0.proto == 132 }, "\(records)")
        var backup = harness(.nat, port: 13)
        var established = records[0]
        established.state = 8
        #expect(backup.director.applySync(established, now: backup.now) == .created)
        #expect(state(backup) == .sctpEstablished)
        let (v, out) = backup.send(fromClient(backup, [(Self.data, 0, [0, 0, 0, 2])]))
        #expect(v == .transmit(interface: 2) && be16(out, 36) == 13 && FrameBuilder.checksumsValid(out))
        var bad = established
        bad.state = 14
        #expect(backup.director.applySync(bad, now: backup.now) == .invalid)
    }
}
