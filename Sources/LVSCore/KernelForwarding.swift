import LVSPacket

/// An IPv4 connection as the kernel forwarding knows it: its client-side key.
public struct KernelFlowKey: Hashable, Sendable {
    public var proto: UInt8
    public var client: IPv4Address
    public var clientPort: UInt16
    public var virtual: IPv4Address
    public var virtualPort: UInt16

    public init(proto: UInt8, client: IPv4Address, clientPort: UInt16, virtual: IPv4Address, virtualPort: UInt16) {
        self.proto = proto
        self.client = client
        self.clientPort = clientPort
        self.virtual = virtual
        self.virtualPort = virtualPort
    }
}

/// One direction of a connection the kernel forwards: a frame from
/// `source`:`sourcePort` to `destination`:`destinationPort` leaves from
/// `newSource`:`newSourcePort` to `newDestination`:`newDestinationPort`, on
/// interface `interface`, with these MACs and its TTL one less: what the
/// fast path writes.
public struct KernelFlowRule: Equatable, Sendable {
    public var proto: UInt8
    public var source: IPv4Address
    public var sourcePort: UInt16
    public var destination: IPv4Address
    public var destinationPort: UInt16
    public var newSource: IPv4Address
    public var newSourcePort: UInt16
    public var newDestination: IPv4Address
    public var newDestinationPort: UInt16
    public var interface: UInt16
    public var destinationMAC: MACAddress
    public var sourceMAC: MACAddress

    public init(
        proto: UInt8, source: IPv4Address, sourcePort: UInt16, destination: IPv4Address, destinationPort: UInt16, newSource: IPv4Address,
        newSourcePort: UInt16, newDestination: IPv4Address, newDestinationPort: UInt16, interface: UInt16, destinationMAC: MACAddress,
        sourceMAC: MACAddress
    ) {
        self.proto = proto
        self.source = source
        self.sourcePort = sourcePort
        self.destination = destination
        self.destinationPort = destinationPort
        self.newSource = newSource
        self.newSourcePort = newSourcePort
        self.newDestination = newDestination
        self.newDestinationPort = newDestinationPort
        self.interface = interface
        self.destinationMAC = destinationMAC
        self.sourceMAC = sourceMAC
    }
}

/// A connection handed to the kernel: the client's direction and, for NAT,
/// the real server's.
public struct KernelFlow: Equatable, Sendable {
    public var toReal: KernelFlowRule
    public var toClient: KernelFlowRule?
}

/// What the general path asks of the I/O after a batch: hand a connection
/// down (it is established, or a UDP flow) or take it back (its state moved on).
public struct KernelFlowRequest: Sendable {
    public var key: KernelFlowKey
    public var handDown: Bool
}

/// The requests of one batch or so, in room reserved once: a request that
/// finds no room is lost (a connection the kernel does not get stays in
/// lvsd; one it should give back is taken back by the next sweep).
struct KernelFlowRequests: Sendable {
    var pending: [KernelFlowRequest] = []
    static let room = 256

    init() { pending.reserveCapacity(Self.room) }

    mutating func push(_ r: KernelFlowRequest) {
        if pending.count < Self.room { pending.append(r) }
    }
}

/// `lvsd --kernel-forwarding`: lvsd makes each connection and sees it
/// through its handshake; once it is established (a UDP flow: once it is
/// made) and its forwarding is a plain rewrite (NAT or DR over IPv4,
/// no sequence work, next hops known), its frames are forwarded by a tc
/// program in the kernel (bpf/lvsd_forward.bpf.c) until a SYN, FIN or RST
/// brings it back. The I/O reads the program's counters every second and
/// hands them here (`kernelForwarded`): the connection stays alive, and is
/// counted, synced and written to the state file, as if lvsd had seen each packet.
extension FamilyPlane {
    /// Called by `updateState` (the general path) while kernel forwarding is on.
    @inline(never)
    func noteKernelFlow(_ i: Int, changed: Bool, shared: inout DirectorShared) {
        guard A.byteCount == 4 else { return }
        let state = table[i].state
        let up = state == .established || state == .udp
        guard up || changed else { return }
        // An IPv4 address's kernel fold is the address.
        let key = KernelFlowKey(
            proto: table[i].proto, client: IPv4Address(table[i].client.kernelFold), clientPort: table[i].clientPort,
            virtual: IPv4Address(table[i].virtual.kernelFold), virtualPort: table[i].virtualPort)
        shared.kernelFlowRequests.push(KernelFlowRequest(key: key, handDown: up))
    }
}

extension Director {
    /// Moves the pending requests to the end of `out` (the I/O's buffer).
    public mutating func takeKernelFlowRequests(into out: inout [KernelFlowRequest]) {
        guard !shared.kernelFlowRequests.pending.isEmpty else { return }
        out.append(contentsOf: shared.kernelFlowRequests.pending)
        shared.kernelFlowRequests.pending.removeAll(keepingCapacity: true)
    }

    /// The rules by which the kernel forwards the connection, or nil when it must not.
    public func kernelFlow(_ key: KernelFlowKey, now: UInt64) -> KernelFlow? {
        guard let i = v4.table.lookup(.client, proto: key.proto, key.client, key.clientPort, key.virtual, key.virtualPort) else { return nil }
        let c = v4.table[i]
        guard c.expires > now, c.state == .established || c.state == .udp, c.flags.rawValue & ConnectionFlags.sequenceWork == 0,
            !c.flags.contains(.template), !c.flags.contains(.unhashed)
        else { return nil }
        let nat = c.flags.bound == .nat
        guard nat || c.flags.bound == .directRouting else { return nil }
        let d = shared.services[Int(c.service)].destinations[Int(c.destination)]
        guard !d.removed, let toReal = neighbourOf(d.neighbour) else { return nil }
        let inbound = KernelFlowRule(
            proto: c.proto, source: key.client, sourcePort: key.clientPort, destination: key.virtual, destinationPort: key.virtualPort,
            newSource: key.client, newSourcePort: key.clientPort, newDestination: nat ? c.real : key.virtual,
            newDestinationPort: nat ? c.realPort : key.virtualPort, interface: toReal.interface, destinationMAC: toReal.mac,
            sourceMAC: toReal.sourceMAC)
        guard nat else { return KernelFlow(toReal: inbound, toClient: nil) }
        guard let toClient = neighbourOf(c.replyNeighbour) else { return nil }
        let reply = KernelFlowRule(
            proto: c.proto, source: c.real, sourcePort: c.realPort, destination: key.client, destinationPort: key.clientPort,
            newSource: key.virtual, newSourcePort: key.virtualPort, newDestination: key.client, newDestinationPort: key.clientPort,
            interface: toClient.interface, destinationMAC: toClient.mac, sourceMAC: toClient.sourceMAC)
        return KernelFlow(toReal: inbound, toClient: reply)
    }

    func neighbourOf(_ slot: UInt32) -> Neighbour? {
        guard Int(slot) < shared.neighbours.count, shared.neighbours[Int(slot)].resolved else { return nil }
        return shared.neighbours[Int(slot)]
    }

    /// What the kernel forwarded of a connection since the last call: it is
    /// kept alive and counted as lvsd's own packets would have kept and
    /// counted it (synced and written to the state file where a packet
    /// count says so). Returns the rules by which the kernel forwards it
    /// from now on (a next hop's MAC may have changed), or nil when it must
    /// stop: the connection is gone, its state moved on, its real server was
    /// removed. `unchanged`: its rules as handed down, when `rulesGeneration`
    /// has not moved since; then they are not rebuilt.
    public mutating func kernelForwarded(
        _ key: KernelFlowKey, toReal: (packets: UInt64, bytes: UInt64), toClient: (packets: UInt64, bytes: UInt64), now: UInt64,
        unchanged: KernelFlow? = nil
    ) -> KernelFlow? {
        guard let i = v4.table.lookup(.client, proto: key.proto, key.client, key.clientPort, key.virtual, key.virtualPort) else { return nil }
        let packets = toReal.packets &+ toClient.packets
        if packets > 0 { countKernelForwarded(i, packets: packets, toReal: toReal, toClient: toClient, now: now) }
        guard let unchanged else { return kernelFlow(key, now: now) }
        let state = v4.table[i].state
        return v4.table[i].expires > now && (state == .established || state == .udp) ? unchanged : nil
    }

    mutating func countKernelForwarded(
        _ i: Int, packets: UInt64, toReal: (packets: UInt64, bytes: UInt64), toClient: (packets: UInt64, bytes: UInt64), now: UInt64
    ) {
        shared.kernelForwarded &+= packets
        let c = v4.table[i]
        let s = Int(c.service)
        let (sc, dc) = shared.counterSlots(service: s, destination: Int(c.destination))
        if toReal.packets > 0 { shared.countFurtherSegments(inbound: true, service: sc, destination: dc, segments: toReal.packets, bytes: toReal.bytes) }
        if toClient.packets > 0 {
            shared.countFurtherSegments(inbound: false, service: sc, destination: dc, segments: toClient.packets, bytes: toClient.bytes)
        }
        let before = c.inPackets
        v4.table[i].packets &+= UInt32(truncatingIfNeeded: packets)
        v4.table[i].inPackets &+= UInt32(truncatingIfNeeded: toReal.packets)
        v4.table[i].expires = now &+ shared.timeouts[Int(c.state.rawValue)]
        if shared.noting && Forwarding.syncDue(after: before, through: v4.table[i].inPackets) {
            v4.noteSync(i, stateChanged: false, now: now, shared: &shared, due: true)
        }
    }
}
