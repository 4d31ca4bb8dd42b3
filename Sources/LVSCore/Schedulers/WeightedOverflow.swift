/// ovf (`ip_vs_ovf.c`): the highest weight among servers whose active
/// connections do not exceed their weight.
public struct WeightedOverflow: Scheduler {
    public init(flags: SchedulerFlags) {}

    public func select(order: Span<Int>, dests: Span<DestinationState>) -> Int? {
        var best: Int? = nil
        for i in order.indices {
            let d = dests[order[i]]
            let w = d.weight
            if d.overloaded || d.removed || Int64(d.activeConnections) > Int64(w) || w == 0 { continue }
            if let b = best, w <= dests[b].weight { continue }
            best = order[i]
        }
        return best
    }
    public mutating func schedule(order: Span<Int>, dests: Span<DestinationState>, input: ScheduleInput, now: UInt64) -> Int? {
        select(order: order, dests: dests)
    }
}
