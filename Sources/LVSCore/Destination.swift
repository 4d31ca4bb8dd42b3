import LVSPacket

/// Packet and byte counters, as `ip_vs_stats`.
public struct Counters: Sendable, Hashable, Codable {
    public var connections: UInt64 = 0
    public var inPackets: UInt64 = 0
    public var outPackets: UInt64 = 0
    public var inBytes: UInt64 = 0
    public var outBytes: UInt64 = 0
    public init() {}

    public static func + (a: Counters, b: Counters) -> Counters {
        var c = a
        c.connections &+= b.connections
        c.inPackets &+= b.inPackets
        c.outPackets &+= b.outPackets
        c.inBytes &+= b.inBytes
        c.outBytes &+= b.outBytes
        return c
    }
}

/// A real server's live state in one worker: its configuration plus the
/// counts the schedulers read.
public struct DestinationState: Sendable {
    public var address: IPAddress
    public var port: UInt16
    public var weight: Int32
    /// The last non-zero weight (Maglev keeps its slots at weight 0).
    public var lastWeight: Int32
    public var method: ForwardingMethod
    public var upperThreshold: UInt32
    public var lowerThreshold: UInt32
    public var tunnel: TunnelConfiguration
    public var activeConnections: UInt32 = 0
    public var inactiveConnections: UInt32 = 0
    public var persistentConnections: UInt32 = 0
    /// IP_VS_DEST_F_OVERLOAD.
    public var overloaded = false
    /// Removed from the service (in the kernel's dest_trash): connections
    /// bound to it stay, nothing new is scheduled to it.
    public var removed = false
    /// The passive check waits for its next SYN-ACK (see `PassiveEvent`).
    public var suspect = false
    /// Filled in snapshots; live in `DirectorShared.counters`.
    public var counters = Counters()
    var counterSlot: UInt32 = 0
    /// The next hop's slot in the director's neighbour table.
    public var neighbour: UInt32 = 0
    public var interface: UInt16 = 0

    public init(_ c: RealServerConfiguration) {
        address = c.address
        port = c.port
        weight = c.weight
        lastWeight = c.weight
        method = c.method
        upperThreshold = c.upperThreshold
        lowerThreshold = c.lowerThreshold
        tunnel = c.tunnel
    }

    /// `ip_vs_dest_conn_overhead`.
    public var overhead: Int64 { Self.overhead(active: activeConnections, inactive: inactiveConnections) }
    static func overhead(active: UInt32, inactive: UInt32) -> Int64 { Int64(active) << 8 + Int64(inactive) }

    /// Schedulers skip weight ≤ 0 and OVERLOAD servers.
    public var isAvailable: Bool { weight > 0 && !overloaded && !removed }

    /// Applies a new configuration; the kernel's `__ip_vs_update_dest`.
    mutating func update(_ c: RealServerConfiguration) {
        weight = c.weight
        if c.weight > 0 { lastWeight = c.weight }
        method = c.method
        tunnel = c.tunnel
        if c.upperThreshold == 0 || c.upperThreshold > upperThreshold { overloaded = false }
        upperThreshold = c.upperThreshold
        lowerThreshold = c.lowerThreshold
        removed = false
    }

    /// A connection bound to this server (`ip_vs_bind_dest`): counted active
    /// or inactive, and OVERLOAD set when it reaches the upper threshold.
    mutating func bind(inactive: Bool) {
        if inactive { inactiveConnections &+= 1 } else { activeConnections &+= 1 }
        if upperThreshold != 0 && activeConnections &+ inactiveConnections >= upperThreshold { overloaded = true }
    }

    /// A connection let go (`ip_vs_unbind_dest`): uncounted, and OVERLOAD
    /// cleared below the lower threshold (without one, below ¾ of the upper).
    mutating func unbind(inactive: Bool) {
        if inactive { inactiveConnections &-= 1 } else { activeConnections &-= 1 }
        guard overloaded else { return }
        let total = activeConnections &+ inactiveConnections
        if lowerThreshold != 0 {
            if total < lowerThreshold { overloaded = false }
        } else if UInt64(total) * 4 < UInt64(upperThreshold) * 3 {
            overloaded = false
        }
    }

    /// A connection turned active (+1) or inactive (−1).
    mutating func moveActivity(_ change: Int32) {
        activeConnections = activeConnections &+ UInt32(bitPattern: change)
        inactiveConnections = inactiveConnections &- UInt32(bitPattern: change)
    }
}
