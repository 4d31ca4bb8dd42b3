import CAllocationCounter
import DirectorFixtures
import Dispatch
import LVSCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

// Usage: lvs-bench-probe SCENARIO FLOWS BATCHES
// Processes BATCHES batches of 32 frames; callgrind's instruction totals for
// two batch counts give the instructions per packet (scripts/bench-instructions).
//    or: lvs-bench-probe maglev [SERVERS] [TABLE]   rebuild time of a Maglev table
//    or: lvs-bench-probe memory [CONNECTIONS]        resident memory of a full IPv4 table
//    or: lvs-bench-probe prefetch [FLOWS]             established NAT time per packet, prefetch on and off
//    or: lvs-bench-probe allocations                  the hot path's allocations per scenario; exits 1 unless all are 0
//    or: lvs-bench-probe threads [N] [SECONDS]        packets/s of 1 and of N worker threads, each with its own engine over one configuration
func probe(_ kind: Scenario.Kind, flows: Int, batches: Int) -> UInt64 {
    let s = Scenario(kind, flows: flows)
    for b in 0..<batches {
        if kind.makesConnections && b % 16 == 0 { s.reset() }
        s.runBatch(offset: b &* 32)
    }
    return s.director.shared.totals.inPackets
}

let args = CommandLine.arguments
func argument(_ i: Int, _ fallback: Int) -> Int { args.count > i ? Int(args[i])! : fallback }
let mode = args.count > 1 ? args[1] : "natEstablished"
switch mode {
case "maglev":
    let (servers, size) = (argument(2, 1000), argument(3, 65537))
    var rebuild = MaglevRebuild(servers: servers, tableSize: size)
    let best = rebuild.fastest(of: 20)
    let ms = Double(best.components.seconds) * 1000 + Double(best.components.attoseconds) / 1e15
    print("Maglev rebuild, M = \(size), \(servers) servers: \(ms) ms (fastest of 20)")
case "memory":
    let n = argument(2, 10_000_000)
    let before = residentBytes()
    let table = FullTable(connections: n)
    let after = residentBytes()
    print(
        "\(n) IPv4 connections: \(after - before) bytes resident (\(Double(after - before) / Double(1 << 30)) GiB); the table counts \(table.footprint) bytes")
case "allocations":
    // In the release build the data plane runs: debug code allocates where
    // optimised code does not. Each scenario is warmed up first (the first
    // batches fill tables that then stay). The counter must see an
    // allocation first, or its zeros prove nothing.
    let before = lvs_allocations()
    let sample = [Int](unsafeUninitializedCapacity: 1000) { $1 = 1000 }
    guard lvs_allocations() > before, sample.count == 1000 else {
        print("allocations: the malloc counter saw nothing; it is not interposed")
        exit(2)
    }
    var clean = true
    for kind in Scenario.Kind.allCases {
        let s = Scenario(kind, flows: 1000)
        for b in 0..<16 { s.runBatch(offset: b &* 32) }
        var counted: UInt64 = 0
        for b in 16..<400 {
            if kind.makesConnections && b % 16 == 0 { s.reset() }  // the SYNs stay new; the sweep is not counted
            let before = lvs_allocations()
            s.runBatch(offset: b &* 32)
            counted &+= lvs_allocations() &- before
        }
        print("\(kind.rawValue): \(counted) allocations in \(384 * 32) packets")
        if counted != 0 { clean = false }
    }
    exit(clean ? 0 : 1)
case "prefetch":
    // The same packets through the same director, timed with the prefetch on
    // and off in turn (three rounds each; the fastest counts).
    let s = Scenario(.natEstablished, flows: argument(2, 1_000_000))
    let batches = 50_000
    var best: [Bool: Duration] = [:]
    for _ in 0..<3 {
        for on in [false, true] {
            s.director.prefetchAbove = on ? 0 : .max
            let t = ContinuousClock().measure { for b in 0..<batches { s.runBatch(offset: b &* 32) } }
            best[on] = min(best[on] ?? t, t)
        }
    }
    func ns(_ d: Duration) -> Double { (Double(d.components.seconds) * 1e18 + Double(d.components.attoseconds)) / 1e9 / Double(batches * 32) }
    print(
        "established NAT, \(argument(2, 1_000_000)) flows: \(ns(best[false]!)) ns/packet without prefetch, \(ns(best[true]!)) with (batches of 32, frames copied in included)"
    )
case "threads":
    // Workers as lvsd runs them, without the I/O: each thread its own
    // engine (built from the same configuration) and batches; nothing is
    // shared between them per packet, so N threads should make N times one.
    let (threads, seconds) = (argument(2, 2), argument(3, 2))
    for kind in [Scenario.Kind.natEstablished, .newConnectionWLC] {
        var rates: [Int: Double] = [:]
        for n in [1, threads] {
            let packets = PacketCount()
            let start = ContinuousClock.now
            DispatchQueue.concurrentPerform(iterations: n) { _ in
                let s = Scenario(kind, flows: 1000)
                let end = ContinuousClock.now + .seconds(seconds)
                var b = 0
                while ContinuousClock.now < end {
                    for _ in 0..<64 {
                        if kind.makesConnections && b % 16 == 0 { s.reset() }
                        s.runBatch(offset: b &* 32)
                        b &+= 1
                    }
                }
                packets.add(UInt64(b * 32))
            }
            let elapsed = ContinuousClock.now - start
            let secondsTaken = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            rates[n] = Double(packets.total) / secondsTaken
        }
        let one = rates[1]!
        let many = rates[threads]!
        print("\(kind.rawValue): 1 thread \(Int(one)) packets/s, \(threads) threads \(Int(many)) packets/s: \(Double(Int(many / one * 100)) / 100)x")
    }
default:
    guard let kind = Scenario.Kind(rawValue: mode) else {
        print(
            "lvs-bench-probe: no scenario \(mode); one of \(Scenario.Kind.allCases.map(\.rawValue).joined(separator: ", ")), maglev, memory, prefetch, allocations, threads"
        )
        exit(2)
    }
    print(probe(kind, flows: argument(2, 1), batches: argument(3, 1000)))
}

/// The threads' packets, added once per thread at its end.
final class PacketCount: Sendable {
    let count = Mutex<UInt64>(0)
    func add(_ n: UInt64) { count.withLock { $0 &+= n } }
    var total: UInt64 { count.withLock { $0 } }
}
