import LVSPacket

/// Why a traced packet went where it went.
public enum TraceDecision: UInt8, Sendable {
    case none
    /// It belongs to a connection in the client direction.
    case existing
    /// It is a real server's reply to a connection (NAT, FULLNAT).
    case reply
    /// It opened a connection: the scheduler chose the real server.
    case scheduled
    /// It opened a connection: the persistence template chose the real server.
    case persistent
    /// It is a real server's reply of a connection begun at another director (`--sloppy-nat`), which it made here.
    case replyTaken
}

/// What the general path noted about a traced packet. Written only while a
/// trace is armed.
struct TraceNote: Sendable {
    var decision = TraceDecision.none
    var connection = -1
    var ipv6 = false
}

/// One traced packet: the frame before and after, and what the director did.
public struct TraceRecord: Sendable {
    public var time: UInt64
    public var worker: Int
    public var interface: UInt16
    public var verdict: Verdict
    public var decision: TraceDecision
    public var service: ServiceKey?
    public var scheduler: String?
    public var realServer: IPAddress?
    public var realPort: UInt16?
    public var method: ForwardingMethod?
    /// The connection's state after the packet.
    public var state: ConnectionState?
    /// The first `TraceSession.capturedBytes` of the frame, and its length.
    public var before: [UInt8]
    public var beforeLength: Int
    public var after: [UInt8]
    public var afterLength: Int
}

/// An armed trace in one worker: which packets, how many more, and the
/// records not yet collected.
public struct TraceSession: Sendable {
    public var filter: ServiceKey?
    public var budget: Int
    public var records: [TraceRecord] = []
    public static let capturedBytes = 256
    /// Records kept when nobody collects them; later ones are not taken.
    public static let maxRecords = 1024

    public init(filter: ServiceKey?, budget: Int) {
        self.filter = filter
        self.budget = budget
    }
}

extension Director {
    /// Arms (or re-arms) tracing with a budget of records, or disarms it
    /// when `budget` is 0. Returns the records taken since the last call.
    public mutating func trace(filter: ServiceKey?, budget: Int) -> [TraceRecord] {
        let taken = traceSession?.records ?? []
        traceSession = budget > 0 ? TraceSession(filter: filter, budget: budget) : nil
        return taken
    }

    /// The batch loop while a trace is armed: the general path (so that it
    /// notes its decision), a copy of each frame before and after.
    mutating func processTraced(_ batch: FrameBatch, now: UInt64) {
        batch.forEach { span, d in
            guard let session = traceSession, session.budget > 0, session.records.count < TraceSession.maxRecords else {
                d.verdict = process(&span, frame: &d.bounds, interface: d.interface, now: now)
                return
            }
            let before = Self.capture(span, d.bounds)
            let beforeLength = d.bounds.length
            shared.tracing = true
            shared.traceNote = TraceNote()
            d.verdict = process(&span, frame: &d.bounds, interface: d.interface, now: now)
            shared.tracing = false
            var record = TraceRecord(
                time: now, worker: v4.worker, interface: d.interface, verdict: d.verdict, decision: shared.traceNote.decision,
                before: before, beforeLength: beforeLength, after: [], afterLength: 0)
            if d.verdict != .pass && !isDrop(d.verdict) {
                record.after = Self.capture(span, d.bounds)
                record.afterLength = d.bounds.length
            }
            describeConnection(&record)
            guard Self.matches(record, session.filter) else { return }
            traceSession!.records.append(record)
            traceSession!.budget -= 1
        }
    }

    func isDrop(_ v: Verdict) -> Bool {
        if case .drop = v { true } else { false }
    }

    static func capture(_ span: borrowing MutableSpan<UInt8>, _ f: FrameBounds) -> [UInt8] {
        let end = min(f.end, f.start &+ TraceSession.capturedBytes, span.count)
        guard f.start >= 0, f.start < end else { return [] }
        var out: [UInt8] = []
        out.reserveCapacity(end - f.start)
        for k in f.start..<end { out.append(span[k]) }
        return out
    }

    /// Fills in the service, real server and state of the connection the
    /// general path noted.
    func describeConnection(_ r: inout TraceRecord) {
        let note = shared.traceNote
        guard note.connection >= 0 else { return }
        let service: Int
        let slot: Int
        if note.ipv6 {
            let c = v6.table[note.connection]
            (service, slot) = (Int(c.service), Int(c.destination))
            r.state = c.proto == IPProtocolNumber.udp ? .udp : c.state
            r.method = c.method
        } else {
            let c = v4.table[note.connection]
            (service, slot) = (Int(c.service), Int(c.destination))
            r.state = c.proto == IPProtocolNumber.udp ? .udp : c.state
            r.method = c.method
        }
        guard service < shared.services.count, slot < shared.services[service].destinations.count else { return }
        let rt = shared.services[service]
        r.service = rt.configuration.key
        r.scheduler = rt.configuration.scheduler
        r.realServer = rt.destinations[slot].address
        r.realPort = rt.destinations[slot].port
    }

    /// A filtered trace keeps the service's packets, and drops whose
    /// destination is the service's address (they never reached a service).
    static func matches(_ r: TraceRecord, _ filter: ServiceKey?) -> Bool {
        guard let filter else { return true }
        if let s = r.service { return s == filter }
        guard case .drop = r.verdict, case .address(_, let vip, _) = filter else { return false }
        return destination(r.before) == vip
    }

    /// The IP destination of a frame read at fixed offsets, for frames the
    /// parser refused.
    static func destination(_ frame: [UInt8]) -> IPAddress? {
        guard frame.count >= 14 else { return nil }
        var l3 = 14
        var type = UInt16(frame[12]) << 8 | UInt16(frame[13])
        if type == EtherType.vlan, frame.count >= 18 {
            type = UInt16(frame[16]) << 8 | UInt16(frame[17])
            l3 = 18
        }
        let span = frame.span
        if type == EtherType.ipv4, frame.count >= l3 + 20 { return .v4(IPv4Address(span, at: l3 + 16)) }
        if type == EtherType.ipv6, frame.count >= l3 + 40 { return .v6(IPv6Address(span, at: l3 + 24)) }
        return nil
    }
}

extension FamilyPlane {
    /// Notes, for a trace, which connection a packet took and why.
    @inline(__always)
    func noteTrace(_ decision: TraceDecision, connection i: Int, shared: inout DirectorShared) {
        guard shared.tracing else { return }
        shared.traceNote = TraceNote(decision: decision, connection: i, ipv6: A.byteCount == 16)
    }
}
