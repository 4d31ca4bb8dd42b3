/// mh (`ip_vs_mh.c`): Maglev lookup table of M entries (the kernel's default
/// 4093; any prime, such as the paper's 65537) populated from each server's
/// permutation (hsiphash of address + port), `last_weight` turns per round,
/// so weight 0 keeps the table and only marks unavailable. The kernel fills
/// the table in the order the servers were added; with `mh-sorted` (flag-3)
/// in the order of their addresses and ports, so that every director given
/// the same servers builds the same table and sends a flow to the same one.
public struct MaglevHashing: Scheduler {
    /// `CONFIG_IP_VS_MH_TAB_INDEX` 12.
    public static let defaultTableSize = 4093
    static let tableBits = 6
    static let key1 = SipHashKey(k0: 2_654_435_761, k1: 2_654_435_761)
    static let key2 = SipHashKey(k0: 2_654_446_892, k1: 2_654_446_892)
    let fallback: Bool
    let usePort: Bool
    let sorted: Bool
    public let tableSize: Int
    /// Slot per table entry, -1 when empty.
    public private(set) var lookup: [Int32] = []

    public init(flags: SchedulerFlags) { self.init(flags: flags, tableSize: Self.defaultTableSize) }

    /// `tableSize` must be a prime (every skip then visits every entry).
    public init(flags: SchedulerFlags, tableSize: Int) {
        precondition(tableSize > 1)
        fallback = flags.contains(.mhFallback)
        usePort = flags.contains(.mhPort)
        sorted = flags.contains(.mhSorted)
        self.tableSize = tableSize
    }

    static func hashKey(fold: UInt32, port: UInt16, key: SipHashKey, offset: UInt32) -> UInt32 {
        hsiphash32(offset &+ UInt32(port) &+ fold, key: key)
    }

    public mutating func destinationsChanged(order added: [Int], dests: [DestinationState]) {
        let order = sorted ? added.sorted { (dests[$0].address, dests[$0].port) < (dests[$1].address, dests[$1].port) } : added
        let m = tableSize
        var g: Int32 = 0
        var maxWeight: Int32 = 0
        for slot in order {
            let w = dests[slot].lastWeight
            if w > 0 { g = g > 0 ? gcd(w, g) : w }
            if w > maxWeight { maxWeight = w }
        }
        guard g >= 1, order.count <= m else {
            lookup = []
            return
        }
        let mw = maxWeight / g
        let fls = mw > 0 ? 32 - mw.leadingZeroBitCount : 0
        let rshift = max(0, fls - Self.tableBits)
        var perm = [Int]()
        var skip = [Int]()
        var turns = [Int]()
        perm.reserveCapacity(order.count)
        skip.reserveCapacity(order.count)
        turns.reserveCapacity(order.count)
        for slot in order {
            let d = dests[slot]
            let fold = d.address.kernelFold
            perm.append(Int(Self.hashKey(fold: fold, port: d.port, key: Self.key1, offset: 0)) % m)
            skip.append(Int(Self.hashKey(fold: fold, port: d.port, key: Self.key2, offset: 0)) % (m - 1) + 1)
            let lw = d.lastWeight
            let t = Int((lw / g) >> Int32(rshift))
            turns.append(t != 0 ? t : (lw != 0 ? 1 : 0))
        }
        // An empty entry is -1: the table doubles as the "taken" map.
        var table = [Int32](repeating: -1, count: m)
        var entries = table.mutableSpan
        var permutation = perm.mutableSpan
        let skips = skip.span
        let rounds = turns.span
        let slots = order.span
        var n = 0
        var dtCount = 0
        outer: while n < m {
            var i = 0
            while i < slots.count {
                if rounds[i] < 1 {
                    i &+= 1
                    continue
                }
                var c = permutation[i]
                while entries[c] >= 0 {
                    c &+= skips[i]
                    if c >= m { c &-= m }
                }
                permutation[i] = c
                entries[c] = Int32(truncatingIfNeeded: slots[i])
                n &+= 1
                if n == m { break outer }
                dtCount &+= 1
                if dtCount >= rounds[i] {
                    dtCount = 0
                    i &+= 1
                }
            }
        }
        lookup = table
    }

    public func select(dests: Span<DestinationState>, input: ScheduleInput) -> Int? {
        guard !lookup.isEmpty else { return nil }
        let m = UInt32(tableSize)
        let port = usePort ? input.sourcePort : 0
        let ihash = Int(Self.hashKey(fold: input.sourceFold, port: port, key: Self.key1, offset: 0) % m)
        let slot = Int(lookup[ihash])
        if slot < 0 { return nil }
        if dests[slot].isAvailable { return slot }
        guard fallback else { return nil }
        for offset in 0..<m {
            let roffset = (offset + UInt32(ihash)) % m
            let s = Int(lookup[Int(Self.hashKey(fold: input.sourceFold, port: port, key: Self.key1, offset: roffset) % m)])
            if s < 0 { break }
            if dests[s].isAvailable { return s }
        }
        return nil
    }

    public mutating func schedule(order: Span<Int>, dests: Span<DestinationState>, input: ScheduleInput, now: UInt64) -> Int? {
        select(dests: dests, input: input)
    }
}

public struct SipHashKey: Sendable {
    public var k0: UInt64
    public var k1: UInt64
}

/// The kernel's `hsiphash` of one 32-bit word on 64-bit machines: SipHash-1-3
/// with the result truncated to 32 bits (`lib/siphash.c`).

public func hsiphash32(_ value: UInt32, key: SipHashKey) -> UInt32 {
    var v0: UInt64 = 0x736f_6d65_7073_6575 ^ key.k0
    var v1: UInt64 = 0x646f_7261_6e64_6f6d ^ key.k1
    var v2: UInt64 = 0x6c79_6765_6e65_7261 ^ key.k0
    var v3: UInt64 = 0x7465_6462_7974_6573 ^ key.k1
    let b: UInt64 = (4 << 56) | UInt64(value)
    @inline(__always) func round() {
        v0 &+= v1
        v1 = v1.rotl(13)
        v1 ^= v0
        v0 = v0.rotl(32)
        v2 &+= v3
        v3 = v3.rotl(16)
        v3 ^= v2
        v0 &+= v3
        v3 = v3.rotl(21)
        v3 ^= v0
        v2 &+= v1
        v1 = v1.rotl(17)
        v1 ^= v2
        v2 = v2.rotl(32)
    }
    v3 ^= b
    round()
    v0 ^= b
    v2 ^= 0xff
    round()
    round()
    round()
    return UInt32(truncatingIfNeeded: (v0 ^ v1) ^ (v2 ^ v3))
}

extension UInt64 {
    func rotl(_ n: UInt64) -> UInt64 { (self &<< n) | (self &>> (64 &- n)) }
}
