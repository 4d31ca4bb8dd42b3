import LVSPacket

/// `IP_VS_CONN_F_*` as the sync protocol carries them. The forwarding
/// method is `ForwardingMethod.rawValue` (FULLNAT is 5, as in DPVS).
public enum SyncConnectionFlags {
    public static let forwardMask: UInt32 = 0x0007
    public static let sync: UInt32 = 0x0020
    public static let noOutput: UInt32 = 0x0080
    public static let inactive: UInt32 = 0x0100
    public static let sequenceMask: UInt32 = 0x0600
    /// `IP_VS_CONN_F_OUT_SEQ`, `IP_VS_CONN_F_IN_SEQ`: the record carries sequence data.
    public static let replySequence: UInt32 = 0x0200
    public static let requestSequence: UInt32 = 0x0400
    public static let noClientPort: UInt32 = 0x0800
    public static let template: UInt32 = 0x1000
    /// What a backup takes from a message (`IP_VS_CONN_F_BACKUP_MASK`).
    public static let backupMask: UInt32 = forwardMask | noOutput | inactive | sequenceMask | noClientPort | template
}

/// One connection or persistence template as a sync message carries it
/// (`struct ip_vs_sync_v4`/`v6`), plus FULLNAT's local address and port,
/// which only lvsd sends.
public struct SyncRecord: Sendable, Hashable {
    /// 0 (`IPPROTO_IP`) for a firewall-mark template.
    public var proto: UInt8
    public var flags: UInt32
    /// The kernel's state number (`IP_VS_TCP_S_*`; 0 for UDP and templates).
    public var state: UInt16
    public var clientPort: UInt16
    public var virtualPort: UInt16
    public var realPort: UInt16
    public var firewallMark: UInt32
    /// Seconds: the state's timeout, or the persistence timeout of a template.
    public var timeout: UInt32
    public var client: IPAddress
    public var virtual: IPAddress
    public var real: IPAddress
    public var local: IPAddress?
    public var localPort: UInt16
    /// Sequence shifts (`IPVS_OPT_SEQ_DATA`), present with the flags `requestSequence` or `replySequence`.
    public var sequence: SequenceShifts?

    public init(
        proto: UInt8, flags: UInt32, state: UInt16, clientPort: UInt16, virtualPort: UInt16, realPort: UInt16,
        firewallMark: UInt32 = 0, timeout: UInt32, client: IPAddress, virtual: IPAddress, real: IPAddress,
        local: IPAddress? = nil, localPort: UInt16 = 0, sequence: SequenceShifts? = nil
    ) {
        self.proto = proto
        self.flags = flags
        self.state = state
        self.clientPort = clientPort
        self.virtualPort = virtualPort
        self.realPort = realPort
        self.firewallMark = firewallMark
        self.timeout = timeout
        self.client = client
        self.virtual = virtual
        self.real = real
        self.local = local
        self.localPort = localPort
        self.sequence = sequence
    }

    public var isTemplate: Bool { flags & SyncConnectionFlags.template != 0 }
}

/// What a backup did with one received record.
public enum SyncOutcome: Sendable, Equatable {
    case created, updated
    /// No service for its virtual address, port or mark here.
    case noService
    /// The service here has no such real server.
    case noServer
    /// An unknown protocol, state or address family mix.
    case invalid
    case tableFull
}

/// Records waiting for the sync daemon, in a ring allocated once when
/// syncing starts: the packet that produces one never allocates. When the
/// daemon falls behind, new records are counted and dropped (a later packet
/// of the same connection sends it again).
struct SyncQueue: Sendable {
    var records: [SyncRecord] = []
    var head = 0
    var count = 0
    var overflows: UInt64 = 0

    mutating func reserve(_ capacity: Int) {
        guard records.count < capacity else { return }
        let any = IPAddress.v4(.zero)
        records = [SyncRecord](
            repeating: SyncRecord(
                proto: 0, flags: 0, state: 0, clientPort: 0, virtualPort: 0, realPort: 0, timeout: 0,
                client: any, virtual: any, real: any), count: capacity)
        head = 0
        count = 0
    }

    mutating func push(_ r: SyncRecord) {
        guard count < records.count else {
            overflows &+= 1
            return
        }
        var tail = head &+ count
        if tail >= records.count { tail &-= records.count }
        records[tail] = r
        count &+= 1
    }

    mutating func pop() -> SyncRecord? {
        guard count > 0 else { return nil }
        let r = records[head]
        head = head &+ 1 == records.count ? 0 : head &+ 1
        count &-= 1
        return r
    }
}

extension Director {
    /// Records a master queues before the sync daemon takes them.
    public static var syncQueueCapacity: Int { 8192 }

    /// While on, connections are queued for the sync daemon as the kernel's
    /// master does (`ip_vs_sync_conn`).
    public var syncing: Bool { shared.syncing }

    public mutating func setSyncing(_ on: Bool) {
        if on { shared.syncQueue.reserve(Self.syncQueueCapacity) }
        shared.syncing = on
        shared.noting = on || shared.journaling
        if !on { shared.syncQueue.count = 0 }
    }

    /// Records lost because the daemon did not take them in time.
    public var syncOverflows: UInt64 { shared.syncQueue.overflows }

    /// Hands over the queued records, oldest first.
    public mutating func takeSyncRecords(_ body: (SyncRecord) -> Void) {
        while let r = shared.syncQueue.pop() { body(r) }
    }

    /// A backup's received record: the connection is created or updated as
    /// `ip_vs_proc_conn` does, bound to this director's server of the same
    /// address and port.
    public mutating func applySync(_ r: SyncRecord, now: UInt64) -> SyncOutcome {
        switch r.client {
        case .v4: v4.applySync(r, now: now, shared: &shared)
        case .v6: v6.applySync(r, now: now, shared: &shared)
        }
    }

    /// Addresses owned besides the services' VIPs and LIPs (VRRP's
    /// `virtual_ipaddress`), and owned ones left alone while a VRRP instance
    /// holding them is not master: not answered for, not announced.
    /// The addresses a VRRP backup holds back (see `setOwnership`).
    public var standbyAddresses: Set<IPAddress> { shared.standby }

    public mutating func setOwnership(extra: Set<IPAddress>, standby: Set<IPAddress>) {
        guard extra != shared.extraOwned || standby != shared.standby else { return }
        shared.extraOwned = extra
        shared.standby = standby
        let wanted = Set(shared.serviceByKey.filter { !shared.services[$0.value].deleted }.keys)
        v4.rebuild(shared: &shared, wanted: wanted)
        v6.rebuild(shared: &shared, wanted: wanted)
    }
}

extension FamilyPlane {

    /// `ip_vs_sync_conn_needed` with `sync_refresh_period` 0: TCP only in
    /// ES, FW, CL, CW and TW, SCTP only in ESTABLISHED, the three SHUTDOWN
    /// states and CLOSED; a change into any of them but ES is sent at
    /// once; otherwise the 3rd, 53rd, 103rd … client packet sends it. A
    /// template goes along with its connection (the kernel sends it with
    /// every packet unless `sync_refresh_period` is set). One-packet
    /// connections are not sent; SYN-proxied ones only go to the state file
    /// (a backup's real server never saw their handshake). `due`: a count
    /// the kernel forwarding's packets went past (`Director.kernelForwarded`).
    mutating func noteSync(_ i: Int, stateChanged: Bool, now: UInt64, shared: inout DirectorShared, due: Bool = false) {
        let c = table[i]
        guard !c.flags.contains(.unhashed), !c.flags.contains(.synproxyPending) else { return }
        if c.proto == IPProtocolNumber.tcp || c.proto == IPProtocolNumber.sctp {
            switch c.state {
            case .established, .finWait, .close, .closeWait, .timeWait: break
            case .sctpEstablished, .sctpShutdownSent, .sctpShutdownReceived, .sctpShutdownAckSent, .sctpClosed: break
            default: return
            }
            if !(stateChanged && c.state != .established && c.state != .sctpEstablished) && !due && !Forwarding.syncDue(inPackets: c.inPackets) { return }
        } else if !due && !Forwarding.syncDue(inPackets: c.inPackets) {
            return
        }
        let template = c.controller != 0 && table[Int(c.controller) &- 1].flags.contains(.template) ? Int(c.controller) &- 1 : nil
        let sync = shared.syncing && !c.flags.contains(.synproxy)
        if let t = template { note(t, sync: sync, now: now, shared: &shared) }
        note(i, sync: sync, now: now, shared: &shared)
    }

    /// Entry `i` for the sync daemon (`sync`) and the state file.
    mutating func note(_ i: Int, sync: Bool, now: UInt64, shared: inout DirectorShared) {
        let c = table[i]
        let sequence = c.flags.rawValue & ConnectionFlags.shifted != 0 ? table.shifts[i] : nil
        let r = Self.syncRecord(c, sequence: sequence, shared: shared)
        if sync { shared.syncQueue.push(r) }
        let synproxy = c.flags.contains(.synproxy)
        table.journal?.write(i, JournalRecord(sync: r, synproxySequence: synproxy ? c.synproxySequence : nil, writtenAt: now))
    }

    /// Static: as a method, each call copied the whole plane to pass `self`.
    static func syncRecord(_ c: Connection<A>, sequence: SequenceShifts?, shared: borrowing DirectorShared) -> SyncRecord {
        // Field by field: a copy of the service's runtime would retain its arrays on the packet path.
        let s = Int(c.service)
        let method = c.method
        let template = c.flags.contains(.template)
        var flags = UInt32(method.rawValue)
        if template { flags |= SyncConnectionFlags.template }
        if c.flags.contains(.noOutput) { flags |= SyncConnectionFlags.noOutput }
        if c.flags.contains(.inactive) { flags |= SyncConnectionFlags.inactive }
        if c.flags.contains(.requestShifted) { flags |= SyncConnectionFlags.requestSequence }
        if c.flags.contains(.replyShifted) { flags |= SyncConnectionFlags.replySequence }
        var mark: UInt32 = 0
        if case .firewallMark(let m, _) = shared.services[s].configuration.key { mark = m }
        let timeout = template ? shared.services[s].configuration.persistence ?? 0 : UInt32(shared.timeouts[Int(c.state.rawValue)] / 1000)
        let fullNAT = method == .fullNAT && !template
        return SyncRecord(
            proto: c.proto == 0xFF ? 0 : c.proto, flags: flags,
            state: template ? 0 : c.state.kernelNumber,
            clientPort: c.clientPort, virtualPort: c.virtualPort, realPort: c.realPort, firewallMark: mark, timeout: timeout,
            client: c.client.ipAddress, virtual: c.virtual.ipAddress, real: c.real.ipAddress,
            local: fullNAT ? c.local.ipAddress : nil, localPort: fullNAT ? c.localPort : 0,
            sequence: sequence)
    }

    mutating func applySync(_ r: SyncRecord, now: UInt64, shared: inout DirectorShared) -> SyncOutcome {
        guard let client = Self.address(r.client), let virtual = Self.address(r.virtual), let real = Self.address(r.real) else { return .invalid }
        let template = r.isTemplate
        let markTemplate = template && r.proto == 0
        let proto: UInt8 = markTemplate ? 0xFF : r.proto
        let state: ConnectionState
        if template {
            guard markTemplate || proto == IPProtocolNumber.tcp || proto == IPProtocolNumber.udp || proto == IPProtocolNumber.sctp else { return .invalid }
            state = .none
        } else {
            guard let s = ConnectionState(kernelNumber: r.state, proto: proto) else { return .invalid }
            state = s
        }
        let found: Int?
        if r.firewallMark != 0 {
            found = shared.markServices[MarkServiceKey(mark: r.firewallMark, ipv6: A.byteCount == 16)]
        } else {
            found =
                services[ServiceLookupKey(proto: proto, address: virtual, port: r.virtualPort)]
                ?? services[ServiceLookupKey(proto: proto, address: virtual, port: 0)]
        }
        guard let s = found, !shared.services[s].deleted else { return .noService }
        guard let slot = syncDestination(s, real: real, port: r.realPort, shared: shared) else { return .noServer }
        let method = shared.services[s].destinations[slot].method
        var local = client
        var localPort = r.clientPort
        if method == .fullNAT && !template {
            guard let l = r.local.flatMap(Self.address) else { return .invalid }
            local = l
            localPort = r.localPort
        }
        let seconds = r.timeout != 0 ? UInt64(r.timeout) : template ? 180 : shared.timeouts[Int(state.rawValue)] / 1000
        let expires = now &+ seconds &* 1000
        let inactive = !template && r.flags & SyncConnectionFlags.inactive != 0
        let key = ConnectionTable<A>.key(proto: proto, template: template)

        if let i = table.lookup(.client, proto: key, client, r.clientPort, virtual, r.virtualPort) {
            if template || (Int(table[i].service) == s && Int(table[i].destination) == slot) {
                var c = table[i]
                if !template && c.flags.contains(.inactive) != inactive {
                    shared.services[s].destinations[slot].moveActivity(inactive ? -1 : 1)
                    if inactive { c.flags.insert(.inactive) } else { c.flags.remove(.inactive) }
                }
                c.state = state
                c.expires = expires
                c.inPackets = Forwarding.syncThreshold
                table[i] = c
                if !template { applySequence(r, i, service: s, shared: shared) }
                if table.journal != nil { note(i, sync: false, now: now, shared: &shared) }
                return .updated
            }
            // Bound elsewhere: a late message about the entry already replaced is ignored.
            if inactive { return .updated }
            expire(i, now: now, shared: &shared, force: true)
        }
        guard let index = table.allocate() ?? evict(now: now, shared: &shared) else { return .tableFull }
        var c = Connection<A>()
        c.proto = proto
        c.client = client
        c.clientPort = r.clientPort
        c.virtual = virtual
        c.virtualPort = r.virtualPort
        c.real = real
        c.realPort = r.realPort
        c.service = UInt16(s)
        c.destination = UInt16(slot)
        c.state = state
        c.expires = expires
        c.inPackets = Forwarding.syncThreshold
        if template {
            c.flags = markTemplate ? [.template, .firewallMark] : [.template]
            shared.services[s].destinations[slot].persistentConnections &+= 1
        } else {
            c.flags = inactive ? [.inactive] : []
            if r.firewallMark != 0 { c.flags.insert(.firewallMark) }
            // As the kernel's backup: the method is this director's server's, not the message's.
            c.method = method
            switch method {
            case .nat, .fullNAT:
                c.local = local
                c.localPort = localPort
                c.flags.insert(.replyIndexed)
                if shared.isFTP(s, proto: proto, port: r.virtualPort) { c.flags.insert(.ftpControl) }
                if method == .fullNAT { pools[s]?.reserve(local: local, port: localPort, real: real, realPort: r.realPort) }
                c.replyNeighbour = shared.neighbourSlot(for: r.client) ?? UInt32.max
            case .directRouting, .tunnel, .local:
                c.flags.insert(.noOutput)
            }
            // As the kernel's sync: a connection made from a message binds like any other (thresholds included).
            shared.services[s].destinations[slot].bind(inactive: inactive)
            if let t = syncTemplate(for: c, service: s, shared: shared) {
                c.controller = UInt32(t) &+ 1
                table[t].controller &+= 1
            }
        }
        table[index] = c
        table.insert(index)
        if !template { applySequence(r, index, service: s, shared: shared) }
        if table.journal != nil { note(index, sync: false, now: now, shared: &shared) }
        return .created
    }

    /// A record's sequence shifts. Whether a PROXY header is still to be
    /// acknowledged is not in the kernel's format: a shifted connection of a
    /// PROXY service is taken to wait for it, which costs at most one more
    /// copy of the header (at the same sequence numbers) before the real
    /// server's next acknowledgement says otherwise.
    mutating func applySequence(_ r: SyncRecord, _ i: Int, service s: Int, shared: borrowing DirectorShared) {
        guard let sequence = r.sequence, r.flags & SyncConnectionFlags.sequenceMask != 0, table[i].proto == IPProtocolNumber.tcp else { return }
        table.enableShifts()
        var shifts = sequence
        var flags: ConnectionFlags = []
        if r.flags & SyncConnectionFlags.requestSequence != 0 { flags.insert(.requestShifted) }
        if r.flags & SyncConnectionFlags.replySequence != 0 { flags.insert(.replyShifted) }
        if let pp = shared.services[s].configuration.proxyProtocol, flags.contains(.requestShifted) {
            shifts.proxyVersion = pp.version.rawValue
            shifts.proxyInsecure = pp.insecure
            flags.insert(.proxyHeaderPending)
        }
        shifts.dataConnections = table.shifts[i].dataConnections
        table.shifts[i] = shifts
        table[i].flags.remove([.requestShifted, .replyShifted, .proxyHeaderPending])
        table[i].flags.formUnion(flags)
    }

    /// The server a record names: same address and port, or same address
    /// where the port is not rewritten (port 0, DR, TUN).
    func syncDestination(_ s: Int, real: A, port: UInt16, shared: borrowing DirectorShared) -> Int? {
        let dests = shared.services[s].destinations
        if let k = shared.services[s].slotByKey[RealServerKey(address: real.ipAddress, port: port)], !dests[k].removed { return k }
        return dests.indices.first { k in
            !dests[k].removed && dests[k].address == real.ipAddress && (dests[k].port == 0 || !dests[k].method.seesReplies)
        }
    }

    /// A synced connection's template, if it came first, so that it is
    /// controlled as one scheduled here would be.
    func syncTemplate(for c: Connection<A>, service s: Int, shared: borrowing DirectorShared) -> Int? {
        guard shared.services[s].configuration.persistence != nil else { return nil }
        let t = Self.templateKey(
            shared.services[s].configuration.key, netmask: shared.services[s].configuration.persistenceNetmask,
            proto: c.proto, client: c.client, virtual: c.virtual, virtualPort: c.virtualPort)
        return table.lookup(.client, proto: ConnectionTable<A>.key(proto: t.proto, template: true), t.network, 0, t.address, t.port)
    }
}
