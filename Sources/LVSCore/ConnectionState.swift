import LVSPacket

/// IPVS connection states: TCP's (`ip_vs_proto_tcp.c`, in its order), UDP's
/// single one, and SCTP's (`ip_vs_proto_sctp.c`, in its order after NONE,
/// which the two share).
public enum ConnectionState: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    case none = 0
    case established, synSent, synReceived, finWait, timeWait, close, closeWait, lastAck, listen, synAck
    case udp
    case sctpInit1, sctpInit, sctpCookieSent, sctpCookieReplied, sctpCookieWait, sctpCookie, sctpCookieEchoed
    case sctpEstablished, sctpShutdownSent, sctpShutdownReceived, sctpShutdownAckSent, sctpRejected, sctpClosed

    public var description: String {
        switch self {
        case .none: "NONE"
        case .established: "ESTABLISHED"
        case .synSent: "SYN_SENT"
        case .synReceived: "SYN_RECV"
        case .finWait: "FIN_WAIT"
        case .timeWait: "TIME_WAIT"
        case .close: "CLOSE"
        case .closeWait: "CLOSE_WAIT"
        case .lastAck: "LAST_ACK"
        case .listen: "LISTEN"
        case .synAck: "SYNACK"
        case .udp: "UDP"
        case .sctpInit1: "INIT1"
        case .sctpInit: "INIT"
        case .sctpCookieSent: "C-SENT"
        case .sctpCookieReplied: "C-REPLIED"
        case .sctpCookieWait: "C-WAIT"
        case .sctpCookie: "COOKIE"
        case .sctpCookieEchoed: "C-ECHOED"
        case .sctpEstablished: "ESTABLISHED"
        case .sctpShutdownSent: "S-SENT"
        case .sctpShutdownReceived: "S-RECEIVED"
        case .sctpShutdownAckSent: "S-ACK-SENT"
        case .sctpRejected: "REJECTED"
        case .sctpClosed: "CLOSED"
        }
    }

    /// States counted in ActiveConn; all others in InActConn.
    public var isActive: Bool {
        // One test on the new-connection path rather than five.
        let active: UInt32 =
            1 << Self.established.rawValue | 1 << Self.synSent.rawValue | 1 << Self.synReceived.rawValue
            | 1 << Self.synAck.rawValue | 1 << Self.sctpEstablished.rawValue
        return active &>> UInt32(rawValue) & 1 != 0
    }

    /// The state's number in the kernel's per-protocol numbering, as the
    /// sync protocol carries it (`IP_VS_TCP_S_*`, `IP_VS_SCTP_S_*`; 0 for UDP).
    public var kernelNumber: UInt16 {
        switch self {
        case .udp: 0
        case .none: 0
        default: rawValue >= Self.sctpInit1.rawValue ? UInt16(rawValue &- Self.udp.rawValue) : UInt16(rawValue)
        }
    }

    /// The state a kernel number names for `proto`; nil when there is none.
    public init?(kernelNumber n: UInt16, proto: UInt8) {
        switch proto {
        case IPProtocolNumber.udp: self = .udp
        case IPProtocolNumber.tcp:
            guard n <= UInt16(Self.synAck.rawValue) else { return nil }
            self.init(rawValue: UInt8(n))
        case IPProtocolNumber.sctp:
            guard n <= 13 else { return nil }
            self.init(rawValue: n == 0 ? 0 : UInt8(n) &+ Self.udp.rawValue)
        default: return nil
        }
    }
}

/// Which way a packet travels through the state table.
public enum StateDirection: Int, Sendable {
    /// Client → real server.
    case input = 0
    /// Real server → client (seen only when replies pass the director).
    case output = 1
    /// Client → real server while the director never sees replies (DR/TUN).
    case inputOnly = 2
}

/// The kernel's TCP state table `tcp_states`, row by row.
public enum TCPStateTable {
    // Columns: NO ES SS SR FW TW CL CW LA LI SA
    private static let NO = ConnectionState.none, ES = ConnectionState.established, SS = ConnectionState.synSent
    private static let SR = ConnectionState.synReceived, FW = ConnectionState.finWait, TW = ConnectionState.timeWait
    private static let CL = ConnectionState.close, CW = ConnectionState.closeWait, LA = ConnectionState.lastAck
    private static let LI = ConnectionState.listen, SA = ConnectionState.synAck

    /// [direction*4 + event][current state], events syn, fin, ack, rst.
    public static let table: [[ConnectionState]] = [
        // INPUT
        [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR],  // syn
        [CL, CW, SS, TW, TW, TW, CL, CW, LA, LI, TW],  // fin
        [ES, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES],  // ack
        [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, SR],  // rst
        // OUTPUT
        [SS, ES, SS, SR, SS, SS, SS, SS, SS, LI, SR],
        [TW, FW, SS, TW, FW, TW, CL, TW, LA, LI, TW],
        [ES, ES, SS, ES, FW, TW, CL, CW, LA, ES, ES],
        [CL, CL, SS, CL, CL, TW, CL, CL, CL, CL, CL],
        // INPUT_ONLY
        [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR],
        [CL, FW, SS, TW, FW, TW, CL, CW, LA, LI, TW],
        [ES, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES],
        [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, CL],
    ]

    /// The event a segment's flags select: rst > syn > fin > ack; nil when none is set.

    public static func event(flags: UInt8) -> Int? {
        if flags & 0x04 != 0 { return 3 }
        if flags & 0x02 != 0 { return 0 }
        if flags & 0x01 != 0 { return 1 }
        if flags & 0x10 != 0 { return 2 }
        return nil
    }

    public static func next(_ state: ConnectionState, direction: StateDirection, flags: UInt8) -> ConnectionState {
        guard state != .udp, let e = event(flags: flags) else { return state }
        return flat[(direction.rawValue &* 4 &+ e) &* 11 &+ Int(state.rawValue)]
    }

    static let flat: [ConnectionState] = table.flatMap { $0 }
}

/// The kernel's SCTP state table `sctp_states`, row by row: what the
/// director sees of an association as the real server's state.
public enum SCTPStateTable {
    private typealias S = ConnectionState
    // Columns: NO I1 IN CS CR CW CO CE ES SS SR SA RJ CL
    private static let NO = S.none, I1 = S.sctpInit1, IN = S.sctpInit, CS = S.sctpCookieSent, CR = S.sctpCookieReplied
    private static let CW = S.sctpCookieWait, CO = S.sctpCookie, CE = S.sctpCookieEchoed, ES = S.sctpEstablished
    private static let SS = S.sctpShutdownSent, SR = S.sctpShutdownReceived, SA = S.sctpShutdownAckSent
    private static let RJ = S.sctpRejected, CL = S.sctpClosed

    /// [direction*10 + event][state's kernel number], events in `SCTPEvent`'s order.
    public static let table: [[ConnectionState]] = [
        // INPUT
        [ES, I1, IN, CS, CR, CW, CO, CE, ES, SS, SR, SA, RJ, CL],  // data
        [I1, IN, IN, CS, CR, CW, CO, CE, ES, SS, SR, SA, IN, IN],  // init
        [CW, CW, CW, CS, CR, CO, CO, CE, ES, SS, SR, SA, RJ, CL],  // init ack
        [CR, IN, IN, CR, CR, CW, CO, CE, ES, SS, SR, SA, RJ, CL],  // cookie echo
        [ES, I1, IN, CS, CR, CW, CO, ES, ES, SS, SR, SA, RJ, CL],  // cookie ack
        [SR, I1, IN, CS, CR, CW, CO, CE, SR, SS, SR, SA, RJ, CL],  // shutdown
        [CL, IN, IN, CS, CR, CW, CO, CE, ES, CL, SR, CL, RJ, CL],  // shutdown ack
        [CL, CL, CL, CS, CR, CW, CO, CE, ES, SS, SR, CL, RJ, CL],  // shutdown complete
        [CL, I1, IN, CS, CR, CW, CO, CL, ES, SS, SR, SA, RJ, CL],  // error
        [CL, CL, CL, CL, CL, RJ, CL, CL, CL, CL, CL, CL, CL, CL],  // abort
        // OUTPUT
        [ES, I1, IN, CS, CR, CW, CO, CE, ES, SS, SR, SA, RJ, CL],
        [CW, CW, CW, CW, CW, CW, CW, CW, ES, CW, CW, CW, CW, CW],
        [CS, CS, CS, CS, CR, CW, CO, CE, ES, SS, SR, SA, RJ, CL],
        [CE, CE, CE, CE, CE, CE, CE, CE, ES, SS, SR, SA, RJ, CL],
        [ES, ES, ES, ES, ES, ES, ES, ES, ES, SS, SR, SA, RJ, CL],
        [SS, SS, SS, SS, SS, SS, SS, SS, SS, SS, SR, SA, RJ, CL],
        [SA, SA, SA, SA, SA, CW, CO, CE, ES, SA, SA, SA, RJ, CL],
        [CL, I1, IN, CS, CR, CW, CO, CE, ES, SS, SR, SA, RJ, CL],
        [CL, CL, CL, CL, CL, CW, CO, CE, ES, SS, SR, SA, RJ, CL],
        [CL, RJ, CL, CL, CL, CL, CL, CL, CL, CL, CL, CL, CL, CL],
        // INPUT_ONLY
        [ES, I1, IN, CS, CR, ES, CO, CE, ES, SS, SR, SA, RJ, CL],
        [I1, IN, IN, IN, IN, IN, CO, CE, ES, SS, SR, SA, IN, IN],
        [CE, CE, CE, CE, CE, CE, CO, CE, ES, SS, SR, SA, RJ, CL],
        [ES, ES, ES, ES, ES, ES, CO, CE, ES, SS, SR, SA, RJ, CL],
        [ES, I1, IN, ES, ES, CW, ES, ES, ES, SS, SR, SA, RJ, CL],
        [SR, I1, IN, CS, CR, CW, CO, CE, SR, SS, SR, SA, RJ, CL],
        [CL, IN, IN, CS, CR, CW, CO, CE, CL, CL, SR, CL, RJ, CL],
        [CL, CL, CL, CL, CL, CW, CO, CE, ES, SS, CL, CL, RJ, CL],
        [CL, I1, IN, CS, CR, CW, CO, CE, ES, SS, SR, SA, RJ, CL],
        [CL, CL, CL, CL, CL, RJ, CL, CL, CL, CL, CL, CL, CL, CL],
    ]

    public static func next(_ state: ConnectionState, direction: StateDirection, event: UInt8) -> ConnectionState {
        let column = Int(state.kernelNumber)
        guard column < 14, Int(event) < SCTPEvent.count else { return state }
        return flat[(direction.rawValue &* SCTPEvent.count &+ Int(event)) &* 14 &+ column]
    }

    static let flat: [ConnectionState] = table.flatMap { $0 }
}

/// Timeouts per state, in seconds (kernel defaults).
public struct TimeoutTable: Sendable, Hashable {
    public var seconds: [UInt32]

    public init() {
        var s = [UInt32](repeating: 0, count: ConnectionState.allCases.count)
        s[Int(ConnectionState.none.rawValue)] = 2
        s[Int(ConnectionState.established.rawValue)] = 900
        s[Int(ConnectionState.synSent.rawValue)] = 120
        s[Int(ConnectionState.synReceived.rawValue)] = 60
        s[Int(ConnectionState.finWait.rawValue)] = 120
        s[Int(ConnectionState.timeWait.rawValue)] = 120
        s[Int(ConnectionState.close.rawValue)] = 10
        s[Int(ConnectionState.closeWait.rawValue)] = 60
        s[Int(ConnectionState.lastAck.rawValue)] = 30
        s[Int(ConnectionState.listen.rawValue)] = 120
        s[Int(ConnectionState.synAck.rawValue)] = 120
        s[Int(ConnectionState.udp.rawValue)] = 300
        // SCTP: 61 s, the longest RTO and a second, where the table does not say otherwise.
        for state in ConnectionState.allCases where state.rawValue > ConnectionState.udp.rawValue { s[Int(state.rawValue)] = 61 }
        s[Int(ConnectionState.sctpInit1.rawValue)] = 4
        s[Int(ConnectionState.sctpRejected.rawValue)] = 4
        s[Int(ConnectionState.sctpEstablished.rawValue)] = 900
        seconds = s
    }

    public subscript(state: ConnectionState) -> UInt32 {
        get { seconds[Int(state.rawValue)] }
        set { seconds[Int(state.rawValue)] = newValue }
    }

    /// `--set tcp tcpfin udp`: 0 keeps the current value.
    public mutating func set(tcp: UInt32, tcpFin: UInt32, udp: UInt32) {
        if tcp != 0 { self[.established] = tcp }
        if tcpFin != 0 { self[.finWait] = tcpFin }
        if udp != 0 { self[.udp] = udp }
    }

    /// Milliseconds per state, for the data path.
    public var milliseconds: [UInt64] { seconds.map { UInt64($0) * 1000 } }
}

extension Connection {
    /// One packet in `direction`: counts it, moves the TCP state and sets the
    /// expiry, in one access to the entry. Returns whether the state changed
    /// and how the server's active count moves (+1, −1 or 0; its inactive
    /// count moves the other way).
    mutating func advance(direction: StateDirection, flags tcpFlags: UInt8, now: UInt64, timeouts: Span<UInt64>) -> (changed: Bool, activity: Int32) {
        packets &+= 1
        if direction != .output { inPackets &+= 1 }
        var changed = false
        var activity: Int32 = 0
        let tcp = proto == IPProtocolNumber.tcp
        if tcp || proto == IPProtocolNumber.sctp {
            var dir = direction
            if dir == .output { flags.remove(.noOutput) } else if flags.contains(.noOutput) { dir = .inputOnly }
            let next = tcp ? TCPStateTable.next(state, direction: dir, flags: tcpFlags) : SCTPStateTable.next(state, direction: dir, event: tcpFlags)
            if next != state {
                if !flags.contains(.inactive) && !next.isActive {
                    activity = -1
                    flags.insert(.inactive)
                } else if flags.contains(.inactive) && next.isActive {
                    activity = 1
                    flags.remove(.inactive)
                }
                state = next
                changed = true
            }
        }
        expires = now &+ timeouts[Int(state.rawValue)]
        return (changed, activity)
    }
}
