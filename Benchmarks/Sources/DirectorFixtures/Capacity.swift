import LVSCore
import LVSPacket

#if canImport(Glibc)
import Glibc
#endif

/// A Maglev table over `servers` real servers of equal weight, rebuilt as a
/// weight change or a new server would rebuild it.
public struct MaglevRebuild {
    var scheduler: MaglevHashing
    let order: [Int]
    let dests: [DestinationState]

    public init(servers: Int, tableSize: Int) {
        scheduler = MaglevHashing(flags: [], tableSize: tableSize)
        dests = (0..<servers).map {
            DestinationState(RealServerConfiguration(address: .v4(IPv4Address(0xC613_0000 &+ UInt32($0))), port: 80, method: .directRouting))
        }
        order = Array(dests.indices.reversed())
    }

    public mutating func rebuild() { scheduler.destinationsChanged(order: order, dests: dests) }

    /// The fastest of `runs` rebuilds.
    public mutating func fastest(of runs: Int) -> Duration {
        let clock = ContinuousClock()
        var best = Duration.seconds(3600)
        for _ in 0..<runs { best = min(best, clock.measure { rebuild() }) }
        return best
    }
}

/// An IPv4 connection table of `connections` entries, every one in use and
/// indexed in both directions (as NAT and FULLNAT connections are).
public struct FullTable {
    public var table: ConnectionTable<IPv4Address>

    public init(connections n: Int) {
        table = ConnectionTable(capacity: n)
        for k in 0..<n {
            guard let i = table.allocate() else { break }
            var c = Connection<IPv4Address>()
            c.client = IPv4Address(0xC612_8000 &+ UInt32(k >> 14))
            c.clientPort = UInt16(1024 + k & 0x3FFF)
            c.virtual = IPv4Address(0xC612_000A)
            c.virtualPort = 80
            c.real = IPv4Address(0xC613_0002 &+ UInt32(k & 7))
            c.realPort = 8080
            c.local = c.client
            c.localPort = c.clientPort
            c.proto = 6
            c.state = .established
            c.expires = 900_000
            c.flags = .replyIndexed
            table[i] = c
            table.insert(i)
        }
    }

    public var footprint: Int { table.memoryFootprint }
}

/// This process's resident set (VmRSS), in bytes.
public func residentBytes() -> Int {
    #if canImport(Glibc)
    guard let f = fopen("/proc/self/status", "r") else { return 0 }
    defer { fclose(f) }
    var line = [CChar](repeating: 0, count: 256)
    while fgets(&line, 256, f) != nil {
        let s = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if s.hasPrefix("VmRSS:") { return (Int(s.split(separator: " ")[1]) ?? 0) * 1024 }
    }
    #endif
    return 0
}
