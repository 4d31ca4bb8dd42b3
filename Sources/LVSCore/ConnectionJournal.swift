import LVSPacket

/// One connection as the state file keeps it: what a sync message says of
/// it, the SYN proxy's sequence delta, and when it was written.
public struct JournalRecord: Sendable, Hashable {
    public var sync: SyncRecord
    /// The real server's ISN minus the cookie, for a SYN-proxied connection.
    public var synproxySequence: UInt32?
    /// The director's clock (monotonic milliseconds) when it was written:
    /// the record's timeout runs from there.
    public var writtenAt: UInt64

    public init(sync: SyncRecord, synproxySequence: UInt32? = nil, writtenAt: UInt64) {
        self.sync = sync
        self.synproxySequence = synproxySequence
        self.writtenAt = writtenAt
    }

    /// Milliseconds left at `now`; 0 when it has expired.
    public func remaining(now: UInt64) -> UInt64 {
        let end = writtenAt &+ UInt64(sync.timeout) &* 1000
        return end > now ? end &- now : 0
    }
}

/// A slot of the state file: 128 bytes, big-endian, sealed by a CRC32c of
/// bytes 4–127, so that a slot torn by a crash in the middle of its write
/// reads as corrupt, never as another connection.
///
///     0 crc32c  4 kind (0 free, 4 or 6)  5 proto  6 state  8 flags
///     12 client port  14 virtual port  16 real port  18 local port
///     20 firewall mark  24 timeout (s)  28 SYN-proxy delta  32 written at (ms)
///     40 client  56 virtual  72 real  88 local (16 bytes each; IPv4 in the first 4)
///     104 request shift (initial, delta, previous)  116 reply shift
public enum JournalSlot {
    public static let size = 128
    /// Flags beyond the sync protocol's: a local address (FULLNAT), a SYN-proxy delta.
    static let hasLocal: UInt32 = 1 << 16
    static let synproxied: UInt32 = 1 << 17
    static let knownFlags: UInt32 = SyncConnectionFlags.backupMask | hasLocal | synproxied

    public enum Content: Equatable, Sendable {
        case free
        case record(JournalRecord)
        /// A checksum that does not match, or a field no writer produces.
        case corrupt
    }

    public static func encode(_ r: JournalRecord, into s: inout MutableSpan<UInt8>) {
        precondition(s.count >= size)
        let v6 = r.sync.client.isIPv6
        s.fill(0, from: 0, count: size)
        s[4] = v6 ? 6 : 4
        s[5] = r.sync.proto
        s.setBE16(r.sync.state, at: 6)
        var flags = r.sync.flags & SyncConnectionFlags.backupMask
        if r.sync.local != nil { flags |= hasLocal }
        if r.synproxySequence != nil { flags |= synproxied }
        s.setBE32(flags, at: 8)
        s.setBE16(r.sync.clientPort, at: 12)
        s.setBE16(r.sync.virtualPort, at: 14)
        s.setBE16(r.sync.realPort, at: 16)
        s.setBE16(r.sync.localPort, at: 18)
        s.setBE32(r.sync.firewallMark, at: 20)
        s.setBE32(r.sync.timeout, at: 24)
        s.setBE32(r.synproxySequence ?? 0, at: 28)
        s.setBE64(r.writtenAt, at: 32)
        store(r.sync.client, &s, at: 40)
        store(r.sync.virtual, &s, at: 56)
        store(r.sync.real, &s, at: 72)
        if let l = r.sync.local { store(l, &s, at: 88) }
        if let q = r.sync.sequence {
            store(q.request, &s, at: 104)
            store(q.reply, &s, at: 116)
        }
        s.setBE32(CRC32c.checksum(s.span, from: 4, count: size - 4), at: 0)
    }

    public static func decode(_ s: Span<UInt8>) -> Content {
        guard s.count >= size else { return .corrupt }
        let kind = s[4]
        if kind == 0 && s.be32(at: 0) == 0 { return .free }
        guard s.be32(at: 0) == CRC32c.checksum(s, from: 4, count: size - 4), kind == 4 || kind == 6 else { return .corrupt }
        let flags = s.be32(at: 8)
        guard flags & ~knownFlags == 0 else { return .corrupt }
        let v6 = kind == 6
        let sequence: SequenceShifts? =
            flags & SyncConnectionFlags.sequenceMask == 0
            ? nil
            : SequenceShifts(
                request: SequenceShift(initial: s.be32(at: 104), delta: s.be32(at: 108), previousDelta: s.be32(at: 112)),
                reply: SequenceShift(initial: s.be32(at: 116), delta: s.be32(at: 120), previousDelta: s.be32(at: 124)))
        let sync = SyncRecord(
            proto: s[5], flags: flags & SyncConnectionFlags.backupMask, state: s.be16(at: 6), clientPort: s.be16(at: 12),
            virtualPort: s.be16(at: 14), realPort: s.be16(at: 16), firewallMark: s.be32(at: 20), timeout: s.be32(at: 24),
            client: address(s, at: 40, v6: v6), virtual: address(s, at: 56, v6: v6), real: address(s, at: 72, v6: v6),
            local: flags & hasLocal != 0 ? address(s, at: 88, v6: v6) : nil, localPort: s.be16(at: 18), sequence: sequence)
        return .record(JournalRecord(sync: sync, synproxySequence: flags & synproxied != 0 ? s.be32(at: 28) : nil, writtenAt: s.be64(at: 32)))
    }

    static func store(_ a: IPAddress, _ s: inout MutableSpan<UInt8>, at offset: Int) {
        switch a {
        case .v4(let v): v.store(&s, at: offset)
        case .v6(let v): v.store(&s, at: offset)
        }
    }

    static func store(_ q: SequenceShift, _ s: inout MutableSpan<UInt8>, at offset: Int) {
        s.setBE32(q.initial, at: offset)
        s.setBE32(q.delta, at: offset + 4)
        s.setBE32(q.previousDelta, at: offset + 8)
    }

    static func address(_ s: Span<UInt8>, at offset: Int, v6: Bool) -> IPAddress {
        v6 ? .v6(IPv6Address(s, at: offset)) : .v4(IPv4Address(s, at: offset))
    }
}

/// A table's slots in the state file: slot i mirrors entry i, written when
/// the entry is worth keeping (where a sync master would send it) and
/// zeroed when the entry is freed.
@safe public struct JournalRegion: @unchecked Sendable {
    // @unchecked: the pointer is a shared mapping the daemon makes once and
    // never unmaps while lvsd runs; only the worker owning the table writes it.
    let base: UnsafeMutableRawPointer
    public let slots: Int

    /// `base` must stay mapped, readable and writable for `slots` ×
    /// `JournalSlot.size` bytes while any director holds the region.
    @unsafe
    public init(unsafeBase base: UnsafeMutableRawPointer, slots: Int) {
        unsafe self.base = base
        self.slots = slots
    }

    @inline(__always)
    func withSlot<R>(_ i: Int, _ body: (inout MutableSpan<UInt8>) -> R) -> R {
        precondition(i >= 0 && i < slots)
        // In bounds (checked above) of memory the initializer's contract keeps mapped; bytes have no invalid values.
        let start = unsafe (base + i &* JournalSlot.size).assumingMemoryBound(to: UInt8.self)
        var span = unsafe MutableSpan<UInt8>(_unsafeStart: start, count: JournalSlot.size)
        return body(&span)
    }

    func write(_ i: Int, _ r: JournalRecord) { withSlot(i) { JournalSlot.encode(r, into: &$0) } }

    func clear(_ i: Int) {
        withSlot(i) { s in
            guard s.be32(at: 0) != 0 else { return }
            s.fill(0, from: 0, count: JournalSlot.size)
        }
    }
}

/// The state file's header: which layout its slots follow, which boot wrote
/// them (the records' times are on that boot's monotonic clock).
///
///     0 "LVSSTATE"  8 version  12 slot size  16 workers  20 slots per region
///     24 header size  28 boot id (16 bytes)  44 crc32c of bytes 0–43
///
/// Region r = 2 × worker + family (0 IPv4, 1 IPv6) starts at
/// `size + r × slots × JournalSlot.size`.
public struct StateFileHeader: Sendable, Equatable {
    public static let size = 4096
    public static let version: UInt32 = 1
    static let magic: UInt64 = 0x4C56_5353_5441_5445  // "LVSSTATE"

    public var workers: Int
    public var slotsPerRegion: Int
    public var bootID: [UInt8]

    public init(workers: Int, slotsPerRegion: Int, bootID: [UInt8]) {
        self.workers = workers
        self.slotsPerRegion = slotsPerRegion
        self.bootID = bootID
    }

    public var regions: Int { workers * 2 }
    public var fileSize: Int { Self.size + regions * slotsPerRegion * JournalSlot.size }

    public func regionOffset(_ r: Int) -> Int { Self.size + r * slotsPerRegion * JournalSlot.size }

    public func encode(into s: inout MutableSpan<UInt8>) {
        s.fill(0, from: 0, count: 48)
        s.setBE64(Self.magic, at: 0)
        s.setBE32(Self.version, at: 8)
        s.setBE32(UInt32(JournalSlot.size), at: 12)
        s.setBE32(UInt32(workers), at: 16)
        s.setBE32(UInt32(slotsPerRegion), at: 20)
        s.setBE32(UInt32(Self.size), at: 24)
        for (k, b) in bootID.prefix(16).enumerated() { s[28 + k] = b }
        s.setBE32(CRC32c.checksum(s.span, from: 0, count: 44), at: 44)
    }

    public enum Problem: Error, Equatable, CustomStringConvertible {
        case notAStateFile
        case version(UInt32)
        case damaged
        case otherBoot

        public var description: String {
            switch self {
            case .notAStateFile: "not an lvsd state file"
            case .version(let v): "state format \(v), this lvsd reads format \(StateFileHeader.version)"
            case .damaged: "its header is damaged"
            case .otherBoot: "written before the machine last booted"
            }
        }
    }

    /// The header, checked against this boot. A file cut short keeps the
    /// slots it still holds: each slot is checked on its own.
    public static func decode(_ s: Span<UInt8>, bootID: [UInt8]) throws(Problem) -> StateFileHeader {
        guard s.count >= 48, s.be64(at: 0) == magic else { throw .notAStateFile }
        let version = s.be32(at: 8)
        guard version == Self.version else { throw .version(version) }
        guard s.be32(at: 44) == CRC32c.checksum(s, from: 0, count: 44), s.be32(at: 12) == UInt32(JournalSlot.size),
            s.be32(at: 24) == UInt32(size)
        else { throw .damaged }
        let workers = Int(s.be32(at: 16))
        let slots = Int(s.be32(at: 20))
        guard (1...1024).contains(workers), (1..<(1 << 30)).contains(slots) else { throw .damaged }
        var boot = [UInt8](repeating: 0, count: 16)
        for k in 0..<16 { boot[k] = s[28 + k] }
        guard boot == bootID else { throw .otherBoot }
        return StateFileHeader(workers: workers, slotsPerRegion: slots, bootID: boot)
    }
}

/// What a start made of the state file's slots.
public struct RestoreReport: Sendable, Equatable, CustomStringConvertible {
    public var restored = 0
    public var expired = 0
    public var corrupt = 0
    public var noService = 0
    public var noServer = 0
    public var invalid = 0
    public var tableFull = 0

    public init() {}

    public var dropped: Int { corrupt + noService + noServer + invalid + tableFull }

    public mutating func count(_ o: SyncOutcome) {
        switch o {
        case .created, .updated: restored += 1
        case .noService: noService += 1
        case .noServer: noServer += 1
        case .invalid: invalid += 1
        case .tableFull: tableFull += 1
        }
    }

    public var description: String {
        "\(restored) connections restored; dropped: \(corrupt) corrupt, \(noService) of no service, \(noServer) of no real server, \(invalid) invalid, \(tableFull) for a full table; \(expired) expired"
    }
}

extension Director {
    /// Gives each family's table its slots in the state file, from now on
    /// written where a sync master would send a connection, and zeroed when
    /// one is freed. Slots of connections already in the table are written at once.
    public mutating func attachJournal(v4 region4: JournalRegion, v6 region6: JournalRegion, now: UInt64) {
        precondition(region4.slots >= v4.table.capacity && region6.slots >= v6.table.capacity)
        // The checksum's tables are made on first use: here, not on a packet's path.
        let byte: [UInt8] = [0]
        _ = CRC32c.checksum(byte.span, from: 0, count: 1)
        shared.journaling = true
        shared.noting = true
        v4.table.journal = region4
        v6.table.journal = region6
        journalEverything(now: now)
    }

    /// Writes every connection's slot, whatever its state (a handover: the
    /// successor restores them all), but a SYN proxy's still waiting for its real server.
    public mutating func journalEverything(now: UInt64) {
        guard shared.journaling else { return }
        v4.table.forEach { i, c in if !c.flags.contains(.synproxyPending) { v4.note(i, sync: false, now: now, shared: &shared) } }
        v6.table.forEach { i, c in if !c.flags.contains(.synproxyPending) { v6.note(i, sync: false, now: now, shared: &shared) } }
    }

    /// A connection of the state file, made again as a sync backup makes it
    /// (bound to this configuration's service and real server of the same
    /// addresses, or dropped), with the time it had left.
    public mutating func restore(_ r: JournalRecord, now: UInt64) -> SyncOutcome {
        var sync = r.sync
        let left = r.remaining(now: now)
        guard left > 0 else { return .invalid }
        sync.timeout = UInt32(clamping: (left + 999) / 1000)
        let outcome = applySync(sync, now: now)
        guard let delta = r.synproxySequence, outcome == .created || outcome == .updated else { return outcome }
        switch r.sync.client {
        case .v4: v4.restoreSYNProxy(sync, delta: delta, now: now, shared: &shared)
        case .v6: v6.restoreSYNProxy(sync, delta: delta, now: now, shared: &shared)
        }
        return outcome
    }
}

extension FamilyPlane {
    /// A SYN-proxied connection's sequence delta, on the entry `applySync` made.
    mutating func restoreSYNProxy(_ r: SyncRecord, delta: UInt32, now: UInt64, shared: inout DirectorShared) {
        guard r.proto == IPProtocolNumber.tcp, let client = Self.address(r.client), let virtual = Self.address(r.virtual),
            let i = table.lookup(.client, proto: r.proto, client, r.clientPort, virtual, r.virtualPort)
        else { return }
        table[i].flags.insert(.synproxy)
        table[i].synproxySequence = delta
        if table.journal != nil { note(i, sync: false, now: now, shared: &shared) }
    }
}
