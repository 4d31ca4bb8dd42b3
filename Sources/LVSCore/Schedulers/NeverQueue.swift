/// nq (`ip_vs_nq.c`): an idle server (no active connections) at once,
/// otherwise as sed.
public struct NeverQueue: Scheduler {
    public init(flags: SchedulerFlags) {}

    public func select(order: Span<Int>, dests: Span<DestinationState>) -> Int? {
        var least: Int? = nil
        var loh: Int64 = 0
        for i in order.indices {
            let slot = order[i]
            let d = dests[slot]
            if d.overloaded || d.removed || d.weight == 0 { continue }
            let doh = Int64(d.activeConnections) + 1
            if d.activeConnections == 0 { return slot }
            if let l = least {
                if loh * Int64(d.weight) > doh * Int64(dests[l].weight) {
                    least = slot
                    loh = doh
                }
            } else {
                least = slot
                loh = doh
            }
        }
        return least
    }
    public mutating func schedule(order: Span<Int>, dests: Span<DestinationState>, input: ScheduleInput, now: UInt64) -> Int? {
        select(order: order, dests: dests)
    }
}
