/// wlc (`ip_vs_wlc.c`), the default: least overhead/weight, compared
/// cross-multiplied; ties go to the first in the list.
public struct WeightedLeastConnection: Scheduler {
    public init(flags: SchedulerFlags) {}

    public func select(order: Span<Int>, dests: Span<DestinationState>) -> Int? {
        weightedLeast(order: order, dests: dests, overhead: DestinationState.overhead)
    }
    public mutating func schedule(order: Span<Int>, dests: Span<DestinationState>, input: ScheduleInput, now: UInt64) -> Int? {
        select(order: order, dests: dests)
    }
}

/// The shape wlc, sed and lblc share: the first available server, then any
/// later one with a strictly lower overhead/weight.

func weightedLeast(order: Span<Int>, dests: Span<DestinationState>, overhead: (_ active: UInt32, _ inactive: UInt32) -> Int64) -> Int? {
    var i = 0
    var least = -1
    while i < order.count {
        if dests[order[i]].isAvailable {
            least = order[i]
            break
        }
        i += 1
    }
    guard least >= 0 else { return nil }
    var loh = overhead(dests[least].activeConnections, dests[least].inactiveConnections)
    var lweight = Int64(dests[least].weight)
    i += 1
    // Fields read in place: a copy of each server's whole state cost more than the compare.
    while i < order.count {
        let slot = order[i]
        i += 1
        if dests[slot].overloaded { continue }
        if dests[slot].removed { continue }
        let doh = overhead(dests[slot].activeConnections, dests[slot].inactiveConnections)
        let weight = Int64(dests[slot].weight)
        // Wrapping, as the kernel's: no input may trap the data path.
        if loh &* weight > doh &* lweight {
            least = slot
            loh = doh
            lweight = weight
        }
    }
    return least
}
