import CLVSPrefetch
import LVSPacket

/// What the fast path needs of a real server, in one flat array indexed by
/// `targetBase[service] + destination`, rebuilt with every configuration
/// (the nested `services[s].destinations[d]` costs two bounds checks and
/// a stride multiply per level).
struct ForwardingTarget: Sendable, BitwiseCopyable {
    /// Present, with a next hop: otherwise its packets take the general path.
    var ready: Bool
    var neighbour: UInt32
    var serviceCounter: UInt32
    var destinationCounter: UInt32
}

/// IPIP to an IPv4 real server: the outer source (the interface's address)
/// and the interface's MTU, which the outer packet must fit; MTU 0 for a
/// target the fast path does not encapsulate for (GUE, IPv6, no address).
/// By the index of `ForwardingTarget`s, empty when no target is an IPIP tunnel.
struct TunnelTarget: Sendable, BitwiseCopyable {
    var source: UInt32
    var mtu: UInt32
}

extension DirectorShared {
    /// Derives `targets` from the services; called after every change to them.
    mutating func rebuildTargets() {
        targets.removeAll(keepingCapacity: true)
        tunnels.removeAll(keepingCapacity: true)
        targetBase.removeAll(keepingCapacity: true)
        for s in services {
            targetBase.append(UInt32(targets.count))
            for d in s.destinations {
                targets.append(
                    ForwardingTarget(
                        ready: !d.removed && d.neighbour != UInt32.max, neighbour: d.neighbour,
                        serviceCounter: UInt32(s.counterSlot), destinationCounter: d.counterSlot))
                // IPv6 and GUE tunnels take the general path.
                if d.method == .tunnel, d.tunnel.type == .ipip, case .v4 = d.address, let iface = interface(d.interface), let source = iface.ipv4 {
                    tunnels.append(TunnelTarget(source: source.value, mtu: UInt32(clamping: iface.mtu)))
                } else {
                    tunnels.append(TunnelTarget(source: 0, mtu: 0))
                }
            }
        }
        if !tunnels.contains(where: { $0.mtu != 0 }) { tunnels.removeAll() }
    }
}

/// The path nearly every packet takes: an IPv4 TCP or UDP segment (untagged,
/// no IP options, not a fragment) of a live connection whose state it does
/// not change, forwarded by NAT, DR, TUN (IPIP) or FULLNAT in either direction. It runs
/// over consecutive frames of a batch with the tables' spans taken once, and
/// stops at the first frame it declines; that frame is untouched, and the
/// general path then decides and counts it exactly as it would have anyway
/// (new flows, state changes, TOA, tunnels, unresolved neighbours, sync
/// records, malformed frames, expired entries).
extension Director {
    /// Bytes the fast path reads and writes: Ethernet, IPv4 without options
    /// and a TCP header with the longest options (a frame is often shorter;
    /// its own length is checked separately, the window only has to lie
    /// inside the slot).
    static var window: Int { 94 }

    /// Where the fast path's window of frame `k` starts in the arena, or nil
    /// when the frame is too short or lies too close to its slot's end.
    @inline(__always)
    static func windowStart(_ f: FrameBounds, slot k: Int, slotSize: Int) -> Int? {
        let s = f.start
        guard s >= 0, s <= slotSize &- window, f.length >= 42, f.length <= slotSize &- s else { return nil }
        return k &* slotSize &+ s
    }

    /// The checks on the headers alone, which need no table: the offset of
    /// the transport checksum (−1 for a UDP datagram without one), or nil
    /// when the frame is not the fast path's.
    @inline(__always)
    static func transportChecksumOffset(_ h: borrowing MutableRawSpan, frameLength: Int) -> Int? {
        guard h.be32(at: 12) & 0xFFFF_FF00 == 0x0800_4500 else { return nil }
        let total = Int(h.be16(at: 16))
        let ttl = h.byte(at: 22)
        let proto = h.byte(at: 23)
        guard 14 &+ total <= frameLength, ttl > 1, h.be16(at: 20) & 0x3FFF == 0 else { return nil }
        // A ones-complement sum does not depend on byte order.
        let headerSum =
            UInt64(h.word32(at: 14)) &+ UInt64(h.word32(at: 18)) &+ UInt64(h.word32(at: 22))
            &+ UInt64(h.word32(at: 26)) &+ UInt64(h.word32(at: 30))
        guard InternetChecksum.fold(headerSum) == 0xFFFF else { return nil }
        if proto == IPProtocolNumber.tcp {
            let dataOffset = Int(h.byte(at: 46) &>> 4) &* 4
            // Segments that carry SYN, FIN or RST move the state machine.
            guard total >= 40, dataOffset >= 20, dataOffset <= total &- 20, h.byte(at: 47) & 0x07 == 0 else { return nil }
            return 50
        }
        guard proto == IPProtocolNumber.udp else { return nil }
        let length = Int(h.be16(at: 38))
        guard total >= 28, length >= 8, length <= total &- 20 else { return nil }
        return h.be16(at: 40) == 0 ? -1 : 40
    }

    /// Whether frame `k` passes the header checks: a run is started only
    /// for one that does, since starting it takes the tables' spans.
    static func fastCandidate(_ arena: inout MutableSpan<UInt8>, _ f: FrameBounds, slot k: Int, slotSize: Int) -> Bool {
        guard let at = windowStart(f, slot: k, slotSize: slotSize) else { return false }
        var raw = unsafe arena.mutableBytes  // read only
        // A segment with SYN, FIN or RST is declined before the checks (a
        // new connection's SYN would pay for them for nothing).
        if raw.byte(at: at &+ 23) == IPProtocolNumber.tcp && raw.byte(at: at &+ 47) & 0x07 != 0 { return false }
        return transportChecksumOffset(raw._mutatingExtracting(at..<at &+ window), frameLength: f.length) != nil
    }

    /// Forwards frames `first...` of a batch (slots of `slotSize` bytes in
    /// `arena`) until one it declines; returns that frame's index, or
    /// `ds.count` when it took them all.
    mutating func fastRun(
        _ arena: inout MutableSpan<UInt8>, _ ds: inout MutableSpan<FrameDescriptor>, from first: Int,
        slotSize: Int, now: UInt64
    ) -> Int {
        let replies = v4.hasReplyTraffic
        let mask = v4.table.mask
        if v4.table.count > prefetchAbove {
            Self.prefetch(first..<ds.count, &arena, ds, slotSize: slotSize, slots: v4.table.slots, entries: v4.table.entries, mask: mask)
        }
        let tcpTimeout = shared.timeouts[Int(ConnectionState.established.rawValue)]
        let udpTimeout = shared.timeouts[Int(ConnectionState.udp.rawValue)]
        // Two copies of the loop: the one for directors without IPIP targets
        // or PROXY protocol services has no tunnel or sequence shift code.
        if shared.tunnels.isEmpty && v4.table.shifts.isEmpty {
            return Self.fastRun(
                &v4.table.entries, v4.table.slots, v4.table.shifts, mask: mask, replies: replies, &shared.counters, shared.targets, shared.tunnels,
                shared.targetBase, shared.nextHops, timeouts: (tcpTimeout, udpTimeout), syncing: shared.noting,
                identification: &shared.nextIdentification, &arena, &ds, from: first, slotSize: slotSize, now: now, tunnelling: false, shifting: false)
        }
        return Self.fastRun(
            &v4.table.entries, v4.table.slots, v4.table.shifts, mask: mask, replies: replies, &shared.counters, shared.targets, shared.tunnels,
            shared.targetBase, shared.nextHops, timeouts: (tcpTimeout, udpTimeout), syncing: shared.noting,
            identification: &shared.nextIdentification, &arena, &ds, from: first, slotSize: slotSize, now: now, tunnelling: true, shifting: true)
    }

    /// With a table bigger than the cache, each lookup waits for two misses
    /// (index slot, then entry). Before a run, the slots of all its frames
    /// are fetched, then, by the slots, their entries: the misses overlap.
    /// The addresses only go to the prefetch, which never reads or faults.
    @inline(never)
    static func prefetch(
        _ frames: Range<Int>, _ arena: inout MutableSpan<UInt8>, _ ds: borrowing MutableSpan<FrameDescriptor>, slotSize: Int,
        slots: [UInt64], entries: [Connection<IPv4Address>], mask: Int
    ) {
        var raw = unsafe arena.mutableBytes  // read only
        var buckets = InlineArray<64, Int>(repeating: -1)
        let frames = frames.clamped(to: frames.lowerBound..<frames.lowerBound &+ 64)
        unsafe slots.withUnsafeBufferPointer { slotBase in
            guard let base = slotBase.baseAddress else { return }
            for k in frames {
                guard let at = windowStart(ds[k].bounds, slot: k, slotSize: slotSize) else { continue }
                let h = raw._mutatingExtracting(at..<at &+ window)
                guard h.be16(at: 12) == 0x0800 else { continue }
                let ports = h.be32(at: 34)
                let hash = ConnectionTable<IPv4Address>.hash(
                    h.byte(at: 23), IPv4Address(h.be32(at: 26)), UInt16(truncatingIfNeeded: ports &>> 16),
                    IPv4Address(h.be32(at: 30)), UInt16(truncatingIfNeeded: ports))
                let b = ConnectionTable<IPv4Address>.firstSlot(hash, mask: mask)
                buckets[k &- frames.lowerBound] = b
                unsafe lvs_prefetch(base + b)
            }
        }
        unsafe entries.withUnsafeBufferPointer { entryBase in
            guard let base = entryBase.baseAddress else { return }
            for k in frames {
                let b = buckets[k &- frames.lowerBound]
                guard b >= 0, b < slots.count else { continue }
                let index = Int((slots[b] & 0xFFFF_FFFF) &>> 1) &- 1
                if index >= 0 && index < entryBase.count { unsafe lvs_prefetch(base + index) }
            }
        }
    }

    /// The tables come as separate arguments so that each is a span of its own for the whole run.
    /// Transparent, so that both copies of the loop are inlined: with
    /// `@inline(__always)` the optimizer kept one a call (measured: 17 more
    /// instructions per established NAT packet).
    @_transparent
    static func fastRun(
        _ connections: inout [Connection<IPv4Address>], _ index: [UInt64], _ shiftArray: [SequenceShifts], mask: Int, replies: Bool,
        _ counterArray: inout [Counters], _ targetArray: [ForwardingTarget], _ tunnelArray: [TunnelTarget], _ baseArray: [UInt32], _ nextHopArray: [NextHop],
        timeouts: (tcp: UInt64, udp: UInt64), syncing: Bool, identification: inout UInt16,
        _ arena: inout MutableSpan<UInt8>, _ ds: inout MutableSpan<FrameDescriptor>, from first: Int,
        slotSize: Int, now: UInt64, tunnelling: Bool, shifting: Bool
    ) -> Int {
        let slots = index.span
        var entries = connections.mutableSpan
        var counters = counterArray.mutableSpan
        let targets = targetArray.span
        let tunnels = tunnelArray.span
        let bases = baseArray.span
        let nextHops = nextHopArray.span
        let shifts = shiftArray.span
        // `unsafe` because raw writes could break a typed element; these are bytes.
        var raw = unsafe arena.mutableBytes
        var k = first
        while k < ds.count {
            guard let at = windowStart(ds[k].bounds, slot: k, slotSize: slotSize) else { return k }
            var h = raw._mutatingExtracting(at..<at &+ window)
            guard let checksumOffset = transportChecksumOffset(h, frameLength: ds[k].bounds.length) else { return k }
            let total = Int(h.be16(at: 16))
            let proto = h.byte(at: 23)
            let src = IPv4Address(h.be32(at: 26))
            let dst = IPv4Address(h.be32(at: 30))
            let ports = h.be32(at: 34)
            let sport = UInt16(truncatingIfNeeded: ports &>> 16)
            let dport = UInt16(truncatingIfNeeded: ports)
            let bytes = UInt64(total)
            let timeout = proto == IPProtocolNumber.tcp ? timeouts.tcp : timeouts.udp

            var i = ConnectionTable.find(slots, entries.span, mask: mask, .client, proto: proto, src, sport, dst, dport)
            let inbound = i >= 0
            if !inbound {
                guard replies else { return k }
                i = ConnectionTable.find(slots, entries.span, mask: mask, .reply, proto: proto, src, sport, dst, dport)
                guard i >= 0 else { return k }
            }
            // Field by field: a copy of the whole entry spills most of it to the stack.
            let state = entries[i].state
            let flags = entries[i].flags
            let service = Int(entries[i].service)
            guard entries[i].expires > now, state == .established || state == .udp, service < bases.count else { return k }
            // A PROXY header's shift alone, once the header is acknowledged: the
            // client's sequence numbers move, the server's acknowledgements move
            // back; a segment with SACK blocks, and other sequence work, take the general path.
            let shifted = flags.rawValue & ConnectionFlags.sequenceWork != 0
            if shifted {
                guard shifting, flags.rawValue & ConnectionFlags.sequenceWork == ConnectionFlags.requestShifted.rawValue, proto == IPProtocolNumber.tcp,
                    i < shifts.count, inbound || !Self.hasSACK(h, length: ds[k].bounds.length)
                else { return k }
            }
            let t = Int(bases[service]) &+ Int(entries[i].destination)
            guard t < targets.count else { return k }
            let target = targets[t]
            let next: NextHop
            if inbound {
                guard target.ready else { return k }
                // The packet that makes a sync record takes the general path.
                if syncing && Forwarding.syncDue(inPackets: entries[i].inPackets &+ 1) { return k }
                guard Int(target.neighbour) < nextHops.count else { return k }
                next = nextHops[Int(target.neighbour)]
                guard next.resolved else { return k }
                let layout = Self.layout(checksumOffset)
                switch flags.bound {
                case .nat:
                    Forwarding.nat(&h, layout, source: src, destination: dst, ports: ports, real: entries[i].real, realPort: entries[i].realPort)
                case .fullNAT:
                    // The ACK that gets TOA takes the general path.
                    if proto == IPProtocolNumber.tcp
                        && Forwarding.wantsTOA(flags, toaSequence: entries[i].toaSequence, tcpFlags: h.byte(at: 47), acknowledgement: h.be32(at: 42))
                    {
                        return k
                    }
                    Forwarding.fullNAT(
                        &h, layout, source: src, destination: dst, ports: ports, real: entries[i].real, realPort: entries[i].realPort,
                        local: entries[i].local, localPort: entries[i].localPort)
                case .tunnel:
                    // The outer header goes in the headroom; one too big for the MTU gets the general path's ICMP.
                    guard tunnelling, t < tunnels.count, tunnels[t].mtu != 0, ds[k].bounds.start >= HeaderLength.ipv4,
                        total &+ HeaderLength.ipv4 <= Int(tunnels[t].mtu)
                    else { return k }
                    Forwarding.hop(&h, layout, IPv4Address.self)
                default:
                    Forwarding.hop(&h, layout, IPv4Address.self)
                }
                if shifting && shifted { Self.rewrite32(&h, at: 38, shifts[i].request.forward(h.be32(at: 38)), checksum: checksumOffset) }
                entries[i].inPackets &+= 1
            } else {
                let hop = Int(entries[i].replyNeighbour)
                guard !flags.contains(.noOutput), hop < nextHops.count else { return k }
                next = nextHops[hop]
                guard next.resolved else { return k }
                Forwarding.towardsClient(
                    fullNAT: flags.bound == .fullNAT, &h, Self.layout(checksumOffset), source: src, destination: dst, ports: ports,
                    virtual: entries[i].virtual, virtualPort: entries[i].virtualPort, client: entries[i].client,
                    clientPort: entries[i].clientPort)
                if shifting && shifted && h.byte(at: 47) & TCPFlags.ack != 0 {
                    Self.rewrite32(&h, at: 42, shifts[i].request.backward(h.be32(at: 42)), checksum: checksumOffset)
                }
            }
            entries[i].packets &+= 1
            entries[i].expires = now &+ timeout
            counters.count(inbound: inbound, service: Int(target.serviceCounter), destination: Int(target.destinationCounter), bytes: bytes)
            if tunnelling && inbound && flags.bound == .tunnel {
                identification &+= 1
                encapsulate(&raw, at: at, source: tunnels[t].source, destination: entries[i].real.value, identification: identification, next)
                ds[k].bounds.start &-= HeaderLength.ipv4
                ds[k].bounds.length &+= HeaderLength.ipv4
            } else {
                setMACs(&h, next)
            }
            ds[k].verdict = .transmit(interface: next.interface)
            k &+= 1
        }
        return k
    }

    /// A sequence or acknowledgement number rewritten in the window, the checksum after it.
    @inline(__always)
    static func rewrite32(_ h: inout MutableRawSpan, at o: Int, _ new: UInt32, checksum: Int) {
        let old = h.be32(at: o)
        h.setBE32(new, at: o)
        h.setBE16(InternetChecksum.update(h.be16(at: checksum), removing: UInt64(old), adding: UInt64(new)), at: checksum)
    }

    /// Whether the TCP segment in the window carries a SACK
    /// option (or options that cannot be read: the general path decides).
    static func hasSACK(_ h: borrowing MutableRawSpan, length: Int) -> Bool {
        let end = 34 &+ Int(h.byte(at: 46) &>> 4) &* 4
        guard end <= length else { return true }
        var o = 54
        while o < end {
            let kind = h.byte(at: o)
            if kind == 0 { return false }
            if kind == 1 {
                o &+= 1
                continue
            }
            guard o &+ 1 < end else { return true }
            let len = Int(h.byte(at: o &+ 1))
            if kind == TCPOptionEditor.sackKind || len < 2 { return true }
            o &+= len
        }
        return false
    }

    /// Where the window's headers are: Ethernet, IPv4 without options, then TCP or UDP.
    @inline(__always)
    static func layout(_ checksumOffset: Int) -> HeaderLayout {
        HeaderLayout(ip: 14, transport: 34, checksum: checksumOffset, ports: true)
    }

    /// Destination and source MAC in two stores.
    @inline(__always)
    static func setMACs(_ h: inout MutableRawSpan, _ next: NextHop) {
        h.storeBytes(of: next.head, toByteOffset: 0, as: UInt64.self)
        h.storeBytes(of: next.tail, toByteOffset: 8, as: UInt32.self)
    }

    /// IPIP as `Encapsulation.encapsulate` writes it for the frame whose
    /// Ethernet header is at `at`: a new Ethernet header 20 bytes earlier,
    /// then the outer IPv4 header (TOS, TTL and DF from the inner one) where
    /// the old Ethernet header was.
    @inline(__always)
    static func encapsulate(_ raw: inout MutableRawSpan, at: Int, source: UInt32, destination: UInt32, identification: UInt16, _ next: NextHop) {
        var o = raw._mutatingExtracting(at &- HeaderLength.ipv4..<at &- HeaderLength.ipv4 &+ window)
        let inner = 14 &+ HeaderLength.ipv4
        let tos = o.byte(at: inner &+ 1)
        let ttl = o.byte(at: inner &+ 8)
        let total = o.be16(at: inner &+ 2) &+ UInt16(HeaderLength.ipv4)
        let df = o.be16(at: inner &+ 6) & 0x4000 != 0
        setMACs(&o, next)
        o.setBE16(EtherType.ipv4, at: 12)
        Encapsulation.writeIPv4Header(
            &o, at: 14, tos: tos, total: total, identification: identification, dontFragment: df, ttl: ttl,
            protocol: IPProtocolNumber.ipip, source: source, destination: destination)
    }
}
