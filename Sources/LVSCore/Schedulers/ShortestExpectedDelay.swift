/// sed (`ip_vs_sed.c`): least (active + 1)/weight; inactive ignored.
public struct ShortestExpectedDelay: Scheduler {
    public init(flags: SchedulerFlags) {}

    public func select(order: Span<Int>, dests: Span<DestinationState>) -> Int? {
        weightedLeast(order: order, dests: dests) { active, _ in Int64(active) + 1 }
    }
    public mutating func schedule(order: Span<Int>, dests: Span<DestinationState>, input: ScheduleInput, now: UInt64) -> Int? {
        select(order: order, dests: dests)
    }
}
