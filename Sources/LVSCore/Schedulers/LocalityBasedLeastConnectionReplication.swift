/// lblcr (`ip_vs_lblcr.c`): destination address → a set of servers; the
/// least loaded member serves, the set grows when that member is overloaded
/// and shrinks (most loaded member out) when unchanged past the expiration.
public struct LocalityBasedLeastConnectionReplication: Scheduler {
    public var expiration: UInt64 = 24 * 3600 * 1000
    struct Entry {
        var members: [Int]
        var lastModified: UInt64
    }
    var cache: [UInt32: Entry] = [:]

    public init(flags: SchedulerFlags) {}

    public mutating func destinationsChanged(order: [Int], dests: [DestinationState]) {
        for (k, var e) in cache {
            e.members.removeAll { !order.contains($0) }
            cache[k] = e.members.isEmpty ? nil : e
        }
    }

    public mutating func schedule(order: Span<Int>, dests: Span<DestinationState>, input: ScheduleInput, now: UInt64) -> Int? {
        let key = input.destinationFold
        var entry = cache[key] ?? Entry(members: [], lastModified: now)
        // Least loaded (overhead/weight) usable member of the set.
        var pick: Int? = nil
        for slot in entry.members {
            let d = dests[slot]
            guard !d.overloaded && d.weight > 0 else { continue }
            if let p = pick {
                if dests[p].overhead * Int64(d.weight) > d.overhead * Int64(dests[p].weight) { pick = slot }
            } else {
                pick = slot
            }
        }
        if entry.members.count > 1 && now &- entry.lastModified > expiration {
            // Drop the most loaded member.
            var most = entry.members[0]
            for slot in entry.members.dropFirst() where dests[slot].overhead * Int64(dests[most].weight) > dests[most].overhead * Int64(dests[slot].weight) {
                most = slot
            }
            entry.members.removeAll { $0 == most }
            entry.lastModified = now
            if pick == most { pick = nil }
        }
        if let p = pick, !LocalityBasedLeastConnection.isOverloaded(p, order: order, dests: dests) {
            cache[key] = entry
            return p
        }
        guard let slot = weightedLeast(order: order, dests: dests, overhead: DestinationState.overhead) else {
            cache[key] = entry.members.isEmpty ? nil : entry
            return pick
        }
        if !entry.members.contains(slot) {
            entry.members.append(slot)
            entry.lastModified = now
        }
        cache[key] = entry
        return slot
    }
}
