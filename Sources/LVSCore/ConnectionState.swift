import LVSPacket

/// IPVS connection states (`ip_vs_proto_tcp.c`); UDP has its own single state.
public enum ConnectionState: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    case none = 0
    case established, synSent, synReceived, finWait, timeWait, close, closeWait, lastAck, listen, synAck
    case udp

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
        }
    }

    /// States counted in ActiveConn; all others in InActConn.
    public var isActive: Bool { self == .established || self == .synSent || self == .synReceived || self == .synAck }
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
        if proto == IPProtocolNumber.tcp {
            var dir = direction
            if dir == .output { flags.remove(.noOutput) } else if flags.contains(.noOutput) { dir = .inputOnly }
            let next = TCPStateTable.next(state, direction: dir, flags: tcpFlags)
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
