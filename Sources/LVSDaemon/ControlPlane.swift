import LVSConfiguration
import LVSControlProtocol
import LVSCore
import LVSLinux
import LVSPacket
import LVSSystem
import Logging
import NIOCore
import NIOPosix
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// lvsd's control plane: the desired table, the engines it configures, the
/// rate estimators, and the answers to lvsadm. The workers lock their own
/// engine per batch, never per packet; this side holds it only to apply a
/// change or read counters.
public final class ControlPlane: Sendable {
    struct State: ~Copyable {
        var table = ServiceTable()
        var serviceRates: [ServiceKey: RateEstimator] = [:]
        var serverRates: [ServerRateKey: RateEstimator] = [:]
        var totalRates = RateEstimator()
        var lastEstimate: UInt64 = 0
        var base: DirectorConfiguration
        /// When lvsadm last collected traced packets; nil: nobody traces.
        var tracePolled: UInt64? = nil
        /// Checked real servers by `HealthTarget.id`.
        var health: [String: HealthRecord] = [:]
        /// Virtual servers' quorums, and whether each is lost (its sorry server in).
        var quorum: [(group: QuorumGroup, lost: Bool)] = []
        var passive = PassiveHealth()
        /// The firewall-mark classifier's rules: the marks files', then the nftables ruleset's.
        var fileMarks = MarkRules()
        var nftablesMarks = MarkRules()
        /// Firewall-mark services no rule marks for, as last reported.
        var unmarked: [ServiceKey] = []
        /// The classifier as last published.
        var markRules: [FirewallMarkRule] = []
        /// The nftables ruleset is read periodically: services are checked for marks after each reading.
        var nftablesWatched = false
    }

    struct HealthRecord {
        var target: HealthTarget
        var up: Bool
        var since: UInt64
        var detail: String
    }

    struct ServerRateKey: Hashable {
        var service: ServiceKey
        var address: IPAddress
        var port: UInt16
    }

    let state: Mutex<State>
    let capacity: Int
    let logger: Logger
    /// Where the configuration comes from, for reloads.
    public let sources: ConfigurationSources
    /// One per worker.
    public let engines: [Engine]
    /// Runs after each successful reload (lvsd restarts its health checks).
    public let afterReload = Mutex<(@Sendable () -> Void)?>(nil)
    /// Runs after the engines' owned addresses may have changed (a new
    /// configuration, new interfaces, a VRRP transition): lvsd hands them to
    /// the XDP program and the kernel filter at once, not on their next timer.
    public let ownershipChanged = Mutex<(@Sendable () -> Void)?>(nil)
    /// The connection sync daemons (`--start-daemon`).
    public let sync: SyncDaemons
    /// VRRP instances, published by whoever runs them; `since` in ms of `now()`.
    public let vrrp = Mutex<[(status: VRRPInstanceStatus, since: UInt64)]>([])
    /// Answers a successor's `handover` requests (lvsd sets it once it serves).
    public let handover = Mutex<(@Sendable (HandoverStep) -> ControlResponse)?>(nil)
    /// The process running BIRD, while the BGP service has one.
    public let speaker = Mutex<Int32?>(nil)
    /// The VIPs as the BGP service last told its speaker; `since` in ms of `now()`.
    public let bgp = Mutex<[(status: BGPRouteStatus, since: UInt64)]>([])

    let started = MonotonicClock.milliseconds()

    public init(
        capacity: Int, workers: Int = 1, sources: ConfigurationSources = .init(), base: DirectorConfiguration = .init(),
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger
    ) {
        self.capacity = capacity
        self.sources = sources
        self.logger = logger
        let count = max(1, workers)
        // One rr and wrr sequence per service over all workers, as the kernel's.
        let positions = count > 1 ? SharedSchedulerPositions() : nil
        engines = (0..<count).map {
            Engine(Director(configuration: base, capacity: capacity, worker: $0, workers: count, schedulerPositions: positions))
        }
        state = Mutex(State(base: base))
        sync = SyncDaemons(engines: engines, group: group, logger: logger)
    }

    /// Every counter, summed over the workers, with its rate estimator, for a successor (a handover).
    public func carriedCounters() -> [CarriedCounters] {
        let (keys, totalRates, serviceRates, serverRates) = state.withLock { ($0.table.services.map(\.key), $0.totalRates, $0.serviceRates, $0.serverRates) }
        let totals = engines.reduce(Counters()) { $0 + $1.director.withLock { $0.shared.totals } }
        var all = [CarriedCounters(service: nil, counters: totals, estimator: totalRates)]
        for key in keys {
            guard let rt = service(key) else { continue }
            all.append(CarriedCounters(service: key, counters: rt.counters, estimator: serviceRates[key]))
            for d in rt.destinations where !d.removed {
                let estimator = serverRates[ServerRateKey(service: key, address: d.address, port: d.port)]
                all.append(CarriedCounters(service: key, server: d.address, port: d.port, counters: d.counters, estimator: estimator))
            }
        }
        return all
    }

    /// A predecessor's counters, added to the first worker's, and their estimators.
    public func carry(_ counters: [CarriedCounters]) {
        engines[0].director.withLock { d in
            for c in counters { d.carry(c.counters, service: c.service, server: c.server.map { ($0, c.port) }) }
        }
        state.withLock { s in
            for c in counters {
                guard let e = c.estimator else { continue }
                switch (c.service, c.server) {
                case (nil, _): s.totalRates = e
                case (let key?, nil): s.serviceRates[key] = e
                case (let key?, let address?): s.serverRates[ServerRateKey(service: key, address: address, port: c.port)] = e
                }
            }
        }
    }

    /// The real servers the checkers hold down now (by checker id), and why.
    public func healthDown() -> [String: String] {
        state.withLock { s in s.health.filter { !$0.value.up }.mapValues(\.detail) }
    }

    /// Connections of a state file still within their timeout, each made
    /// again on the worker that owns it (see `Director.restore`).
    public func restore(_ records: [JournalRecord], now: UInt64) -> RestoreReport {
        var report = RestoreReport()
        let live = records.filter { $0.remaining(now: now) > 0 }
        report.expired = records.count - live.count
        for outcome in engines.apply(live, \.sync, { $0.restore($1, now: now) }) { report.count(outcome) }
        return report
    }

    func configureEngines(_ s: inout State) {
        var config = s.table.configuration(base: s.base)
        var marks = s.fileMarks
        marks.append(s.nftablesMarks)
        config.markRules = marks.resolved { NetworkInterface.indices(matching: $0).map { UInt16(truncatingIfNeeded: $0) } }
        s.markRules = config.markRules
        for e in engines { e.director.withLock { $0.apply(config) } }
        noteOwnershipChanged()
        if !s.nftablesWatched { reportUnmarkedServices(&s) }
    }

    /// A mark service nothing marks for receives nothing: said once, not
    /// served silently empty. (With the ruleset watched, after each reading
    /// of it, so that a service added just after its rule is not reported.)
    func reportUnmarkedServices(_ s: inout State) {
        let marked = Set(s.markRules.compactMap { r in r.mark.map { MarkedFamily(mark: $0, ipv6: r.ipv6) } })
        let unmarked = s.table.services.map(\.key).filter {
            guard case .firewallMark(let m, let v6) = $0 else { return false }
            return !marked.contains(MarkedFamily(mark: m, ipv6: v6)) && !marked.contains(MarkedFamily(mark: m, ipv6: nil))
        }
        if unmarked != s.unmarked {
            for key in unmarked where !s.unmarked.contains(key) {
                logger.warning(
                    "\(key)\(key.isIPv6 ? " IPv6" : ""): no rule lvsd follows sets this mark, so the service receives nothing (see --marks and the nftables rules named above)"
                )
            }
            s.unmarked = unmarked
        }
    }

    struct MarkedFamily: Hashable {
        var mark: UInt32
        var ipv6: Bool?
    }

    /// The nftables ruleset's marking rules, compiled, by whoever reads the
    /// ruleset (nil: it did not change since the last reading).
    public func readNftablesMarks(_ marks: MarkRules?) {
        state.withLock { s in
            s.nftablesWatched = true
            if let marks, s.nftablesMarks != marks {
                s.nftablesMarks = marks
                configureEngines(&s)
            }
            reportUnmarkedServices(&s)
        }
    }

    /// Whether some service is a firewall mark's (then the nftables ruleset is worth watching).
    public var servesFirewallMarks: Bool {
        state.withLock { s in s.table.services.contains { if case .firewallMark = $0.key { true } else { false } } }
    }

    public func noteOwnershipChanged() {
        ownershipChanged.withLock { $0 }?()
    }

    /// Counters and server states summed over the engines.
    func service(_ key: ServiceKey) -> ServiceRuntime? {
        var total: ServiceRuntime? = nil
        for e in engines {
            guard let rt = e.director.withLock({ $0.service(key) }) else { continue }
            guard var t = total else {
                total = rt
                continue
            }
            t.counters = t.counters + rt.counters
            for (i, d) in rt.destinations.enumerated() where i < t.destinations.count {
                t.destinations[i].counters = t.destinations[i].counters + d.counters
                t.destinations[i].activeConnections &+= d.activeConnections
                t.destinations[i].inactiveConnections &+= d.inactiveConnections
                t.destinations[i].persistentConnections &+= d.persistentConnections
            }
            total = t
        }
        return total
    }

    // MARK: configuration

    /// Loads the configuration files into a new table and swaps it in, or
    /// throws and changes nothing.
    public func reload() throws(ConfigurationError) {
        let table = try sources.load()
        let marks = try sources.loadMarks()
        // The checkers start after (HealthService): a broken one refuses the reload here, all or nothing.
        _ = try sources.loadHealth()
        state.withLock { s in
            s.table = table
            s.fileMarks = marks
            configureEngines(&s)
        }
        logger.info("configuration loaded", metadata: ["services": "\(table.services.count)", "files": "\(sources.files.joined(separator: ","))"])
        // Nothing ignored in silence: what lvsd does not do of the files, each time they load.
        for n in (try? sources.notices()) ?? [] {
            if n.unsupported { logger.warning("\(n)") } else { logger.notice("\(n)") }
        }
        afterReload.withLock { $0 }?()
    }

    public func apply(_ operations: [TableOperation]) throws(TableError) {
        try state.withLock { (s) throws(TableError) in
            try s.table.apply(operations)
            configureEngines(&s)
        }
    }

    public var table: ServiceTable { state.withLock { $0.table } }

    /// New interfaces and routes from the kernel (addresses or routes
    /// changed): re-applied only when they differ.
    public func updateBase(interfaces: [InterfaceConfiguration], routes: [Route]) {
        state.withLock { s in
            guard s.base.interfaces != interfaces || s.base.routes != routes else { return }
            s.base.interfaces = interfaces
            s.base.routes = routes
            configureEngines(&s)
            logger.info("interfaces or routes changed", metadata: ["routes": "\(routes.count)"])
        }
    }

    // MARK: time

    /// Expiry sweep; every 2 s the rate estimators.
    public func tick(now: UInt64 = MonotonicClock.milliseconds()) {
        for e in engines { e.director.withLock { $0.tick(now: now) } }
        sync.flush()
        state.withLock { s in
            runPassiveCheck(&s, now: now)
            if let polled = s.tracePolled, now &- polled > 3000 {
                s.tracePolled = nil
                for e in engines { _ = e.director.withLock { $0.trace(filter: nil, budget: 0) } }
            }
            guard now &- s.lastEstimate >= RateEstimator.periodMilliseconds else { return }
            s.lastEstimate = now
            s.totalRates.update(engines.reduce(Counters()) { $0 + $1.director.withLock { $0.shared.totals } })
            for svc in s.table.services {
                guard let rt = service(svc.key) else { continue }
                s.serviceRates[svc.key, default: RateEstimator()].update(rt.counters)
                for d in rt.destinations where !d.removed {
                    s.serverRates[ServerRateKey(service: svc.key, address: d.address, port: d.port), default: RateEstimator()].update(d.counters)
                }
            }
        }
    }

    // MARK: requests

    /// Answers one encoded request; never throws, whatever the bytes.
    public func handle(_ bytes: [UInt8]) -> [UInt8] {
        let response: ControlResponse
        do {
            response = handle(try ControlProtocol.decode(ControlRequest.self, from: bytes))
        } catch {
            logger.notice("control: \(error)")
            response = .failed(TableError("EPROTO", "\(error)"))
        }
        return (try? ControlProtocol.encode(response)) ?? []
    }

    public func handle(_ request: ControlRequest) -> ControlResponse {
        switch request {
        case .snapshot(let connections):
            return .snapshot(snapshot(connections: connections))
        case .apply(let ops):
            do {
                try apply(ops)
                logger.info("table changed", metadata: ["operations": "\(ops.count)"])
                return .done
            } catch {
                return .failed(error)
            }
        case .zero(let key):
            return state.withLock { s in
                if let key, s.table.service(key) == nil { return .failed(TableError("ESRCH", "No such service")) }
                for e in engines { e.director.withLock { $0.zeroCounters(key) } }
                if key == nil { s.totalRates.reset() }
                for k in s.serviceRates.keys where key == nil || k == key {
                    s.serviceRates[k]?.reset()
                }
                for k in s.serverRates.keys where key == nil || k.service == key {
                    s.serverRates[k]?.reset()
                }
                return .done
            }
        case .trace(let filter, let limit):
            let now = MonotonicClock.milliseconds()
            let offset = WallClock.microseconds() - Int64(now) * 1000
            var entries: [TraceEntry] = []
            for e in engines {
                entries += e.director.withLock { $0.trace(filter: filter, budget: max(0, limit)) }.map { TraceEntry($0, wallOffset: offset) }
            }
            state.withLock { $0.tracePolled = limit > 0 ? now : nil }
            return .trace(entries.sorted { $0.time < $1.time })
        case .reload:
            do {
                try reload()
                return .done
            } catch {
                return .failed(TableError("EINVAL", error.description))
            }
        case .startDaemon(let c):
            do { try sync.start(c) } catch { return .failed(error) }
            return .done
        case .stopDaemon(let role):
            do { try sync.stop(role) } catch { return .failed(error) }
            return .done
        case .handover(let step):
            guard let h = handover.withLock({ $0 }) else { return .failed(TableError("EOPNOTSUPP", "This lvsd serves no interface: nothing to hand over")) }
            return h(step)
        }
    }

    // MARK: health

    /// A checker's verdict on a real server. A change takes it out of its
    /// services (or, with inhibit_on_failure, sets its weight to 0) or puts
    /// it back, as keepalived does to the kernel's table.
    public func healthChanged(_ t: HealthTarget, up: Bool, weight: Int32? = nil, detail: String, now: UInt64 = MonotonicClock.milliseconds()) {
        state.withLock { s in
            let before = s.health[t.id]
            s.health[t.id] = HealthRecord(target: t, up: up, since: before?.up == up ? before!.since : now, detail: detail)
            guard before?.up != up || (up && weight != nil) else { return }
            var server = t.server
            if let weight { server.weight = weight }
            for key in t.services {
                guard let svc = s.table.service(key) else { continue }
                let present = svc.realServers.first { $0.address == server.address && $0.port == server.port }
                let op: TableOperation?
                switch (up, t.inhibitOnFailure) {
                case (true, true): op = present != nil ? .editServer(key, server) : .addServer(key, server)
                case (true, false): op = present == nil ? .addServer(key, server) : (weight != nil ? .editServer(key, server) : nil)
                case (false, true):
                    var zero = present ?? server
                    zero.weight = 0
                    op = present != nil ? .editServer(key, zero) : .addServer(key, zero)
                case (false, false): op = present != nil ? .deleteServer(key, address: server.address, port: server.port) : nil
                }
                // Each service on its own: one refusing must not keep the others unchanged.
                if let op { do { try s.table.apply(op) } catch { logger.error("health: \(t.name): \(error)") } }
            }
            evaluateQuorum(&s)
            configureEngines(&s)
            if before?.up != up {
                logger.notice(
                    "real server \(up ? "up" : "down")",
                    metadata: [
                        "server": "\(t.name)", "detail": "\(detail)",
                        "action": "\(t.inhibitOnFailure ? "weight" : up ? "added" : "removed")",
                    ])
            }
        }
    }

    /// Forgets every checked server and takes the virtual servers' quorums
    /// (the checkers are about to be replaced).
    public func resetHealth(quorum groups: [QuorumGroup] = []) {
        state.withLock { s in
            s.health = [:]
            s.quorum = groups.map { ($0, false) }
            evaluateQuorum(&s)
            configureEngines(&s)
        }
    }

    /// Every VIP of an address service and every FULLNAT local address, and
    /// why it is not to be announced (nil: it is): it is announced while one
    /// of its services can take a connection (a real server with weight, its
    /// quorum held) and lvsd owns it (not a VRRP backup's). A local address
    /// is announced so that the real servers' replies find this director.
    public func routeVerdicts() -> [(address: IPAddress, withheld: String?)] {
        let standby = engines.first?.director.withLock { $0.standbyAddresses } ?? []
        return state.withLock { s in
            var verdicts: [IPAddress: String?] = [:]
            for svc in s.table.services {
                let lost = s.quorum.contains { $0.lost && $0.group.services.contains(svc.key) }
                let live = svc.realServers.contains { $0.weight > 0 }
                var addresses = svc.localAddresses
                if case .address(_, let a, _) = svc.key { addresses.append(a) }
                for a in addresses {
                    let why: String? = standby.contains(a) ? "VRRP backup" : lost ? "quorum lost" : !live ? "no real server with weight" : nil
                    if case .some(.none) = verdicts[a] { continue }
                    verdicts[a] = why
                }
            }
            return verdicts.map { (address: $0.key, withheld: $0.value) }.sorted { $0.address < $1.address }
        }
    }

    /// keepalived's `omega` at shutdown: `quorum_down` of every quorum still held.
    public func runOmegaQuorumDown() async {
        let scripts = state.withLock { s in s.quorum.filter { $0.group.omega && !$0.lost }.compactMap(\.group.down) }
        for script in scripts { _ = await ShellCommand.run(script, timeout: 10) }
    }

    /// keepalived's quorum: the weights of a virtual server's real servers
    /// (the sorry server aside) against `quorum`, with `hysteresis` on the way up.
    func evaluateQuorum(_ s: inout State) {
        for k in s.quorum.indices {
            let (g, lost) = s.quorum[k]
            guard let first = g.services.first, let svc = s.table.service(first) else { continue }
            let sorry = g.sorryServer
            let alive = svc.realServers.filter { $0.address != sorry?.address || $0.port != sorry?.port }.reduce(0) { $0 + Int(max(0, $1.weight)) }
            let nowLost = lost ? alive < g.quorum + g.hysteresis : alive < g.quorum
            guard nowLost != lost else { continue }
            s.quorum[k].lost = nowLost
            logger.notice(nowLost ? "quorum lost" : "quorum regained", metadata: ["service": "\(first)", "weight": "\(alive)", "quorum": "\(g.quorum)"])
            if let script = nowLost ? g.down : g.up { ShellCommand.spawn(script) }
            guard let sorry else { continue }
            for key in g.services {
                let op: TableOperation = nowLost ? .addServer(key, sorry) : .deleteServer(key, address: sorry.address, port: sorry.port)
                do { try s.table.apply(op) } catch { logger.error("sorry server \(sorry.address): \(error)") }
            }
        }
    }

    public func snapshot(connections: Bool, now: UInt64 = MonotonicClock.milliseconds()) -> TableSnapshot {
        state.withLock { s in
            var services: [ServiceSnapshot] = []
            for svc in s.table.services {
                var snap = ServiceSnapshot(
                    service: ServiceSpec(
                        key: svc.key, scheduler: svc.scheduler, schedulerFlags: svc.schedulerFlags,
                        persistence: svc.persistence, netmask: svc.persistenceNetmask,
                        persistenceEngine: svc.persistenceEngine, onePacket: svc.onePacket,
                        synproxy: svc.synproxy, proxyProtocol: svc.proxyProtocol),
                    localAddresses: svc.localAddresses)
                let rt = service(svc.key)
                if let rt {
                    snap.stats = rt.counters
                    snap.rates = s.serviceRates[svc.key]?.rates ?? Rates()
                }
                for server in svc.realServers {
                    var d = ServerSnapshot(server: server)
                    if let state = rt?.destinations.first(where: { $0.address == server.address && $0.port == server.port && !$0.removed }) {
                        d.activeConnections = state.activeConnections
                        d.inactiveConnections = state.inactiveConnections
                        d.persistentConnections = state.persistentConnections
                        d.stats = state.counters
                        let key = ServerRateKey(service: svc.key, address: server.address, port: server.port)
                        d.rates = s.serverRates[key]?.rates ?? Rates()
                    }
                    snap.servers.append(d)
                }
                services.append(snap)
            }
            var drops: [String: UInt64] = [:]
            var entries: [ConnectionEntry] = []
            for e in engines {
                e.director.withLock { d in
                    for reason in DropReason.all where d.drops(reason) > 0 { drops[reason.description, default: 0] += d.drops(reason) }
                    if connections { entries += Self.connections(d, now: now) }
                }
            }
            var health: [HealthEntry] = s.passive.entries(now: now)
            for r in s.health.values.sorted(by: { $0.target.id < $1.target.id }) {
                for key in r.target.services {
                    health.append(
                        HealthEntry(
                            service: key, address: r.target.server.address, port: r.target.server.port, up: r.up,
                            checks: r.target.checks.map(\.kind.name), since: (now &- r.since) / 1000, detail: r.detail))
                }
            }
            return TableSnapshot(
                connectionTableSize: capacity * engines.count, services: services, timeouts: Timeouts(s.table.timeouts),
                connections: connections ? entries : nil, drops: drops, health: health, daemons: sync.running,
                vrrp: vrrp.withLock {
                    $0.map { v in
                        var s = v.status
                        s.seconds = (now &- v.since) / 1000
                        return s
                    }
                },
                bgp: bgp.withLock {
                    $0.map { r in
                        var s = r.status
                        s.seconds = (now &- r.since) / 1000
                        return s
                    }
                })
        }
    }

    /// The snapshot with the totals and every worker's figures.
    public func status(now: UInt64 = MonotonicClock.milliseconds()) -> StatusReport {
        let table = snapshot(connections: false, now: now)
        var engineStatus: [EngineStatus] = []
        for (i, e) in engines.enumerated() {
            engineStatus.append(
                e.director.withLock { d in
                    EngineStatus(
                        worker: i, totals: d.shared.totals, drops: d.shared.drops.reduce(0, &+),
                        toaInserted: d.shared.toaInserted, toaFailures: d.shared.toaFailures, icmpSent: d.shared.icmpSent,
                        synproxyCookies: d.shared.synproxyCookies,
                        superFramesWhole: d.shared.superFramesWhole, superFramesCut: d.shared.superFramesCut,
                        kernelForwarded: d.shared.kernelForwarded,
                        proxyHeaders: d.shared.proxyHeaders,
                        ipv4Connections: d.v4.table.count, ipv4Capacity: d.v4.table.capacity,
                        ipv6Connections: d.v6.table.count, ipv6Capacity: d.v6.table.capacity)
                })
        }
        return StatusReport(
            table: table, totals: engineStatus.reduce(Counters()) { $0 + $1.totals },
            totalRates: state.withLock { $0.totalRates.rates }, engines: engineStatus,
            uptimeSeconds: (now &- started) / 1000, sync: sync.statistics)
    }

    static func connections(_ d: borrowing Director, now: UInt64) -> [ConnectionEntry] {
        var out: [ConnectionEntry] = []
        func add<A: IPAddressProtocol>(_ i: Int, _ c: Connection<A>) {
            let template = c.flags.contains(.template)
            let proto: String
            if template && c.flags.contains(.firewallMark) {
                proto = "IP"
            } else {
                proto = c.proto == 6 ? "TCP" : c.proto == 17 ? "UDP" : c.proto == 132 ? "SCTP" : "IP"
            }
            let state = template ? "NONE" : (c.proto == 17 ? "UDP" : c.state.description)
            let fullNAT = !template && c.method == .fullNAT
            out.append(
                ConnectionEntry(
                    proto: proto, client: c.client.ipAddress, clientPort: c.clientPort,
                    virtual: c.virtual.ipAddress, virtualPort: c.virtualPort,
                    real: c.real.ipAddress, realPort: c.realPort,
                    local: fullNAT ? c.local.ipAddress : nil, localPort: fullNAT ? c.localPort : nil,
                    state: state, expires: c.expires > now ? UInt32((c.expires - now) / 1000) : 0, template: template))
        }
        d.v4.table.forEach(add)
        d.v6.table.forEach(add)
        return out
    }
}
