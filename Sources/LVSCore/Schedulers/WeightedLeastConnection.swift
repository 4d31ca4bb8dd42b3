/// wlc (`ip_vs_wlc.c`), the default: least overhead/weight, compared
/// cross-multiplied; ties go to the first in the list.
public struct WeightedLeastConnection: Scheduler {
    public init(flags: SchedulerFlags) {}
    
    public func select(order: Span<Int>, dests: Span<DestinationState>) -> Int? {
        weightedLeast(order: order, dests: dests) { $0.overhead }
    }
    public mutating func schedule(order: Span<Int>, dests: Span<DestinationState>, input: ScheduleInput, now: UInt64) -> Int? {
        select(order: order, dests: dests)
    }
}

/// The shape wlc, sed and lblc share: the first available server, then any
/// later one with a strictly lower overhead/weight.

func weightedLeast(order: Span<Int>, dests: Span<DestinationState>, overhead: (DestinationState) -> Int64) -> Int? {
    var i = 0
    var least = -1
    while i < order.count {
        if dests[order[i]].isAvailable { least = order[i]; break }
        i += 1
    }
    guard least >= 0 else { return nil }
    var loh = overhead(dests[least])
    i += 1
    while i < order.count {
        let slot = order[i]
        let d = dests[slot]
        i += 1
        if d.overloaded || d.removed { continue }
        let doh = overhead(d)
        if loh * Int64(d.weight) > doh * Int64(dests[least].weight) { least = slot; loh = doh }
    }
    return least
}
