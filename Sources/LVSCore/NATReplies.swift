import LVSPacket

/// The NAT service a real server's reply belongs to, found by the server's
/// address and port (`--sloppy-nat`).
struct NATReplyOwner<A: IPAddressProtocol>: Sendable {
    /// -1: the server and port are in more than one NAT service.
    var service: Int32
    var destination: Int32
    var virtual: A
    var virtualPort: UInt16

    static var ambiguous: Self { Self(service: -1, destination: -1, virtual: .zero, virtualPort: 0) }
}

extension FamilyPlane {
    /// Indexes every NAT real server of an address service by its address
    /// and port. SYN-proxy, PROXY protocol and FTP services are left out:
    /// their sequence shifts (and FTP's expected data connections) live
    /// only on the director that made the connection.
    mutating func indexNATReplies(shared: borrowing DirectorShared, wanted: Set<ServiceKey>) {
        natReplyOwners = FlatMap()
        guard shared.sloppyNAT else { return }
        for (key, i) in shared.serviceByKey where wanted.contains(key) {
            guard case .address(let proto, let vip, let port) = key, let virtual = Self.address(vip),
                !shared.services[i].configuration.synproxy, shared.services[i].configuration.proxyProtocol == nil, !shared.services[i].ftp
            else { continue }
            for (k, d) in shared.services[i].destinations.enumerated() where d.method == .nat && !d.removed {
                // A port-0 service's server on a port of its own: its reply does not tell which port the client asked for.
                guard let real = Self.address(d.address), port != 0 || d.port == 0 else { continue }
                let lookup = ServiceLookupKey(proto: proto.rawValue, address: real, port: d.port)
                let owner = NATReplyOwner(service: Int32(i), destination: Int32(k), virtual: virtual, virtualPort: port)
                natReplyOwners[lookup] = natReplyOwners[lookup] == nil ? owner : .ambiguous
            }
        }
    }

    /// A NAT real server's reply of a connection this director did not
    /// make: with several directors, each real server spreads its replies
    /// over their gateway addresses, so the reply of a connection another
    /// director scheduled (or one moved here by ECMP) comes here. Its real
    /// server and port name the service, and so the VIP and port to put
    /// back; the connection is made as a sync backup would make it (not
    /// counted as a new connection: its own director counted it), and the
    /// reply goes on to the client. Nil where the frame is no such reply:
    /// a TCP segment without ACK (a real server opening a connection of
    /// its own) or with RST, or a server in no NAT service.
    /// Out of line: inlined into `process`, it cost every new connection 9
    /// instructions more (callgrind, `newConnectionWLC`).
    @inline(never)
    mutating func takeNATReply(
        _ b: inout MutableSpan<UInt8>, _ f: inout FrameBounds, _ p: inout ParsedPacket,
        src: A, dst: A, now: UInt64, shared: inout DirectorShared
    ) -> Verdict? {
        let proto = p.proto
        guard proto == IPProtocolNumber.udp || (proto == IPProtocolNumber.tcp && p.tcpFlags & (TCPFlags.ack | TCPFlags.rst) == TCPFlags.ack)
        else { return nil }
        let exact = natReplyOwners[ServiceLookupKey(proto: proto, address: src, port: p.sourcePort)]
        // A port-0 service's server answers from whatever port the client asked for.
        let anyPort = natReplyOwners[ServiceLookupKey(proto: proto, address: src, port: 0)]
        guard let owner = exact ?? anyPort else { return nil }
        guard owner.service >= 0, exact == nil || anyPort == nil else { return shared.drop(.ambiguousReply) }
        let s = Int(owner.service)
        let slot = Int(owner.destination)
        var c = Connection<A>()
        c.proto = proto
        c.client = dst
        c.clientPort = p.destinationPort
        c.virtual = owner.virtual
        c.virtualPort = owner.virtualPort == 0 ? p.sourcePort : owner.virtualPort
        c.real = src
        c.realPort = p.sourcePort
        c.local = dst
        c.localPort = p.destinationPort
        c.service = UInt16(s)
        c.destination = UInt16(slot)
        c.method = .nat
        c.flags = [.inactive, .replyIndexed]
        c.replyNeighbour = shared.neighbourSlot(for: dst.ipAddress) ?? UInt32.max
        c.state = proto == IPProtocolNumber.udp ? .udp : .none
        c.expires = now &+ 3000
        c.inPackets = Forwarding.syncThreshold
        guard let index = table.allocate() ?? evict(now: now, shared: &shared) else { return shared.drop(.connectionTableFull) }
        table[index] = c
        table.insert(index)
        shared.services[s].destinations[slot].bind(inactive: true)
        noteTrace(.replyTaken, connection: index, shared: &shared)
        return forwardToClient(&b, &f, &p, index, now: now, shared: &shared)
    }
}
