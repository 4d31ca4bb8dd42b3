/// twos (`ip_vs_twos.c`): two weighted random picks, the less loaded
/// (overhead/weight) wins. The random source is seeded, so runs repeat.
public struct PowerOfTwoChoices: Scheduler {
    var random: SplitMix64

    public init(flags: SchedulerFlags) { random = SplitMix64(seed: 0x5EED) }
    public init(seed: UInt64) { random = SplitMix64(seed: seed) }

    public mutating func schedule(order: Span<Int>, dests: Span<DestinationState>, input: ScheduleInput, now: UInt64) -> Int? {
        var total: Int64 = 0
        var choice1: Int? = nil
        for i in order.indices {
            let d = dests[order[i]]
            if !d.overloaded && !d.removed && d.weight > 0 {
                total += Int64(d.weight)
                choice1 = order[i]
            }
        }
        guard choice1 != nil else { return nil }
        total += 1
        var r1 = Int64(random.next() % UInt64(total))
        var r2 = Int64(random.next() % UInt64(total))
        var choice2: Int? = nil
        var w1: Int64 = -1
        var w2: Int64 = -1
        var oh1: Int64 = 0
        var oh2: Int64 = 0
        for i in order.indices {
            let d = dests[order[i]]
            if d.overloaded || d.removed || d.weight <= 0 { continue }
            let w = Int64(d.weight)
            r1 -= w
            r2 -= w
            if r1 <= 0 && w1 == -1 {
                choice1 = order[i]
                w1 = w
                oh1 = d.overhead
            }
            if r2 <= 0 && w2 == -1 {
                choice2 = order[i]
                w2 = w
                oh2 = d.overhead
            }
            if w1 != -1 && w2 != -1 { break }
        }
        if let c2 = choice2, w2 * oh1 > w1 * oh2 { return c2 }
        return choice1
    }
}

/// A small deterministic generator (SplitMix64).
public struct SplitMix64: Sendable {
    var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
