import LVSCore
import LVSPacket
import LVSSystem

/// An error of a table operation, worded as ipvsadm words the kernel's
/// answer (`ipvs_strerror`), so scripts that match the text keep working.
public struct TableError: Error, Equatable, Sendable, Codable, CustomStringConvertible {
    /// The errno name the kernel would have returned (`EEXIST`, `ESRCH`, …).
    public var code: String
    public var message: String
    public var description: String { message }

    public init(_ code: String, _ message: String) {
        self.code = code
        self.message = message
    }

    static let serviceExists = TableError("EEXIST", "Service already exists")
    static let schedulerNotFound = TableError("ENOENT", "Scheduler or persistence engine not found")
    static let noSuchService = TableError("ESRCH", "No such service")
    static let serviceNotDefined = TableError("ESRCH", "Service not defined")
    static let destinationExists = TableError("EEXIST", "Destination already exists")
    static let noSuchDestination = TableError("ENOENT", "No such destination")
    static let invalid = TableError("EINVAL", "Invalid operation.  Possibly wrong module version, address not unicast, ...")
    static let thresholdRange = TableError("ERANGE", "Numerical result out of range")
    static let localAddressExists = TableError("EEXIST", "Local address already exists")
    static let noSuchLocalAddress = TableError("ENOENT", "No such local address")
    static let synproxyMethod = TableError("EINVAL", "SYN proxy needs NAT or FULLNAT real servers (-m, -b) and a TCP service")
    static let proxyProtocolMethod = TableError(
        "EINVAL", "PROXY protocol needs NAT or FULLNAT real servers (-m, -b) and a TCP service: lvsd shifts sequence numbers both ways")
}

/// One change to the table: what one ipvsadm command asks of the kernel.
public enum TableOperation: Sendable, Hashable, Codable {
    case addService(ServiceSpec)
    case editService(ServiceSpec)
    case deleteService(ServiceKey)
    case clear
    case addServer(ServiceKey, ServerSpec)
    case editServer(ServiceKey, ServerSpec)
    case deleteServer(ServiceKey, address: IPAddress, port: UInt16)
    case setTimeouts(tcp: UInt32, tcpFin: UInt32, udp: UInt32)
    case addLocalAddress(ServiceKey, IPAddress)
    case deleteLocalAddress(ServiceKey, IPAddress)
}

/// A service's settings as `-A`/`-E` give them (everything but its servers).
public struct ServiceSpec: Sendable, Hashable, Codable {
    public var key: ServiceKey
    public var scheduler: String
    public var schedulerFlags: SchedulerFlags
    public var persistence: UInt32?
    public var netmask: Int
    public var persistenceEngine: String?
    public var onePacket: Bool
    /// DPVS's `-j enable`.
    public var synproxy: Bool
    /// DPVS's `--proxy-protocol`; nil is `disable`.
    public var proxyProtocol: ProxyProtocol?

    public init(
        key: ServiceKey, scheduler: String = "wlc", schedulerFlags: SchedulerFlags = [], persistence: UInt32? = nil,
        netmask: Int? = nil, persistenceEngine: String? = nil, onePacket: Bool = false, synproxy: Bool = false,
        proxyProtocol: ProxyProtocol? = nil
    ) {
        self.key = key
        self.scheduler = scheduler
        self.schedulerFlags = schedulerFlags
        self.persistence = persistence
        self.netmask = netmask ?? (key.isIPv6 ? 128 : 32)
        self.persistenceEngine = persistenceEngine
        self.onePacket = onePacket
        self.synproxy = synproxy
        self.proxyProtocol = proxyProtocol
    }
}

/// A real server as `-a`/`-e` give it.
public typealias ServerSpec = RealServerConfiguration

/// The desired state lvsd serves: services in the order they were added,
/// each with its servers, plus the timeouts. Operations are all or nothing.
public struct ServiceTable: Sendable, Hashable {
    public private(set) var services: [VirtualServiceConfiguration] = []
    public private(set) var timeouts = TimeoutTable()

    public init() {}

    public func index(of key: ServiceKey) -> Int? { services.firstIndex { $0.key == key } }

    public func service(_ key: ServiceKey) -> VirtualServiceConfiguration? { index(of: key).map { services[$0] } }

    /// Applies every operation or none: the first failure leaves the table as it was.
    public mutating func apply(_ operations: [TableOperation]) throws(TableError) {
        var next = self
        for op in operations { try next.apply(op) }
        self = next
    }

    public mutating func apply(_ op: TableOperation) throws(TableError) {
        switch op {
        case .addService(let spec):
            guard index(of: spec.key) == nil else { throw .serviceExists }
            try Self.validate(spec)
            var svc = VirtualServiceConfiguration(key: spec.key)
            Self.set(&svc, spec)
            try Self.checkSequenceWork(svc)
            services.append(svc)
        case .editService(let spec):
            guard let i = index(of: spec.key) else { throw .noSuchService }
            try Self.validate(spec)
            var svc = services[i]
            Self.set(&svc, spec)
            try Self.checkSequenceWork(svc)
            services[i] = svc
        case .deleteService(let key):
            guard let i = index(of: key) else { throw .noSuchService }
            services.remove(at: i)
        case .clear:
            services.removeAll()
        case .addServer(let key, let server):
            guard let i = index(of: key) else { throw .serviceNotDefined }
            try Self.validate(server)
            guard !services[i].realServers.contains(where: { $0.address == server.address && $0.port == server.port }) else { throw .destinationExists }
            var svc = services[i]
            svc.realServers.append(server)
            try Self.checkSequenceWork(svc)
            services[i] = svc
        case .editServer(let key, let server):
            guard let i = index(of: key) else { throw .serviceNotDefined }
            try Self.validate(server)
            guard let j = services[i].realServers.firstIndex(where: { $0.address == server.address && $0.port == server.port }) else {
                throw .noSuchDestination
            }
            var svc = services[i]
            svc.realServers[j] = server
            try Self.checkSequenceWork(svc)
            services[i] = svc
        case .deleteServer(let key, let address, let port):
            guard let i = index(of: key) else { throw .serviceNotDefined }
            guard let j = services[i].realServers.firstIndex(where: { $0.address == address && $0.port == port }) else { throw .noSuchDestination }
            services[i].realServers.remove(at: j)
        case .setTimeouts(let tcp, let tcpFin, let udp):
            timeouts.set(tcp: tcp, tcpFin: tcpFin, udp: udp)
        case .addLocalAddress(let key, let address):
            guard let i = index(of: key) else { throw .noSuchService }
            guard address.isIPv6 == key.isIPv6 else { throw .invalid }
            guard !services[i].localAddresses.contains(address) else { throw .localAddressExists }
            services[i].localAddresses.append(address)
        case .deleteLocalAddress(let key, let address):
            guard let i = index(of: key) else { throw .noSuchService }
            guard let j = services[i].localAddresses.firstIndex(of: address) else { throw .noSuchLocalAddress }
            services[i].localAddresses.remove(at: j)
        }
    }

    static func set(_ svc: inout VirtualServiceConfiguration, _ spec: ServiceSpec) {
        svc.scheduler = spec.scheduler
        svc.schedulerFlags = spec.schedulerFlags
        svc.persistence = spec.persistence
        svc.persistenceNetmask = spec.netmask
        svc.persistenceEngine = spec.persistenceEngine
        svc.onePacket = spec.onePacket
        svc.synproxy = spec.synproxy
        svc.proxyProtocol = spec.proxyProtocol
    }

    /// The SYN proxy and PROXY protocol translate sequence numbers both ways:
    /// they must see the replies (NAT, FULLNAT), and they speak TCP only
    /// (DPVS's PROXY protocol version 2 over UDP is not built).
    static func checkSequenceWork(_ svc: VirtualServiceConfiguration) throws(TableError) {
        let replied = svc.realServers.allSatisfy { $0.method == .nat || $0.method == .fullNAT }
        var tcp = true
        if case .address(let p, _, _) = svc.key, p != .tcp { tcp = false }
        if svc.synproxy && !(tcp && replied) { throw .synproxyMethod }
        if svc.proxyProtocol != nil && !(tcp && replied) { throw .proxyProtocolMethod }
    }

    /// What the kernel checks in `ip_vs_add_service`/`ip_vs_edit_service`.
    static func validate(_ spec: ServiceSpec) throws(TableError) {
        guard SchedulerInstance.names.contains(spec.scheduler) else { throw .schedulerNotFound }
        if let pe = spec.persistenceEngine, pe != "sip" { throw .schedulerNotFound }
        guard spec.netmask >= 0, spec.netmask <= (spec.key.isIPv6 ? 128 : 32) else { throw .invalid }
        guard spec.schedulerFlags.isSubset(of: [.flag1, .flag2, .flag3]) else { throw .invalid }
    }

    /// What the kernel checks in `ip_vs_add_dest`/`ip_vs_edit_dest`.
    static func validate(_ server: ServerSpec) throws(TableError) {
        guard server.weight >= 0 else { throw .invalid }
        if server.lowerThreshold > server.upperThreshold { throw .thresholdRange }
    }

    /// The table as the engine's configuration.
    public func configuration(base: DirectorConfiguration = .init()) -> DirectorConfiguration {
        var c = base
        c.services = services
        c.timeouts = timeouts
        return c
    }
}

/// `--set tcp tcpfin udp` and `--timeout`, in seconds.
public struct Timeouts: Sendable, Hashable, Codable {
    public var tcp: UInt32
    public var tcpFin: UInt32
    public var udp: UInt32
    public init(tcp: UInt32, tcpFin: UInt32, udp: UInt32) {
        self.tcp = tcp
        self.tcpFin = tcpFin
        self.udp = udp
    }
    public init(_ t: TimeoutTable) {
        tcp = t[.established]
        tcpFin = t[.finWait]
        udp = t[.udp]
    }
}
