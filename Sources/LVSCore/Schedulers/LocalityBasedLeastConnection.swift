/// lblc (`ip_vs_lblc.c`): destination address → server cache; a fresh wlc
/// choice when the cached server is unavailable or overloaded in lblc's sense.
public struct LocalityBasedLeastConnection: Scheduler {
    public static let maxEntries = 16384
    /// `lblc_expiration`, 24 h.
    public var expiration: UInt64 = 24 * 3600 * 1000
    struct Entry {
        var slot: Int
        var lastUse: UInt64
    }
    var cache: [UInt32: Entry] = [:]
    var gcRuns = 0
    var lastGC: UInt64 = 0

    public init(flags: SchedulerFlags) {}

    public mutating func destinationsChanged(order: [Int], dests: [DestinationState]) {
        cache = cache.filter { order.contains($0.value.slot) }
    }

    /// lblc's overload: active > weight and some server has active*2 < weight.
    static func isOverloaded(_ slot: Int, order: Span<Int>, dests: Span<DestinationState>) -> Bool {
        let d = dests[slot]
        guard Int64(d.activeConnections) > Int64(d.weight) else { return false }
        for i in order.indices {
            let o = dests[order[i]]
            if Int64(o.activeConnections) * 2 < Int64(o.weight) { return true }
        }
        return false
    }

    public mutating func schedule(order: Span<Int>, dests: Span<DestinationState>, input: ScheduleInput, now: UInt64) -> Int? {
        collectGarbage(now: now)
        let key = input.destinationFold
        if var e = cache[key] {
            let d = dests[e.slot]
            if !d.overloaded && !d.removed && d.weight > 0 && !Self.isOverloaded(e.slot, order: order, dests: dests) {
                e.lastUse = now
                cache[key] = e
                return e.slot
            }
        }
        guard let slot = weightedLeast(order: order, dests: dests, overhead: DestinationState.overhead) else { return nil }
        cache[key] = Entry(slot: slot, lastUse: now)
        return slot
    }

    /// Every 60 s; each 30th run drops entries idle past the expiration,
    /// otherwise, over the maximum, entries idle for 6 minutes.
    mutating func collectGarbage(now: UInt64) {
        guard now &- lastGC >= 60_000 else { return }
        lastGC = now
        gcRuns += 1
        if gcRuns % 30 == 0 {
            cache = cache.filter { now &- $0.value.lastUse < expiration }
        } else if cache.count > Self.maxEntries {
            cache = cache.filter { now &- $0.value.lastUse < 6 * 60_000 }
        }
    }
}
