/// sh (`ip_vs_sh.c`): 256 buckets keyed by the source address (and port with
/// sh-port); each server repeated weight times. sh-fallback probes on.
public struct SourceHashing: Scheduler {
    static let bits: UInt32 = 8
    static let size = 256
    let fallback: Bool
    let usePort: Bool
    var buckets: [Int] = []

    public init(flags: SchedulerFlags) {
        fallback = flags.contains(.shFallback)
        usePort = flags.contains(.shPort)
    }

    public mutating func destinationsChanged(order: [Int], dests: [DestinationState]) {
        guard !order.isEmpty else {
            buckets = []
            return
        }
        buckets = []
        buckets.reserveCapacity(Self.size)
        var p = 0
        var count: Int32 = 0
        for _ in 0..<Self.size {
            buckets.append(order[p])
            count += 1
            if count >= dests[order[p]].weight {
                p = (p + 1) % order.count
                count = 0
            }
        }
    }

    func key(_ input: ScheduleInput, offset: UInt32) -> Int {
        let port = usePort ? UInt32(input.sourcePort) : 0
        return Int((offset &+ hash32(port &+ input.sourceFold, bits: Self.bits)) & UInt32(Self.size - 1))
    }

    public func select(dests: Span<DestinationState>, input: ScheduleInput) -> Int? {
        guard !buckets.isEmpty else { return nil }
        let ihash = key(input, offset: 0)
        let slot = buckets[ihash]
        if dests[slot].isAvailable { return slot }
        guard fallback else { return nil }
        for offset in 0..<UInt32(Self.size) {
            let roffset = (offset &+ UInt32(ihash)) % UInt32(Self.size)
            let s = buckets[key(input, offset: roffset)]
            if dests[s].isAvailable { return s }
        }
        return nil
    }

    public mutating func schedule(order: Span<Int>, dests: Span<DestinationState>, input: ScheduleInput, now: UInt64) -> Int? {
        select(dests: dests, input: input)
    }
}
