import LVSPacket

/// How one side's sequence numbers change on the way, as the kernel's
/// `struct ip_vs_seq` (`ip_vs_app.c`), which its sync protocol carries: a
/// sender's segment that starts after `initial` reaches the receiver
/// numbered `delta` further on, an earlier one `previousDelta`. Between the
/// two lie the bytes the director inserted: a PROXY protocol header (after
/// the client's ISN, `initial`), or the growth of a reply the FTP helper
/// rewrote (in the segment that starts at `initial`).
public struct SequenceShift: Sendable, Hashable, BitwiseCopyable {
    /// `init_seq`: where the change is.
    public var initial: UInt32
    public var delta: UInt32
    public var previousDelta: UInt32

    public init(initial: UInt32 = 0, delta: UInt32 = 0, previousDelta: UInt32 = 0) {
        self.initial = initial
        self.delta = delta
        self.previousDelta = previousDelta
    }

    /// `a` comes later than `b` in sequence space (the kernel's `after`).
    @inline(__always)
    static func after(_ a: UInt32, _ b: UInt32) -> Bool { Int32(bitPattern: b &- a) < 0 }

    /// A sequence number of the sender as the receiver numbers it (`vs_fix_seq`).
    @inline(__always)
    func forward(_ seq: UInt32) -> UInt32 { Self.after(seq, initial) ? seq &+ delta : seq &+ previousDelta }

    /// An acknowledgement (or SACK edge) of the receiver as the sender numbers
    /// it (`vs_fix_ack_seq`). One that ends inside the inserted bytes
    /// acknowledges none of the sender's after `initial`: without this clamp
    /// the sender would see bytes acknowledged that it never sent.
    @inline(__always)
    func backward(_ ack: UInt32) -> UInt32 {
        if Self.after(ack, initial &+ delta) { return ack &- delta }
        let a = ack &- previousDelta
        return Self.after(a, initial &+ 1) ? initial &+ 1 : a
    }
}

/// A connection's two shifts: `request` for the client's bytes (the kernel's
/// `in_seq`), `reply` for the real server's (`out_seq`), and the PROXY
/// protocol header the request side carries, if any.
public struct SequenceShifts: Sendable, Hashable, BitwiseCopyable {
    public var request = SequenceShift()
    public var reply = SequenceShift()
    /// PROXY protocol version (1, 2), 0 for none.
    public var proxyVersion: UInt8 = 0
    /// DPVS's insecure mode: while `request.delta` is 0 it is not yet known
    /// whether the client sends its own header.
    public var proxyInsecure = false
    /// An FTP control connection's data connections (the kernel's
    /// `n_control`): while it has any, it does not expire.
    var dataConnections: UInt16 = 0

    public init(request: SequenceShift = .init(), reply: SequenceShift = .init()) {
        self.request = request
        self.reply = reply
    }
}

extension ConnectionTable {
    /// Storage for sequence shifts, made when a service first needs it (so
    /// that a director without PROXY protocol spends no memory on it).
    mutating func enableShifts() {
        if shifts.isEmpty { shifts = [SequenceShifts](repeating: SequenceShifts(), count: capacity) }
    }
}

extension FamilyPlane {
    /// A TCP segment toward the real server of a connection with stream work:
    /// the FTP helper reads it, then its numbers shift. Out of line, so that
    /// connections without such work pay one test of their flags.
    @inline(never)
    mutating func streamTowardsReal(
        _ b: inout MutableSpan<UInt8>, _ f: inout FrameBounds, _ p: inout ParsedPacket, _ i: Int, now: UInt64, shared: inout DirectorShared
    ) -> Verdict? {
        guard p.proto == IPProtocolNumber.tcp && p.fragment == .none else { return nil }
        if table[i].flags.contains(.ftpControl) && p.payloadLength > 0 { ftpFromClient(&b, &f, &p, i, now: now, shared: &shared) }
        guard table[i].flags.rawValue & ConnectionFlags.shifted != 0 else { return nil }
        return shiftTowardsReal(&b, &f, &p, i, shared: &shared)
    }

    /// The same toward the client: the FTP helper may rewrite a passive reply
    /// (and change the reply shift, keyed by the number as sent), then the
    /// numbers shift.
    @inline(never)
    mutating func streamTowardsClient(
        _ b: inout MutableSpan<UInt8>, _ f: inout FrameBounds, _ p: inout ParsedPacket, _ i: Int, now: UInt64, shared: inout DirectorShared
    ) {
        if table[i].flags.contains(.ftpControl) && p.payloadLength > 0 { ftpFromServer(&b, &f, &p, i, now: now, shared: &shared) }
        if table[i].flags.rawValue & ConnectionFlags.shifted != 0 { shiftTowardsClient(&b, p, i) }
    }

    /// A connection's PROXY protocol header and the shift it causes, set when
    /// the real server accepts it: the header goes before the client's first byte (ISN + 1)
    /// and every later byte moves by its length. In insecure mode the length
    /// stays 0 until the client's first data shows whether it sends its own.
    mutating func startProxyHeader(_ i: Int, _ pp: ProxyProtocol, isn: UInt32) {
        let c = table[i]
        var s = SequenceShifts()
        s.proxyVersion = pp.version.rawValue
        s.proxyInsecure = pp.insecure
        s.request.initial = isn
        if !pp.insecure {
            s.request.delta = UInt32(
                ProxyHeader(
                    version: Int(pp.version.rawValue), source: c.client, destination: c.virtual, sourcePort: c.clientPort, destinationPort: c.virtualPort
                ).count)
        }
        table.shifts[i] = s
        table[i].flags.formUnion([.requestShifted, .proxyHeaderPending])
    }

    /// A TCP segment toward the real server, after the connection's rewrite:
    /// sequence numbers shifted, acknowledgements and SACK blocks of the
    /// reply side shifted back. While the real server has not acknowledged
    /// the PROXY header, a segment starting at the client's first byte gets
    /// it in front of its payload: a pure ACK (the handshake's last, so that
    /// a server that speaks first, or waits for the header, hears it before
    /// the client says anything), the first data, or any retransmission of
    /// them. Every copy of the header occupies the same sequence numbers, so
    /// the stream holds it once however often it is sent. Nil: go on.
    mutating func shiftTowardsReal(
        _ b: inout MutableSpan<UInt8>, _ f: inout FrameBounds, _ p: inout ParsedPacket, _ i: Int, shared: inout DirectorShared
    ) -> Verdict? {
        let flags = table[i].flags
        let l4 = p.l4Offset
        if flags.contains(.requestShifted) {
            let seq = b.be32(at: l4 &+ 4)
            if flags.contains(.proxyHeaderPending) && seq == table.shifts[i].request.initial &+ 1 && p.tcpFlags & (TCPFlags.syn | TCPFlags.rst) == 0 {
                if let v = insertProxyHeader(&b, &f, &p, i, shared: &shared) { return v }
            } else {
                Self.rewrite32(&b, p, at: l4 &+ 4, table.shifts[i].request.forward(seq))
            }
        }
        if flags.contains(.replyShifted) && p.tcpFlags & TCPFlags.ack != 0 {
            let shift = table.shifts[i].reply
            Self.rewrite32(&b, p, at: l4 &+ 8, shift.backward(b.be32(at: l4 &+ 8)))
            Self.shiftSACK(&b, p, shift)
        }
        return nil
    }

    /// A TCP segment toward the client: the mirror of `shiftTowardsReal`. An
    /// acknowledgement past the PROXY header ends its retransmission.
    mutating func shiftTowardsClient(_ b: inout MutableSpan<UInt8>, _ p: ParsedPacket, _ i: Int) {
        let flags = table[i].flags
        let l4 = p.l4Offset
        if flags.contains(.replyShifted) {
            Self.rewrite32(&b, p, at: l4 &+ 4, table.shifts[i].reply.forward(b.be32(at: l4 &+ 4)))
        }
        if flags.contains(.requestShifted) && p.tcpFlags & TCPFlags.ack != 0 {
            let shift = table.shifts[i].request
            let ack = b.be32(at: l4 &+ 8)
            if flags.contains(.proxyHeaderPending) && shift.delta != 0 && SequenceShift.after(ack, shift.initial &+ shift.delta) {
                table[i].flags.remove(.proxyHeaderPending)
            }
            Self.rewrite32(&b, p, at: l4 &+ 8, shift.backward(ack))
            Self.shiftSACK(&b, p, shift)
        }
    }

    /// The header goes in front of the payload, the headers moving into the
    /// headroom. What no longer fits the MTU is cut from the end (with FIN,
    /// which would follow it): the client sends it again, as it does any
    /// bytes not acknowledged.
    mutating func insertProxyHeader(
        _ b: inout MutableSpan<UInt8>, _ f: inout FrameBounds, _ p: inout ParsedPacket, _ i: Int, shared: inout DirectorShared
    ) -> Verdict? {
        let c = table[i]
        // Read here, not by the caller: there the compiler copied the whole real server's state for every packet.
        let mtu = shared.interface(shared.services[Int(c.service)].destinations[Int(c.destination)].interface)?.mtu ?? 1500
        let s = table.shifts[i]
        let payloadAt = p.l4Offset &+ p.l4HeaderLength
        if s.proxyInsecure && s.request.delta == 0 {
            // Insecure: the first data decides. A client's own header of the version goes on as it is.
            guard p.payloadLength > 0 else { return nil }
            if ProxyHeader.starts(b.span.extracting(payloadAt..<p.ipEnd), version: Int(s.proxyVersion)) {
                table[i].flags.remove([.requestShifted, .proxyHeaderPending])
                return nil
            }
        }
        let header = ProxyHeader(
            version: Int(s.proxyVersion), source: c.client, destination: c.virtual, sourcePort: c.clientPort, destinationPort: c.virtualPort)
        let n = header.count
        if s.request.delta == 0 { table.shifts[i].request.delta = UInt32(n) }
        let cut = max(0, p.ipEnd &- p.l3Offset &+ n &- mtu)
        guard cut <= p.payloadLength else { return shared.drop(.edit(.exceedsMTU)) }
        guard f.start >= n else { return shared.drop(.edit(.noHeadroom)) }
        if cut > 0 { b[p.l4Offset &+ 13] &= ~TCPFlags.fin }
        b.moveBytes(from: f.start, to: f.start &- n, count: payloadAt &- f.start)
        f.start &-= n
        let end = p.ipEnd &- cut
        p.shift(by: -n)
        p.ipEnd = end
        f.length = end &- f.start
        header.store(&b, at: payloadAt &- n)
        PacketRewriter.setIPLength(&b, p)
        PacketRewriter.recomputeTransportChecksum(&b, p)
        shared.proxyHeaders &+= 1
        return nil
    }

    @inline(__always)
    static func rewrite32(_ b: inout MutableSpan<UInt8>, _ p: ParsedPacket, at o: Int, _ new: UInt32) {
        let old = b.be32(at: o)
        guard old != new else { return }
        b.setBE32(new, at: o)
        PacketRewriter.updateTransportChecksum(&b, p, removing: UInt64(old), adding: UInt64(new))
    }

    /// Each SACK block's edges, as acknowledgements are.
    static func shiftSACK(_ b: inout MutableSpan<UInt8>, _ p: ParsedPacket, _ shift: SequenceShift) {
        guard let o = TCPOptionEditor.optionOffset(b, p, kind: TCPOptionEditor.sackKind) else { return }
        let end = o &+ Int(b[o &+ 1])
        var e = o &+ 2
        while e &+ 4 <= end {
            rewrite32(&b, p, at: e, shift.backward(b.be32(at: e)))
            e &+= 4
        }
    }
}
