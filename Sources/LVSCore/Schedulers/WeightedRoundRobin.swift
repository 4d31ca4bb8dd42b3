/// wrr (`ip_vs_wrr.c`): cw steps down from the maximum weight by the gcd;
/// each pass takes the servers whose weight is at least cw.
public struct WeightedRoundRobin: Scheduler {
    /// Position in the list of the last choice; -1 is the list head.
    var position = -1
    var cw: Int32 = 0
    var mw: Int32 = 0
    var di: Int32 = 1
    var initialised = false

    public init(flags: SchedulerFlags) {}

    public mutating func destinationsChanged(order: [Int], dests: [DestinationState]) {
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
