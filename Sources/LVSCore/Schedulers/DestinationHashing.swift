/// dh (`ip_vs_dh.c`): 256 buckets keyed by the destination address, filled
/// round-robin over the servers (unweighted).
public struct DestinationHashing: Scheduler {
    static let bits: UInt32 = 8
    var buckets: [Int] = []

    public init(flags: SchedulerFlags) {}

    public mutating func destinationsChanged(order: [Int], dests: [DestinationState]) {
        let size = 1 << Int(Self.bits)
        guard !order.isEmpty else {
            buckets = []
            return
        }
        buckets = (0..<size).map { order[$0 % order.count] }
    }

    public func select(dests: Span<DestinationState>, input: ScheduleInput) -> Int? {
        guard !buckets.isEmpty else { return nil }
        let slot = buckets[Int(hash32(input.destinationFold, bits: Self.bits))]
        return dests[slot].isAvailable ? slot : nil
    }

    public mutating func schedule(order: Span<Int>, dests: Span<DestinationState>, input: ScheduleInput, now: UInt64) -> Int? {
        select(dests: dests, input: input)
    }
}
