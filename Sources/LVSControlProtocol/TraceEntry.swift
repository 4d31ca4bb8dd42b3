import LVSConfiguration
import LVSCore
import LVSPacket
import LVSSystem

/// One traced packet on the wire to lvsadm: what lvsd did and the frame's
/// first bytes before and after, which lvsadm decodes.
public struct TraceEntry: Sendable, Hashable, Codable {
    /// Wall clock, microseconds since the epoch.
    public var time: UInt64
    public var worker: Int
    public var interface: UInt16
    /// "transmit", "drop" or "pass".
    public var verdict: String
    public var outInterface: UInt16?
    public var dropReason: String?
    /// "existing", "reply", "scheduled", "persistent" or "reply-taken".
    public var decision: String?
    public var service: ServiceKey?
    public var scheduler: String?
    public var realServer: IPAddress?
    public var realPort: UInt16?
    public var method: ForwardingMethod?
    public var state: String?
    public var before: [UInt8]
    public var beforeLength: Int
    public var after: [UInt8]
    public var afterLength: Int

    public init(_ r: TraceRecord, wallOffset: Int64) {
        time = UInt64(max(0, Int64(r.time) * 1000 + wallOffset))
        worker = r.worker
        interface = r.interface
        switch r.verdict {
        case .transmit(let i):
            verdict = "transmit"
            outInterface = i
        case .drop(let reason):
            verdict = "drop"
            dropReason = reason.description
        case .pass: verdict = "pass"
        case .held: verdict = "held"
        }
        switch r.decision {
        case .none: decision = nil
        case .existing: decision = "existing"
        case .reply: decision = "reply"
        case .scheduled: decision = "scheduled"
        case .persistent: decision = "persistent"
        case .replyTaken: decision = "reply-taken"
        }
        service = r.service
        scheduler = r.scheduler
        realServer = r.realServer
        realPort = r.realPort
        method = r.method
        state = r.state.map { $0 == .udp ? "UDP" : $0.description }
        before = r.before
        beforeLength = r.beforeLength
        after = r.after
        afterLength = r.afterLength
    }
}
