import LVSPacket
import Synchronization

/// What a scheduler may hash: the flow's addresses folded as the kernel folds
/// them (`addr_fold`: the address, or the XOR of an IPv6 address's four words).
public struct ScheduleInput: Sendable {
    public var sourceFold: UInt32
    public var sourcePort: UInt16
    public var destinationFold: UInt32
    public init(sourceFold: UInt32, sourcePort: UInt16, destinationFold: UInt32) {
        self.sourceFold = sourceFold
        self.sourcePort = sourcePort
        self.destinationFold = destinationFold
    }
}

extension IPAddress {
    public var kernelFold: UInt32 {
        switch self {
        case .v4(let a): a.kernelFold
        case .v6(let a): a.kernelFold
        }
    }
}

/// One IPVS scheduler (`ip_vs_<name>.c`). `order` lists destination slots in
/// the kernel's list order (newest first); `dests` holds their states.
public protocol Scheduler: Sendable {
    init(flags: SchedulerFlags)
    /// The add_dest/del_dest/upd_dest hooks: the list or a weight changed.
    mutating func destinationsChanged(order: [Int], dests: [DestinationState])
    /// Returns a destination slot, or nil when none is available.
    mutating func schedule(order: Span<Int>, dests: Span<DestinationState>, input: ScheduleInput, now: UInt64) -> Int?
}

extension Scheduler {
    public mutating func destinationsChanged(order: [Int], dests: [DestinationState]) {}
}

/// A scheduler's position shared by every worker's copy of one service, so
/// that rr and wrr take one sequence over all workers, as the kernel's take
/// one under the service's lock: read, advanced, and put back with a
/// compare-and-swap (again from the new value when another worker moved it
/// meanwhile). One per new connection, none for a connection's later packets.
public final class SharedSchedulerPosition: Sendable {
    let value = Atomic<UInt64>(0)

    public init() {}

    func load() -> UInt64 { value.load(ordering: .relaxed) }
    func store(_ word: UInt64) { value.store(word, ordering: .relaxed) }

    /// Replaces `expected` with `desired`: nil, or the value another worker left.
    func exchange(_ expected: UInt64, _ desired: UInt64) -> UInt64? {
        let (exchanged, original) = value.compareExchange(expected: expected, desired: desired, ordering: .relaxed)
        return exchanged ? nil : original
    }
}

/// The shared positions of a director's services, one per service key,
/// handed to every worker's engine.
public final class SharedSchedulerPositions: Sendable {
    let positions = Mutex<[ServiceKey: SharedSchedulerPosition]>([:])

    public init() {}

    func position(for key: ServiceKey) -> SharedSchedulerPosition {
        positions.withLock { p in
            if let existing = p[key] { return existing }
            let made = SharedSchedulerPosition()
            p[key] = made
            return made
        }
    }
}

/// `hash_32(val, bits)` from `include/linux/hash.h`.

func hash32(_ value: UInt32, bits: UInt32) -> UInt32 {
    (value &* 0x61C8_8647) &>> (32 &- bits)
}

func gcd(_ a: Int32, _ b: Int32) -> Int32 {
    var a = a
    var b = b
    while b != 0 { (a, b) = (b, a % b) }
    return a
}

/// Every scheduler by name, dispatched with a switch rather than an
/// existential so that scheduling stays a direct call.
public enum SchedulerInstance: Sendable {
    case rr(RoundRobin)
    case wrr(WeightedRoundRobin)
    case lc(LeastConnection)
    case wlc(WeightedLeastConnection)
    case sed(ShortestExpectedDelay)
    case nq(NeverQueue)
    case lblc(LocalityBasedLeastConnection)
    case lblcr(LocalityBasedLeastConnectionReplication)
    case dh(DestinationHashing)
    case sh(SourceHashing)
    case mh(MaglevHashing)
    case fo(WeightedFailover)
    case ovf(WeightedOverflow)
    case twos(PowerOfTwoChoices)
    case ch(ConsistentHashRing)

    public static let names = ["rr", "wrr", "lc", "wlc", "sed", "nq", "lblc", "lblcr", "dh", "sh", "mh", "fo", "ovf", "twos", "ch"]

    /// Scheduler flags each scheduler accepts (ipvsadm rejects the others).
    public static func validFlags(for name: String) -> SchedulerFlags {
        switch name {
        case "sh", "mh": [.flag1, .flag2]
        default: [.flag1, .flag2, .flag3]
        }
    }

    public init?(name: String, flags: SchedulerFlags) {
        switch name {
        case "rr": self = .rr(.init(flags: flags))
        case "wrr": self = .wrr(.init(flags: flags))
        case "lc": self = .lc(.init(flags: flags))
        case "wlc": self = .wlc(.init(flags: flags))
        case "sed": self = .sed(.init(flags: flags))
        case "nq": self = .nq(.init(flags: flags))
        case "lblc": self = .lblc(.init(flags: flags))
        case "lblcr": self = .lblcr(.init(flags: flags))
        case "dh": self = .dh(.init(flags: flags))
        case "sh": self = .sh(.init(flags: flags))
        case "mh": self = .mh(.init(flags: flags))
        case "fo": self = .fo(.init(flags: flags))
        case "ovf": self = .ovf(.init(flags: flags))
        case "twos": self = .twos(.init(flags: flags))
        case "ch": self = .ch(.init(flags: flags))
        default: return nil
        }
    }

    /// Shares the position of rr and wrr with the other workers' copies (the others keep their own state).
    public mutating func share(_ position: SharedSchedulerPosition) {
        switch self {
        case .rr(var s):
            s.shared = position
            self = .rr(s)
        case .wrr(var s):
            s.shared = position
            self = .wrr(s)
        default: break
        }
    }

    public mutating func destinationsChanged(order: [Int], dests: [DestinationState]) {
        switch self {
        case .rr(var s):
            s.destinationsChanged(order: order, dests: dests)
            self = .rr(s)
        case .wrr(var s):
            s.destinationsChanged(order: order, dests: dests)
            self = .wrr(s)
        case .lc(var s):
            s.destinationsChanged(order: order, dests: dests)
            self = .lc(s)
        case .wlc(var s):
            s.destinationsChanged(order: order, dests: dests)
            self = .wlc(s)
        case .sed(var s):
            s.destinationsChanged(order: order, dests: dests)
            self = .sed(s)
        case .nq(var s):
            s.destinationsChanged(order: order, dests: dests)
            self = .nq(s)
        case .lblc(var s):
            s.destinationsChanged(order: order, dests: dests)
            self = .lblc(s)
        case .lblcr(var s):
            s.destinationsChanged(order: order, dests: dests)
            self = .lblcr(s)
        case .dh(var s):
            s.destinationsChanged(order: order, dests: dests)
            self = .dh(s)
        case .sh(var s):
            s.destinationsChanged(order: order, dests: dests)
            self = .sh(s)
        case .mh(var s):
            s.destinationsChanged(order: order, dests: dests)
            self = .mh(s)
        case .fo(var s):
            s.destinationsChanged(order: order, dests: dests)
            self = .fo(s)
        case .ovf(var s):
            s.destinationsChanged(order: order, dests: dests)
            self = .ovf(s)
        case .twos(var s):
            s.destinationsChanged(order: order, dests: dests)
            self = .twos(s)
        case .ch(var s):
            s.destinationsChanged(order: order, dests: dests)
            self = .ch(s)
        }
    }

    public mutating func schedule(order: Span<Int>, dests: Span<DestinationState>, input: ScheduleInput, now: UInt64) -> Int? {
        // Stateless schedulers are read in place; stateful ones are taken out,
        // advanced and put back.
        switch self {
        case .lc(let s): return s.select(order: order, dests: dests)
        case .wlc(let s): return s.select(order: order, dests: dests)
        case .sed(let s): return s.select(order: order, dests: dests)
        case .nq(let s): return s.select(order: order, dests: dests)
        case .fo(let s): return s.select(order: order, dests: dests)
        case .ovf(let s): return s.select(order: order, dests: dests)
        case .dh(let s): return s.select(dests: dests, input: input)
        case .sh(let s): return s.select(dests: dests, input: input)
        case .mh(let s): return s.select(dests: dests, input: input)
        case .ch(let s): return s.select(dests: dests, input: input)
        case .rr(var s):
            let r = s.schedule(order: order, dests: dests, input: input, now: now)
            self = .rr(s)
            return r
        case .wrr(var s):
            let r = s.schedule(order: order, dests: dests, input: input, now: now)
            self = .wrr(s)
            return r
        case .lblc(var s):
            let r = s.schedule(order: order, dests: dests, input: input, now: now)
            self = .lblc(s)
            return r
        case .lblcr(var s):
            let r = s.schedule(order: order, dests: dests, input: input, now: now)
            self = .lblcr(s)
            return r
        case .twos(var s):
            let r = s.schedule(order: order, dests: dests, input: input, now: now)
            self = .twos(s)
            return r
        }
    }
}
