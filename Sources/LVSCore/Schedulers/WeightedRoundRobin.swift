/// wrr (`ip_vs_wrr.c`): cw steps down from the maximum weight by the gcd;
/// each pass takes the servers whose weight is at least cw.
public struct WeightedRoundRobin: Scheduler {
    /// Position in the list of the last choice; -1 is the list head.
    var position = -1
    var cw: Int32 = 0
    var mw: Int32 = 0
    var di: Int32 = 1
    var initialised = false
    /// The position and cw every worker's copy of the service moves, when there are several.
    var shared: SharedSchedulerPosition?

    public init(flags: SchedulerFlags) {}

    public mutating func destinationsChanged(order: [Int], dests: [DestinationState]) {
        if let shared {
            take(shared.load())
            // Every worker's copy starts from the shared cw (0 before the first).
            initialised = cw != 0
        }
        defer { shared?.store(word) }
        var g: Int32 = 0
        var maxWeight: Int32 = 0
        for slot in order {
            let w = dests[slot].weight
            if w > 0 { g = g > 0 ? gcd(w, g) : w }
            if w > maxWeight { maxWeight = w }
        }
        di = g > 0 ? g : 1
        mw = maxWeight - (di - 1)
        position = -1
        if !initialised {
            cw = mw
            initialised = true
        } else if cw > mw || cw == 0 {
            cw = mw
        } else if di > 1 {
            cw = (cw / di) * di + 1
        }
    }

    public mutating func schedule(order: Span<Int>, dests: Span<DestinationState>, input: ScheduleInput, now: UInt64) -> Int? {
        guard let shared else { return next(order: order, dests: dests) }
        var seen = shared.load()
        while true {
            take(seen)
            let chosen = next(order: order, dests: dests)
            guard let failed = shared.exchange(seen, word) else { return chosen }
            seen = failed
        }
    }

    /// The position (plus one, so that a fresh word is the list head) and cw in one word.
    var word: UInt64 { UInt64(UInt32(bitPattern: Int32(position &+ 1))) | UInt64(UInt32(bitPattern: cw)) &<< 32 }

    mutating func take(_ word: UInt64) {
        position = Int(Int32(bitPattern: UInt32(truncatingIfNeeded: word))) &- 1
        cw = Int32(bitPattern: UInt32(truncatingIfNeeded: word &>> 32))
    }

    mutating func next(order: Span<Int>, dests: Span<DestinationState>) -> Int? {
        guard mw > 0 else { return nil }
        let n = order.count
        let last = position
        var stop: Int? = nil
        var lastPass = false
        var restarted = false
        var i = position
        while true {
            i += 1
            while i < n {
                let slot = order[i]
                let d = dests[slot]
                if !d.overloaded && !d.removed && d.weight >= cw {
                    position = i
                    return slot
                }
                if let s = stop, i == s { return nil }
                i += 1
            }
            // End of list: back to the head with a lower cw.
            i = -1
            cw -= di
            if cw <= 0 {
                cw = mw
                if lastPass || last == -1 { return nil }
                restarted = true
            }
            lastPass = cw <= di
            if lastPass && restarted && last != -1 { stop = last }
        }
    }
}
