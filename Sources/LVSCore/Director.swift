import LVSPacket

/// A next hop the director sends to. Slots are stable: connections and real
/// servers keep a slot number, and a MAC learned later fills the slot.
public struct Neighbour: Sendable {
    public var address: IPAddress
    public var interface: UInt16
    public var mac: MACAddress
    public var resolved: Bool
    /// The sending interface's MAC, kept here so that the data path needs
    /// no interface lookup.
    public var sourceMAC: MACAddress
    /// When lvsd last asked for it (ARP request or neighbour solicitation).
    public var lastSolicited: UInt64 = 0
}

/// The fast path's view of a next hop: the Ethernet addresses of its frames
/// as the wire has them, for two stores instead of shifts, byte swaps and
/// three; its interface; whether it is known yet.
struct NextHop: Sendable, BitwiseCopyable {
    /// Destination MAC and the source MAC's first two bytes (frame bytes 0–7, in memory order).
    var head: UInt64
    /// The source MAC's last four bytes (frame bytes 8–11, in memory order).
    var tail: UInt32
    var interface: UInt16
    var resolved: Bool

    init(_ n: Neighbour) {
        head = (n.mac.value &<< 16 | n.sourceMAC.value &>> 32).bigEndian
        tail = UInt32(truncatingIfNeeded: n.sourceMAC.value).bigEndian
        interface = n.interface
        resolved = n.resolved
    }
}

/// A real server's identity inside its service.
struct RealServerKey: Hashable {
    var address: IPAddress
    var port: UInt16
}

/// A service's live state in one worker.
public struct ServiceRuntime: Sendable {
    public var configuration: VirtualServiceConfiguration
    /// Slots only grow: a removed server keeps its slot (the kernel's
    /// dest_trash) so that connections bound to it keep their number.
    public var destinations: [DestinationState]
    /// Slots in the kernel's list order (newest first), removed ones left out.
    public var order: [Int]
    var scheduler: SchedulerInstance
    /// Filled in snapshots (`Director.service`); the live figures are in
    /// `DirectorShared.counters` at `counterSlot`.
    public var counters = Counters()
    var counterSlot = 0
    var slotByKey: [RealServerKey: Int] = [:]
    /// Deleted (`-D`, `-C`): its connections drain; added again, it starts
    /// with zeroed counters, as a new kernel service would.
    var deleted = false
    /// The FTP helper may read its NAT and FULLNAT connections: a TCP service
    /// on one of `DirectorConfiguration.ftpPorts`, on port 0, or a firewall
    /// mark's, without SYN proxy or PROXY protocol (see `isFTP`).
    var ftp = false
}

struct ServiceLookupKey<A: IPAddressProtocol>: Hashable, Sendable {
    var proto: UInt8
    var address: A
    var port: UInt16
}

extension ServiceRuntime {
    /// The scheduler is swapped out (with an empty one) rather than copied, so
    /// that it stays unique, and the arrays it reads are not retained.
    mutating func schedule(_ input: ScheduleInput, now: UInt64) -> Int? {
        var s = SchedulerInstance.wlc(.init(flags: []))
        swap(&s, &scheduler)
        defer { swap(&s, &scheduler) }
        return s.schedule(order: order.span, dests: destinations.span, input: input, now: now)
    }
}

extension DirectorShared {
    /// Whether the FTP helper reads a NAT or FULLNAT connection of `service`
    /// to `port`: as the kernel binds `ip_vs_ftp` by the connection's
    /// virtual port, whatever the service's (a port-0 or firewall-mark
    /// service's connection to port 21 too).
    @inline(__always)
    func isFTP(_ service: Int, proto: UInt8, port: UInt16) -> Bool {
        ftpPortBits & 1 << UInt64(port % 64) != 0 && proto == IPProtocolNumber.tcp && ftpPorts.contains(port) && services[service].ftp
    }
}

/// State shared by both address families of one worker.
public struct DirectorShared: Sendable {
    public var services: [ServiceRuntime] = []
    var serviceByKey: [ServiceKey: Int] = [:]
    var markServices: [MarkServiceKey: Int] = [:]
    public internal(set) var neighbours: [Neighbour] = []
    /// The fast path's copy of `neighbours` (see `NextHop`), slot for slot.
    var nextHops: [NextHop] = []
    /// The fast path's flat view of every service's real servers (see `ForwardingTarget`).
    var targets: [ForwardingTarget] = []
    var tunnels: [TunnelTarget] = []
    var targetBase: [UInt32] = []
    var neighbourByAddress = FlatMap<IPAddress, UInt32>()
    var interfaces: [InterfaceConfiguration] = []
    var routes: [Route] = [] {
        didSet {
            gatewaySlots = [UInt32](repeating: .max, count: routes.count)
            // Longest prefix first, and of equal ones the later route, as the scan in `route(for:)` picks.
            routes4 = routes.indices.compactMap { i -> IPv4Route? in
                guard case .v4(let d) = routes[i].destination else { return nil }
                let mask: UInt32 = routes[i].prefixLength <= 0 ? 0 : UInt32.max << UInt32(32 - min(32, routes[i].prefixLength))
                return IPv4Route(network: d.value & mask, mask: mask, prefixLength: routes[i].prefixLength, route: i)
            }.sorted { ($0.prefixLength, $0.route) > ($1.prefixLength, $1.route) }
        }
    }
    /// The IPv4 routes as masks, in match order: a new connection's route
    /// lookup is a few compares.
    var routes4: [IPv4Route] = []
    /// Per route with a gateway, the gateway's neighbour slot once known:
    /// a new connection from behind a router then costs a route match, not
    /// a hash of the neighbour table. (Slots are never reused.)
    var gatewaySlots: [UInt32] = []
    var markRules: [FirewallMarkRule] = []
    var timeouts: [UInt64] = TimeoutTable().milliseconds
    var expireNoDestination = false
    var sloppySCTP = false
    var sloppyTCP = false
    var sloppyNAT = false
    /// `--kernel-forwarding`: the general path asks the I/O to hand connections to the kernel and to take them back.
    var kernelForwarding = false
    var kernelFlowRequests = KernelFlowRequests()
    /// Moves whenever a connection's kernel forwarding rules may have
    /// changed without its state changing: a configuration applied, a next
    /// hop's MAC learned. While it stands, the I/O's sweep need not rebuild them.
    public internal(set) var rulesGeneration: UInt64 = 0
    var ftpPorts: [UInt16] = []
    /// Bit `port % 64` of every FTP helper port: most connections are told
    /// from FTP's by one test, without reading their service.
    var ftpPortBits: UInt64 = 0
    var expireQuiescentTemplate = false
    /// Totals at 0, then one slot per service and per real server: one flat
    /// array, so that counting a packet is one uniqueness check.
    var counters = [Counters()]
    public var totals: Counters { counters[0] }
    public var drops = [UInt64](repeating: 0, count: DropReason.all.count)
    /// TOA insertions that did not fit; the packet went on without TOA.
    public var toaFailures: UInt64 = 0
    public var toaInserted: UInt64 = 0
    /// PROXY protocol headers sent (a retransmitted one again).
    public var proxyHeaders: UInt64 = 0
    /// ICMP errors lvsd generated (fragmentation needed, time exceeded).
    public var icmpSent: UInt64 = 0
    /// SYN-ACKs with a cookie the SYN proxy sent.
    public var synproxyCookies: UInt64 = 0
    /// TCP super-frames (GRO, TSO) forwarded whole, as GSO, and those cut
    /// into their segments in userspace first (counted by the I/O).
    public var superFramesWhole: UInt64 = 0
    public var superFramesCut: UInt64 = 0
    /// Packets the kernel forwarded of connections lvsd handed down (`--kernel-forwarding`).
    public var kernelForwarded: UInt64 = 0
    /// While a super-frame goes through whole: how much longer it is than
    /// its longest segment, for the checks of a segment against the MTU.
    var superFrameExcess = 0
    var held = HeldFrames()
    var nextIdentification: UInt16 = 1
    /// A sync master: connections are queued for the sync daemon.
    var syncing = false
    /// The tables write their state file's slots.
    var journaling = false
    /// `syncing || journaling`, in one load for the packet paths.
    var noting = false
    var syncQueue = SyncQueue()
    /// See `Director.setOwnership`.
    var extraOwned: Set<IPAddress> = []
    var standby: Set<IPAddress> = []
    var passiveCheck = true
    var passiveEvents = PassiveEvents()
    /// Set only while a traced packet is processed.
    var tracing = false
    var traceNote = TraceNote()

    /// Counts a packet for the totals, its service and its real server, as
    /// `ip_vs_in_stats`/`ip_vs_out_stats` do.
    @inline(__always)
    mutating func count(inbound: Bool, service: Int, destination: Int, bytes: UInt64) {
        var c = counters.mutableSpan
        c.count(inbound: inbound, service: service, destination: destination, bytes: bytes)
    }

    /// The segments after the first of a super-frame forwarded whole (the
    /// first was counted as any frame is), and the headers each repeats.
    mutating func countFurtherSegments(inbound: Bool, service: Int, destination: Int, segments: UInt64, bytes: UInt64) {
        func add(_ c: inout Counters) {
            if inbound {
                c.inPackets &+= segments
                c.inBytes &+= bytes
            } else {
                c.outPackets &+= segments
                c.outBytes &+= bytes
            }
        }
        add(&counters[0])
        add(&counters[service])
        add(&counters[destination])
    }

    mutating func countConnection(service: Int, destination: Int) {
        var c = counters.mutableSpan
        c[0].connections &+= 1
        c[service].connections &+= 1
        c[destination].connections &+= 1
    }

    @inline(__always)
    func counterSlots(service s: Int, destination d: Int) -> (Int, Int) {
        (services[s].counterSlot, Int(services[s].destinations[d].counterSlot))
    }

    mutating func newCounterSlot() -> Int {
        counters.append(Counters())
        return counters.count - 1
    }

    /// A next hop's MAC, learned (netlink, ARP, ND, or the frame a flow came in).
    mutating func resolve(_ slot: Int, mac: MACAddress) {
        if !neighbours[slot].resolved || neighbours[slot].mac != mac { rulesGeneration &+= 1 }
        neighbours[slot].mac = mac
        neighbours[slot].resolved = true
        nextHops[slot] = NextHop(neighbours[slot])
    }

    mutating func drop(_ reason: DropReason) -> Verdict {
        drops[reason.index] &+= 1
        return .drop(reason)
    }

    func interface(_ index: UInt16) -> InterfaceConfiguration? {
        interfaces.first { $0.index == index }
    }

    struct IPv4Route: Sendable {
        var network: UInt32
        var mask: UInt32
        var prefixLength: Int
        var route: Int
    }

    /// Longest-prefix match: the route's index.
    func route(for address: IPAddress) -> Int? {
        if case .v4(let a) = address {
            for r in routes4 where a.value & r.mask == r.network { return r.route }
            return nil
        }
        var best: Int? = nil
        for (i, r) in routes.enumerated() where r.destination.isIPv6 == address.isIPv6 && r.prefixLength >= (best.map { routes[$0].prefixLength } ?? -1) {
            if prefixMatches(address, r.destination, r.prefixLength) { best = i }
        }
        return best
    }

    /// The next hop (the gateway or the address itself) and its interface.
    func nextHop(for address: IPAddress) -> (IPAddress, UInt16)? {
        route(for: address).map { (routes[$0].gateway ?? address, routes[$0].interface) }
    }

    /// The neighbour slot for the next hop towards `address`.
    mutating func neighbourSlot(for address: IPAddress) -> UInt32? {
        guard let r = route(for: address) else { return nil }
        if gatewaySlots[r] != .max { return gatewaySlots[r] }
        return neighbourSlot(route: r, address: address)
    }

    /// The first connection through a gateway, or one to an on-link host.
    @inline(never)
    mutating func neighbourSlot(route r: Int, address: IPAddress) -> UInt32 {
        let hop = routes[r].gateway ?? address
        let iface = routes[r].interface
        let s: UInt32
        if let known = neighbourByAddress[hop] {
            s = known
        } else {
            s = UInt32(neighbours.count)
            neighbours.append(
                Neighbour(
                    address: hop, interface: iface, mac: .zero, resolved: false,
                    sourceMAC: interface(iface)?.mac ?? .zero))
            nextHops.append(NextHop(neighbours[neighbours.count - 1]))
            neighbourByAddress[hop] = s
        }
        if routes[r].gateway != nil { gatewaySlots[r] = s }
        return s
    }
}

func prefixMatches(_ a: IPAddress, _ prefix: IPAddress, _ length: Int) -> Bool {
    switch (a, prefix) {
    case (.v4(let x), .v4(let y)): x.masked(prefixLength: length) == y.masked(prefixLength: length)
    case (.v6(let x), .v6(let y)): x.masked(prefixLength: length) == y.masked(prefixLength: length)
    default: false
    }
}

/// The per-worker pipeline: frames and a clock in, rewritten frames, verdicts
/// and counters out. Deterministic; the data plane runs one per worker.
public struct Director: Sendable {
    public var shared = DirectorShared()
    public var v4: FamilyPlane<IPv4Address>
    public var v6: FamilyPlane<IPv6Address>
    /// Entries the expiry sweep examines per `tick`.
    public var sweepBudget = 4096
    /// Off only where the fast path is checked against the general one
    /// (tests, lvs-fuzz-paths): forwarding must not depend on it.
    public var fastPathEnabled = true
    /// Live connections above which a fast-path run prefetches its entries
    /// (64 bytes each: 4 MiB, about what a cache holds); tests and the
    /// prefetch benchmark change it.
    public var prefetchAbove = 1 << 16
    /// Armed by `lvsadm trace`; nil costs one check per batch.
    var traceSession: TraceSession? = nil

    /// rr's and wrr's positions, shared with the other workers' directors (nil: this director's own).
    let schedulerPositions: SharedSchedulerPositions?

    public init(
        configuration: DirectorConfiguration = .init(), capacity: Int = 65536, ipv6Capacity: Int? = nil, worker: Int = 0, workers: Int = 1,
        schedulerPositions: SharedSchedulerPositions? = nil
    ) {
        self.schedulerPositions = schedulerPositions
        v4 = FamilyPlane(capacity: capacity, worker: worker, workers: workers)
        v6 = FamilyPlane(capacity: ipv6Capacity ?? max(1024, capacity / 4), worker: worker, workers: workers)
        apply(configuration)
    }

    // MARK: configuration

    /// Takes a new configuration snapshot (between batches). Counters,
    /// connections and scheduler state of unchanged servers carry over.
    public mutating func apply(_ c: DirectorConfiguration) {
        shared.rulesGeneration &+= 1
        shared.interfaces = c.interfaces
        shared.routes = c.routes
        shared.markRules = c.markRules
        shared.timeouts = c.timeouts.milliseconds
        shared.expireNoDestination = c.expireNoDestinationConnections
        shared.sloppySCTP = c.sloppySCTP
        shared.sloppyTCP = c.sloppyTCP
        shared.sloppyNAT = c.sloppyNAT
        shared.kernelForwarding = c.kernelForwarding
        shared.ftpPorts = c.ftpPorts
        shared.ftpPortBits = c.ftpPorts.reduce(0) { $0 | 1 << UInt64($1 % 64) }
        shared.expireQuiescentTemplate = c.expireQuiescentTemplate
        for k in shared.neighbours.indices {
            shared.neighbours[k].sourceMAC = shared.interface(shared.neighbours[k].interface)?.mac ?? .zero
            shared.nextHops[k] = NextHop(shared.neighbours[k])
        }
        var wanted = Set<ServiceKey>()
        for svc in c.services {
            wanted.insert(svc.key)
            if let i = shared.serviceByKey[svc.key] {
                if shared.services[i].deleted {
                    shared.services[i].deleted = false
                    zeroCounters(svc.key)
                }
                update(service: i, svc)
            } else {
                let i = shared.services.count
                shared.services.append(
                    ServiceRuntime(configuration: svc, destinations: [], order: [], scheduler: scheduler(for: svc), counterSlot: shared.newCounterSlot()))
                shared.serviceByKey[svc.key] = i
                update(service: i, svc)
            }
        }
        // A deleted service keeps its slot without servers: its connections
        // drain as the kernel's do after -D (dropped until they expire).
        for (key, i) in shared.serviceByKey where !wanted.contains(key) {
            var rt = shared.services[i]
            rt.deleted = true
            rt.configuration.realServers = []
            rt.configuration.localAddresses = []
            shared.services[i] = rt
            update(service: i, rt.configuration)
        }
        shared.markServices = [:]
        for (key, i) in shared.serviceByKey {
            let rt = shared.services[i].configuration
            let tcp: Bool
            switch key {
            case .address(let proto, _, let port): tcp = proto == .tcp && (port == 0 || c.ftpPorts.contains(port))
            case .firewallMark: tcp = true
            }
            shared.services[i].ftp = tcp && !c.ftpPorts.isEmpty && rt.proxyProtocol == nil && !rt.synproxy
        }
        for (key, i) in shared.serviceByKey where wanted.contains(key) {
            if case .firewallMark(let m, let v6) = key { shared.markServices[MarkServiceKey(mark: m, ipv6: v6)] = i }
        }
        v4.rebuild(shared: &shared, wanted: wanted)
        v6.rebuild(shared: &shared, wanted: wanted)
        shared.rebuildTargets()
    }

    func scheduler(for svc: VirtualServiceConfiguration) -> SchedulerInstance {
        var s = SchedulerInstance(name: svc.scheduler, flags: svc.schedulerFlags) ?? .wlc(.init(flags: []))
        if let schedulerPositions { s.share(schedulerPositions.position(for: svc.key)) }
        return s
    }

    mutating func update(service i: Int, _ svc: VirtualServiceConfiguration) {
        var rt = shared.services[i]
        if rt.configuration.scheduler != svc.scheduler || rt.configuration.schedulerFlags != svc.schedulerFlags {
            rt.scheduler = scheduler(for: svc)
        }
        rt.configuration = svc
        var present = Set<Int>()
        for rs in svc.realServers {
            let key = RealServerKey(address: rs.address, port: rs.port)
            if let slot = rt.slotByKey[key] {
                let before = rt.destinations[slot]
                rt.destinations[slot].update(rs)
                if before.removed {
                    // Revived from the trash: back at the list head, as the kernel re-adds it.
                    rt.order.insert(slot, at: 0)
                }
                present.insert(slot)
            } else {
                let slot = rt.destinations.count
                var d = DestinationState(rs)
                d.counterSlot = UInt32(shared.newCounterSlot())
                if let n = shared.neighbourSlot(for: rs.address) {
                    d.neighbour = n
                    d.interface = shared.neighbours[Int(n)].interface
                } else {
                    d.neighbour = UInt32.max
                }
                rt.destinations.append(d)
                rt.slotByKey[key] = slot
                rt.order.insert(slot, at: 0)
                present.insert(slot)
            }
        }
        for slot in rt.destinations.indices where !present.contains(slot) && !rt.destinations[slot].removed {
            rt.destinations[slot].removed = true
            rt.order.removeAll { $0 == slot }
        }
        for slot in rt.destinations.indices where rt.destinations[slot].neighbour == UInt32.max {
            if let n = shared.neighbourSlot(for: rt.destinations[slot].address) {
                rt.destinations[slot].neighbour = n
                rt.destinations[slot].interface = shared.neighbours[Int(n)].interface
            }
        }
        rt.scheduler.destinationsChanged(order: rt.order, dests: rt.destinations)
        shared.services[i] = rt
    }

    /// Records a neighbour's MAC (from netlink or ARP/ND).
    public mutating func learnNeighbour(_ address: IPAddress, mac: MACAddress) {
        // Only a next hop's own MAC: an address behind a gateway must not
        // overwrite the gateway's slot.
        var slot = shared.neighbourByAddress[address]
        if slot == nil, let (hop, _) = shared.nextHop(for: address), hop == address { slot = shared.neighbourSlot(for: address) }
        if let s = slot { shared.resolve(Int(s), mac: mac) }
    }

    public func neighbour(for address: IPAddress) -> Neighbour? {
        shared.neighbourByAddress[address].map { shared.neighbours[Int($0)] }
    }

    // MARK: the data path

    /// Processes one frame occupying `frame` within `buffer` by the general
    /// path (the fast path runs over batches), rewriting it in place (it may
    /// grow into the headroom before it).
    public mutating func process(_ buffer: inout MutableSpan<UInt8>, frame: inout FrameBounds, interface: UInt16, now: UInt64) -> Verdict {
        var p: ParsedPacket
        do {
            p = try PacketParser.parse(buffer.span, start: frame.start, end: frame.end)
        } catch {
            return shared.drop(.malformed(error))
        }
        switch p.etherType {
        case EtherType.ipv4:
            return v4.process(&buffer, &frame, &p, interface: interface, now: now, shared: &shared)
        case EtherType.ipv6:
            return v6.process(&buffer, &frame, &p, interface: interface, now: now, shared: &shared)
        default:
            return handleARP(&buffer, frame: frame, p, interface: interface)
        }
    }

    /// Processes a TCP super-frame (GRO's, or a TSO sender's) that the wire
    /// carries as segments of `segmentSize` payload bytes, whole, when its
    /// connection allows it (`FamilyPlane.forwardWhole`). Nil, having changed
    /// nothing, when it must be cut into segments first (or while a trace
    /// runs, which shows every segment). The caller makes its checksum
    /// partial again and sends it as GSO.
    public mutating func processWhole(_ buffer: inout MutableSpan<UInt8>, frame: inout FrameBounds, interface: UInt16, segmentSize: Int, now: UInt64)
        -> Verdict?
    {
        guard traceSession == nil, segmentSize > 0, var p = try? PacketParser.parse(buffer.span, start: frame.start, end: frame.end) else { return nil }
        let segments = (p.payloadLength &+ segmentSize &- 1) / segmentSize
        guard segments > 1 else { return nil }
        switch p.etherType {
        case EtherType.ipv4:
            return v4.forwardWhole(&buffer, &frame, &p, segments: segments, segmentSize: segmentSize, interface: interface, now: now, shared: &shared)
        case EtherType.ipv6:
            return v6.forwardWhole(&buffer, &frame, &p, segments: segments, segmentSize: segmentSize, interface: interface, now: now, shared: &shared)
        default: return nil
        }
    }

    /// Processes every frame of a batch; verdicts land in the batch. Runs of
    /// frames the fast path takes alternate with single frames it leaves to
    /// the general path, in order. Never inlined: one call per batch, and
    /// the unit `scripts/bench-instructions` counts.
    @inline(never)
    public mutating func process(_ batch: FrameBatch, now: UInt64) {
        if traceSession == nil {
            let slotSize = batch.slotSize
            batch.withFrames { arena, ds in
                var k = 0
                while k < ds.count {
                    if fastPathEnabled && Self.fastCandidate(&arena, ds[k].bounds, slot: k, slotSize: slotSize) {
                        k = fastRun(&arena, &ds, from: k, slotSize: slotSize, now: now)
                        if k == ds.count { break }
                    }
                    var slot = arena._mutatingExtracting(k &* slotSize..<(k &+ 1) &* slotSize)
                    var bounds = ds[k].bounds
                    ds[k].verdict = process(&slot, frame: &bounds, interface: ds[k].interface, now: now)
                    ds[k].bounds = bounds
                    k &+= 1
                }
            }
        } else {
            processTraced(batch, now: now)
        }
        if shared.held.readyCount > 0 { releaseHeld(into: batch, now: now) }
    }

    /// Held frames whose connection is ready go through the pipeline again,
    /// into the batch's free slots (the rest wait for the next batch).
    mutating func releaseHeld(into batch: FrameBatch, now: UInt64) {
        while batch.count < batch.capacity, let k = shared.held.nextReady() {
            _ = batch.emit { span, bounds in
                guard let (length, interface) = shared.held.take(k, into: &span, at: bounds.start) else { return nil }
                bounds.length = length
                if case .transmit(let out) = process(&span, frame: &bounds, interface: interface, now: now) { return out }
                return nil
            }
        }
    }

    /// ARP for owned IPv4 addresses is answered in place; senders that are
    /// known next hops are learned.
    mutating func handleARP(_ b: inout MutableSpan<UInt8>, frame: FrameBounds, _ p: ParsedPacket, interface: UInt16) -> Verdict {
        let a = p.l3Offset
        let op = b.be16(at: a &+ 6)
        let senderMAC = MACAddress(b.span, at: a &+ 8)
        let sender = IPv4Address(b.span, at: a &+ 14)
        let target = IPv4Address(b.span, at: a &+ 24)
        if let slot = shared.neighbourByAddress[.v4(sender)] { shared.resolve(Int(slot), mac: senderMAC) }
        guard op == 1, v4.owned.contains(target), let iface = shared.interface(interface) else { return .pass }
        b.setBE16(2, at: a &+ 6)
        iface.mac.store(&b, at: a &+ 8)
        target.store(&b, at: a &+ 14)
        senderMAC.store(&b, at: a &+ 18)
        sender.store(&b, at: a &+ 24)
        PacketRewriter.setMACs(&b, frameStart: frame.start, destination: senderMAC, source: iface.mac)
        return .transmit(interface: interface)
    }

    /// Asks for the next unresolved next hop, at most once a second each:
    /// writes an ARP request or a neighbour solicitation at `frame.start` and
    /// returns the interface to send it on, or nil when nothing is due.
    public mutating func solicitNextHop(_ b: inout MutableSpan<UInt8>, frame: inout FrameBounds, now: UInt64) -> UInt16? {
        for k in shared.neighbours.indices where !shared.neighbours[k].resolved && now &- shared.neighbours[k].lastSolicited >= 1000 {
            let n = shared.neighbours[k]
            guard let iface = shared.interface(n.interface) else { continue }
            switch n.address {
            case .v4(let target):
                guard let dip = iface.ipv4, frame.start &+ 42 <= b.count else { continue }
                ARPWriter.write(
                    &b, at: frame.start, operation: 1, senderMAC: iface.mac, sender: dip, targetMAC: .zero, target: target,
                    ethernetDestination: .broadcast)
                frame.length = 42
            case .v6(let target):
                guard let dip = iface.ipv6, frame.start &+ 86 <= b.count else { continue }
                NeighbourDiscovery.writeSolicitation(&b, at: frame.start, sourceMAC: iface.mac, source: dip, target: target)
                frame.length = 86
            }
            shared.neighbours[k].lastSolicited = now
            return n.interface
        }
        return nil
    }

    /// A gratuitous ARP (IPv4) or an unsolicited neighbour advertisement
    /// (IPv6) for an owned address, announced when it is added.
    public func announce(_ b: inout MutableSpan<UInt8>, frame: inout FrameBounds, address: IPAddress, interface: UInt16) -> Bool {
        guard let iface = shared.interface(interface) else { return false }
        switch address {
        case .v4(let a):
            guard frame.start &+ 42 <= b.count else { return false }
            ARPWriter.write(&b, at: frame.start, operation: 1, senderMAC: iface.mac, sender: a, targetMAC: .zero, target: a, ethernetDestination: .broadcast)
            frame.length = 42
        case .v6(let a):
            guard frame.start &+ 86 <= b.count else { return false }
            NeighbourDiscovery.writeAdvertisement(&b, at: frame.start, sourceMAC: iface.mac, target: a)
            frame.length = 86
        }
        return true
    }

    /// Addresses lvsd answers for: VIPs and FULLNAT local addresses.
    public var ownedAddresses: [IPAddress] { v4.owned.map { .v4($0) } + v6.owned.map { .v6($0) } }

    /// What the kernel-side programs (XDP, steering, the nftables filter)
    /// must know of the configuration.
    public var ownership: Ownership {
        var o = Ownership(owned: ownedAddresses, replySources: replySources)
        for rt in shared.services where !rt.deleted {
            o.localAddresses.formUnion(rt.configuration.localAddresses)
            guard rt.configuration.persistence != nil else { continue }
            let mask = rt.configuration.persistenceNetmask
            if rt.configuration.key.isIPv6 {
                o.clientPrefix6 = min(o.clientPrefix6 ?? 128, mask)
            } else {
                o.clientPrefix4 = min(o.clientPrefix4 ?? 32, mask)
            }
        }
        return o
    }

    /// NAT real servers, whose replies come back through lvsd to be
    /// rewritten although they are not addressed to an owned address.
    public var replySources: Set<IPAddress> {
        var found: Set<IPAddress> = []
        for rt in shared.services where !rt.deleted {
            for d in rt.destinations where d.method == .nat && !d.removed { found.insert(d.address) }
        }
        return found
    }

    /// Runs the expiry sweep; call it between batches.
    public mutating func tick(now: UInt64) {
        shared.held.expire(now: now)
        v4.sweep(budget: sweepBudget, now: now, shared: &shared)
        v6.sweep(budget: sweepBudget, now: now, shared: &shared)
    }

    /// Counter of a drop reason.
    public func drops(_ reason: DropReason) -> UInt64 { shared.drops[reason.index] }

    /// Frames the I/O lost (they never reached `process`), counted with the engine's own.
    public mutating func countDrops(_ reason: DropReason, _ frames: UInt64) {
        shared.drops[reason.index] &+= frames
    }

    /// Counters another lvsd kept (a handover), added to this one's: the
    /// totals, a service's, or one of its real servers'.
    public mutating func carry(_ c: Counters, service key: ServiceKey?, server: (address: IPAddress, port: UInt16)? = nil) {
        guard let key else {
            shared.counters[0] = shared.counters[0] + c
            return
        }
        guard let i = shared.serviceByKey[key] else { return }
        guard let server else {
            shared.counters[shared.services[i].counterSlot] = shared.counters[shared.services[i].counterSlot] + c
            return
        }
        guard let k = shared.services[i].slotByKey[RealServerKey(address: server.address, port: server.port)] else { return }
        let slot = Int(shared.services[i].destinations[k].counterSlot)
        shared.counters[slot] = shared.counters[slot] + c
    }

    /// `-Z`: zeroes one service's counters and its servers', or every counter.
    public mutating func zeroCounters(_ key: ServiceKey?) {
        guard let key else {
            for i in shared.counters.indices { shared.counters[i] = Counters() }
            return
        }
        guard let i = shared.serviceByKey[key] else { return }
        shared.counters[shared.services[i].counterSlot] = Counters()
        for d in shared.services[i].destinations { shared.counters[Int(d.counterSlot)] = Counters() }
    }

    /// A snapshot of a service with its counters filled in.
    public func service(_ key: ServiceKey) -> ServiceRuntime? {
        guard let i = shared.serviceByKey[key] else { return nil }
        var rt = shared.services[i]
        rt.counters = shared.counters[rt.counterSlot]
        for d in rt.destinations.indices { rt.destinations[d].counters = shared.counters[Int(rt.destinations[d].counterSlot)] }
        return rt
    }

}

extension MutableSpan where Element == Counters {
    /// The counting itself, on the span the fast path holds for a run.
    @inline(__always)
    mutating func count(inbound: Bool, service: Int, destination: Int, bytes: UInt64) {
        if inbound {
            self[0].inPackets &+= 1
            self[0].inBytes &+= bytes
            self[service].inPackets &+= 1
            self[service].inBytes &+= bytes
            self[destination].inPackets &+= 1
            self[destination].inBytes &+= bytes
        } else {
            self[0].outPackets &+= 1
            self[0].outBytes &+= bytes
            self[service].outPackets &+= 1
            self[service].outBytes &+= bytes
            self[destination].outPackets &+= 1
            self[destination].outBytes &+= bytes
        }
    }
}
