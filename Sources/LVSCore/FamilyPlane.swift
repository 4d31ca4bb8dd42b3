import LVSPacket

/// Fragments after the first follow the connection their first fragment
/// chose; a small direct-mapped cache remembers that choice.
struct FragmentEntry<A: IPAddressProtocol>: Sendable {
    var source: A = .zero
    var destination: A = .zero
    var identification: UInt32 = 0
    var proto: UInt8 = 0
    var connection: Int32 = -1
    var reply = false
    var expires: UInt64 = 0
}

/// One address family's part of a worker: its connection table, services by
/// address, owned addresses and FULLNAT pools.
public struct FamilyPlane<A: IPAddressProtocol>: Sendable {
    public var table: ConnectionTable<A>
    var services = FlatMap<ServiceLookupKey<A>, Int>()
    /// NAT real servers by address and port, with `--sloppy-nat`.
    var natReplyOwners = FlatMap<ServiceLookupKey<A>, NATReplyOwner<A>>()
    /// VIPs and LIPs: answered for ARP/ND, never passed to the kernel.
    public internal(set) var owned: Set<A> = []
    var pools: [Int: FullNATPortPool<A>] = [:]
    var fragments: [FragmentEntry<A>]
    /// Some service forwards by NAT or FULLNAT.
    var servicesSeeReplies = false
    let worker: Int
    let workers: Int
    static var fragmentSlots: Int { 256 }

    init(capacity: Int, worker: Int, workers: Int) {
        table = ConnectionTable(capacity: capacity)
        fragments = [FragmentEntry<A>](repeating: FragmentEntry<A>(), count: Self.fragmentSlots)
        self.worker = worker
        self.workers = workers
    }

    static func address(_ a: IPAddress) -> A? {
        switch a {
        case .v4(let x): x as? A
        case .v6(let x): x as? A
        }
    }

    mutating func rebuild(shared: inout DirectorShared, wanted: Set<ServiceKey>) {
        services = FlatMap()
        owned = []
        servicesSeeReplies = false
        for (key, i) in shared.serviceByKey where wanted.contains(key) {
            let rt = shared.services[i]
            if case .address(let proto, let vip, let port) = key, let a = Self.address(vip) {
                services[ServiceLookupKey(proto: proto.rawValue, address: a, port: port)] = i
                owned.insert(a)
            }
            let lips = rt.configuration.localAddresses.compactMap(Self.address)
            if !lips.isEmpty {
                if pools[i]?.addresses != lips {
                    pools[i] = FullNATPortPool(addresses: lips, worker: worker, workers: workers)
                }
                owned.formUnion(lips)
            }
            if rt.destinations.contains(where: { $0.method.seesReplies }) { servicesSeeReplies = true }
            if (rt.configuration.proxyProtocol != nil || rt.ftp) && rt.configuration.key.isIPv6 == (A.byteCount == 16) { table.enableShifts() }
        }
        ownMarkedDestinations(shared: shared)
        indexNATReplies(shared: shared, wanted: wanted)
        owned.formUnion(shared.extraOwned.compactMap(Self.address))
        owned.subtract(shared.standby.compactMap(Self.address))
    }

    /// The addresses a marking rule sends to a firewall-mark service (its
    /// VIPs): answered for like a service's, up to 256 per rule line (a
    /// larger prefix is served where it is routed to the director, not
    /// claimed on the link).
    mutating func ownMarkedDestinations(shared: borrowing DirectorShared) {
        let v6 = A.byteCount == 16
        for rule in shared.markRules {
            guard let m = rule.mark, shared.markServices[MarkServiceKey(mark: m, ipv6: v6)] != nil, let d = rule.destination,
                d.isIPv6 == v6
            else { continue }
            let hostBits = A.byteCount * 8 - rule.destinationPrefixLength
            guard hostBits <= 8 else { continue }
            for k in 0..<UInt32(1 << hostBits) {
                let a: IPAddress
                switch d {
                case .v4(let x): a = .v4(IPv4Address(x.masked(prefixLength: rule.destinationPrefixLength).value | k))
                case .v6(let x):
                    let n = x.masked(prefixLength: rule.destinationPrefixLength)
                    a = .v6(IPv6Address(high: n.high, low: n.low | UInt64(k)))
                }
                if let o = Self.address(a) { owned.insert(o) }
            }
        }
    }

    /// Packets need a reply-direction lookup only while something can reply.
    var hasReplyTraffic: Bool { servicesSeeReplies || table.replyIndexedCount > 0 }

    // MARK: per packet

    mutating func process(
        _ b: inout MutableSpan<UInt8>, _ f: inout FrameBounds, _ p: inout ParsedPacket,
        interface: UInt16, now: UInt64, shared: inout DirectorShared
    ) -> Verdict {
        let src = A(b.span, at: p.sourceAddressOffset)
        let dst = A(b.span, at: p.destinationAddressOffset)
        if p.fragment == .subsequent {
            return forwardFragment(&b, &f, &p, src: src, dst: dst, now: now, shared: &shared)
        }
        if PacketParser.isICMPError(p) {
            return relateICMPError(&b, &f, &p, now: now, shared: &shared)
        }
        guard p.hasPorts else {
            if p.proto == IPProtocolNumber.icmpv6 && (p.icmpType == 135 || p.icmpType == 136) { learnNeighbour(b.span, f, p, shared: &shared) }
            if p.proto == IPProtocolNumber.icmpv6 && p.icmpType == 135 { return answerNeighbourSolicitation(&b, f, p, interface: interface, shared: &shared) }
            return owned.contains(dst) && p.proto != IPProtocolNumber.icmp && p.proto != IPProtocolNumber.icmpv6 ? shared.drop(.unsupportedProtocol) : .pass
        }
        let proto = p.proto
        if let i = table.lookup(.client, proto: proto, src, p.sourcePort, dst, p.destinationPort) {
            if table[i].expires > now && !Self.isReused(table[i], p) {
                noteTrace(.existing, connection: i, shared: &shared)
                return forwardToReal(&b, &f, &p, i, interface: interface, now: now, shared: &shared, first: false)
            }
            expire(i, now: now, shared: &shared, force: true)
        }
        if hasReplyTraffic, let i = table.lookup(.reply, proto: proto, src, p.sourcePort, dst, p.destinationPort) {
            if table[i].expires > now {
                noteTrace(.reply, connection: i, shared: &shared)
                return forwardToClient(&b, &f, &p, i, now: now, shared: &shared)
            }
            expire(i, now: now, shared: &shared, force: true)
        }
        if table.noClientPortCount > 0, let i = claimExpected(proto, src, p.sourcePort, dst, p.destinationPort) {
            noteTrace(.existing, connection: i, shared: &shared)
            return forwardToReal(&b, &f, &p, i, interface: interface, now: now, shared: &shared, first: false)
        }
        guard let svc = findService(proto: p.proto, src: src, sport: p.sourcePort, dst: dst, dport: p.destinationPort, interface: interface, shared: &shared)
        else {
            if natReplyOwners.count > 0, let v = takeNATReply(&b, &f, &p, src: src, dst: dst, now: now, shared: &shared) { return v }
            return .pass
        }
        if proto == IPProtocolNumber.tcp && shared.services[svc].configuration.synproxy {
            return synproxy(&b, &f, &p, service: svc, src: src, dst: dst, interface: interface, now: now, shared: &shared)
        }
        return newConnection(&b, &f, &p, service: svc, src: src, dst: dst, interface: interface, now: now, shared: &shared)
    }

    /// A TCP super-frame of `segments` wire segments forwarded whole, as one
    /// frame for all of them, when its connection allows it: an established
    /// connection forwarded by NAT, DR or FULLNAT, not SYN-proxied, whose
    /// server is still in service. One state change for the lot; counted as
    /// the wire carries them. Nil, with nothing changed, for anything else (a
    /// tunnel, whose outer header GSO cannot repeat; the proxy's sequence
    /// work; no connection): it is cut into segments first.
    mutating func forwardWhole(
        _ b: inout MutableSpan<UInt8>, _ f: inout FrameBounds, _ p: inout ParsedPacket, segments: Int, segmentSize: Int,
        interface: UInt16, now: UInt64, shared: inout DirectorShared
    ) -> Verdict? {
        guard p.proto == IPProtocolNumber.tcp, p.fragment == .none, p.tcpFlags & (TCPFlags.syn | TCPFlags.rst) == 0, p.ttl > 1 else { return nil }
        let src = A(b.span, at: p.sourceAddressOffset)
        let dst = A(b.span, at: p.destinationAddressOffset)
        let i: Int
        let inbound: Bool
        if let k = table.lookup(.client, proto: p.proto, src, p.sourcePort, dst, p.destinationPort) {
            let c = table[k]
            // A PROXY header still to send goes into a segment of its own size.
            guard c.expires > now, !c.flags.contains(.synproxy), !c.flags.contains(.proxyHeaderPending), !c.flags.contains(.ftpControl),
                !c.flags.contains(.template),
                !shared.services[Int(c.service)].destinations[Int(c.destination)].removed
            else { return nil }
            switch c.method {
            case .nat, .directRouting: break
            case .fullNAT:
                // TOA goes into the super-frame's header, which the kernel repeats in every segment: each carries it, as each would here.
                let toa = Forwarding.wantsTOA(c.flags, toaSequence: c.toaSequence, tcpFlags: p.tcpFlags, acknowledgement: b.be32(at: p.l4Offset &+ 8))
                guard !toa || p.ipEnd &- p.l3Offset &+ TCPOptionEditor.toaLength(for: A.self) <= 65535 else { return nil }
            case .tunnel, .local: return nil
            }
            (i, inbound) = (k, true)
        } else if hasReplyTraffic, let k = table.lookup(.reply, proto: p.proto, src, p.sourcePort, dst, p.destinationPort) {
            let c = table[k]
            guard c.expires > now, !c.flags.contains(.synproxy), !c.flags.contains(.ftpControl), c.method == .nat || c.method == .fullNAT else { return nil }
            (i, inbound) = (k, false)
        } else {
            return nil
        }
        let further = UInt64(segments &- 1)
        let headers = UInt64(p.l4Offset &- p.l3Offset &+ p.l4HeaderLength)
        let (sc, dc) = shared.counterSlots(service: Int(table[i].service), destination: Int(table[i].destination))
        shared.superFrameExcess = p.payloadLength &- segmentSize
        let verdict =
            inbound
            ? forwardToReal(&b, &f, &p, i, interface: interface, now: now, shared: &shared, first: false)
            : forwardToClient(&b, &f, &p, i, now: now, shared: &shared)
        shared.superFrameExcess = 0
        guard case .transmit = verdict else { return verdict }
        shared.countFurtherSegments(inbound: inbound, service: sc, destination: dc, segments: further, bytes: further &* headers)
        shared.superFramesWhole &+= 1
        return verdict
    }

    /// `conn_reuse_mode` 1 (the kernel's default): a new SYN on an
    /// uncontrolled entry in TIME_WAIT or CLOSE (a client reusing its port)
    /// is a new connection and is scheduled again.
    static func isReused(_ c: Connection<A>, _ p: ParsedPacket) -> Bool {
        guard c.proto == IPProtocolNumber.tcp, c.controller == 0, !c.flags.contains(.template),
            p.tcpFlags & (TCPFlags.syn | TCPFlags.ack | TCPFlags.fin | TCPFlags.rst) == TCPFlags.syn
        else { return false }
        return c.state == .timeWait || c.state == .close
    }

    /// The service of a new flow, in `ip_vs_service_find`'s order: the
    /// firewall mark's first, then the address's, then the VIP's port 0.
    /// `shared` is inout, though only read: passed by value, the whole of it was copied for every new connection.
    func findService(proto: UInt8, src: A, sport: UInt16, dst: A, dport: UInt16, interface: UInt16, shared: inout DirectorShared) -> Int? {
        if !shared.markRules.isEmpty,
            let s = markedService(proto: proto, src: src, sport: sport, dst: dst, dport: dport, interface: interface, shared: shared)
        {
            return s
        }
        if let s = services[ServiceLookupKey(proto: proto, address: dst, port: dport)] { return s }
        // A port-0 service takes every port of the VIP.
        return services[ServiceLookupKey(proto: proto, address: dst, port: 0)]
    }

    /// The firewall-mark service of the mark the classifier gives the frame
    /// (`FirewallMarkRule`: every rule in order, the last mark set wins, a
    /// verdict ends its chain).
    @inline(never)
    func markedService(proto: UInt8, src: A, sport: UInt16, dst: A, dport: UInt16, interface: UInt16, shared: borrowing DirectorShared) -> Int? {
        let v6 = A.byteCount == 16
        var mark: UInt32 = 0
        var doneRule: Int32 = -1
        var doneChain: Int32 = -1
        for rule in shared.markRules where rule.rule != doneRule && rule.chain != doneChain {
            if let f = rule.ipv6, f != v6 { continue }
            if let rp = rule.proto, rp.rawValue != proto { continue }
            if rule.interface != 0 && rule.interface != interface { continue }
            guard rule.ports.contains(dport), rule.sourcePorts.contains(sport) else { continue }
            if let d = rule.destination {
                guard let da = Self.address(d), dst.masked(prefixLength: rule.destinationPrefixLength) == da.masked(prefixLength: rule.destinationPrefixLength)
                else { continue }
            }
            if let s = rule.source {
                guard let sa = Self.address(s), src.masked(prefixLength: rule.sourcePrefixLength) == sa.masked(prefixLength: rule.sourcePrefixLength)
                else { continue }
            }
            doneRule = rule.rule
            if let m = rule.mark { mark = m }
            switch rule.verdict {
            case .next: break
            case .endChain: doneChain = rule.chain
            case .drop: return nil
            }
        }
        return mark == 0 ? nil : shared.markServices[MarkServiceKey(mark: mark, ipv6: v6)]
    }

    // MARK: new connections

    mutating func newConnection(
        _ b: inout MutableSpan<UInt8>, _ f: inout FrameBounds, _ p: inout ParsedPacket, service: Int,
        src: A, dst: A, interface: UInt16, now: UInt64, shared: inout DirectorShared,
        synproxyCookie: UInt32? = nil, clientISN: UInt32 = 0
    ) -> Verdict {
        let proto = p.proto
        if proto == IPProtocolNumber.tcp {
            // tcp_conn_schedule: SYN, or with sloppy_tcp anything but RST; not for a FULLNAT service, whose real
            // server knows a flow begun elsewhere by another local address.
            if p.tcpFlags & (TCPFlags.syn | TCPFlags.rst) != TCPFlags.syn
                && (!shared.sloppyTCP || p.tcpFlags & TCPFlags.rst != 0 || pools[service] != nil)
            {
                return shared.drop(.notSYN)
            }
        } else if proto == IPProtocolNumber.sctp {
            // sctp_conn_schedule: INIT, or with sloppy_sctp anything but ABORT.
            if p.tcpFlags != SCTPEvent.initiation && (!shared.sloppySCTP || p.tcpFlags == SCTPEvent.abort) { return shared.drop(.notINIT) }
        }
        // Field by field: copying the configuration would retain its arrays.
        let key = shared.services[service].configuration.key
        let isMark: Bool
        if case .firewallMark = key { isMark = true } else { isMark = false }
        var template: Int? = nil
        var templateHit = false
        var slot: Int
        if let persistence = shared.services[service].configuration.persistence {
            let (templateProto, network, markAddress, vport) = Self.templateKey(
                key, netmask: shared.services[service].configuration.persistenceNetmask,
                proto: proto, client: src, virtual: dst, virtualPort: p.destinationPort)
            let tproto = ConnectionTable<A>.key(proto: templateProto, template: true)
            if let t = table.lookup(.client, proto: tproto, network, 0, markAddress, vport), table[t].expires > now,
                templateValid(table[t], shared: shared)
            {
                template = t
                templateHit = true
                slot = Int(table[t].destination)
            } else {
                if let t = table.lookup(.client, proto: tproto, network, 0, markAddress, vport) { expire(t, now: now, shared: &shared, force: true) }
                guard let s = schedule(service, p, src: src, dst: dst, now: now, shared: &shared) else { return shared.drop(.noRealServer) }
                slot = s
                guard let t = table.allocate() ?? evict(now: now, shared: &shared) else { return shared.drop(.connectionTableFull) }
                var c = Connection<A>()
                c.proto = templateProto
                c.flags = isMark ? [.template, .firewallMark] : [.template]
                c.client = network
                c.virtual = markAddress
                c.virtualPort = vport
                c.service = UInt16(service)
                c.destination = UInt16(slot)
                c.state = .none
                c.expires = now &+ UInt64(persistence) &* 1000
                if let r = Self.address(shared.services[service].destinations[slot].address) { c.real = r }
                c.realPort = shared.services[service].destinations[slot].port
                table[t] = c
                table.insert(t)
                shared.services[service].destinations[slot].persistentConnections &+= 1
                template = t
            }
        } else {
            guard let s = schedule(service, p, src: src, dst: dst, now: now, shared: &shared) else { return shared.drop(.noRealServer) }
            slot = s
        }
        let destAddress = shared.services[service].destinations[slot].address
        let destPort = shared.services[service].destinations[slot].port
        var c = Connection<A>()
        c.proto = proto
        c.client = src
        c.clientPort = p.sourcePort
        c.virtual = dst
        c.virtualPort = p.destinationPort
        c.service = UInt16(service)
        c.destination = UInt16(slot)
        c.flags = [.inactive]
        if isMark { c.flags.insert(.firewallMark) }
        c.realPort = destPort == 0 ? p.destinationPort : destPort
        let real = Self.address(destAddress)
        if let real { c.real = real }
        c.method = shared.services[service].destinations[slot].method
        switch c.method {
        case .nat:
            guard real != nil else { return shared.drop(.noRoute) }
            c.local = src
            c.localPort = p.sourcePort
            c.flags.insert(shared.isFTP(service, proto: proto, port: c.virtualPort) ? [.replyIndexed, .ftpControl] : .replyIndexed)
        case .fullNAT:
            // In place: a copy of the pool would copy its port arrays.
            guard let r = real, pools[service] != nil,
                let (lip, lport) = pools[service]!.allocate(real: r, port: c.realPort)
            else { return shared.drop(.fullNATPortsExhausted) }
            c.local = lip
            c.localPort = lport
            c.flags.insert(shared.isFTP(service, proto: proto, port: c.virtualPort) ? [.replyIndexed, .ftpControl] : .replyIndexed)
        case .directRouting, .tunnel, .local:
            c.realPort = p.destinationPort
            c.flags.insert(.noOutput)
        }
        if c.flags.contains(.replyIndexed) {
            if let n = shared.neighbourSlot(for: src.ipAddress) {
                c.replyNeighbour = n
                // The hop this frame came from is the hop replies go back to:
                // its MAC saves a round of ARP before the first reply.
                if !shared.neighbours[Int(n)].resolved && shared.neighbours[Int(n)].interface == interface {
                    shared.resolve(Int(n), mac: MACAddress(b.span, at: f.start &+ 6))
                }
            } else {
                c.replyNeighbour = UInt32.max
            }
        }
        c.expires = now &+ 3000
        c.state = proto == IPProtocolNumber.udp ? .udp : .none
        if let cookie = synproxyCookie {
            c.flags.formUnion([.synproxy, .synproxyPending])
            c.synproxySequence = cookie
            c.toaSequence = clientISN
        }
        let onePacket = proto == IPProtocolNumber.udp && shared.services[service].configuration.onePacket
        if onePacket { c.flags.insert(.unhashed) }
        guard let index = table.allocate() ?? evict(now: now, shared: &shared) else {
            releasePort(c)
            return shared.drop(.connectionTableFull)
        }
        if let t = template {
            c.controller = UInt32(t) &+ 1
            table[t].controller &+= 1
        }
        table[index] = c
        table.insert(index)
        shared.services[service].destinations[slot].bind(inactive: true)
        let (sc, dc) = shared.counterSlots(service: service, destination: slot)
        shared.countConnection(service: sc, destination: dc)
        noteTrace(templateHit ? .persistent : .scheduled, connection: index, shared: &shared)
        let verdict = forwardToReal(&b, &f, &p, index, interface: interface, now: now, shared: &shared, first: true)
        if onePacket {
            // OPS: scheduled per datagram, never hashed, freed at once.
            unbind(index, shared: &shared)
            table.remove(index)
        }
        return verdict
    }

    /// A persistence template's key: <proto, client network, 0, vaddr, vport>;
    /// firewall-mark services use protocol 0xFF, the mark as address and port
    /// 0; port-0 services and FTP's port 21 use port 0.
    static func templateKey(_ key: ServiceKey, netmask: Int, proto: UInt8, client: A, virtual: A, virtualPort: UInt16)
        -> (proto: UInt8, network: A, address: A, port: UInt16)
    {
        let isMark: Bool
        if case .firewallMark = key { isMark = true } else { isMark = false }
        let port: UInt16 = isMark || servicePort(key) == 0 || virtualPort == 21 ? 0 : virtualPort
        return (isMark ? 0xFF : proto, client.masked(prefixLength: netmask), isMark ? markAddress(key) : virtual, port)
    }

    static func markAddress(_ key: ServiceKey) -> A {
        guard case .firewallMark(let m, _) = key else { return .zero }
        if A.byteCount == 4 { return IPv4Address(m) as! A }
        return IPv6Address(high: 0, low: UInt64(m)) as! A
    }

    static func servicePort(_ key: ServiceKey) -> UInt16 {
        if case .address(_, _, let port) = key { return port }
        return 0
    }

    /// `ip_vs_check_template`: the server must still be there and available
    /// (weight 0 only counts with expire_quiescent_template).
    func templateValid(_ t: Connection<A>, shared: borrowing DirectorShared) -> Bool {
        let d = shared.services[Int(t.service)].destinations[Int(t.destination)]
        if d.removed || d.overloaded { return false }
        if d.weight <= 0 && shared.expireQuiescentTemplate { return false }
        return true
    }

    mutating func schedule(_ service: Int, _ p: ParsedPacket, src: A, dst: A, now: UInt64, shared: inout DirectorShared) -> Int? {
        let input = ScheduleInput(sourceFold: src.kernelFold, sourcePort: p.sourcePort, destinationFold: dst.kernelFold)
        return shared.services[service].schedule(input, now: now)
    }

    // MARK: forwarding

    @inline(__always)
    mutating func updateState(_ i: Int, direction: StateDirection, flags: UInt8, now: UInt64, shared: inout DirectorShared) {
        let (changed, activity) = table[i].advance(direction: direction, flags: flags, now: now, timeouts: shared.timeouts.span)
        if activity != 0 { shared.services[Int(table[i].service)].destinations[Int(table[i].destination)].moveActivity(activity) }
        let proto = table[i].proto
        let state = table[i].state
        if shared.noting && direction != .output { noteSync(i, stateChanged: changed, now: now, shared: &shared) }
        if shared.kernelForwarding { noteKernelFlow(i, changed: changed, shared: &shared) }
        if shared.passiveCheck && proto == IPProtocolNumber.tcp && flags & TCPFlags.syn != 0 {
            if direction == .output {
                if flags & TCPFlags.ack != 0 { notePassiveAnswer(i, shared: &shared) }
            } else if state == .synReceived {
                notePassiveSYN(i, shared: &shared)
            }
        }
    }

    mutating func forwardToReal(
        _ b: inout MutableSpan<UInt8>, _ f: inout FrameBounds, _ p: inout ParsedPacket, _ i: Int,
        interface: UInt16 = 0, now: UInt64, shared: inout DirectorShared, first: Bool
    ) -> Verdict {
        let s = Int(table[i].service)
        let d = Int(table[i].destination)
        if shared.services[s].destinations[d].removed && !first {
            guard shared.expireNoDestination else { return shared.drop(.destinationRemoved) }
            expire(i, now: now, shared: &shared, force: true)
            let src = A(b.span, at: p.sourceAddressOffset)
            let dst = A(b.span, at: p.destinationAddressOffset)
            guard
                let svc = findService(proto: p.proto, src: src, sport: p.sourcePort, dst: dst, dport: p.destinationPort, interface: interface, shared: &shared)
            else { return .pass }
            return newConnection(&b, &f, &p, service: svc, src: src, dst: dst, interface: interface, now: now, shared: &shared)
        }
        if !first && table[i].flags.contains(.synproxy), let v = synproxyInbound(&b, &f, &p, i, interface: interface, now: now, shared: &shared) { return v }
        if p.fragment != .subsequent { updateState(i, direction: .input, flags: p.tcpFlags, now: now, shared: &shared) }
        if p.fragment == .first { rememberFragment(p, b.span, connection: i, reply: false, now: now) }
        let length = UInt64(p.ipEnd &- p.l3Offset)
        let (sc, dc) = shared.counterSlots(service: s, destination: d)
        shared.count(inbound: true, service: sc, destination: dc, bytes: length)
        guard Self.ttl(b, p) > 1 else { return timeExceeded(&b, &f, p, interface: interface, shared: &shared) }
        Self.forward(&b, p, table[i], towardsReal: true)
        if p.proto == IPProtocolNumber.sctp
            && !Self.finishSCTP(&b, p, hidingAddresses: p.tcpFlags == SCTPEvent.initiation && table[i].flags.contains(.replyIndexed))
        {
            return shared.drop(.sctpFragment)
        }
        if table[i].flags.rawValue & ConnectionFlags.streamWork != 0, let v = streamTowardsReal(&b, &f, &p, i, now: now, shared: &shared) { return v }
        switch table[i].method {
        case .fullNAT:
            if p.proto == IPProtocolNumber.tcp && p.fragment == .none
                && Forwarding.wantsTOA(table[i].flags, toaSequence: table[i].toaSequence, tcpFlags: p.tcpFlags, acknowledgement: b.be32(at: p.l4Offset &+ 8))
            {
                insertTOA(&b, &f, &p, table[i], dest: shared.services[s].destinations[d], shared: &shared)
            }
        case .tunnel:
            return tunnel(&b, &f, &p, dest: shared.services[s].destinations[d], interface: interface, shared: &shared)
        case .nat, .directRouting, .local:
            break
        }
        return Self.sendTo(&b, f, neighbour: shared.services[s].destinations[d].neighbour, shared: &shared)
    }

    /// The TTL or hop limit the packet came with.
    static func ttl(_ b: borrowing MutableSpan<UInt8>, _ p: ParsedPacket) -> UInt8 {
        b[p.l3Offset &+ (p.isIPv4 ? 8 : 7)]
    }

    /// The connection's rewrite (`Forwarding`), over the packet's headers as
    /// the parser found them. Static, given the connection: as a method, each
    /// call copied the whole plane (its tables' headers) to pass `self`.
    @inline(__always)
    static func forward(_ b: inout MutableSpan<UInt8>, _ p: ParsedPacket, _ c: Connection<A>, towardsReal: Bool) {
        let layout = HeaderLayout(p, in: b)
        let source = A(b.span, at: p.sourceAddressOffset)
        let destination = A(b.span, at: p.destinationAddressOffset)
        let ports = UInt32(p.sourcePort) &<< 16 | UInt32(p.destinationPort)
        // `unsafe` because raw writes could break a typed element; these are bytes.
        var raw = unsafe b.mutableBytes
        var h = raw._mutatingExtracting(p.l2Offset..<p.ipEnd)
        if towardsReal {
            Forwarding.towardsReal(c.flags.bound, &h, layout, source: source, destination: destination, ports: ports, connection: c)
        } else {
            Forwarding.towardsClient(
                fullNAT: c.flags.bound == .fullNAT, &h, layout, source: source, destination: destination, ports: ports,
                virtual: c.virtual, virtualPort: c.virtualPort, client: c.client, clientPort: c.clientPort)
        }
    }

    /// SCTP after NAT's rewrite. Its CRC32c covers its ports and no address:
    /// where a port changed it is computed again over the whole packet, as
    /// the kernel's sctp_nat_csum does. With `hidingAddresses` (the INIT and
    /// INIT ACK of a NAT or FULLNAT association) the addresses the chunk
    /// lists become padding: an end that learnt the other's further
    /// addresses would send to them, past the one entry lvsd translates (a
    /// FULLNAT server straight to the client, a NAT server into a dead end),
    /// so each end knows one address of the other, the one lvsd shows it.
    /// False for a first fragment whose checksum must change: the rest of the
    /// packet, which it covers, is not here.
    static func finishSCTP(_ b: inout MutableSpan<UInt8>, _ p: ParsedPacket, hidingAddresses: Bool) -> Bool {
        guard p.fragment != .subsequent else { return true }
        var changed = b.be32(at: p.l4Offset) != UInt32(p.sourcePort) &<< 16 | UInt32(p.destinationPort)
        if hidingAddresses && p.fragment == .none { changed = SCTPChunk.padAddresses(&b, chunk: p.l4Offset &+ HeaderLength.sctp, end: p.ipEnd) || changed }
        guard changed else { return true }
        guard p.fragment == .none else { return false }
        CRC32c.seal(&b, sctpAt: p.l4Offset, end: p.ipEnd)
        return true
    }

    /// The client's address and port in TOA; a packet without room for it goes
    /// on without (counted).
    func insertTOA(
        _ b: inout MutableSpan<UInt8>, _ f: inout FrameBounds, _ p: inout ParsedPacket, _ c: Connection<A>,
        dest: DestinationState, shared: inout DirectorShared
    ) {
        // A super-frame's segments, not the whole, must fit the MTU.
        let mtu = (shared.interface(dest.interface)?.mtu ?? 1500) &+ shared.superFrameExcess
        do {
            try TCPOptionEditor.insertTOA(&b, frame: &f, packet: &p, address: c.client, port: c.clientPort, mtu: mtu)
            shared.toaInserted &+= 1
        } catch {
            shared.toaFailures &+= 1
        }
    }

    /// A packet for a real server whose TTL ran out: dropped (and counted),
    /// and "time exceeded" sent back as the kernel's IPVS does.
    func timeExceeded(
        _ b: inout MutableSpan<UInt8>, _ f: inout FrameBounds, _ p: ParsedPacket, interface: UInt16,
        shared: inout DirectorShared
    ) -> Verdict {
        let verdict = shared.drop(.ttlExceeded)
        guard let back = shared.interface(interface) else { return verdict }
        shared.icmpSent &+= 1
        ICMPWriter.timeExceeded(&b, &f, p, from: back.mac)
        return .transmit(interface: interface)
    }

    mutating func tunnel(
        _ b: inout MutableSpan<UInt8>, _ f: inout FrameBounds, _ p: inout ParsedPacket, dest: DestinationState,
        interface: UInt16, shared: inout DirectorShared
    ) -> Verdict {
        let flowHash = UInt32(truncatingIfNeeded: A(b.span, at: p.sourceAddressOffset).folded ^ UInt64(p.sourcePort) &* 0x9E37_79B9)
        let gue = dest.tunnel.type == .gue ? GUEOptions(port: dest.tunnel.port, checksum: dest.tunnel.checksum != .none) : nil
        guard let iface = shared.interface(dest.interface) else { return shared.drop(.noRoute) }
        let overhead = (dest.address.isIPv6 ? HeaderLength.ipv6 : HeaderLength.ipv4) &+ (gue != nil ? HeaderLength.udp &+ HeaderLength.gue : 0)
        if p.ipEnd &- p.l3Offset &+ overhead > iface.mtu {
            // As ip_vs_tunnel_xmit: a packet that may not be fragmented gets
            // "fragmentation needed" with the MTU left inside the tunnel.
            // IPv6 is never fragmented on the way: it always gets "packet too big".
            guard p.isIPv6 || b[p.l3Offset &+ 6] & 0x40 != 0, let back = shared.interface(interface) else { return shared.drop(.edit(.exceedsMTU)) }
            shared.icmpSent &+= 1
            if p.isIPv4 {
                ICMPWriter.fragmentationNeeded(&b, &f, p, mtu: iface.mtu &- overhead, from: back.mac)
            } else {
                ICMPWriter.packetTooBig(&b, &f, p, mtu: iface.mtu &- overhead, from: back.mac)
            }
            return .transmit(interface: interface)
        }
        shared.nextIdentification &+= 1
        do {
            switch dest.address {
            case .v4(let r):
                guard let dip = iface.ipv4 else { return shared.drop(.noRoute) }
                try Encapsulation.encapsulate(
                    &b, frame: &f, packet: &p, source: dip, destination: r, gue: gue, flowHash: flowHash, identification: shared.nextIdentification)
            case .v6(let r):
                guard let dip = iface.ipv6 else { return shared.drop(.noRoute) }
                try Encapsulation.encapsulate(&b, frame: &f, packet: &p, source: dip, destination: r, gue: gue, flowHash: flowHash)
            }
        } catch {
            return shared.drop(.edit(error))
        }
        return Self.sendTo(&b, f, neighbour: dest.neighbour, shared: &shared)
    }

    mutating func forwardToClient(
        _ b: inout MutableSpan<UInt8>, _ f: inout FrameBounds, _ p: inout ParsedPacket, _ i: Int,
        now: UInt64, shared: inout DirectorShared
    ) -> Verdict {
        if table[i].flags.contains(.synproxy), let v = synproxyOutbound(&b, &f, &p, i, now: now, shared: &shared) { return v }
        if p.fragment != .subsequent { updateState(i, direction: .output, flags: p.tcpFlags, now: now, shared: &shared) }
        if p.fragment == .first { rememberFragment(p, b.span, connection: i, reply: true, now: now) }
        let (sc, dc) = shared.counterSlots(service: Int(table[i].service), destination: Int(table[i].destination))
        shared.count(inbound: false, service: sc, destination: dc, bytes: UInt64(p.ipEnd &- p.l3Offset))
        guard Self.ttl(b, p) > 1 else { return shared.drop(.ttlExceeded) }
        if p.proto == IPProtocolNumber.tcp && p.fragment == .none {
            if p.tcpFlags & (TCPFlags.syn | TCPFlags.ack) == (TCPFlags.syn | TCPFlags.ack) { realServerAccepted(&b, p, i, shared: shared) }
            if table[i].flags.rawValue & ConnectionFlags.streamWork != 0 { streamTowardsClient(&b, &f, &p, i, now: now, shared: &shared) }
        }
        Self.forward(&b, p, table[i], towardsReal: false)
        if p.proto == IPProtocolNumber.sctp && !Self.finishSCTP(&b, p, hidingAddresses: p.tcpFlags == SCTPEvent.initiationAck) {
            return shared.drop(.sctpFragment)
        }
        return Self.sendTo(&b, f, neighbour: table[i].replyNeighbour, shared: &shared)
    }

    /// The real server's SYN-ACK, which acknowledges the client's ISN + 1: a
    /// PROXY header will go before that byte, or (FULLNAT without one) client
    /// ACKs of the server's ISN + 1 will carry TOA, so the MSS leaves room.
    mutating func realServerAccepted(_ b: inout MutableSpan<UInt8>, _ p: ParsedPacket, _ i: Int, shared: borrowing DirectorShared) {
        let c = table[i]
        if let pp = shared.services[Int(c.service)].configuration.proxyProtocol {
            // Once: a SYN-ACK sent again must not undo what the first data decided.
            if c.state == .synReceived && !c.flags.contains(.requestShifted) { startProxyHeader(i, pp, isn: b.be32(at: p.l4Offset &+ 8) &- 1) }
        } else if c.method == .fullNAT {
            table[i].toaSequence = b.be32(at: p.l4Offset &+ 4) &+ 1
            table[i].flags.insert(.toaArmed)
            _ = TCPOptionEditor.lowerMSS(&b, p, by: UInt16(TCPOptionEditor.toaLength(for: A.self)))
        }
    }

    /// Writes the next hop's MAC, or turns the frame into an ARP request for
    /// it when it is not resolved yet (the packet is lost, as when the
    /// kernel's neighbour queue overflows; TCP retransmits).
    static func sendTo(_ b: inout MutableSpan<UInt8>, _ f: FrameBounds, neighbour: UInt32, shared: inout DirectorShared) -> Verdict {
        guard neighbour != UInt32.max, Int(neighbour) < shared.neighbours.count else { return shared.drop(.noRoute) }
        let n = shared.neighbours[Int(neighbour)]
        if n.resolved {
            PacketRewriter.setMACs(&b, frameStart: f.start, destination: n.mac, source: n.sourceMAC)
            return .transmit(interface: n.interface)
        }
        guard let iface = shared.interface(n.interface) else { return shared.drop(.noRoute) }
        guard case .v4(let target) = n.address, let dip = iface.ipv4, f.start &+ 42 <= b.count else { return shared.drop(.noRoute) }
        ARPWriter.write(&b, at: f.start, operation: 1, senderMAC: iface.mac, sender: dip, targetMAC: .zero, target: target, ethernetDestination: .broadcast)
        return .transmit(interface: n.interface)
    }

    // MARK: fragments

    static func fragmentSlot(_ src: A, _ dst: A, _ id: UInt32) -> Int {
        Int(truncatingIfNeeded: (((src.folded ^ (dst.folded &* 31)) ^ UInt64(id)) &* 0x9E37_79B9_7F4A_7C15) &>> 56)
    }

    mutating func rememberFragment(_ p: ParsedPacket, _ span: Span<UInt8>, connection: Int, reply: Bool, now: UInt64) {
        let src = A(span, at: p.sourceAddressOffset)
        let dst = A(span, at: p.destinationAddressOffset)
        fragments[Self.fragmentSlot(src, dst, p.fragmentID)] = FragmentEntry(
            source: src, destination: dst, identification: p.fragmentID,
            proto: p.proto, connection: Int32(connection), reply: reply, expires: now &+ 30_000)
    }

    mutating func forwardFragment(
        _ b: inout MutableSpan<UInt8>, _ f: inout FrameBounds, _ p: inout ParsedPacket, src: A, dst: A,
        now: UInt64, shared: inout DirectorShared
    ) -> Verdict {
        let e = fragments[Self.fragmentSlot(src, dst, p.fragmentID)]
        guard e.connection >= 0, e.expires > now, e.source == src, e.destination == dst, e.identification == p.fragmentID, e.proto == p.proto,
            table[Int(e.connection)].proto == p.proto
        else {
            return owned.contains(dst) ? shared.drop(.unknownFragment) : .pass
        }
        let i = Int(e.connection)
        return e.reply ? forwardToClient(&b, &f, &p, i, now: now, shared: &shared) : forwardToReal(&b, &f, &p, i, now: now, shared: &shared, first: false)
    }

    // MARK: ICMP

    /// An ICMP error quoting a packet of a connection (DEST_UNREACH,
    /// SOURCE_QUENCH, TIME_EXCEEDED): NAT and FULLNAT translate the outer and
    /// quoted headers; DR and TUN forward it as it is.
    mutating func relateICMPError(
        _ b: inout MutableSpan<UInt8>, _ f: inout FrameBounds, _ p: inout ParsedPacket,
        now: UInt64, shared: inout DirectorShared
    ) -> Verdict {
        let q: ParsedPacket
        do { q = try PacketParser.parseQuoted(b.span, outer: p) } catch { return shared.drop(.unrelatedICMP) }
        guard q.hasPorts else { return owned.contains(A(b.span, at: p.destinationAddressOffset)) ? shared.drop(.unrelatedICMP) : .pass }
        let qs = A(b.span, at: q.sourceAddressOffset)
        let qd = A(b.span, at: q.destinationAddressOffset)
        // The quoted packet travelled the other way: a reply (VIP → client) or a forwarded packet (→ real server).
        if let i = table.lookup(.client, proto: q.proto, qd, q.destinationPort, qs, q.sourcePort) {
            let c = table[i]
            let dest = shared.services[Int(c.service)].destinations[Int(c.destination)]
            guard PacketRewriter.decrementTTL(&b, p) else { return shared.drop(.ttlExceeded) }
            switch c.method {
            case .nat, .fullNAT:
                let natted = c.method == .fullNAT
                PacketRewriter.rewrite(&b, p, source: natted ? c.local : nil, destination: c.real)
                rewriteQuoted(
                    &b, p, q, source: c.real, sourcePort: c.realPort,
                    destination: natted ? c.local : nil, destinationPort: natted ? c.localPort : nil)
            case .tunnel:
                return tunnel(&b, &f, &p, dest: dest, interface: 0, shared: &shared)
            case .directRouting, .local:
                break
            }
            return Self.sendTo(&b, f, neighbour: dest.neighbour, shared: &shared)
        }
        if hasReplyTraffic, let i = table.lookup(.reply, proto: q.proto, qd, q.destinationPort, qs, q.sourcePort) {
            let c = table[i]
            guard PacketRewriter.decrementTTL(&b, p) else { return shared.drop(.ttlExceeded) }
            let fromReal = A(b.span, at: p.sourceAddressOffset) == c.real
            PacketRewriter.rewrite(&b, p, source: fromReal ? c.virtual : nil, destination: c.client)
            rewriteQuoted(&b, p, q, source: c.client, sourcePort: c.clientPort, destination: c.virtual, destinationPort: c.virtualPort)
            return Self.sendTo(&b, f, neighbour: c.replyNeighbour, shared: &shared)
        }
        return owned.contains(A(b.span, at: p.destinationAddressOffset)) ? shared.drop(.unrelatedICMP) : .pass
    }

    /// Rewrites the quoted header, then recomputes the quoted IPv4 header
    /// checksum and the whole ICMP checksum (errors are short).
    func rewriteQuoted(
        _ b: inout MutableSpan<UInt8>, _ p: ParsedPacket, _ q: ParsedPacket,
        source: A?, sourcePort: UInt16?, destination: A?, destinationPort: UInt16?
    ) {
        if let source { source.store(&b, at: q.sourceAddressOffset) }
        if let destination { destination.store(&b, at: q.destinationAddressOffset) }
        if let sourcePort { b.setBE16(sourcePort, at: q.l4Offset) }
        if let destinationPort { b.setBE16(destinationPort, at: q.l4Offset &+ 2) }
        if q.ipVersion == 4 { PacketRewriter.recomputeIPv4HeaderChecksum(&b, at: q.l3Offset) }
        PacketRewriter.recomputeTransportChecksum(&b, p)
    }

    /// Neighbour advertisement for an owned IPv6 address, in place.
    /// A neighbour advertisement for a next hop (or a solicitation from
    /// one) tells its MAC: the target's link-layer option, else the frame's
    /// source.
    func learnNeighbour(_ span: Span<UInt8>, _ f: FrameBounds, _ p: ParsedPacket, shared: inout DirectorShared) {
        guard A.byteCount == 16, p.ipEnd &- p.l4Offset >= 24 else { return }
        let who: A = p.icmpType == 136 ? A(span, at: p.l4Offset &+ 8) : A(span, at: p.sourceAddressOffset)
        guard let slot = shared.neighbourByAddress[who.ipAddress] else { return }
        var mac = MACAddress(span, at: f.start &+ 6)
        var o = p.l4Offset &+ 24
        while o &+ 8 <= p.ipEnd {
            let type = span[o]
            let length = Int(span[o &+ 1]) &* 8
            guard length > 0 else { break }
            if (type == 2 && p.icmpType == 136) || (type == 1 && p.icmpType == 135) { mac = MACAddress(span, at: o &+ 2) }
            o &+= length
        }
        shared.resolve(Int(slot), mac: mac)
    }

    func answerNeighbourSolicitation(_ b: inout MutableSpan<UInt8>, _ f: FrameBounds, _ p: ParsedPacket, interface: UInt16, shared: inout DirectorShared)
        -> Verdict
    {
        guard A.byteCount == 16, p.ipEnd &- p.l4Offset >= 24 else { return .pass }
        let target = A(b.span, at: p.l4Offset &+ 8)
        guard owned.contains(target), let iface = shared.interface(interface) else { return .pass }
        let requester = A(b.span, at: p.sourceAddressOffset)
        let requesterMAC = MACAddress(b.span, at: f.start &+ 6)
        guard p.ipEnd &- p.l4Offset >= 32, f.start &+ (p.l4Offset &- f.start) &+ 32 <= b.count else { return .pass }
        // NA: type 136, flags S|O, target, option 2 (target link-layer address).
        b[p.l4Offset] = 136
        b[p.l4Offset &+ 1] = 0
        b.setBE32(0x6000_0000, at: p.l4Offset &+ 4)
        b[p.l4Offset &+ 24] = 2
        b[p.l4Offset &+ 25] = 1
        iface.mac.store(&b, at: p.l4Offset &+ 26)
        var q = p
        q.ipEnd = p.l4Offset &+ 32
        b.setBE16(32, at: p.l3Offset &+ 4)
        b[p.l3Offset &+ 7] = 255
        target.store(&b, at: p.sourceAddressOffset)
        requester.store(&b, at: p.destinationAddressOffset)
        PacketRewriter.recomputeTransportChecksum(&b, q)
        PacketRewriter.setMACs(&b, frameStart: f.start, destination: requesterMAC, source: iface.mac)
        return .transmit(interface: interface)
    }

    // MARK: expiry

    /// Releases what a connection holds: its server's counts, its FULLNAT
    /// port, its template's control count.
    mutating func unbind(_ i: Int, shared: inout DirectorShared) {
        let c = table[i]
        let s = Int(c.service)
        let d = Int(c.destination)
        if c.flags.contains(.template) {
            shared.services[s].destinations[d].persistentConnections &-= 1
            return
        }
        shared.services[s].destinations[d].unbind(inactive: c.flags.contains(.inactive))
        releasePort(c)
        if c.flags.contains(.ftpControl) { table.shifts[i].dataConnections = 0 }
        if c.controller != 0 {
            // Its template, or an FTP data connection's control connection.
            let t = Int(c.controller) &- 1
            if table[t].flags.contains(.template) && table[t].controller > 0 {
                table[t].controller &-= 1
            } else if table[t].flags.contains(.ftpControl) && table.shifts[t].dataConnections > 0 {
                table.shifts[t].dataConnections &-= 1
            } else {
                return
            }
            if controlled(t) == 0 && table[t].flags.contains(.unhashed) {
                unbind(t, shared: &shared)
                table.remove(t)
            }
        }
    }

    /// How many connections entry `i` keeps: a template's, or an FTP control
    /// connection's data connections (the kernel's `n_control`).
    @inline(__always)
    func controlled(_ i: Int) -> UInt32 {
        let flags = table.entries[i].flags
        guard flags.rawValue & ConnectionFlags.controlling != 0 else { return 0 }
        return flags.contains(.template) ? table.entries[i].controller : UInt32(table.shifts[i].dataConnections)
    }

    mutating func releasePort(_ c: Connection<A>) {
        guard c.method == .fullNAT, !c.flags.contains(.template) else { return }
        pools[Int(c.service)]?.release(local: c.local, port: c.localPort, real: c.real, realPort: c.realPort)
    }

    /// Frees an expired entry; one that still controls connections (a
    /// template, an FTP control connection) is re-armed for 60 s instead, as
    /// the kernel does.
    mutating func expire(_ i: Int, now: UInt64, shared: inout DirectorShared, force: Bool = false) {
        if controlled(i) > 0 {
            if !force {
                table[i].expires = now &+ 60_000
                return
            }
            // Replaced while it controls connections: out of the index now,
            // freed when its last connection goes (see `unbind`).
            table.unhash(i)
            table[i].expires = 0
            return
        }
        unbind(i, shared: &shared)
        table.remove(i)
    }

    mutating func sweep(budget: Int, now: UInt64, shared: inout DirectorShared) {
        let n = min(budget, table.capacity)
        for _ in 0..<n {
            let i = table.advanceHand()
            if table.entries[i].proto != 0 && table.entries[i].expires <= now { expire(i, now: now, shared: &shared) }
        }
    }

    /// When the table is full: an expired entry, else a half-open TCP one
    /// (SYN_RECV/SYNACK, as IPVS's drop_entry), else a datagram flow that saw
    /// one packet, found from the sweep hand within a bounded scan. nil when
    /// none is found: the new flow is dropped.
    mutating func evict(now: UInt64, shared: inout DirectorShared) -> Int? {
        let n = min(256, table.capacity)
        var halfOpen: Int? = nil
        var unanswered: Int? = nil
        for _ in 0..<n {
            let i = table.advanceHand()
            let e = table.entries[i]
            guard e.proto != 0 else { continue }
            if e.expires <= now && controlled(i) == 0 {
                expire(i, now: now, shared: &shared)
                return table.allocate()
            }
            if e.proto == IPProtocolNumber.tcp {
                if halfOpen == nil && (e.state == .synReceived || e.state == .synAck) { halfOpen = i }
            } else if unanswered == nil && e.packets <= 1 && !e.flags.contains(.template) {
                // A datagram flow nobody answered: what a spoofed UDP flood leaves,
                // the UDP kin of half-open (drop_entry's todrop_entry drops these first too).
                unanswered = i
            }
        }
        guard let victim = halfOpen ?? unanswered else { return nil }
        expire(victim, now: now, shared: &shared, force: true)
        return table.allocate()
    }

}
