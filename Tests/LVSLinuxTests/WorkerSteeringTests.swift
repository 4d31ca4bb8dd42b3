import CLVSLinux
import LVSCore
import LVSPacket
import LVSTestSupport
import Logging
import Testing

@testable import LVSLinux

#if canImport(Glibc)
import Glibc
#endif

/// The workers' steering program (bpf/lvsd_fanout.bpf.c) through
/// BPF_PROG_TEST_RUN: both directions of every connection reach one
/// worker, and the workers share the clients.
@Suite(.serialized, .enabled(if: getuid() == 0, "needs root to load BPF programs"))
struct WorkerSteeringTests {
    let builder = FrameBuilder()
    let client = ip("198.18.0.100"), vip = ip("198.19.0.10"), lip = ip("198.19.0.100"), real = ip("198.19.0.11")
    let client6 = ip("2001:db8::100"), vip6 = ip("2001:db8:1::10"), lip6 = ip("2001:db8:1::100"), real6 = ip("2001:db8:1::11")

    func steering(workers: Int, prefix4: Int? = nil) throws -> WorkerSteering {
        let s = try WorkerSteering(workers: workers, logger: Logger(label: "test"))
        var o = Ownership(owned: [vip, vip6, lip, lip6], replySources: [real, real6])
        o.localAddresses = [lip, lip6]
        o.clientPrefix4 = prefix4
        s.update(o)
        return s
    }

    /// An ICMP error from `from` to `to` quoting `quoted` (a frame, from its IP header on).
    func icmpError(from: IPAddress, to: IPAddress, quoting quoted: [UInt8]) -> [UInt8] {
        let v6 = from.isIPv6
        let header: [UInt8] = v6 ? [2, 0, 0, 0, 0, 0, 0x05, 0x00] : [3, 4, 0, 0, 0, 0, 0x05, 0x78]
        return builder.frame(src: from, dst: to, (v6 ? 58 : 1, header + Array(quoted[14...])))
    }

    @Test func bothDirectionsOfANATConnectionMeetOneWorkerAndClientsSpread() throws {
        let s = try steering(workers: 4)
        var used: Set<Int> = []
        for (c, v, r) in [(client, vip, real), (client6, vip6, real6)] {
            for port in UInt16(40000)..<40064 {
                let request = builder.frame(src: c, dst: v, FrameBuilder.tcp(sport: port, dport: 80, flags: TCPFlags.syn))
                let worker = try s.worker(for: request)
                #expect((0..<4).contains(worker))
                used.insert(worker)
                // The NAT reply comes from the real server to the client.
                let reply = builder.frame(src: r, dst: c, FrameBuilder.tcp(sport: 8080, dport: port, flags: TCPFlags.syn | TCPFlags.ack))
                #expect(try s.worker(for: reply) == worker, "port \(port)")
                // A real server's ICMP error quotes the request lvsd sent it (client to real server).
                let forwarded = builder.frame(src: c, dst: r, FrameBuilder.tcp(sport: port, dport: 8080, flags: TCPFlags.ack))
                #expect(try s.worker(for: icmpError(from: r, to: c, quoting: forwarded)) == worker)
                // A client's ICMP error quotes the reply lvsd sent it (VIP to client).
                let answered = builder.frame(src: v, dst: c, FrameBuilder.tcp(sport: 80, dport: port, flags: TCPFlags.ack))
                #expect(try s.worker(for: icmpError(from: c, to: v, quoting: answered)) == worker)
                let udp = builder.frame(src: c, dst: v, FrameBuilder.udp(sport: port, dport: 53))
                let udpReply = builder.frame(src: r, dst: c, FrameBuilder.udp(sport: 53, dport: port))
                #expect(try s.worker(for: udp) == s.worker(for: udpReply))
            }
        }
        #expect(used == [0, 1, 2, 3])
    }

    /// Each worker allocates the local ports whose low bits are its index.
    @Test func aFullNATReplyGoesToTheWorkerOfItsLocalPort() throws {
        let s = try steering(workers: 4)
        for port in UInt16(1025)..<1057 {
            let reply = builder.frame(src: real, dst: lip, FrameBuilder.tcp(sport: 8080, dport: port, flags: TCPFlags.ack))
            #expect(try s.worker(for: reply) == Int(port & 3))
            let reply6 = builder.frame(src: real6, dst: lip6, FrameBuilder.tcp(sport: 8080, dport: port, flags: TCPFlags.ack))
            #expect(try s.worker(for: reply6) == Int(port & 3))
            let sent = builder.frame(src: lip, dst: real, FrameBuilder.tcp(sport: port, dport: 8080, flags: TCPFlags.ack))
            #expect(try s.worker(for: icmpError(from: real, to: lip, quoting: sent)) == Int(port & 3))
        }
        // Three workers: ports with low bits 3 belong to none and go where the modulo says.
        let three = try steering(workers: 3)
        let reply = builder.frame(src: real, dst: lip, FrameBuilder.tcp(sport: 8080, dport: 1026, flags: TCPFlags.ack))
        #expect(try three.worker(for: reply) == 2)
    }

    /// With a persistent service one client's connections meet one worker (and its template), by its persistence netmask.
    @Test func persistenceSteersByTheClientPrefix() throws {
        let s = try steering(workers: 4, prefix4: 24)
        let first = try s.worker(for: builder.frame(src: client, dst: vip, FrameBuilder.tcp(sport: 40000, dport: 80, flags: TCPFlags.syn)))
        for port in UInt16(40001)..<40032 {
            #expect(try s.worker(for: builder.frame(src: client, dst: vip, FrameBuilder.tcp(sport: port, dport: 80, flags: TCPFlags.syn))) == first)
            #expect(try s.worker(for: builder.frame(src: real, dst: client, FrameBuilder.tcp(sport: 8080, dport: port, flags: TCPFlags.ack))) == first)
        }
        let neighbour = ip("198.18.0.7")
        #expect(try s.worker(for: builder.frame(src: neighbour, dst: vip, FrameBuilder.tcp(sport: 5, dport: 80, flags: TCPFlags.syn))) == first)
    }

    /// lvsd's XDP program on queue 0 keeps the frames of worker 0's
    /// connections (a queue's socket is worker queue mod workers') and
    /// passes the others, for their owner's AF_PACKET ring: it agrees with
    /// the fanout program frame by frame.
    @Test func theXDPProgramKeepsItsQueuesWorkersFramesAndPassesTheRest() throws {
        let s = try steering(workers: 4)
        let addresses = try BPFAddressMap(capacity: 64)
        let program = try BPFProgram.redirect(addresses: addresses, queues: 4)
        try WorkerSteering.configure(program, workers: 4)
        var o = Ownership(owned: [vip, lip], replySources: [real])
        o.localAddresses = [lip]
        for (a, flags) in WorkerSteering.addressFlags(o) { try addresses.set(a, flags: flags) }
        try addresses.set(real, flags: UInt32(LVS_XDP_REPLY_SOURCE))
        var kept = 0
        for port in UInt16(40000)..<40040 {
            for frame in [
                builder.frame(src: client, dst: vip, FrameBuilder.tcp(sport: port, dport: 80, flags: TCPFlags.syn)),
                builder.frame(src: real, dst: client, FrameBuilder.tcp(sport: 8080, dport: port, flags: TCPFlags.ack)),
                builder.frame(src: real, dst: lip, FrameBuilder.tcp(sport: 8080, dport: port, flags: TCPFlags.ack)),
            ] {
                let before = program.counters(Int(LVS_XDP_COUNTERS.rawValue))
                _ = try program.run(frame)
                let after = program.counters(Int(LVS_XDP_COUNTERS.rawValue))
                let ours = after[Int(LVS_XDP_NO_SOCKET.rawValue)] > before[Int(LVS_XDP_NO_SOCKET.rawValue)]
                let other = after[Int(LVS_XDP_OTHER_WORKER.rawValue)] > before[Int(LVS_XDP_OTHER_WORKER.rawValue)]
                #expect(ours != other)
                #expect(ours == (try s.worker(for: frame) == 0), "port \(port)")
                if ours { kept += 1 }
            }
        }
        #expect(kept > 0 && kept < 120, "\(kept)")
    }

    /// The Swift copy of the rule (for sync records, which come on no
    /// worker's ring) picks what the program picks.
    @Test func theEngineSideRuleAgreesWithTheProgram() throws {
        for (workers, prefix4) in [(2, nil), (3, nil), (4, nil), (4, 24), (8, 32)] as [(Int, Int?)] {
            let s = try steering(workers: workers, prefix4: prefix4)
            var o = Ownership()
            o.clientPrefix4 = prefix4
            for k in 0..<64 {
                let port = UInt16(30000 + k * 7)
                for (c, v) in [(ip("198.18.\(k).\(k * 3 % 250 + 1)"), vip), (ip("2001:db8::\(k + 1):\(k * 5 + 1)"), vip6)] {
                    let request = builder.frame(src: c, dst: v, FrameBuilder.tcp(sport: port, dport: 80, flags: TCPFlags.syn))
                    #expect(try s.worker(for: request) == o.worker(client: c, port: port, workers: workers), "\(c) \(port)")
                }
                let reply = builder.frame(src: real, dst: lip, FrameBuilder.tcp(sport: 8080, dport: port, flags: TCPFlags.ack))
                #expect(try s.worker(for: reply) == Ownership.worker(localPort: port, workers: workers))
            }
        }
    }

    /// ARP and neighbour discovery go to worker 0, which answers for the owned addresses; one worker takes all.
    @Test func neighbourDiscoveryGoesToTheFirstWorker() throws {
        let s = try steering(workers: 4)
        var arp = [UInt8](repeating: 0xFF, count: 6) + [2, 0, 0, 0, 0, 0xAA] + [0x08, 0x06]
        arp += [0, 1, 8, 0, 6, 4, 0, 1] + [2, 0, 0, 0, 0, 0xAA] + [198, 19, 0, 11] + [0, 0, 0, 0, 0, 0] + [198, 19, 0, 10]
        #expect(try s.worker(for: arp) == 0)
        for port in UInt16(1)..<16 {
            let solicitation = builder.frame(src: real6, dst: vip6, (58, [135, 0, 0, 0, 0, 0, 0, UInt8(port)] + FrameBuilder.addressBytes(vip6)))
            #expect(try s.worker(for: solicitation) == 0)
        }
        let one = try steering(workers: 1)
        #expect(try one.worker(for: builder.frame(src: client, dst: vip, FrameBuilder.tcp(sport: 40000, dport: 80, flags: TCPFlags.syn))) == 0)
    }
}
