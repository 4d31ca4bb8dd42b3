import LVSPacket

/// Why the director dropped a frame; each reason has its own counter.
public enum DropReason: Hashable, Sendable, CustomStringConvertible {
    case malformed(PacketError)
    /// TCP without SYN and no connection.
    case notSYN
    /// SCTP without INIT and no connection (any chunk but ABORT with `--sloppy-sctp`).
    case notINIT
    /// An SCTP packet in fragments whose ports NAT changes: its CRC32c covers
    /// the whole packet, which lvsd does not reassemble.
    case sctpFragment
    /// The scheduler found no available real server.
    case noRealServer
    case connectionTableFull
    /// The connection's real server was removed (expire_nodest_conn = 0).
    case destinationRemoved
    case ttlExceeded
    /// A non-first fragment whose first fragment was not seen.
    case unknownFragment
    case fullNATPortsExhausted
    case edit(EditError)
    /// No next hop for the address.
    case noRoute
    /// An ICMP error that belongs to no connection.
    case unrelatedICMP
    /// An IP protocol the service cannot carry.
    case unsupportedProtocol
    /// SYN proxy: an ACK without a valid cookie, or a header it cannot answer in place.
    case synproxyRefused
    /// SYN proxy: client data before the real server completed its handshake,
    /// with no room to hold it (the client sends it again).
    case synproxyPending
    /// Lost in the I/O, counted by the data plane: a frame longer than a
    /// batch slot holds; one the kernel would not take to send (its queue
    /// full); one the kernel dropped because lvsd's receive ring was full.
    case oversizedFrame
    case transmitFailed
    case receiveRingFull
    /// A frame the kernel handed over with offloads (a partial checksum, a
    /// super-frame) that cannot be made into frames for the wire: a GSO kind
    /// lvsd does not segment (UFO, tunnels, SCTP), or headers that contradict it.
    case offloadUnsupported
    /// `--sloppy-nat`: a reply of no connection from a real server and port
    /// that more than one NAT service has, so its VIP cannot be told.
    case ambiguousReply

    public static let all: [DropReason] =
        PacketError.allCases.map { .malformed($0) } + [
            .notSYN, .noRealServer, .connectionTableFull, .destinationRemoved, .ttlExceeded, .unknownFragment,
            .fullNATPortsExhausted, .edit(.noHeadroom), .edit(.noOptionSpace), .edit(.exceedsMTU), .edit(.notTCP),
            .noRoute, .unrelatedICMP, .unsupportedProtocol, .synproxyRefused, .synproxyPending,
            .oversizedFrame, .transmitFailed, .receiveRingFull, .offloadUnsupported, .notINIT, .sctpFragment, .ambiguousReply,
        ]

    /// Dense index for the counter array.
    public var index: Int {
        switch self {
        case .malformed(let e): Int(e.rawValue) - 1
        case .notSYN: Self.base
        case .noRealServer: Self.base + 1
        case .connectionTableFull: Self.base + 2
        case .destinationRemoved: Self.base + 3
        case .ttlExceeded: Self.base + 4
        case .unknownFragment: Self.base + 5
        case .fullNATPortsExhausted: Self.base + 6
        case .edit(let e): Self.base + 6 + Int(e.rawValue)
        case .noRoute: Self.base + 11
        case .unrelatedICMP: Self.base + 12
        case .unsupportedProtocol: Self.base + 13
        case .synproxyRefused: Self.base + 14
        case .synproxyPending: Self.base + 15
        case .oversizedFrame: Self.base + 16
        case .transmitFailed: Self.base + 17
        case .receiveRingFull: Self.base + 18
        case .offloadUnsupported: Self.base + 19
        case .notINIT: Self.base + 20
        case .sctpFragment: Self.base + 21
        case .ambiguousReply: Self.base + 22
        }
    }

    static let base = PacketError.allCases.count

    public var description: String {
        switch self {
        case .malformed(let e): e.description
        case .notSYN: "not-syn"
        case .noRealServer: "no-real-server"
        case .connectionTableFull: "connection-table-full"
        case .destinationRemoved: "destination-removed"
        case .ttlExceeded: "ttl-exceeded"
        case .unknownFragment: "unknown-fragment"
        case .fullNATPortsExhausted: "fullnat-ports-exhausted"
        case .edit(let e): e.description
        case .noRoute: "no-route"
        case .unrelatedICMP: "unrelated-icmp"
        case .unsupportedProtocol: "unsupported-protocol"
        case .synproxyRefused: "synproxy-refused"
        case .synproxyPending: "synproxy-pending"
        case .oversizedFrame: "oversized-frame"
        case .transmitFailed: "transmit-failed"
        case .receiveRingFull: "receive-ring-full"
        case .offloadUnsupported: "offload-unsupported"
        case .notINIT: "not-init"
        case .sctpFragment: "sctp-fragment"
        case .ambiguousReply: "ambiguous-reply"
        }
    }
}

/// What to do with a frame after processing.
public enum Verdict: Sendable, Equatable {
    /// Send the (rewritten) frame out of this interface.
    case transmit(interface: UInt16)
    case drop(DropReason)
    /// Not the director's: hand it to the kernel's stack.
    case pass
    /// Kept to be sent later (a SYN-proxied client's data that came before
    /// the real server's handshake).
    case held
}
