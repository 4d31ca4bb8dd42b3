import LVSCore
import LVSPacket

/// The benchmark scenarios: a director with one service per method and a
/// batch of frames to push through it.
public final class Scenario {
    public var director: Director
    public let batch: FrameBatch
    var frames: [[UInt8]]
    public var now: UInt64 = 1_000_000

    /// `fullNATEstablished`: ACKs of an established FULLNAT connection past
    /// its TOA; `fullNATProxyShift`: the same with PROXY protocol, after the
    /// server acknowledged the header (every segment's sequence shifted).
    /// `natJournaled`: `natEstablished` writing a state file's slots (every
    /// 50th packet of a flow, as a sync master sends). `natReplyTaken`: NAT
    /// real servers' SYN-ACKs of connections another director made, each
    /// making its connection (`--sloppy-nat`).
    public enum Kind: String, CaseIterable, Sendable {
        case natEstablished, newConnectionWLC, directRouting, tunnel, fullNATWithTOA, fullNATEstablished, fullNATProxyShift, natJournaled
        case natReplyTaken

        /// Every frame makes a connection: the table is emptied between rounds, so that they stay new.
        public var makesConnections: Bool { self == .newConnectionWLC || self == .natReplyTaken }
    }

    /// Where the frames come in: the real servers' side for replies.
    let interface: UInt16

    /// The state file's slots for `natJournaled`: heap memory standing in for the mapping.
    var journal: UnsafeMutableRawPointer?

    deinit { journal?.deallocate() }

    static func ip(_ s: String) -> IPAddress { IPAddress(s)! }

    public init(_ kind: Kind, flows: Int = 1, batchSize: Int = 32) {
        let vip = Self.ip("198.18.0.10")
        let method: ForwardingMethod =
            switch kind {
            case .natEstablished, .newConnectionWLC, .natJournaled, .natReplyTaken: .nat
            case .directRouting: .directRouting
            case .tunnel: .tunnel
            case .fullNATWithTOA, .fullNATEstablished, .fullNATProxyShift: .fullNAT
            }
        let servers = (2..<10).map { RealServerConfiguration(address: Self.ip("198.19.0.\($0)"), port: method == .nat ? 8080 : 80, method: method) }
        let svc = VirtualServiceConfiguration(
            key: .address(.tcp, vip, 80), scheduler: kind == .newConnectionWLC ? "wlc" : "rr",
            realServers: servers, localAddresses: [Self.ip("198.19.1.1"), Self.ip("198.19.1.2")],
            proxyProtocol: kind == .fullNATProxyShift ? ProxyProtocol(version: .v2) : nil)
        var config = DirectorConfiguration(
            services: [svc],
            interfaces: [
                InterfaceConfiguration(index: 1, mac: MACAddress(0x02_00_00_00_00_01), ipv4: IPv4Address("198.18.0.1")),
                InterfaceConfiguration(index: 2, mac: MACAddress(0x02_00_00_00_00_02), ipv4: IPv4Address("198.19.0.1")),
            ],
            routes: [
                Route(destination: Self.ip("198.18.0.0"), prefixLength: 15, gateway: Self.ip("198.18.0.254"), interface: 1),
                Route(destination: Self.ip("198.19.0.0"), prefixLength: 16, interface: 2),
            ])
        config.sloppyNAT = kind == .natReplyTaken
        interface = kind == .natReplyTaken ? 2 : 1
        director = Director(configuration: config, capacity: max(1024, flows * 2 + 1024))
        for i in 2..<10 { director.learnNeighbour(Self.ip("198.19.0.\(i)"), mac: MACAddress(0x02_00_00_00_01_00 + UInt64(i))) }
        director.learnNeighbour(Self.ip("198.18.0.254"), mac: MACAddress(0x02_00_00_00_00_FE))
        if kind == .natJournaled {
            let slots = max(director.v4.table.capacity, director.v6.table.capacity)
            let bytes = 2 * slots * JournalSlot.size
            let memory = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 4096)
            memory.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
            journal = memory
            director.attachJournal(
                v4: JournalRegion(unsafeBase: memory, slots: slots), v6: JournalRegion(unsafeBase: memory + slots * JournalSlot.size, slots: slots),
                now: now)
        }
        batch = FrameBatch(capacity: batchSize)
        frames = []
        let flowCount = max(1, flows)
        // Establish every flow first (SYN, SYN-ACK for FULLNAT), then keep the ACKs.
        for f in 0..<flowCount {
            let client = IPv4Address(0xC6_12_80_00 &+ UInt32(f >> 14))  // 198.18.128.0/17
            let sport = UInt16(1024 + f & 0x3FFF)
            let syn = Self.tcp(src: client, dst: IPv4Address(0xC612_000A), sport: sport, dport: 80, seq: 1000, ack: 0, flags: 0x02)
            if kind == .natReplyTaken {
                let real = IPv4Address(0xC613_0002 &+ UInt32(f % 8))
                frames.append(Self.tcp(src: real, dst: client, sport: 8080, dport: sport, seq: 5000, ack: 1001, flags: 0x12))
                continue
            }
            if kind != .newConnectionWLC { _ = push(syn) }
            var ack: UInt32 = 5001
            if method == .fullNAT {
                // The real server's SYN-ACK to the LIP arms TOA.
                let entry = director.v4.table.lookup(.client, proto: 6, client, sport, IPv4Address(0xC612_000A), 80)!
                let c = director.v4.table[entry]
                _ = push(Self.tcp(src: c.real, dst: c.local, sport: c.realPort, dport: c.localPort, seq: 5000, ack: 1001, flags: 0x12), interface: 2)
                if kind != .fullNATWithTOA {
                    // Past the TOA: the handshake's ACK (with the PROXY header), then the server's first byte, acknowledging it.
                    _ = push(Self.tcp(src: client, dst: IPv4Address(0xC612_000A), sport: sport, dport: 80, seq: 1001, ack: 5001, flags: 0x10))
                    let header: UInt32 = kind == .fullNATProxyShift ? 28 : 0
                    _ = push(
                        Self.tcp(src: c.real, dst: c.local, sport: c.realPort, dport: c.localPort, seq: 5001, ack: 1001 &+ header, flags: 0x10),
                        interface: 2)
                    ack = 5002
                }
            }
            let pkt =
                kind == .newConnectionWLC
                ? syn : Self.tcp(src: client, dst: IPv4Address(0xC612_000A), sport: sport, dport: 80, seq: 1001, ack: ack, flags: 0x10)
            frames.append(pkt)
        }
        // Every flow, in an order that scatters them over the table, as
        // packets of many flows arrive: a table bigger than the cache is
        // then measured with its misses.
        if frames.count > 4096 {
            let n = frames.count
            frames = (0..<n).map { frames[($0 &* 7919) % n] }
        }
    }

    func push(_ frame: [UInt8], interface: UInt16 = 1) -> Verdict {
        batch.removeAll()
        _ = batch.append(frame.span, interface: interface)
        director.process(batch, now: now)
        return batch.descriptors[0].verdict
    }

    /// One batch: refills the arena from the frame set and processes it.
    public func runBatch(offset: Int) {
        batch.removeAll()
        var k = 0
        while k < batch.capacity {
            let frame = frames[(offset &+ k) % frames.count]
            _ = batch.append(frame.span, interface: interface)
            k &+= 1
        }
        director.process(batch, now: now)
    }

    /// For the new-connection case: forget every connection so SYNs stay new.
    public func reset() {
        now &+= 10_000_000
        director.tick(now: now)
        for _ in 0..<64 { director.tick(now: now) }
    }

    static func tcp(src: IPv4Address, dst: IPv4Address, sport: UInt16, dport: UInt16, seq: UInt32, ack: UInt32, flags: UInt8) -> [UInt8] {
        var f = [UInt8](repeating: 0, count: 54)
        f[0] = 2
        f[5] = 1
        f[6] = 2
        f[11] = 0xAA
        f[12] = 8
        f[14] = 0x45
        f[16] = 0
        f[17] = 40
        f[22] = 64
        f[23] = 6
        func put32(_ v: UInt32, _ at: Int) { for i in 0..<4 { f[at + i] = UInt8(truncatingIfNeeded: v >> (24 - 8 * i)) } }
        put32(src.value, 26)
        put32(dst.value, 30)
        f[34] = UInt8(sport >> 8)
        f[35] = UInt8(sport & 255)
        f[36] = UInt8(dport >> 8)
        f[37] = UInt8(dport & 255)
        put32(seq, 38)
        put32(ack, 42)
        f[46] = 0x50
        f[47] = flags
        f[48] = 0xFF
        f[49] = 0xFF
        var s: UInt32 = 0
        for i in stride(from: 14, to: 34, by: 2) { s += UInt32(f[i]) << 8 | UInt32(f[i + 1]) }
        while s >> 16 != 0 { s = (s & 0xFFFF) + (s >> 16) }
        f[24] = UInt8((~s >> 8) & 255)
        f[25] = UInt8(~s & 255)
        var t: UInt32 = 6 + 20
        for i in stride(from: 26, to: 54, by: 2) { t += UInt32(f[i]) << 8 | UInt32(f[i + 1]) }
        while t >> 16 != 0 { t = (t & 0xFFFF) + (t >> 16) }
        f[50] = UInt8((~t >> 8) & 255)
        f[51] = UInt8(~t & 255)
        return f
    }
}
