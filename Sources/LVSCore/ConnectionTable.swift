import LVSPacket

public struct ConnectionFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    /// A persistence template (client network → real server).
    public static let template = ConnectionFlags(rawValue: 1 << 0)
    /// Counted in InActConn (IP_VS_CONN_F_INACTIVE).
    public static let inactive = ConnectionFlags(rawValue: 1 << 1)
    /// Replies are not seen (DR/TUN): the INPUT_ONLY table applies.
    public static let noOutput = ConnectionFlags(rawValue: 1 << 2)
    /// Indexed in the reply direction too (NAT, FULLNAT).
    public static let replyIndexed = ConnectionFlags(rawValue: 1 << 3)
    /// FULLNAT: the SYN-ACK was seen, client ACKs of `toaSequence` carry TOA.
    public static let toaArmed = ConnectionFlags(rawValue: 1 << 4)
    /// The service key is a firewall mark.
    public static let firewallMark = ConnectionFlags(rawValue: 1 << 5)
    /// Not in the index but allocated: a one-packet connection, or a template
    /// replaced while it still controls connections (freed with the last one).
    public static let unhashed = ConnectionFlags(rawValue: 1 << 6)
    /// Opened by the SYN proxy: sequence numbers are translated by `synproxySequence`.
    public static let synproxy = ConnectionFlags(rawValue: 1 << 7)
    /// The SYN proxy's SYN went to the real server, its SYN-ACK has not come.
    public static let synproxyPending = ConnectionFlags(rawValue: 1 << 8)
    /// The client's sequence numbers (and the server's acknowledgements of
    /// them) are shifted by the table's `shifts[i].request`.
    public static let requestShifted = ConnectionFlags(rawValue: 1 << 9)
    /// The real server's, by `shifts[i].reply`.
    public static let replyShifted = ConnectionFlags(rawValue: 1 << 10)
    /// The PROXY protocol header is not acknowledged yet: a segment at the
    /// client's first byte carries it (again).
    public static let proxyHeaderPending = ConnectionFlags(rawValue: 1 << 11)
    /// An FTP control connection: the helper reads it (`FTPHelper`).
    public static let ftpControl = ConnectionFlags(rawValue: 1 << 15)
    /// Any sequence work: the fast path does a request shift alone itself.
    static let sequenceWork: UInt16 =
        synproxy.rawValue | requestShifted.rawValue | replyShifted.rawValue | proxyHeaderPending.rawValue | ftpControl.rawValue
    static let shifted: UInt16 = requestShifted.rawValue | replyShifted.rawValue
    /// Work on the stream's bytes or numbers, done out of line (`streamTowardsReal`).
    static let streamWork: UInt16 = shifted | ftpControl.rawValue
    /// Entries that may keep others alive (`FamilyPlane.controlled`).
    static let controlling: UInt16 = template.rawValue | ftpControl.rawValue
    /// Bits 12–14 hold the forwarding method (`Connection.method`).
    static let methodMask: UInt16 = 0x7000

    /// The forwarding method as the data path tests it: comparing it is one compare.
    var bound: BoundMethod {
        @inline(__always) get { BoundMethod(bits: rawValue & Self.methodMask) }
        @inline(__always) set { self = ConnectionFlags(rawValue: rawValue & ~Self.methodMask | newValue.bits) }
    }
}

/// A connection's forwarding method, packed as it sits in its flags, so that
/// the per-packet tests of it are compares of those bits (decoding them into
/// `ForwardingMethod` first cost the fast path a dozen instructions a packet).
struct BoundMethod: Equatable, Sendable {
    let bits: UInt16
    static let nat = BoundMethod(bits: 0 &<< 12)
    static let local = BoundMethod(bits: 1 &<< 12)
    static let tunnel = BoundMethod(bits: 2 &<< 12)
    static let directRouting = BoundMethod(bits: 3 &<< 12)
    static let fullNAT = BoundMethod(bits: 4 &<< 12)

    @inline(__always)
    init(bits: UInt16) { self.bits = bits }

    init(_ m: ForwardingMethod) {
        self =
            switch m {
            case .nat: .nat
            case .local: .local
            case .tunnel: .tunnel
            case .directRouting: .directRouting
            case .fullNAT: .fullNAT
            }
    }

    var method: ForwardingMethod {
        switch self {
        case .nat: .nat
        case .local: .local
        case .tunnel: .tunnel
        case .directRouting: .directRouting
        default: .fullNAT
        }
    }
}

/// One tracked flow (or persistence template). `local`/`localPort` is the
/// address the real server replies to: the client for NAT, a LIP for FULLNAT.
public struct Connection<A: IPAddressProtocol>: Sendable {
    public var client: A
    public var virtual: A
    public var real: A
    public var local: A
    public var clientPort: UInt16
    public var virtualPort: UInt16
    public var realPort: UInt16
    public var localPort: UInt16
    /// Expiry time in milliseconds of the director's clock.
    public var expires: UInt64
    public var service: UInt16
    public var destination: UInt16
    public var proto: UInt8
    public var state: ConnectionState
    public var flags: ConnectionFlags
    public var packets: UInt32
    /// FULLNAT: the real server's ISN + 1 (DPVS's fdata_seq). While the SYN
    /// proxy waits for the real server (`.synproxyPending`), the client's
    /// ISN, for a SYN sent again.
    public var toaSequence: UInt32
    /// For a connection, its template's index + 1 (0: none); for a template,
    /// how many connections it controls.
    public var controller: UInt32
    /// Neighbour slot of the client-side next hop, for replies.
    public var replyNeighbour: UInt32
    /// SYN proxy: the cookie while `.synproxyPending`, then the real server's
    /// ISN minus the cookie.
    public var synproxySequence: UInt32
    /// Client-side packets (the kernel's `in_pkts`): when to sync it.
    public var inPackets: UInt32

    /// How this connection forwards, bound when it is made, as IPVS binds a
    /// connection's transmitter once (`ip_vs_bind_xmit`): every later packet,
    /// on the fast path or the general one, is forwarded by it, even if its
    /// real server's method is edited meanwhile. Kept in `flags`, so that an
    /// IPv4 entry stays one cache line.
    public var method: ForwardingMethod {
        get { flags.bound.method }
        set { flags.bound = BoundMethod(newValue) }
    }

    public init() {
        client = .zero
        virtual = .zero
        real = .zero
        local = .zero
        clientPort = 0
        virtualPort = 0
        realPort = 0
        localPort = 0
        expires = 0
        service = 0
        destination = 0
        proto = 0
        state = .none
        flags = []
        packets = 0
        toaSequence = 0
        controller = 0
        replyNeighbour = 0
        synproxySequence = 0
        inPackets = 0
    }
}

/// Which index a lookup hit.
public enum ConnectionDirection: UInt8, Sendable {
    /// Keyed by (protocol, client, client port, virtual, virtual port).
    case client = 0
    /// Keyed by (protocol, real, real port, local, local port).
    case reply = 1
}

/// Connections in one preallocated array of structs, found through one
/// open-addressing index (linear probing, backward-shift deletion) that holds
/// both directions. Capacity is fixed: when it is full the caller evicts or
/// drops (see `Director`).
public struct ConnectionTable<A: IPAddressProtocol>: Sendable {
    /// Written directly only by the fast path, which holds it as a span for a whole batch.
    public internal(set) var entries: [Connection<A>]
    /// Sequence shifts by entry, read only under `.requestShifted` or
    /// `.replyShifted`; empty until a service needs them (`enableShifts`).
    public internal(set) var shifts: [SequenceShifts] = []
    /// 0 = empty, else tag (32 bits) | (entry + 1) << 1 | direction.
    var slots: [UInt64]
    let mask: Int
    var free: [UInt32]
    /// Where the expiry sweep continues.
    var hand = 0
    /// The state file's slots for this table, where lvsd keeps one.
    var journal: JournalRegion?

    public let capacity: Int
    public var count: Int { capacity - free.count }
    /// Live entries indexed in the reply direction: while there are none,
    /// packets need no reply lookup.
    public private(set) var replyIndexedCount = 0
    /// Indexed entries without a client port (an FTP data connection
    /// expected from any port): while there are none, nobody looks for them.
    /// Counted up by who makes them (`expectData`), down when they leave the index.
    public internal(set) var noClientPortCount = 0

    public init(capacity: Int) {
        precondition(capacity > 0 && capacity < 1 << 30)
        self.capacity = capacity
        entries = [Connection<A>](repeating: Connection<A>(), count: capacity)
        // Two keys per connection at a load factor of at most 0.6.
        var size = 16
        while size * 3 < capacity * 2 * 5 { size <<= 1 }
        slots = [UInt64](repeating: 0, count: size)
        mask = size - 1
        free = (0..<UInt32(capacity)).reversed().map { $0 }
    }

    static func hash(_ proto: UInt8, _ a: A, _ aPort: UInt16, _ b: A, _ bPort: UInt16) -> UInt64 {
        var h = a.folded &* 0x9E37_79B9_7F4A_7C15
        h ^= b.folded &* 0xC2B2_AE3D_27D4_EB4F
        h ^= (UInt64(aPort) &<< 24 | UInt64(bPort) &<< 8 | UInt64(proto)) &* 0x1656_67B1_9E37_79F9
        h ^= h &>> 29
        h = h &* 0xBF58_476D_1CE4_E5B9
        return h ^ (h &>> 32)
    }

    /// Where the probe for `hash` starts.
    @inline(__always)
    static func firstSlot(_ hash: UInt64, mask: Int) -> Int { Int(truncatingIfNeeded: hash & 0xFFFF_FFFF) & mask }

    /// Key of a template: protocol with bit 8 set so it never meets a flow.
    static func key(proto: UInt8, template: Bool) -> UInt8 { template ? proto | 0x80 : proto }

    /// Finds the entry whose key in `direction` is (proto, a:ap, b:bp).
    public func lookup(_ direction: ConnectionDirection, proto: UInt8, _ a: A, _ ap: UInt16, _ b: A, _ bp: UInt16) -> Int? {
        let i = Self.find(slots.span, entries.span, mask: mask, direction, proto: proto, a, ap, b, bp)
        return i >= 0 ? i : nil
    }

    /// The probe itself, over spans that the fast path holds for a batch;
    /// -1 when there is no such entry.
    @inline(__always)
    static func find(
        _ slots: Span<UInt64>, _ entries: Span<Connection<A>>, mask: Int, _ direction: ConnectionDirection,
        proto: UInt8, _ a: A, _ ap: UInt16, _ b: A, _ bp: UInt16
    ) -> Int {
        let h = hash(proto, a, ap, b, bp)
        let tag = h & 0xFFFF_FFFF
        let dir = UInt64(direction.rawValue)
        var i = firstSlot(h, mask: mask)
        while true {
            let s = slots[i]
            if s == 0 { return -1 }
            if s &>> 32 == tag && s & 1 == dir {
                let index = Int((s & 0xFFFF_FFFF) &>> 1) &- 1
                let e = entries[index]
                let p = key(proto: e.proto, template: e.flags.contains(.template))
                if p == proto
                    && (dir == 0
                        ? e.clientPort == ap && e.virtualPort == bp && e.client == a && e.virtual == b
                        : e.realPort == ap && e.localPort == bp && e.real == a && e.local == b)
                {
                    return index
                }
            }
            i = (i &+ 1) & mask
        }
    }

    /// Takes a free entry, or nil when the table is full.
    public mutating func allocate() -> Int? {
        guard let i = free.popLast() else { return nil }
        return Int(i)
    }

    public subscript(index: Int) -> Connection<A> {
        get { entries[index] }
        _modify { yield &entries[index] }
    }

    /// Indexes an allocated entry: the client direction always, the reply
    /// direction when `.replyIndexed` is set.
    public mutating func insert(_ index: Int) {
        let e = entries[index]
        guard !e.flags.contains(.unhashed) else { return }
        let p = Self.key(proto: e.proto, template: e.flags.contains(.template))
        place(Self.hash(p, e.client, e.clientPort, e.virtual, e.virtualPort), index, 0)
        if e.flags.contains(.replyIndexed) { placeReply(index, proto: p) }
    }

    /// Indexes an entry's reply direction. A reply finds the newest
    /// connection with its tuple, as in the kernel's hash chains, where a new
    /// entry goes first: a client port reused at once for another service of
    /// the same real server takes the old, closing connection's slot.
    mutating func placeReply(_ index: Int, proto p: UInt8) {
        let e = entries[index]
        let h = Self.hash(p, e.real, e.realPort, e.local, e.localPort)
        let tag = h & 0xFFFF_FFFF
        let mine = tag &<< 32 | UInt64(index &+ 1) &<< 1 | 1
        var i = Self.firstSlot(h, mask: mask)
        while slots[i] != 0 {
            let s = slots[i]
            if s &>> 32 == tag && s & 1 == 1 {
                let old = Int((s & 0xFFFF_FFFF) &>> 1) &- 1
                let o = entries[old]
                if Self.key(proto: o.proto, template: o.flags.contains(.template)) == p && o.realPort == e.realPort && o.localPort == e.localPort
                    && o.real == e.real && o.local == e.local
                {
                    slots[i] = mine
                    entries[old].flags.remove(.replyIndexed)
                    return
                }
            }
            i = (i &+ 1) & mask
        }
        slots[i] = mine
        replyIndexedCount &+= 1
    }

    mutating func place(_ h: UInt64, _ index: Int, _ dir: UInt64) {
        let tag = h & 0xFFFF_FFFF
        var i = Self.firstSlot(h, mask: mask)
        while slots[i] != 0 { i = (i &+ 1) & mask }
        slots[i] = tag &<< 32 | UInt64(index &+ 1) &<< 1 | dir
    }

    /// Takes an entry out of the index; it stays allocated until `remove`.
    public mutating func unhash(_ index: Int) {
        let e = entries[index]
        guard !e.flags.contains(.unhashed) else { return }
        let p = Self.key(proto: e.proto, template: e.flags.contains(.template))
        unplace(Self.hash(p, e.client, e.clientPort, e.virtual, e.virtualPort), index, 0)
        if e.clientPort == 0 && !e.flags.contains(.template) { noClientPortCount &-= 1 }
        if e.flags.contains(.replyIndexed) {
            unplace(Self.hash(p, e.real, e.realPort, e.local, e.localPort), index, 1)
            replyIndexedCount &-= 1
        }
        entries[index].flags.insert(.unhashed)
    }

    /// Unindexes and frees an entry.
    public mutating func remove(_ index: Int) {
        unhash(index)
        entries[index] = Connection<A>()
        journal?.clear(index)
        free.append(UInt32(index))
    }

    mutating func unplace(_ h: UInt64, _ index: Int, _ dir: UInt64) {
        let wanted = (h & 0xFFFF_FFFF) &<< 32 | UInt64(index &+ 1) &<< 1 | dir
        var i = Self.firstSlot(h, mask: mask)
        while slots[i] != wanted {
            guard slots[i] != 0 else { return }
            i = (i &+ 1) & mask
        }
        // Backward-shift deletion keeps every probe chain unbroken.
        var hole = i
        var j = i
        while true {
            j = (j &+ 1) & mask
            let s = slots[j]
            if s == 0 { break }
            let home = Int(truncatingIfNeeded: s &>> 32) & mask
            // Move s into the hole unless its home lies cyclically in (hole, j].
            let distanceToJ = (j &- home) & mask
            let distanceToHole = (j &- hole) & mask
            if distanceToJ >= distanceToHole {
                slots[hole] = s
                hole = j
            }
        }
        slots[hole] = 0
    }

    /// The entry under the sweep hand, advancing it: expiry and eviction
    /// walk the table with it.
    public mutating func advanceHand() -> Int {
        let i = hand
        hand = hand &+ 1 == capacity ? 0 : hand &+ 1
        return i
    }

    /// Every live entry, for listings.
    public func forEach(_ body: (Int, Connection<A>) -> Void) {
        for i in 0..<capacity where entries[i].proto != 0 { body(i, entries[i]) }
    }

    /// Bytes held (entries, index and free list), for the memory target.
    public var memoryFootprint: Int {
        capacity * MemoryLayout<Connection<A>>.stride + slots.count * 8 + capacity * 4 + shifts.count * MemoryLayout<SequenceShifts>.stride
    }
}
