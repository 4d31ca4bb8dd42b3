import LVSCore
import LVSPacket
import LVSTestSupport

/// The fast path must be invisible: bytes decide a script of established
/// IPv4 flows (TCP and UDP, by NAT, DR, IPIP and FULLNAT, in both
/// directions), batches of their segments with arbitrary flags, lengths,
/// TTLs and corrupted bytes, and clock steps; two directors alike but for
/// the fast path run it, and every frame out (bytes, verdict, interface),
/// every counter and every connection entry must be the same in both.
/// Any difference traps, which libFuzzer reports with the input.
enum PathComparison {
    static let client = FrameBuilder(srcMAC: clientMAC, dstMAC: ifaceClientMAC.value)
    static let server = FrameBuilder(srcMAC: rsMAC.value, dstMAC: ifaceRealMAC.value)
    static let local = ip("198.19.0.100")

    struct Service {
        var configuration: VirtualServiceConfiguration
        var method: ForwardingMethod
        var udp: Bool
        var vip: IPAddress
        var port: UInt16 { 80 }
    }

    static let services: [Service] = {
        func service(_ vip: String, _ udp: Bool, _ method: ForwardingMethod, _ servers: [String]) -> Service {
            let keepsPort = method == .directRouting || method == .tunnel
            let configuration = VirtualServiceConfiguration(
                key: .address(udp ? .udp : .tcp, ip(vip), 80), scheduler: "rr",
                realServers: servers.map { RealServerConfiguration(address: ip($0), port: keepsPort ? 80 : 8080, method: method) },
                localAddresses: method == .fullNAT ? [local] : [])
            return Service(configuration: configuration, method: method, udp: udp, vip: ip(vip))
        }
        return [
            service("198.18.0.10", false, .nat, ["198.19.0.2", "198.19.0.3"]),
            service("198.18.0.11", true, .nat, ["198.19.0.2"]),
            service("198.18.0.12", false, .directRouting, ["198.19.0.3"]),
            service("198.18.0.13", false, .tunnel, ["198.19.0.4"]),
            service("198.18.0.14", false, .fullNAT, ["198.19.0.2", "198.19.0.4"]),
            service("198.18.0.15", true, .fullNAT, ["198.19.0.3"]),
        ]
    }()

    /// A flow as both directors made it: who the client is, and where it went.
    struct Flow {
        var service: Service
        var client: IPAddress
        var clientPort: UInt16
        var real: IPAddress
        var realPort: UInt16
        /// The reply's destination: the client, or under FULLNAT the local address and port.
        var replyTo: IPAddress
        var replyPort: UInt16
        var sequence: UInt32 = 1001
        var acknowledgement: UInt32 = 5001
        var seesReplies: Bool { service.method == .nat || service.method == .fullNAT }
    }

    struct Pair {
        var fast = Harness(PathComparison.services.map(\.configuration), capacity: 256)
        var slow = Harness(PathComparison.services.map(\.configuration), capacity: 256)
        init() { slow.director.fastPathEnabled = false }

        /// One batch through both; the frames out must be identical.
        mutating func send(_ frames: [(frame: [UInt8], interface: UInt16)]) -> [(Verdict, [UInt8])] {
            let a = fast.sendBatch(frames)
            let b = slow.sendBatch(frames)
            precondition(a.count == b.count, "frames out: \(a.count) by the fast path, \(b.count) without")
            for k in a.indices {
                precondition(a[k].0 == b[k].0, "frame \(k): verdict \(a[k].0) by the fast path, \(b[k].0) without")
                precondition(a[k].1 == b[k].1, "frame \(k): bytes differ\n  fast \(a[k].1)\n  slow \(b[k].1)")
            }
            return a
        }

        mutating func advance(_ milliseconds: UInt64, tick: Bool) {
            fast.now += milliseconds
            slow.now += milliseconds
            if tick {
                fast.director.tick(now: fast.now)
                slow.director.tick(now: slow.now)
            }
        }

        /// Counters, drops and every connection entry alike.
        func compare() {
            precondition(fast.director.shared.totals == slow.director.shared.totals, "totals differ")
            precondition(fast.director.shared.drops == slow.director.shared.drops, "drop counters differ")
            for s in PathComparison.services {
                let a = fast.director.service(s.configuration.key)!
                let b = slow.director.service(s.configuration.key)!
                precondition(a.counters == b.counters, "\(s.vip) counters differ")
                for d in a.destinations.indices {
                    precondition(a.destinations[d].counters == b.destinations[d].counters, "\(s.vip) server \(d) counters differ")
                    precondition(
                        a.destinations[d].activeConnections == b.destinations[d].activeConnections
                            && a.destinations[d].inactiveConnections == b.destinations[d].inactiveConnections,
                        "\(s.vip) server \(d) connection counts differ")
                }
            }
            for i in 0..<fast.director.v4.table.capacity {
                let x = fast.director.v4.table[i]
                let y = slow.director.v4.table[i]
                precondition(
                    x.expires == y.expires && x.state == y.state && x.flags == y.flags && x.packets == y.packets
                        && x.inPackets == y.inPackets, "connection entry \(i) differs")
            }
        }
    }

    /// Reads the script's bytes in order; zeros once they run out.
    struct Script {
        var bytes: [UInt8]
        var at = 0
        var exhausted: Bool { at >= bytes.count }
        mutating func byte() -> UInt8 {
            defer { at += 1 }
            return at < bytes.count ? bytes[at] : 0
        }
        mutating func u16() -> UInt16 { UInt16(byte()) << 8 | UInt16(byte()) }
    }

    static func run(_ bytes: Span<UInt8>) {
        var script = Script(bytes: (0..<bytes.count).map { bytes[$0] })
        var pair = Pair()
        var flows: [Flow] = []
        var steps = 0
        while !script.exhausted && steps < 64 {
            steps += 1
            let op = script.byte()
            switch op % 4 {
            case 0:
                if flows.count < 16, let flow = open(&pair, &script) { flows.append(flow) }
            case 1, 2:
                guard !flows.isEmpty else { continue }
                let n = Int(script.byte() % 16) + 1
                var batch: [(frame: [UInt8], interface: UInt16)] = []
                for _ in 0..<n { batch.append(segment(&flows, &script)) }
                _ = pair.send(batch)
            default:
                pair.advance(UInt64(script.u16()) * 10, tick: op & 0x80 != 0)
            }
        }
        pair.compare()
    }

    /// A new flow: its first segment (and for TCP the real server's SYN-ACK
    /// and the client's ACK, which FULLNAT sends on with TOA), one at a time.
    static func open(_ pair: inout Pair, _ script: inout Script) -> Flow? {
        let service = services[Int(script.byte()) % services.count]
        let clientAddress = IPAddress.v4(IPv4Address(198, 18, 2, script.byte()))
        let clientPort = 1024 | script.u16()
        let first: [UInt8] =
            service.udp
            ? client.frame(src: clientAddress, dst: service.vip, FrameBuilder.udp(sport: clientPort, dport: service.port))
            : client.frame(src: clientAddress, dst: service.vip, FrameBuilder.tcp(sport: clientPort, dport: service.port, seq: 1000, flags: 0x02))
        let out = pair.send([(first, 1)])
        guard out.count == 1, case .transmit = out[0].0 else { return nil }
        let o = out[0].1
        // The outer IPv4 header of IPIP comes first; the inner one holds the real server's port.
        let ipAt = service.method == .tunnel ? 34 : 14
        guard o.count >= ipAt + 24 else { return nil }
        let real = IPAddress.v4(IPv4Address(o[30], o[31], o[32], o[33]))
        let l4 = ipAt + 20
        let realPort = be16(o, l4 + 2)
        var flow = Flow(
            service: service, client: clientAddress, clientPort: clientPort, real: real, realPort: realPort,
            replyTo: clientAddress, replyPort: clientPort)
        if service.method == .fullNAT {
            flow.replyTo = local
            flow.replyPort = be16(o, l4)
        }
        guard !service.udp else { return flow }
        if flow.seesReplies {
            let synAck = server.frame(
                src: real, dst: flow.replyTo,
                FrameBuilder.tcp(sport: realPort, dport: flow.replyPort, seq: 5000, ack: 1001, flags: 0x12))
            _ = pair.send([(synAck, 2)])
        }
        _ = pair.send([
            (
                client.frame(
                    src: clientAddress, dst: service.vip,
                    FrameBuilder.tcp(sport: clientPort, dport: service.port, seq: 1001, ack: 5001, flags: 0x10)), 1
            )
        ])
        return flow
    }

    /// A segment of an open flow, in either direction: usually plain data,
    /// sometimes with other flags, a low TTL, or a byte changed anywhere.
    static func segment(_ flows: inout [Flow], _ script: inout Script) -> (frame: [UInt8], interface: UInt16) {
        let control = script.byte()
        let k = Int(control & 0x0F) % flows.count
        let fromServer = control & 0x10 != 0 && flows[k].seesReplies
        let payload = [UInt8](repeating: 0x61, count: Int(script.byte() % 96))
        let flagsByte = script.byte()
        // Mostly ACK or PSH|ACK; otherwise any flags at all.
        let flags: UInt8 = flagsByte & 0x80 == 0 ? (flagsByte & 1 == 0 ? 0x10 : 0x18) : flagsByte & 0x3F
        let ttl: UInt8 = control & 0x20 != 0 ? script.byte() % 3 : 64
        var f = flows[k]
        let segment: (UInt8, [UInt8])
        var frame: [UInt8]
        if fromServer {
            segment =
                f.service.udp
                ? FrameBuilder.udp(sport: f.realPort, dport: f.replyPort, payload: payload)
                : FrameBuilder.tcp(sport: f.realPort, dport: f.replyPort, seq: f.acknowledgement, ack: f.sequence, flags: flags, payload: payload)
            frame = server.frame(src: f.real, dst: f.replyTo, segment, ttl: ttl)
            f.acknowledgement &+= UInt32(payload.count)
        } else {
            segment =
                f.service.udp
                ? FrameBuilder.udp(sport: f.clientPort, dport: f.service.port, payload: payload)
                : FrameBuilder.tcp(sport: f.clientPort, dport: f.service.port, seq: f.sequence, ack: f.acknowledgement, flags: flags, payload: payload)
            frame = client.frame(src: f.client, dst: f.service.vip, segment, ttl: ttl)
            f.sequence &+= UInt32(payload.count)
        }
        flows[k] = f
        if control & 0x40 != 0 {
            let at = Int(script.byte()) % frame.count
            frame[at] ^= script.byte() | 1
        }
        return (frame, fromServer ? 2 : 1)
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzPaths(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    // libFuzzer lends `size` readable bytes at `data` for the length of the call.
    let buffer = unsafe UnsafeBufferPointer(start: data, count: size)
    PathComparison.run(unsafe buffer.span)
    return 0
}
