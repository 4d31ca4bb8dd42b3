import LVSConfiguration
import LVSCore
import LVSPacket
import LVSSystem

/// `--stats` lists the core's `Counters` (ip_vs_stats); `--rate` lists the
/// estimator's rates, bytes per second for BPS.
public typealias Statistics = Counters
public typealias Rates = RateEstimator.Rates

public struct ServerSnapshot: Sendable, Hashable, Codable {
    public var server: RealServerConfiguration
    public var activeConnections: UInt32 = 0
    public var inactiveConnections: UInt32 = 0
    public var persistentConnections: UInt32 = 0
    public var stats = Statistics()
    public var rates = Rates()
    public init(server: RealServerConfiguration) { self.server = server }
}

public struct ServiceSnapshot: Sendable, Hashable, Codable {
    public var service: ServiceSpec
    /// In the order they were added.
    public var servers: [ServerSnapshot]
    public var localAddresses: [IPAddress]
    public var stats = Statistics()
    public var rates = Rates()
    public init(service: ServiceSpec, servers: [ServerSnapshot] = [], localAddresses: [IPAddress] = []) {
        self.service = service
        self.servers = servers
        self.localAddresses = localAddresses
    }
}

/// One line of `/proc/net/ip_vs_conn`, as `-c` lists it.
public struct ConnectionEntry: Sendable, Hashable, Codable {
    /// "TCP", "UDP", "SCTP", or "IP" for a firewall-mark template.
    public var proto: String
    public var client: IPAddress
    public var clientPort: UInt16
    public var virtual: IPAddress
    public var virtualPort: UInt16
    public var real: IPAddress
    public var realPort: UInt16
    /// FULLNAT: the local address and port the real server sees.
    public var local: IPAddress?
    public var localPort: UInt16?
    public var state: String
    /// Seconds until it expires.
    public var expires: UInt32
    public var template: Bool
    public init(
        proto: String, client: IPAddress, clientPort: UInt16, virtual: IPAddress, virtualPort: UInt16, real: IPAddress,
        realPort: UInt16, local: IPAddress? = nil, localPort: UInt16? = nil, state: String, expires: UInt32, template: Bool
    ) {
        self.proto = proto
        self.client = client
        self.clientPort = clientPort
        self.virtual = virtual
        self.virtualPort = virtualPort
        self.real = real
        self.realPort = realPort
        self.local = local
        self.localPort = localPort
        self.state = state
        self.expires = expires
        self.template = template
    }
}

/// Everything the listings show, read from lvsd in one go.
public struct TableSnapshot: Sendable, Hashable, Codable {
    /// The IPVS version ipvsadm prints in its header.
    public var version = "1.2.1"
    /// Entries the connection table holds (the header's `size=`).
    public var connectionTableSize: Int
    public var services: [ServiceSnapshot]
    public var timeouts: Timeouts
    /// Present when asked for (`-c`).
    public var connections: [ConnectionEntry]?
    /// Drops by reason, lvsd's addition.
    public var drops: [String: UInt64]
    /// Checked real servers, lvsd's addition.
    public var health: [HealthEntry]
    /// Running sync daemons (`-L --daemon`), master first.
    public var daemons: [SyncDaemonConfiguration]
    /// VRRP instances, lvsd's addition.
    public var vrrp: [VRRPInstanceStatus]
    /// The VIPs announced over BGP or held back, lvsd's addition (empty without `--bird-config`).
    public var bgp: [BGPRouteStatus]
    public init(
        connectionTableSize: Int, services: [ServiceSnapshot], timeouts: Timeouts, connections: [ConnectionEntry]? = nil,
        drops: [String: UInt64] = [:], health: [HealthEntry] = [], daemons: [SyncDaemonConfiguration] = [],
        vrrp: [VRRPInstanceStatus] = [], bgp: [BGPRouteStatus] = []
    ) {
        self.connectionTableSize = connectionTableSize
        self.services = services
        self.timeouts = timeouts
        self.connections = connections
        self.drops = drops
        self.health = health
        self.daemons = daemons
        self.vrrp = vrrp
        self.bgp = bgp
    }
}

/// A VIP as lvsd tells its BGP speaker: announced, or withdrawn and why.
public struct BGPRouteStatus: Sendable, Hashable, Codable {
    public var address: IPAddress
    public var announced: Bool
    /// Why it is withdrawn ("no real server with weight", "quorum lost",
    /// "VRRP backup", "interfaces down", "stopping"); empty when announced.
    public var reason: String
    /// Seconds in this state (at the snapshot).
    public var seconds: UInt64
    public init(address: IPAddress, announced: Bool, reason: String, seconds: UInt64 = 0) {
        self.address = address
        self.announced = announced
        self.reason = reason
        self.seconds = seconds
    }
}

/// One VRRP instance as lvsd runs it.
public struct VRRPInstanceStatus: Sendable, Hashable, Codable {
    public var name: String
    public var interface: String
    public var virtualRouterID: UInt8
    public var priority: UInt8
    /// INIT, BACKUP, MASTER or FAULT.
    public var state: String
    /// The current master's address, when known.
    public var master: IPAddress?
    public var addresses: [IPAddress]
    /// Seconds in this state (at the snapshot).
    public var seconds: UInt64
    /// Transitions since start.
    public var transitions: UInt64
    public init(
        name: String, interface: String, virtualRouterID: UInt8, priority: UInt8, state: String, master: IPAddress?,
        addresses: [IPAddress], seconds: UInt64, transitions: UInt64
    ) {
        self.name = name
        self.interface = interface
        self.virtualRouterID = virtualRouterID
        self.priority = priority
        self.state = state
        self.master = master
        self.addresses = addresses
        self.seconds = seconds
        self.transitions = transitions
    }
}

/// One worker's engine, for lvsd's own metrics.
public struct EngineStatus: Sendable, Hashable, Codable {
    public var worker: Int
    /// Packets and bytes of virtual-service traffic (ip_vs_stats totals).
    public var totals: Statistics
    public var drops: UInt64
    /// FULLNAT TOA options inserted, and those that did not fit.
    public var toaInserted: UInt64
    public var toaFailures: UInt64
    /// ICMP errors lvsd sent (fragmentation needed, packet too big, time exceeded).
    public var icmpSent: UInt64
    /// SYN-ACKs with a cookie the SYN proxy answered.
    public var synproxyCookies: UInt64
    /// TCP super-frames (GRO, TSO) forwarded whole as GSO, and cut into segments in lvsd.
    public var superFramesWhole: UInt64
    public var superFramesCut: UInt64
    /// Packets the kernel forwarded of connections this worker handed down (`--kernel-forwarding`).
    public var kernelForwarded: UInt64
    /// PROXY protocol headers sent (a retransmitted one again).
    public var proxyHeaders: UInt64
    public var ipv4Connections: Int
    public var ipv4Capacity: Int
    public var ipv6Connections: Int
    public var ipv6Capacity: Int

    public init(
        worker: Int, totals: Statistics, drops: UInt64, toaInserted: UInt64, toaFailures: UInt64, icmpSent: UInt64, synproxyCookies: UInt64,
        superFramesWhole: UInt64 = 0, superFramesCut: UInt64 = 0, kernelForwarded: UInt64 = 0, proxyHeaders: UInt64 = 0, ipv4Connections: Int,
        ipv4Capacity: Int, ipv6Connections: Int, ipv6Capacity: Int
    ) {
        self.worker = worker
        self.totals = totals
        self.drops = drops
        self.toaInserted = toaInserted
        self.toaFailures = toaFailures
        self.icmpSent = icmpSent
        self.synproxyCookies = synproxyCookies
        self.superFramesWhole = superFramesWhole
        self.superFramesCut = superFramesCut
        self.kernelForwarded = kernelForwarded
        self.proxyHeaders = proxyHeaders
        self.ipv4Connections = ipv4Connections
        self.ipv4Capacity = ipv4Capacity
        self.ipv6Connections = ipv6Connections
        self.ipv6Capacity = ipv6Capacity
    }
}

/// What `/metrics` and the status page show: the listings' snapshot, the
/// totals and each worker.
public struct StatusReport: Sendable, Hashable, Codable {
    public var table: TableSnapshot
    public var totals: Statistics
    public var totalRates: Rates
    public var engines: [EngineStatus]
    public var uptimeSeconds: UInt64
    public var sync: SyncStatistics

    public init(table: TableSnapshot, totals: Statistics, totalRates: Rates, engines: [EngineStatus], uptimeSeconds: UInt64, sync: SyncStatistics) {
        self.table = table
        self.totals = totals
        self.totalRates = totalRates
        self.engines = engines
        self.uptimeSeconds = uptimeSeconds
        self.sync = sync
    }
}

/// What the sync daemons did, for metrics and the status page.
public struct SyncStatistics: Sendable, Hashable, Codable {
    public var messagesSent: UInt64 = 0
    public var recordsSent: UInt64 = 0
    /// Records the engines could not queue because the daemon fell behind.
    public var recordsLost: UInt64 = 0
    public var messagesReceived: UInt64 = 0
    public var recordsApplied: UInt64 = 0
    /// Received records that matched no service or server here, or were invalid.
    public var recordsRejected: UInt64 = 0
    public var malformedMessages: UInt64 = 0
    public var sendErrors: UInt64 = 0
    public init() {}
}

/// What `lvsadm -L --health` and `/metrics` show of a checked server.
public struct HealthEntry: Sendable, Hashable, Codable {
    public var service: ServiceKey
    public var address: IPAddress
    public var port: UInt16
    public var up: Bool
    public var checks: [String]
    /// Seconds since the last change.
    public var since: UInt64
    public var detail: String

    public init(service: ServiceKey, address: IPAddress, port: UInt16, up: Bool, checks: [String], since: UInt64, detail: String) {
        self.service = service
        self.address = address
        self.port = port
        self.up = up
        self.checks = checks
        self.since = since
        self.detail = detail
    }
}
