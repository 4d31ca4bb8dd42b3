/// rr (`ip_vs_rr.c`): a circular pointer over the list; the next server with
/// weight > 0 that is not overloaded, in at most two passes.
public struct RoundRobin: Scheduler {
    /// The slot chosen last, nil for the list head.
    var last: Int?
    var knownOrder: [Int] = []
    /// The pointer every worker's copy of the service moves, when there are several.
    var shared: SharedSchedulerPosition?

    public init(flags: SchedulerFlags) {}

    public mutating func destinationsChanged(order: [Int], dests: [DestinationState]) {
        if let shared { last = Self.slot(shared.load()) }
        defer { shared?.store(Self.word(last)) }
        // The kernel moves the pointer of a deleted server to its predecessor.
        if let l = last, !order.contains(l), let i = knownOrder.firstIndex(of: l) {
            last = i > 0 ? knownOrder[i - 1] : nil
            if let p = last, !order.contains(p) { last = nil }
        }
        knownOrder = order
    }

    public mutating func schedule(order: Span<Int>, dests: Span<DestinationState>, input: ScheduleInput, now: UInt64) -> Int? {
        guard let shared else { return next(order: order, dests: dests) }
        var seen = shared.load()
        while true {
            last = Self.slot(seen)
            let chosen = next(order: order, dests: dests)
            guard let failed = shared.exchange(seen, Self.word(last)) else { return chosen }
            seen = failed
        }
    }

    static func slot(_ word: UInt64) -> Int? { word == 0 ? nil : Int(word &- 1) }
    static func word(_ slot: Int?) -> UInt64 { slot.map { UInt64($0 &+ 1) } ?? 0 }

    mutating func next(order: Span<Int>, dests: Span<DestinationState>) -> Int? {
        let n = order.count
        guard n > 0 else { return nil }
        var start = 0
        if let l = last {
            var i = 0
            while i < n {
                if order[i] == l {
                    start = i + 1
                    break
                }
                i += 1
            }
        }
        var k = 0
        while k < n {
            let slot = order[(start + k) % n]
            if dests[slot].isAvailable {
                last = slot
                return slot
            }
            k += 1
        }
        return nil
    }
}
