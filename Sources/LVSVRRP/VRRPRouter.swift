import LVSConfiguration
import LVSControlProtocol
import LVSDaemon
import LVSPacket
import LVSSystem

/// One VRRP instance's state machine (RFC 5798 §6.4), time in milliseconds
/// of a clock the caller supplies: events in, actions out, nothing else.
public struct VRRPRouter: Sendable {
    public enum State: String, Sendable, Hashable, Codable {
        case initialize = "INIT"
        case backup = "BACKUP"
        case master = "MASTER"
        case fault = "FAULT"
    }

    public enum Action: Sendable, Hashable {
        /// Send an advertisement with this priority (0: resigning).
        case advertise(priority: UInt8)
        case enter(State)
    }

    public let configuration: VRRPInstanceConfiguration
    /// This router's address on the interface: the tie-breaker.
    public let primaryAddress: IPAddress
    public private(set) var state: State = .initialize
    /// The current master's advertisement interval (centiseconds).
    public private(set) var masterInterval: UInt16
    /// The address the current master advertises from, as far as known.
    public private(set) var master: IPAddress?
    var masterDownAt: UInt64 = 0
    var advertiseAt: UInt64 = 0
    var startedAt: UInt64 = 0

    public init(_ configuration: VRRPInstanceConfiguration, primaryAddress: IPAddress) {
        self.configuration = configuration
        self.primaryAddress = primaryAddress
        masterInterval = configuration.advertisementInterval
    }

    /// Tracked scripts' and interfaces' weights (`track_script`, `track_interface`).
    public var priorityAdjustment = 0
    /// The configured priority moved by what it tracks, within 1–254;
    /// an address owner (255) stays 255, as keepalived keeps it.
    public var priority: UInt8 {
        configuration.priority == 255 ? 255 : UInt8(min(254, max(1, Int(configuration.priority) + priorityAdjustment)))
    }
    var interval: UInt64 { UInt64(configuration.advertisementInterval) * 10 }
    /// Skew_Time: lower priorities wait longer.
    var skew: UInt64 { UInt64(256 - Int(priority)) * UInt64(masterInterval) * 10 / 256 }
    /// Master_Down_Interval: 3 × the master's interval + skew.
    public var masterDownInterval: UInt64 { 3 * UInt64(masterInterval) * 10 + skew }

    /// The advertisement this router sends.
    public func advertisement(priority: UInt8) -> VRRPAdvertisement {
        VRRPAdvertisement(
            version: configuration.version, virtualRouterID: configuration.virtualRouterID, priority: priority,
            interval: configuration.advertisementInterval,
            addresses: configuration.addresses, authentication: configuration.authentication)
    }

    /// When `tick` has something to do next.
    public var deadline: UInt64 {
        switch state {
        case .master: advertiseAt
        case .backup: masterDownAt
        case .initialize, .fault: UInt64.max
        }
    }

    /// `asMaster`: taking over from an lvsd that was master (a handover), without an election.
    public mutating func start(now: UInt64, asMaster: Bool = false) -> [Action] {
        startedAt = now
        if priority == 255 || asMaster { return becomeMaster(now: now) }
        return becomeBackup(interval: configuration.advertisementInterval, now: now)
    }

    mutating func becomeMaster(now: UInt64) -> [Action] {
        state = .master
        master = primaryAddress
        advertiseAt = now + interval
        return [.advertise(priority: priority), .enter(.master)]
    }

    mutating func becomeBackup(interval: UInt16, now: UInt64) -> [Action] {
        masterInterval = interval
        masterDownAt = now + masterDownInterval
        guard state != .backup else { return [] }
        state = .backup
        return [.enter(.backup)]
    }

    /// Preemption holds off for `preempt_delay` after start-up.
    func preempts(now: UInt64) -> Bool { configuration.preempt && now >= startedAt + configuration.preemptDelay }

    /// An advertisement for this virtual router (same id and version).
    public mutating func received(_ a: VRRPAdvertisement, from source: IPAddress, now: UInt64) -> [Action] {
        switch state {
        case .backup:
            if a.priority == 0 {
                masterDownAt = now + skew
                return []
            }
            if !preempts(now: now) || a.priority >= priority {
                master = source
                // Version 2 has no interval to learn: its interval must match ours.
                return becomeBackup(interval: a.version == 3 ? max(1, a.interval) : masterInterval, now: now)
            }
            return []
        case .master:
            if a.priority == 0 {
                advertiseAt = now + interval
                return [.advertise(priority: priority)]
            }
            if a.priority > priority
                || (a.priority == priority && VRRPAdvertisement.bytes(primaryAddress).lexicographicallyPrecedes(VRRPAdvertisement.bytes(source)))
            {
                master = source
                return becomeBackup(interval: a.version == 3 ? max(1, a.interval) : masterInterval, now: now)
            }
            return []
        case .initialize, .fault:
            return []
        }
    }

    public mutating func tick(now: UInt64) -> [Action] {
        switch state {
        case .backup where now >= masterDownAt:
            return becomeMaster(now: now)
        case .master where now >= advertiseAt:
            advertiseAt = max(advertiseAt + interval, now + 1)
            return [.advertise(priority: priority)]
        default:
            return []
        }
    }

    /// A tracked interface went down: give up mastership and wait.
    public mutating func fault() -> [Action] {
        guard state != .fault else { return [] }
        let was = state
        state = .fault
        master = nil
        return (was == .master ? [.advertise(priority: 0)] : []) + [.enter(.fault)]
    }

    /// Every tracked interface is up again.
    public mutating func recover(now: UInt64) -> [Action] {
        guard state == .fault else { return [] }
        state = .initialize
        return becomeBackup(interval: configuration.advertisementInterval, now: now)
    }

    /// Its sync group's member became master: so does this one (from backup).
    public mutating func followToMaster(now: UInt64) -> [Action] {
        state == .backup ? becomeMaster(now: now) : []
    }

    /// Its sync group's member became backup: a master resigns (priority 0, so
    /// the peer takes over at once) and waits as a backup.
    public mutating func followToBackup(now: UInt64) -> [Action] {
        guard state == .master else { return [] }
        master = nil
        return [.advertise(priority: 0)] + becomeBackup(interval: configuration.advertisementInterval, now: now)
    }

    /// Stopping: a master resigns with priority 0 so a backup takes over at once.
    public mutating func shutdown() -> [Action] {
        let was = state
        state = .initialize
        return was == .master ? [.advertise(priority: 0)] : []
    }
}
