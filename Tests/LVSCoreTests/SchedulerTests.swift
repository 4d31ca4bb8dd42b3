import LVSPacket
import LVSTestSupport
import Testing

@testable import LVSCore

/// A service's servers as the kernel lists them: added in the given order,
/// each new one at the list head.
struct Pool {
    var dests: [DestinationState]
    var order: [Int]
    init(weights: [Int32]) {
        dests = weights.enumerated().map { i, w in
            DestinationState(RealServerConfiguration(address: IPAddress("198.19.0.\(i + 1)")!, port: 80, weight: w))
        }
        order = Array(dests.indices.reversed())
    }
    func run(_ s: inout SchedulerInstance, _ n: Int, input: ScheduleInput = ScheduleInput(sourceFold: 1, sourcePort: 1, destinationFold: 1)) -> [Int?] {
        (0..<n).map { _ in s.schedule(order: order.span, dests: dests.span, input: input, now: 0) }
    }
    func scheduler(_ name: String, _ flags: SchedulerFlags = []) -> SchedulerInstance {
        var s = SchedulerInstance(name: name, flags: flags)!
        s.destinationsChanged(order: order, dests: dests)
        return s
    }
}

@Suite struct SchedulerTests {
    @Test func rrStartsAtTheNewestServer() {
        let pool = Pool(weights: [1, 1, 1])  // servers 0, 1, 2 added in that order
        var s = pool.scheduler("rr")
        #expect(pool.run(&s, 6) == [2, 1, 0, 2, 1, 0])
    }

    @Test func rrSkipsWeightZeroAndOverloaded() {
        var pool = Pool(weights: [1, 0, 1])
        pool.dests[2].overloaded = true
        var s = pool.scheduler("rr")
        #expect(pool.run(&s, 3) == [0, 0, 0])
    }

    @Test func wrrWeights432() {
        // A=4, B=3, C=2 added in order; list is C, B, A.
        let pool = Pool(weights: [4, 3, 2])
        var s = pool.scheduler("wrr")
        #expect(pool.run(&s, 18) == [0, 1, 0, 2, 1, 0, 2, 1, 0, 0, 1, 0, 2, 1, 0, 2, 1, 0])
    }

    /// With several workers each has its copy of the service; rr and wrr
    /// share one position, so that the copies, taking turns in any order,
    /// make the one sequence a single scheduler makes.
    @Test func workersTakeOneSequenceOfRRAndWRR() {
        for (name, weights) in [("rr", [Int32(1), 1, 1]), ("wrr", [4, 3, 2])] {
            let pool = Pool(weights: weights)
            var alone = pool.scheduler(name)
            let expected = pool.run(&alone, 36)
            let position = SharedSchedulerPosition()
            var copies = (0..<3).map { _ in
                var s = SchedulerInstance(name: name, flags: [])!
                s.share(position)
                s.destinationsChanged(order: pool.order, dests: pool.dests)
                return s
            }
            var taken: [Int?] = []
            for k in 0..<36 {
                let worker = (k * 7 + k / 5) % 3
                taken += pool.run(&copies[worker], 1)
            }
            #expect(taken == expected, "\(name)")
        }
    }

    @Test func wrrAllZeroHasNoServer() {
        let pool = Pool(weights: [0, 0])
        var s = pool.scheduler("wrr")
        #expect(pool.run(&s, 1) == [nil])
    }

    @Test func wlcTiesGoToTheFirstInTheList() {
        var pool = Pool(weights: [1, 1, 2])
        #expect(pick(pool, "wlc") == 2)
        pool.dests[2].activeConnections = 1  // overhead 256/2 = 128
        pool.dests[1].activeConnections = 1  // 256/1
        #expect(pick(pool, "wlc") == 0)
        pool.dests[0].inactiveConnections = 200  // 200/1 > 128/1? 200*2 > 256*1 → 2 wins
        #expect(pick(pool, "wlc") == 2)
    }

    @Test func lcSedNqFoOvf() {
        var pool = Pool(weights: [1, 3, 2])
        pool.dests[0].activeConnections = 1
        pool.dests[1].activeConnections = 2
        pool.dests[2].activeConnections = 1
        #expect(pick(pool, "lc") == 2)  // overhead 256 ties, first in list
        #expect(pick(pool, "sed") == 2)  // (1+1)/2 and (2+1)/3 tie: the first in the list stays
        pool.dests[0].activeConnections = 0
        #expect(pick(pool, "nq") == 0)  // idle server at once
        #expect(pick(pool, "fo") == 1)  // highest weight
        pool.dests[1].activeConnections = 4
        #expect(pick(pool, "ovf") == 2)  // 1 has active > weight
    }

    @Test func sedPrefersStrictlyLowerExpectedDelay() {
        var pool = Pool(weights: [1, 3])
        pool.dests[0].activeConnections = 0  // (0+1)/1 = 1
        pool.dests[1].activeConnections = 1  // (1+1)/3 < 1
        #expect(pick(pool, "sed") == 1)
    }

    @Test func shWithFallbackWhenAServerGoesToWeightZero() {
        var pool = Pool(weights: [1, 1, 1])
        let inputs = (0..<64).map { ScheduleInput(sourceFold: 0xC612_0000 + UInt32($0), sourcePort: 0, destinationFold: 0) }
        var s = pool.scheduler("sh")
        let before = inputs.map { pool.run(&s, 1, input: $0)[0]! }
        let victim = before[0]
        pool.dests[victim].weight = 0
        var plain = pool.scheduler("sh")
        var fallback = pool.scheduler("sh", .shFallback)
        for (k, input) in inputs.enumerated() {
            let p = pool.run(&plain, 1, input: input)[0]
            let f = pool.run(&fallback, 1, input: input)[0]
            if before[k] == victim {
                #expect(p == nil)
                #expect(f != nil && f != victim)
            } else {
                // Weight changes rebuild the table; the weight-0 server keeps one bucket per turn.
                #expect(f != nil)
            }
        }
    }

    @Test func shBucketsRepeatEachServerWeightTimes() {
        let pool = Pool(weights: [1, 2])
        var s = SourceHashing(flags: [])
        s.destinationsChanged(order: pool.order, dests: pool.dests)
        // List order is [1, 0]: server 1 twice, then server 0 once, repeating.
        #expect(Array(s.buckets.prefix(6)) == [1, 1, 0, 1, 1, 0])
    }

    @Test func dhFillsBucketsUnweighted() {
        let pool = Pool(weights: [5, 1])
        var s = DestinationHashing(flags: [])
        s.destinationsChanged(order: pool.order, dests: pool.dests)
        #expect(Array(s.buckets.prefix(4)) == [1, 0, 1, 0])
    }

    @Test func mhKeepsItsTableWhenAWeightGoesToZero() {
        var pool = Pool(weights: [1, 1, 1])
        var m = MaglevHashing(flags: [])
        m.destinationsChanged(order: pool.order, dests: pool.dests)
        let table = m.lookup
        #expect(table.count == 4093 && !table.contains(-1))
        let counts = (0..<3).map { i in table.filter { $0 == i }.count }
        #expect(counts.allSatisfy { abs($0 - 4093 / 3) <= 1 })
        pool.dests[1].weight = 0  // lastWeight stays 1
        m.destinationsChanged(order: pool.order, dests: pool.dests)
        #expect(m.lookup == table)
        let input = (0..<1000).map { ScheduleInput(sourceFold: UInt32($0) * 7919, sourcePort: 0, destinationFold: 0) }
        var plain = SchedulerInstance.mh(m)
        var fb = MaglevHashing(flags: .mhFallback)
        fb.destinationsChanged(order: pool.order, dests: pool.dests)
        var fallback = SchedulerInstance.mh(fb)
        for i in input {
            let p = pool.run(&plain, 1, input: i)[0]
            #expect(p != 1)
            #expect(pool.run(&fallback, 1, input: i)[0] != nil)
        }
    }

    /// Two directors given the same servers in other orders: the kernel's
    /// order builds two tables that send flows to different servers;
    /// mh-sorted builds one table, whatever the order, so every flow goes
    /// to the same server on both.
    @Test func mhSortedBuildsTheSameTableOnEveryDirector() {
        let servers = (1...5).map { DestinationState(RealServerConfiguration(address: ip("198.19.0.\($0)"), port: 80, weight: 1)) }
        // Director A added them in address order, B in another; each keeps its own slots.
        let a = (dests: servers, order: Array((0..<5).reversed()))
        let bDests = [servers[3], servers[0], servers[4], servers[2], servers[1]]
        let b = (dests: bDests, order: Array((0..<5).reversed()))
        // Each table entry as the server it names.
        func table(_ flags: SchedulerFlags, _ d: (dests: [DestinationState], order: [Int])) -> [IPAddress] {
            var m = MaglevHashing(flags: flags)
            m.destinationsChanged(order: d.order, dests: d.dests)
            return m.lookup.map { d.dests[Int($0)].address }
        }
        let differing = zip(table([], a), table([], b)).filter { $0 != $1 }.count
        #expect(differing > 0)
        #expect(table(.mhSorted, a) == table(.mhSorted, b))
        // Sorted or not, each server keeps its share.
        let counts = Dictionary(grouping: table(.mhSorted, a), by: { $0 }).mapValues(\.count)
        #expect(counts.count == 5 && counts.values.allSatisfy { abs($0 - 4093 / 5) <= 1 })
    }

    @Test func mhWeightsShareTheTable() {
        let pool = Pool(weights: [3, 1])
        var m = MaglevHashing(flags: [])
        m.destinationsChanged(order: pool.order, dests: pool.dests)
        let heavy = m.lookup.filter { $0 == 0 }.count
        #expect(abs(Double(heavy) / 4093 - 0.75) < 0.01)
    }

    @Test func mhAtThePapersSizeGivesEveryServerItsShare() {
        // M = 65537 and 1000 servers of equal weight: one entry each per
        // round, so every server holds 65 or 66 entries.
        let dests = (0..<1000).map {
            DestinationState(RealServerConfiguration(address: .v4(IPv4Address(0xC613_0000 + UInt32($0))), port: 80, weight: 1))
        }
        var m = MaglevHashing(flags: [], tableSize: 65537)
        m.destinationsChanged(order: Array(dests.indices.reversed()), dests: dests)
        var counts = [Int](repeating: 0, count: 1000)
        for slot in m.lookup { counts[Int(slot)] += 1 }
        #expect(m.lookup.count == 65537 && counts.reduce(0, +) == 65537)
        #expect(counts.allSatisfy { $0 == 65 || $0 == 66 })
        #expect(counts.filter { $0 == 66 }.count == 537)
    }

    @Test func hsiphashIsSipHash13OfOneWord() {
        // Values from a separate SipHash-1-3 implementation (Python) with the
        // kernel's mh key; the Maglev permutation depends on them.
        let k = SipHashKey(k0: 2_654_435_761, k1: 2_654_435_761)
        #expect(hsiphash32(0, key: k) == 492_468_162)
        #expect(hsiphash32(1, key: k) == 384_591_538)
        #expect(hsiphash32(0xC613_0002 + 80, key: k) == 4_112_226_586)
    }

    @Test func twosIsRepeatableAndWeighted() {
        let pool = Pool(weights: [1, 9])
        var s = SchedulerInstance.twos(PowerOfTwoChoices(seed: 42))
        let picks = pool.run(&s, 1000)
        let heavy = picks.filter { $0 == 1 }.count
        #expect(heavy > 800)
        var again = SchedulerInstance.twos(PowerOfTwoChoices(seed: 42))
        #expect(pool.run(&again, 1000) == picks)
    }

    @Test func lblcSticksToTheCachedServer() {
        var pool = Pool(weights: [1, 1])
        var s = pool.scheduler("lblc")
        let i = ScheduleInput(sourceFold: 1, sourcePort: 0, destinationFold: 99)
        let first = pool.run(&s, 1, input: i)[0]!
        pool.dests[first].inactiveConnections = 50
        #expect(pool.run(&s, 1, input: i)[0] == first)
        pool.dests[first].weight = 0
        #expect(pool.run(&s, 1, input: i)[0] == 1 - first)
    }

    @Test func chMovesOnlyTheLostServersClients() {
        var pool = Pool(weights: [1, 1, 1])
        var s = pool.scheduler("ch")
        let inputs = (0..<300).map { ScheduleInput(sourceFold: UInt32($0) &* 2_654_435_761, sourcePort: 0, destinationFold: 0) }
        let before = inputs.map { pool.run(&s, 1, input: $0)[0]! }
        pool.dests[0].weight = 0
        let after = inputs.map { pool.run(&s, 1, input: $0)[0]! }
        for k in inputs.indices where before[k] != 0 { #expect(after[k] == before[k]) }
        #expect(!after.contains(0))
    }
}

extension Pool {
    /// A fresh scheduler, for single picks.
    func schedulerCopy(_ name: String) -> SchedulerInstance { scheduler(name) }
}

func pick(_ pool: Pool, _ name: String) -> Int? {
    var s = pool.scheduler(name)
    return pool.run(&s, 1)[0]
}
