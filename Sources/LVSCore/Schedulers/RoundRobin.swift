/// rr (`ip_vs_rr.c`): a circular pointer over the list; the next server with
/// weight > 0 that is not overloaded, in at most two passes.
public struct RoundRobin: Scheduler {
    /// The slot chosen last, nil for the list head.
    var last: Int?
    var knownOrder: [Int] = []

    public init(flags: SchedulerFlags) {}

    public mutating func destinationsChanged(order: [Int], dests: [DestinationState]) {
        // The kernel moves the pointer of a deleted server to its predecessor.
        if let l = last, !order.contains(l), let i = knownOrder.firstIndex(of: l) {
            last = i > 0 ? knownOrder[i - 1] : nil
            if let p = last, !order.contains(p) { last = nil }
        }
        knownOrder = order
    }

    public mutating func schedule(order: Span<Int>, dests: Span<DestinationState>, input: ScheduleInput, now: UInt64) -> Int? {
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
