/// fo (`ip_vs_fo.c`): the available server with the highest weight, the
/// first one on ties.
public struct WeightedFailover: Scheduler {
    public init(flags: SchedulerFlags) {}

    public func select(order: Span<Int>, dests: Span<DestinationState>) -> Int? {
        var best: Int? = nil
        var hw: Int32 = 0
        for i in order.indices {
            let d = dests[order[i]]
            if !d.overloaded && !d.removed && d.weight > hw {
                best = order[i]
                hw = d.weight
            }
        }
        return best
    }
    public mutating func schedule(order: Span<Int>, dests: Span<DestinationState>, input: ScheduleInput, now: UInt64) -> Int? {
        select(order: order, dests: dests)
    }
}
