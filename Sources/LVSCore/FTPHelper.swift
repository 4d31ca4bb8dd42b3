import LVSPacket

/// The FTP helper, as the kernel's `ip_vs_ftp` (`DirectorConfiguration.ftpPorts`,
/// its `ports=21`): on the control connection of a NAT or FULLNAT service on
/// such a port it reads what the two sides say about data connections and
/// makes their entries before they come, so that they reach the same real
/// server and leave it as the virtual service.
/// - Passive: the server's `227 Entering Passive Mode (h1,h2,h3,h4,p1,p2)`
///   names the real server: its address becomes the virtual one (the reply
///   may change length: its sequence numbers shift, `SequenceShift`), and the
///   client's coming connection to VIP:port (from any port) goes to RIP:port.
///   `229 Entering Extended Passive Mode (|||port|)` names only the port.
/// - Active: the client's `PORT h1,h2,h3,h4,p1,p2` (or `EPRT |1|…|port|`)
///   names where the server will connect from its port 20 (the control
///   port − 1): that connection leaves as VIP:20. An address other than the
///   client's own is ignored (no FTP bounce through the director). Through
///   FULLNAT the command names a local address and port instead, which the
///   server connects to.
/// A data connection is tied to its control connection (`ip_vs_control_add`):
/// the control connection's entry outlives its timeout while data
/// connections last, as the kernel's does.
enum FTPHelper {

    /// A decimal at `i` (at most 5 digits), and where it ends.
    static func number(_ s: Span<UInt8>, _ i: Int) -> (value: UInt32, end: Int)? {
        var v: UInt32 = 0
        var j = i
        while j < s.count && j &- i < 5, s[j] >= 0x30 && s[j] <= 0x39 {
            v = v &* 10 &+ UInt32(s[j] &- 0x30)
            j &+= 1
        }
        return j == i ? nil : (v, j)
    }

    /// Six comma-separated numbers at `i` ("h1,h2,h3,h4,p1,p2"): the IPv4
    /// address, the port, and where the text ends.
    static func hostPort(_ s: Span<UInt8>, _ i: Int) -> (address: UInt32, port: UInt16, end: Int)? {
        var parts = InlineArray<6, UInt32>(repeating: 0)
        var j = i
        for k in 0..<6 {
            if k > 0 {
                guard j < s.count, s[j] == UInt8(ascii: ",") else { return nil }
                j &+= 1
            }
            guard let (v, e) = number(s, j), v <= 255 else { return nil }
            parts[k] = v
            j = e
        }
        let address = parts[0] &<< 24 | parts[1] &<< 16 | parts[2] &<< 8 | parts[3]
        return (address, UInt16(truncatingIfNeeded: parts[4] &<< 8 | parts[5]), j)
    }

    static func starts(_ s: Span<UInt8>, _ prefix: StaticString) -> Bool {
        let n = prefix.utf8CodeUnitCount
        guard s.count >= n else { return false }
        // `unsafe`: a StaticString's storage is a constant of that many bytes for the program's life.
        for i in 0..<n {
            let c = unsafe prefix.utf8Start[i]
            if s[i] | 0x20 != c | 0x20 { return false }
        }
        return true
    }

    static func find(_ s: Span<UInt8>, _ byte: UInt8, from: Int = 0) -> Int? {
        var i = from
        while i < s.count {
            if s[i] == byte { return i }
            i &+= 1
        }
        return nil
    }

    /// `227 …(h1,h2,h3,h4,p1,p2)`: where the six numbers lie, the address and the port.
    static func passive(_ s: Span<UInt8>) -> (start: Int, end: Int, address: UInt32, port: UInt16)? {
        guard starts(s, "227 "), let open = find(s, UInt8(ascii: "(")), let hp = hostPort(s, open &+ 1) else { return nil }
        return (open &+ 1, hp.end, hp.address, hp.port)
    }

    /// `229 …(|||port|)`: the port.
    static func extendedPassive(_ s: Span<UInt8>) -> UInt16? {
        guard starts(s, "229 "), let open = find(s, UInt8(ascii: "(")), open &+ 4 < s.count,
            s[open &+ 1] == s[open &+ 2], s[open &+ 2] == s[open &+ 3], let (v, _) = number(s, open &+ 4), v <= 65535
        else { return nil }
        return UInt16(v)
    }

    /// `PORT h1,h2,h3,h4,p1,p2`: the address (IPv4), the port, and where the six numbers end.
    static func activePort(_ s: Span<UInt8>) -> (address: UInt32, port: UInt16, end: Int)? {
        guard starts(s, "PORT "), let hp = hostPort(s, 5) else { return nil }
        return hp
    }

    /// `EPRT |family|address|port|` (RFC 2428): the family (1, 2), where the
    /// address text lies, the port, and where its digits end.
    static func extendedPort(_ s: Span<UInt8>) -> (family: UInt32, start: Int, end: Int, port: UInt16, portEnd: Int)? {
        guard starts(s, "EPRT "), s.count > 6 else { return nil }
        let d = s[5]
        guard let (family, e) = number(s, 6), e < s.count, s[e] == d, let a = find(s, d, from: e &+ 1),
            let (port, pe) = number(s, a &+ 1), pe < s.count, s[pe] == d, port <= 65535
        else { return nil }
        return (family, e &+ 1, a, UInt16(port), pe)
    }
}

extension FamilyPlane {
    /// The control connection's client side: a data connection the server
    /// will open (active mode) is expected from RIP:(port − 1) to the client.
    /// Through FULLNAT the server knows no client: the command is rewritten
    /// to name a local address and port of the director, which the server
    /// then connects to (its length change goes into the request shift).
    mutating func ftpFromClient(
        _ b: inout MutableSpan<UInt8>, _ f: inout FrameBounds, _ p: inout ParsedPacket, _ i: Int, now: UInt64, shared: inout DirectorShared
    ) {
        let at = p.l4Offset &+ p.l4HeaderLength
        let c = table[i]
        let port: UInt16
        let start: Int
        let end: Int
        let extended: Bool
        if let a = FTPHelper.activePort(b.span.extracting(at..<p.ipEnd)) {
            guard A.byteCount == 4, c.client.ipAddress == .v4(IPv4Address(a.address)) else { return }
            (port, start, end, extended) = (a.port, 5, a.end, false)
        } else if let e = FTPHelper.extendedPort(b.span.extracting(at..<p.ipEnd)) {
            // Only the client's own address, as it writes it in its family.
            guard e.family == (A.byteCount == 4 ? 1 : 2), ShortText(address: c.client).equals(b.span.extracting(at &+ e.start..<at &+ e.end)) else {
                return
            }
            (port, start, end, extended) = (e.port, e.start, e.portEnd, true)
        } else {
            return
        }
        guard
            let local = expectData(
                client: c.client, clientPort: port, virtualPort: c.virtualPort &- 1, realPort: c.realPort &- 1, control: i, now: now, shared: &shared),
            c.method == .fullNAT
        else { return }
        // FULLNAT: the local end the server is to connect to, in the command's own form.
        var text = ShortText()
        if extended {
            text = ShortText(address: local.address)
            text.put(b[at &+ 5])
            text.putDecimal(UInt32(local.port))
        } else {
            text.putHostPort(local.address, local.port)
        }
        let seq = b.be32(at: p.l4Offset &+ 4)
        guard let diff = replacePayload(&b, &f, &p, at &+ start, at &+ end, text) else { return }
        if diff != 0 { updateShift(i, request: true, seq: seq, diff: UInt32(bitPattern: Int32(diff))) }
    }

    /// The control connection's server side, before the shifts: a passive
    /// reply's address becomes the virtual one, and the client's data
    /// connection is expected. The reply's length change goes into the
    /// connection's reply shift, keyed by its sequence number as sent.
    mutating func ftpFromServer(
        _ b: inout MutableSpan<UInt8>, _ f: inout FrameBounds, _ p: inout ParsedPacket, _ i: Int, now: UInt64, shared: inout DirectorShared
    ) {
        let at = p.l4Offset &+ p.l4HeaderLength
        let c = table[i]
        if let pasv = FTPHelper.passive(b.span.extracting(at..<p.ipEnd)) {
            guard A.byteCount == 4, c.real.ipAddress == .v4(IPv4Address(pasv.address)) else { return }
            _ = expectData(client: c.client, clientPort: 0, virtualPort: pasv.port, realPort: pasv.port, control: i, now: now, shared: &shared)
            var text = ShortText()
            text.putHostPort(c.virtual, pasv.port)
            let seq = b.be32(at: p.l4Offset &+ 4)
            guard let diff = replacePayload(&b, &f, &p, at &+ pasv.start, at &+ pasv.end, text) else { return }
            if diff != 0 { updateShift(i, request: false, seq: seq, diff: UInt32(bitPattern: Int32(diff))) }
        } else if let port = FTPHelper.extendedPassive(b.span.extracting(at..<p.ipEnd)) {
            _ = expectData(client: c.client, clientPort: 0, virtualPort: port, realPort: port, control: i, now: now, shared: &shared)
        }
    }

    /// The payload's bytes `start..<end` replaced by `text`, the frame
    /// longer or shorter by the difference, which it returns (nil, nothing
    /// changed: the frame has no room for it).
    mutating func replacePayload(
        _ b: inout MutableSpan<UInt8>, _ f: inout FrameBounds, _ p: inout ParsedPacket, _ start: Int, _ end: Int, _ text: ShortText
    ) -> Int? {
        let diff = text.count &- (end &- start)
        guard p.ipEnd &+ diff <= b.count, f.start &+ f.length &+ diff <= b.count else { return nil }
        b.moveBytes(from: end, to: end &+ diff, count: p.ipEnd &- end)
        text.store(&b, at: start)
        p.ipEnd &+= diff
        f.length = p.ipEnd &- f.start
        PacketRewriter.setIPLength(&b, p)
        PacketRewriter.recomputeTransportChecksum(&b, p)
        return diff
    }

    /// `vs_seq_update`: a change in a later segment than the last one's.
    mutating func updateShift(_ i: Int, request: Bool, seq: UInt32, diff: UInt32) {
        let flag: ConnectionFlags = request ? .requestShifted : .replyShifted
        var s = request ? table.shifts[i].request : table.shifts[i].reply
        guard !table[i].flags.contains(flag) || SequenceShift.after(seq, s.initial) else { return }
        s.previousDelta = s.delta
        s.delta &+= diff
        s.initial = seq
        if request { table.shifts[i].request = s } else { table.shifts[i].reply = s }
        table[i].flags.insert(flag)
    }

    /// An entry for a data connection, bound to the control connection's
    /// real server and tied to the control connection (`ip_vs_conn_new` and
    /// `ip_vs_control_add` from the helper): the control connection lasts
    /// while it does. Client port 0: any (the first SYN fills it in). Through
    /// FULLNAT it takes a local address and port of its own. An entry
    /// already there is kept. The local end the server sees; nil when there
    /// is no entry.
    mutating func expectData(
        client: A, clientPort: UInt16, virtualPort: UInt16, realPort: UInt16, control: Int, now: UInt64, shared: inout DirectorShared
    ) -> (address: A, port: UInt16)? {
        let proto = IPProtocolNumber.tcp
        let c = table[control]
        if let e = table.lookup(.client, proto: proto, client, clientPort, c.virtual, virtualPort) { return (table[e].local, table[e].localPort) }
        guard let index = table.allocate() ?? evict(now: now, shared: &shared) else { return nil }
        var n = Connection<A>()
        n.proto = proto
        n.client = client
        n.clientPort = clientPort
        n.virtual = c.virtual
        n.virtualPort = virtualPort
        n.real = c.real
        n.realPort = realPort
        n.local = client
        n.localPort = clientPort
        n.service = c.service
        n.destination = c.destination
        n.flags = [.inactive, .replyIndexed]
        n.method = c.method
        if c.method == .fullNAT {
            guard pools[Int(c.service)] != nil, let (lip, lport) = pools[Int(c.service)]!.allocate(real: c.real, port: realPort) else {
                _ = shared.drop(.fullNATPortsExhausted)
                return nil
            }
            n.local = lip
            n.localPort = lport
        }
        n.replyNeighbour = c.replyNeighbour
        n.state = .none
        n.expires = now &+ 3000
        n.controller = UInt32(control) &+ 1
        table[index] = n
        table.insert(index)
        table.shifts[control].dataConnections &+= 1
        if clientPort == 0 { table.noClientPortCount &+= 1 }
        shared.services[Int(c.service)].destinations[Int(c.destination)].bind(inactive: true)
        return (n.local, n.localPort)
    }

    /// A client's connection that an expectation without a client port
    /// awaits: it takes the port, and is indexed with it.
    mutating func claimExpected(_ proto: UInt8, _ src: A, _ sport: UInt16, _ dst: A, _ dport: UInt16) -> Int? {
        guard table.noClientPortCount > 0, let i = table.lookup(.client, proto: proto, src, 0, dst, dport) else { return nil }
        table.unhash(i)
        table[i].clientPort = sport
        if table[i].method == .nat { table[i].localPort = sport }
        table[i].flags.remove(.unhashed)
        table.insert(i)
        return i
    }
}
