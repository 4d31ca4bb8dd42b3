/// ch: a consistent-hash ring over the source address (DPVS's conhash), 160
/// virtual nodes per unit of weight share; a server going unavailable only
/// moves its own clients.
public struct ConsistentHashRing: Scheduler {
    public static let replicas = 160
    let usePort: Bool
    /// Sorted ring points and the slot each belongs to.
    var points: [UInt32] = []
    var owners: [Int] = []

    public init(flags: SchedulerFlags) { usePort = flags.contains(.flag2) }

    public mutating func destinationsChanged(order: [Int], dests: [DestinationState]) {
        var ring: [(UInt32, Int)] = []
        let maxWeight = order.map { dests[$0].lastWeight }.max() ?? 0
        for slot in order {
            let d = dests[slot]
            guard d.lastWeight > 0, maxWeight > 0 else { continue }
            let count = max(1, Self.replicas * Int(d.lastWeight) / Int(maxWeight))
            for r in 0..<count {
                let h = hsiphash32(d.address.kernelFold ^ UInt32(d.port) << 16 ^ UInt32(r), key: SipHashKey(k0: UInt64(r), k1: 0xC0FFEE))
                ring.append((h, slot))
            }
        }
        ring.sort { $0.0 < $1.0 || ($0.0 == $1.0 && $0.1 < $1.1) }
        points = ring.map(\.0)
        owners = ring.map(\.1)
    }

    public func select(dests: Span<DestinationState>, input: ScheduleInput) -> Int? {
        guard !points.isEmpty else { return nil }
        let h = hsiphash32(input.sourceFold &+ (usePort ? UInt32(input.sourcePort) : 0), key: SipHashKey(k0: 0x5EED, k1: 0xC0FFEE))
        var lo = 0
        var hi = points.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if points[mid] < h { lo = mid + 1 } else { hi = mid }
        }
        // Walk clockwise past unavailable servers.
        for k in 0..<points.count {
            let slot = owners[(lo + k) % points.count]
            if dests[slot].isAvailable { return slot }
        }
        return nil
    }

    public mutating func schedule(order: Span<Int>, dests: Span<DestinationState>, input: ScheduleInput, now: UInt64) -> Int? {
        select(dests: dests, input: input)
    }
}
