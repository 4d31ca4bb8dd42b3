import LVSConfiguration
import LVSControlProtocol
import LVSDaemon
import LVSPacket
import LVSSystem
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// lvsd's VRRP: each `vrrp_instance` a raw socket (protocol 112, joined to
/// 224.0.0.18, or ff02::12 from the interface's link-local address for an
/// instance of IPv6 addresses, as keepalived opens it) served as a SwiftNIO
/// channel, its RFC 5798 state machine (`VRRPRouter`) driven by that
/// channel's event loop: advertisements in, timers at the machine's
/// deadlines. A master owns its addresses in the engines (answers ARP for
/// them, announces them); a backup leaves them alone. The instance named
/// by `lvs_sync_daemon` drives the sync daemons: master daemon while
/// master, backup daemon otherwise. At graceful shutdown a master resigns
/// (priority 0, so that a backup takes over at once) and every instance's
/// `notify_stop` runs.
public final class VRRPService: Service, Sendable {
    let plane: ControlPlane
    let configuration: HighAvailabilityConfiguration
    let group: any EventLoopGroup
    let logger: Logger
    let instances: [Instance]
    let states: Mutex<[String: VRRPRouter.State]>
    /// The tracked `vrrp_script`s' verdicts by name (true: OK), kept by `runScript`.
    let scriptVerdicts: Mutex<[String: Bool]>
    /// The tracked `vrrp_track_process`es' verdicts by name (true: quorum), kept by `trackProcesses`.
    let processVerdicts: Mutex<[String: Bool]>
    /// Each instance's handler, by name: a sync group's members are told of each other's changes.
    let handlers = Mutex<[String: (handler: VRRPInstanceHandler, loop: any EventLoop)]>([:])
    /// Each sync group's state as last entered (its notify scripts run on a change).
    let groupStates = Mutex<[String: VRRPRouter.State]>([:])
    /// Instances that start as master: the previous lvsd was master for them (a handover), and must not seem to resign.
    let resuming: Set<String>

    public struct Failure: Error, CustomStringConvertible { public var description: String }

    struct Instance: Sendable {
        let configuration: VRRPInstanceConfiguration
        let socket: Socket
        let primary: IPAddress
        let index: UInt32
        var isIPv6: Bool { primary.isIPv6 }
    }

    /// Opens every instance's socket and leaves every VRRP address unowned
    /// until its instance is master (a director starting up must not take
    /// addresses another one holds).
    public init(
        plane: ControlPlane, configuration: HighAvailabilityConfiguration, group: any EventLoopGroup, logger: Logger, resuming: Set<String> = []
    ) throws(Failure) {
        self.resuming = resuming
        self.plane = plane
        self.configuration = configuration
        self.group = group
        self.logger = logger
        var made: [Instance] = []
        for c in configuration.instances {
            do throws(Failure) {
                let v6 = c.addresses.first?.isIPv6 ?? false
                guard let primary = c.unicastSource ?? Self.primaryAddress(c.interface, ipv6: v6) else {
                    throw Failure(description: "\(c.name): \(c.interface) has no \(v6 ? "IPv6 link-local" : "IPv4") address")
                }
                guard let index = NetworkInterface.index(named: c.interface) else { throw Failure(description: "no interface \(c.interface)") }
                let socket = try Self.open(
                    c.interface, index: index, address: primary, multicast: c.unicastPeers.isEmpty,
                    protocol: c.authentication?.type == 2 ? VRRPAuthenticationHeader.protocolNumber : VRRPAdvertisement.protocolNumber)
                made.append(Instance(configuration: c, socket: socket, primary: primary, index: index))
            } catch {
                for m in made { m.socket.close() }
                throw error
            }
        }
        instances = made
        states = Mutex(Dictionary(uniqueKeysWithValues: configuration.instances.map { ($0.name, VRRPRouter.State.initialize) }))
        scriptVerdicts = Mutex(Dictionary(uniqueKeysWithValues: configuration.scripts.map { ($0.name, !$0.initiallyFailed) }))
        let running = Self.running(configuration.processes)
        processVerdicts = Mutex(Dictionary(uniqueKeysWithValues: zip(configuration.processes, running).map { ($0.name, $0.hasQuorum($1)) }))
        publishOwnership()
        plane.vrrp.withLock { s in
            s = made.map { i in (Self.status(i.configuration, state: .initialize, master: nil, transitions: 0), MonotonicClock.milliseconds()) }
        }
    }

    public func run() async throws {
        var running: [(any Channel, VRRPInstanceHandler)] = []
        for i in instances {
            let handler = VRRPInstanceHandler(service: self, instance: i)
            do {
                let channel = try await DatagramBootstrap(group: group)
                    .channelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(handler) }
                    }
                    .withBoundSocket(i.socket.rawValue).get()
                handlers.withLock { $0[i.configuration.name] = (handler, channel.eventLoop) }
                running.append((channel, handler))
            } catch {
                logger.error("VRRP_Instance(\(i.configuration.name)): \(error)")
                i.socket.close()
            }
        }
        let scripts = Task { [configuration] in
            await withTaskGroup(of: Void.self) { g in
                for s in configuration.scripts { g.addTask { await self.runScript(s) } }
                if !configuration.processes.isEmpty { g.addTask { await self.trackProcesses() } }
            }
        }
        try? await gracefulShutdown()
        scripts.cancel()
        for (channel, handler) in running {
            try? await channel.eventLoop.submit { handler.shutdown() }.get()
            try? await channel.close().get()
        }
        for i in instances {
            if let script = i.configuration.notifyStop { ShellCommand.spawn(script) }
        }
    }

    /// A `vrrp_script`, every `interval`: OK after `rise` successes in a
    /// row, failed after `fall` failures in a row (a run over `timeout` is
    /// a failure), as `user` when one is named.
    func runScript(_ s: VRRPScript) async {
        var successes = 0
        var failures = 0
        while !Task.isCancelled {
            let outcome: Int32?
            if let user = s.user, user != "root" {
                outcome = await ChildProcess.run(
                    "runuser", ["-u", user, "--", "/bin/sh", "-c", s.command], timeout: s.timeout, options: .init(searchPath: true)
                ).status
            } else {
                outcome = await ShellCommand.run(s.command, timeout: s.timeout)
            }
            let ok = outcome == 0
            (successes, failures) = ok ? (successes + 1, 0) : (0, failures + 1)
            let was = scriptVerdicts.withLock { $0[s.name] ?? true }
            if ok != was && (ok ? successes >= s.rise : failures >= s.fall) {
                scriptVerdicts.withLock { $0[s.name] = ok }
                logger.notice("VRRP_Script(\(s.name)) \(ok ? "succeeded" : "failed")", metadata: ["exit": "\(outcome.map(String.init) ?? "timeout")"])
            }
            try? await Task.sleep(for: .milliseconds(Int64(s.interval * 1000)))
        }
    }

    /// The `vrrp_track_process`es, every half second (keepalived hears of
    /// each fork and exit from the kernel; a poll is enough here): a
    /// quorum gained counts after `fork_delay`, one lost after `terminate_delay`.
    func trackProcesses() async {
        var changedAt: [String: UInt64] = [:]
        while !Task.isCancelled {
            let now = MonotonicClock.milliseconds()
            for (p, n) in zip(configuration.processes, Self.running(configuration.processes)) {
                let quorum = p.hasQuorum(n)
                let was = processVerdicts.withLock { $0[p.name] ?? quorum }
                guard quorum != was else {
                    changedAt[p.name] = nil
                    continue
                }
                let since = changedAt[p.name] ?? now
                changedAt[p.name] = since
                guard now - since >= UInt64((quorum ? p.forkDelay : p.terminateDelay) * 1000) else { continue }
                processVerdicts.withLock { $0[p.name] = quorum }
                changedAt[p.name] = nil
                logger.notice("VRRP_Track_Process(\(p.name)) \(quorum ? "quorum gained" : "quorum lost")", metadata: ["running": "\(n)"])
            }
            try? await Task.sleep(for: .milliseconds(500))
        }
    }

    /// How many processes each of `processes` counts now, from /proc.
    static func running(_ processes: [VRRPTrackedProcess]) -> [Int] {
        var counts = [Int](repeating: 0, count: processes.count)
        guard !processes.isEmpty, let pids = KernelFile.directory("/proc") else { return counts }
        let commandLines = processes.contains { $0.fullCommand }
        for pid in pids where pid.first?.isNumber == true {
            // "PID (comm) S …": comm may hold spaces and parentheses, the state follows the last ')'.
            guard let stat = KernelFile.firstLine("/proc/\(pid)/stat"), let open = stat.firstIndex(of: "("), let close = stat.lastIndex(of: ")") else {
                continue
            }
            let comm = String(stat[stat.index(after: open)..<close])
            if stat[close...].dropFirst(2).first == "Z" { continue }
            var words: [String] = []
            if commandLines, let text = KernelFile.contents("/proc/\(pid)/cmdline") {
                words = text.split(separator: "\0", omittingEmptySubsequences: false).map(String.init)
                if words.last == "" { words.removeLast() }
            }
            for (k, p) in processes.enumerated() where p.matches(comm: comm, commandLine: words) { counts[k] += 1 }
        }
        return counts
    }

    /// What an instance tracks, now: its priority change, whether something
    /// puts it in FAULT, and what is failing (for the log).
    func trackedEffect(_ c: VRRPInstanceConfiguration) -> (delta: Int, fault: Bool, failing: [String]) {
        var delta = 0
        var fault = false
        var failing: [String] = []
        func add(_ e: (delta: Int, fault: Bool), _ ok: Bool, _ what: String) {
            delta += e.delta
            fault = fault || e.fault
            if !ok { failing.append(what) }
        }
        for t in c.trackInterfaces {
            let up = NetworkInterface.isUp(t.name)
            add(VRRPScript.effect(weight: t.weight ?? 0, reverse: t.reverse ?? false, ok: up), up, "interface \(t.name) down")
        }
        let scripts = c.trackScripts.isEmpty ? [:] : scriptVerdicts.withLock { $0 }
        for t in c.trackScripts {
            guard let s = configuration.scripts.first(where: { $0.name == t.name }) else { continue }
            let ok = scripts[t.name] ?? true
            add(VRRPScript.effect(weight: t.weight ?? s.weight, reverse: t.reverse ?? s.reverse, ok: ok), ok, "script \(t.name) failed")
        }
        let processes = c.trackProcesses.isEmpty ? [:] : processVerdicts.withLock { $0 }
        for t in c.trackProcesses {
            guard let p = configuration.processes.first(where: { $0.name == t.name }) else { continue }
            let ok = processes[t.name] ?? true
            add(VRRPScript.effect(weight: t.weight ?? p.weight, reverse: t.reverse ?? p.reverse, ok: ok), ok, "process \(t.name) without quorum")
        }
        for t in c.trackFiles {
            guard let f = configuration.files.first(where: { $0.name == t.name }) else { continue }
            // A missing or unreadable file reads as 0, as keepalived reads it.
            let value = KernelFile.firstLine(f.path).flatMap { Int($0.filter { !$0.isWhitespace }) } ?? 0
            let e = TrackedFile.effect(value: value, weight: t.weight ?? f.weight, reverse: t.reverse ?? f.reverse)
            add(e, value == 0, "file \(t.name) holds \(value)")
        }
        return (delta, fault, failing)
    }

    /// An instance entered `state`: the other members of its sync group
    /// follow, each on its own event loop; the group's scripts run once
    /// per group change.
    func syncGroupEntered(_ name: String, _ state: VRRPRouter.State) {
        guard let g = configuration.syncGroups.first(where: { $0.instances.contains(name) }), state != .initialize else { return }
        let changed = groupStates.withLock { s in
            defer { s[g.name] = state }
            return s[g.name] != state
        }
        if changed {
            logger.notice("VRRP_Group(\(g.name)) Syncing instances to \(state.rawValue) state")
            let script = state == .master ? g.notifyMaster : state == .backup ? g.notifyBackup : g.notifyFault
            if let script { ShellCommand.spawn(script) }
            if let n = g.notify { ShellCommand.spawn("\(n) GROUP \(g.name) \(state.rawValue) 0") }
        }
        let peers = handlers.withLock { all in g.instances.filter { $0 != name }.compactMap { all[$0] } }
        for (p, loop) in peers { loop.execute { p.follow(state) } }
    }

    /// A state change: ownership, the sync daemons, the notify scripts.
    func entered(_ c: VRRPInstanceConfiguration, _ state: VRRPRouter.State, master: IPAddress?, transitions: UInt64) {
        logger.notice("VRRP_Instance(\(c.name)) Entering \(state.rawValue) STATE")
        states.withLock { $0[c.name] = state }
        publishOwnership()
        plane.vrrp.withLock { all in
            if let k = all.firstIndex(where: { $0.status.name == c.name }) {
                all[k] = (Self.status(c, state: state, master: master, transitions: transitions), MonotonicClock.milliseconds())
            }
        }
        if let tie = configuration.sync, tie.instance == c.name || tie.instance == nil {
            let master = state == .master
            try? plane.sync.stop(master ? .backup : .master)
            if let daemon = configuration.syncDaemon(master: master) {
                do { try plane.sync.start(daemon) } catch  where error.code != "EEXIST" {
                    logger.error("lvs_sync_daemon: \(error)")
                } catch {}
            }
        }
        let specific: String? =
            switch state {
            case .master: c.notifyMaster
            case .backup: c.notifyBackup
            case .fault: c.notifyFault
            case .initialize: nil
            }
        if let specific { ShellCommand.spawn(specific) }
        if let notify = c.notify { ShellCommand.spawn("\(notify) INSTANCE \(c.name) \(state.rawValue) \(c.priority)") }
    }

    /// The master a backup hears from (a new one, or the same one again).
    func publishMaster(_ c: VRRPInstanceConfiguration, _ master: IPAddress?) {
        plane.vrrp.withLock { all in
            if let k = all.firstIndex(where: { $0.status.name == c.name }) {
                all[k].status.master = master
            }
        }
    }

    static func status(_ c: VRRPInstanceConfiguration, state: VRRPRouter.State, master: IPAddress?, transitions: UInt64) -> VRRPInstanceStatus {
        VRRPInstanceStatus(
            name: c.name, interface: c.interface, virtualRouterID: c.virtualRouterID, priority: c.priority, state: state.rawValue,
            master: master, addresses: c.ownedAddresses, seconds: 0, transitions: transitions)
    }

    /// Every VRRP address is owned; those of instances that are not master
    /// are on standby.
    func publishOwnership() {
        let states = states.withLock { $0 }
        var extra = Set<IPAddress>()
        var standby = Set<IPAddress>()
        for c in configuration.instances {
            extra.formUnion(c.ownedAddresses)
            if states[c.name] != .master { standby.formUnion(c.ownedAddresses) }
        }
        // An address two instances hold is owned while either is master.
        for c in configuration.instances where states[c.name] == .master { standby.subtract(c.ownedAddresses) }
        for e in plane.engines { e.director.withLock { $0.setOwnership(extra: extra, standby: standby) } }
        plane.noteOwnershipChanged()
    }

    /// The interface's IPv4 address, or its IPv6 link-local one (VRRP's source for IPv6).
    static func primaryAddress(_ interface: String, ipv6: Bool) -> IPAddress? {
        guard let index = NetworkInterface.index(named: interface), let view = try? RouteNetlink.dump(RouteNetlink.getAddress) else { return nil }
        for m in view where m.type == RouteNetlink.newAddress && m.body.count >= 8 && RouteNetlink.le32(m.body, 4) == index {
            let attrs = RouteNetlink.attributes(m.body, from: 8)
            guard let a = (attrs[2] ?? attrs[1]).flatMap(RouteNetlink.address) else { continue }
            switch a {
            case .v4 where !ipv6: return a
            case .v6(let x) where ipv6 && x.high >> 54 == 0x3FA: return a  // fe80::/10
            default: continue
            }
        }
        return nil
    }

    /// An instance's raw socket, bound to its interface; `multicast`: it
    /// joins the VRRP group (not for unicast peers). `protocol`: VRRP's,
    /// or AH's for `auth_type AH`.
    static func open(
        _ interface: String, index: UInt32, address: IPAddress, multicast: Bool = true, protocol: UInt8 = VRRPAdvertisement.protocolNumber
    ) throws(Failure) -> Socket {
        do {
            let s = try Socket.open(family: address.isIPv6 ? AF_INET6 : AF_INET, type: Socket.raw, protocol: Int32(`protocol`), nonBlocking: true)
            do {
                try s.bindToDevice(interface)
                switch address {
                case .v6(let source):
                    if multicast { try s.joinMulticastGroup(.v6(VRRPAdvertisement.group6), interface: index) }
                    try s.setMulticastSending(ipv6: true, interface: index, hops: 255)
                    // Unicast advertisements leave with hop limit 255 too, as RFC 5798 wants them to arrive.
                    if !multicast { try s.setOption(level: Int32(IPPROTO_IPV6), name: IPV6_UNICAST_HOPS, Int32(255), "IPV6_UNICAST_HOPS") }
                    // RFC 5798: an advertisement that does not arrive with hop limit 255 came from off the link.
                    // The kernel drops it (the IPv6 header is at SKF_NET_OFF; its hop limit is byte 7).
                    try s.attachFilter([
                        .init(code: 0x30, k: 0xFFF0_0007),  // ldb [SKF_NET_OFF + 7]
                        .init(code: 0x15, jumpTrue: 0, jumpFalse: 1, k: 255),  // jeq #255
                        .init(code: 0x06, k: 0xFFFF_FFFF),  // ret: the whole packet
                        .init(code: 0x06, k: 0),  // ret: none of it
                    ])
                    // From the link-local address, as RFC 5798 wants (and the checksum
                    // assumes); just after the link comes up it may still be tentative (DAD).
                    var bound = false
                    for _ in 0..<50 where !bound {
                        do {
                            try s.bind(.ipv6(source, port: 0, scope: index))
                            bound = true
                        } catch  where error.errno == .addressNotAvailable {
                            usleep(100_000)
                        }
                    }
                    if !bound { try s.bind(.ipv6(source, port: 0, scope: index)) }
                case .v4:
                    try s.setFlag(level: Int32(IPPROTO_IP), name: IP_HDRINCL, true, "IP_HDRINCL")
                    if multicast { try s.joinMulticastGroup(.v4(VRRPAdvertisement.group), interface: index) }
                    try s.setMulticastSending(ipv6: false, interface: index, hops: 255)
                }
                return s
            } catch {
                s.close()
                throw error
            }
        } catch {
            throw Failure(description: "VRRP socket on \(interface): \(error)")
        }
    }
}

/// One instance on its channel's event loop: what it receives, its
/// machine's deadlines, what it sends.
final class VRRPInstanceHandler: ChannelInboundHandler, @unchecked Sendable {  // touched on its event loop only
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>

    let service: VRRPService
    let instance: VRRPService.Instance
    var router: VRRPRouter
    var transitions: UInt64 = 0
    var trackedFailing: [String] = []
    var lastTrackCheck: UInt64 = 0
    var warnedAuthentication = false
    /// `auth_type AH`'s sequence number: the last sent or accepted.
    var sequence: UInt32 = 0
    var identification: UInt16 = 0
    /// A sync group member is in FAULT: so is this instance, until it leaves it.
    var groupFault = false
    /// Following a group member: the state this enters is not passed on again.
    var following = false
    var warnedVersion = false
    var context: ChannelHandlerContext?
    var timer: Scheduled<Void>?
    /// Where advertisements go: the group, or each unicast peer.
    let destinations: [(address: IPAddress, socket: NIOCore.SocketAddress)]
    var unicast: Bool { !instance.configuration.unicastPeers.isEmpty }

    init(service: VRRPService, instance: VRRPService.Instance) {
        self.service = service
        self.instance = instance
        router = VRRPRouter(instance.configuration, primaryAddress: instance.primary)
        let peers = instance.configuration.unicastPeers
        let targets: [IPAddress] = peers.isEmpty ? [instance.isIPv6 ? .v6(VRRPAdvertisement.group6) : .v4(VRRPAdvertisement.group)] : peers
        destinations = targets.map { target in
            switch target {
            case .v6(let a):
                var s = sockaddr_in6()
                s.sin6_family = sa_family_t(AF_INET6)
                s.sin6_addr = Socket.in6(a)
                s.sin6_scope_id = instance.index
                return (target, NIOCore.SocketAddress(s, host: "\(a)"))
            case .v4(let a):
                var s = sockaddr_in()
                s.sin_family = sa_family_t(AF_INET)
                s.sin_addr.s_addr = a.value.bigEndian
                return (target, NIOCore.SocketAddress(s, host: "\(a)"))
            }
        }
    }

    func channelActive(context: ChannelHandlerContext) {
        self.context = context
        perform(router.start(now: MonotonicClock.milliseconds(), asMaster: service.resuming.contains(instance.configuration.name)))
        schedule()
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var envelope = unwrapInboundIn(data)
        guard let bytes = envelope.data.readBytes(length: envelope.data.readableBytes), let (a, source, sequence) = decode(bytes, envelope.remoteAddress),
            a.virtualRouterID == instance.configuration.virtualRouterID, source != instance.primary
        else { return }
        guard a.version == instance.configuration.version else {
            // Once: a peer of the other version advertises every second.
            if !warnedVersion {
                service.logger.warning(
                    "VRRP_Instance(\(instance.configuration.name)) advertisements of version \(a.version) from \(source) ignored (vrrp_version \(instance.configuration.version))"
                )
            }
            warnedVersion = true
            return
        }
        guard a.authenticates(instance.configuration.authentication) else {
            warnAuthentication(source, "their authentication is not this instance's")
            return
        }
        if let sequence {
            // keepalived's anti-replay: one counter for what is sent and received, only forward.
            guard sequence > self.sequence else {
                warnAuthentication(source, "IPSEC-AH sequence number \(sequence) already seen (\(self.sequence))")
                return
            }
            self.sequence = sequence
            // A master hearing a lower priority goes on from the sender's number, as keepalived does.
            if router.state == .master && a.priority < router.priority && a.priority > 0 { self.sequence = sequence &+ 1 }
        }
        warnedAuthentication = false
        let before = router.master
        perform(router.received(a, from: source, now: MonotonicClock.milliseconds()))
        if router.master != before { service.publishMaster(instance.configuration, router.master) }
        schedule()
    }

    /// Once until an advertisement passes: a peer keeps advertising every interval.
    func warnAuthentication(_ source: IPAddress, _ why: String) {
        if !warnedAuthentication { service.logger.warning("VRRP_Instance(\(instance.configuration.name)) advertisements from \(source) ignored: \(why)") }
        warnedAuthentication = true
    }

    /// An advertisement, its sender and its authentication header's
    /// sequence number, or nil for anything else (not VRRP, malformed, an
    /// authentication header that does not hold). With unicast peers, only
    /// theirs, sent to this instance's source address.
    func decode(_ bytes: [UInt8], _ from: NIOCore.SocketAddress) -> (VRRPAdvertisement, IPAddress, UInt32?)? {
        let decoded: (VRRPAdvertisement, IPAddress)?
        var sequence: UInt32? = nil
        switch instance.primary {
        case .v4(let own):
            var plain = bytes
            if case .header(let key)? = instance.configuration.authentication {
                do throws(VRRPAuthenticationHeader.Failure) {
                    (plain, sequence) = try VRRPAuthenticationHeader.open(bytes, key: key, unicast: unicast)
                } catch {
                    if error != .notVRRP, bytes.count >= 20, VRRPAdvertisement.be32(bytes, 12) != own.value {
                        warnAuthentication(.v4(IPv4Address(VRRPAdvertisement.be32(bytes, 12))), "IPSEC-AH \(error)")
                    }
                    return nil
                }
            }
            decoded = try? VRRPAdvertisement.decode(plain, unicastTo: unicast ? own : nil)
        case .v6(let own):
            guard let text = from.ipAddress, case .v6(let source)? = IPAddress(text) else { return nil }
            // The socket's filter let only hop limit 255 through.
            decoded = (try? VRRPAdvertisement.decode6(bytes, source: source, hopLimit: 255, unicastTo: unicast ? own : nil)).map { ($0, .v6(source)) }
        }
        guard let decoded, !unicast || instance.configuration.unicastPeers.contains(decoded.1) else { return nil }
        return (decoded.0, decoded.1, sequence)
    }

    /// The next wake-up: the machine's deadline, at most 100 ms away (the tracked interfaces' check).
    func schedule() {
        guard let context else { return }
        timer?.cancel()
        let now = MonotonicClock.milliseconds()
        let wait = router.deadline > now ? min(100, router.deadline - now) : 0
        timer = context.eventLoop.scheduleTask(in: .milliseconds(Int64(wait))) { [self] in tick() }
    }

    func tick() {
        let now = MonotonicClock.milliseconds()
        let c = instance.configuration
        let tracks = !(c.trackInterfaces.isEmpty && c.trackScripts.isEmpty && c.trackProcesses.isEmpty && c.trackFiles.isEmpty)
        if (tracks || router.state == .fault) && now &- lastTrackCheck >= 250 {
            lastTrackCheck = now
            let effect = service.trackedEffect(c)
            if effect.failing != trackedFailing {
                service.logger.notice("VRRP_Instance(\(c.name)) tracking: \(effect.failing.isEmpty ? "all well" : effect.failing.joined(separator: ", "))")
            }
            trackedFailing = effect.failing
            if effect.delta != router.priorityAdjustment {
                router.priorityAdjustment = effect.delta
                service.logger.notice("VRRP_Instance(\(c.name)) priority \(router.priority) (tracked \(effect.delta > 0 ? "+" : "")\(effect.delta))")
            }
            let healthy = !effect.fault && !groupFault
            if healthy != (router.state != .fault) { perform(healthy ? router.recover(now: now) : router.fault()) }
        }
        perform(router.tick(now: now))
        schedule()
    }

    func perform(_ actions: [VRRPRouter.Action]) {
        for a in actions {
            switch a {
            case .advertise(let priority): send(router.advertisement(priority: priority))
            case .enter(let s):
                transitions += 1
                service.entered(instance.configuration, s, master: router.master, transitions: transitions)
                if !following { service.syncGroupEntered(instance.configuration.name, s) }
            }
        }
    }

    /// Its sync group's member entered `state` (keepalived's vrrp_sync_*).
    func follow(_ state: VRRPRouter.State) {
        let now = MonotonicClock.milliseconds()
        following = true
        defer { following = false }
        switch state {
        case .fault:
            groupFault = true
            perform(router.fault())
        case .backup:
            groupFault = false
            lastTrackCheck = 0  // a FAULT this group caused is reconsidered at once
            perform(router.followToBackup(now: now))
        case .master:
            groupFault = false
            perform(router.followToMaster(now: now))
        case .initialize:
            break
        }
        schedule()
    }

    func send(_ a: VRRPAdvertisement) {
        guard let context else { return }
        let name = instance.configuration.name
        let logger = service.logger
        // One identification and sequence number per advertisement, whatever its peers; never 0 (the kernel would pick one).
        identification = identification == UInt16.max ? 1 : identification + 1
        if sequence < 0xFFFF_FFFE { sequence += 1 }
        for (target, socket) in destinations {
            var bytes: [UInt8]
            switch (instance.primary, target) {
            case (.v4(let source), .v4(let to)):
                bytes = a.encode(source: source, destination: to, identification: identification)
                if case .header(let key)? = instance.configuration.authentication {
                    bytes = VRRPAuthenticationHeader.seal(bytes, key: key, sequence: sequence, unicast: unicast)
                }
            default: bytes = a.message(source: instance.primary, destination: target)
            }
            context.writeAndFlush(wrapOutboundOut(AddressedEnvelope(remoteAddress: socket, data: ByteBuffer(bytes: bytes)))).whenFailure { error in
                logger.warning("VRRP_Instance(\(name)) send to \(target): \(error)")
            }
        }
    }

    /// Resigns mastership (priority 0) before the channel closes.
    func shutdown() {
        timer?.cancel()
        for a in router.shutdown() { if case .advertise(let p) = a { send(router.advertisement(priority: p)) } }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        service.logger.warning("VRRP_Instance(\(instance.configuration.name)): \(error)")
    }
}
