/// lc (`ip_vs_lc.c`): least overhead, weight ignored (weight 0 skipped).
public struct LeastConnection: Scheduler {
    public init(flags: SchedulerFlags) {}

    public func select(order: Span<Int>, dests: Span<DestinationState>) -> Int? {
        var least: Int? = nil
        var loh: Int64 = 0
        for i in order.indices {
            let slot = order[i]
            let d = dests[slot]
            if d.overloaded || d.removed || d.weight == 0 { continue }
            let doh = d.overhead
            if least == nil || doh < loh {
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
